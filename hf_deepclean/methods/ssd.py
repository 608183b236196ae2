"""Selective Synaptic Dampening (Foster et al. 2023, arXiv 2308.07707): no training, one multiplication.

Importances are the "batch" Fisher diagonal (squared mini-batch mean gradient, averaged over
batches, as the paper's code computes them) on D_f and on the whole training set D. A weight is
selected when ``I_f > alpha * I_D`` and multiplied by ``beta = min(lambda * I_D / I_f, 1)``.

alpha by default follows the authors' class-forgetting script (if-loops/selective-synaptic-dampening,
``src/forget_full_class_main.py``: ``selection_weighting = 10 * model_size_scaler`` with the scaler 0.5 for
their ViT and 1 for every other net): 5 for a plain vision transformer (``config.model_type`` in
:data:`VIT_MODEL_TYPES`), 10 for anything else (their ResNet18's value; Swin and ConvNeXt get it too, the
authors tested neither). Their random-forgetting script uses 10 for both and their sub-class script 25 for
the ViT; pass ``alpha`` to use those.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..fisher import fisher_diagonal
from ..images import collate_fn
from .base import MethodResult, mask_selection, model_inputs, require_splits, training_set

# The plain vision transformers: the authors' ViT scaler (0.5) applies to them.
VIT_MODEL_TYPES = frozenset({"vit", "deit", "beit", "dinov2", "vit_msn", "vit_mae"})
VIT_ALPHA = 5.0     # 10 x 0.5, the authors' class-forgetting script for their ViT
OTHER_ALPHA = 10.0  # 10 x 1, the same script for ResNet18 (and every non-ViT net)


@dataclass
class SSDConfig:
    """Selective Synaptic Dampening; defaults are the authors' (class forgetting).

    Args:
        alpha: Selection: weights with ``I_f > alpha * I_D`` are dampened. ``None`` (default): the authors'
            per-architecture value, 5 for a plain ViT and 10 otherwise (:func:`default_alpha`).
        dampening: lambda: a selected weight is multiplied by ``min(lambda * I_D / I_f, 1)``.
        batch_size: Mini-batch size of the importance pass (the batch Fisher depends on it).
    """

    alpha: float | None = field(
        default=None, metadata={"help": "Select weights with I_f > alpha * I_D; None: 5 for a ViT, 10 otherwise."}
    )
    dampening: float = field(
        default=1.0, metadata={"help": "lambda: dampen selected weights by min(lambda*I_D/I_f, 1)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Mini-batch size of the importance (batch Fisher) pass."})

    def __post_init__(self):
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha} must be > 0.")
        if not self.dampening > 0:
            raise ValueError(f"dampening={self.dampening} must be > 0.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1.")


def default_alpha(model: torch.nn.Module) -> float:
    """The authors' alpha for ``model``: 5 when its ``config.model_type`` is a plain ViT, else 10."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return VIT_ALPHA if model_type in VIT_MODEL_TYPES else OTHER_ALPHA


@torch.no_grad()
def dampen(
    model: torch.nn.Module,
    importance_forget: Mapping[str, torch.Tensor],
    importance_full: Mapping[str, torch.Tensor],
    *,
    alpha: float = 10.0,
    dampening: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Multiply the selected weights of ``model`` in place; returns the selection mask per parameter."""
    params = dict(model.named_parameters())
    masks = {}
    for name, i_f in importance_forget.items():
        param = params[name]
        i_f = i_f.to(param.device, torch.float64)
        i_d = importance_full[name].to(param.device, torch.float64)
        selected = i_f > alpha * i_d
        # selected implies I_f > 0; elsewhere divide by 1 and ignore the result
        beta = (dampening * i_d / torch.where(selected, i_f, torch.ones_like(i_f))).clamp(max=1.0)
        param.mul_(torch.where(selected, beta, torch.ones_like(beta)).to(param.dtype))
        masks[name] = selected
    return masks


def run(model, splits, processor=None, config: SSDConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "forget", "retain")
    config = config or SSDConfig()
    start = time.perf_counter()
    common = dict(estimator="batch", batch_size=config.batch_size, collate_fn=collate_fn, seed=seed,
                  show_progress=False)
    importance_full = fisher_diagonal(model, model_inputs(training_set(splits), processor), **common)
    importance_forget = fisher_diagonal(model, model_inputs(splits["forget"], processor), **common)
    fisher_time = time.perf_counter() - start
    alpha = config.alpha if config.alpha is not None else default_alpha(model)
    masks = dampen(model, importance_forget, importance_full, alpha=alpha, dampening=config.dampening)
    total = time.perf_counter() - start
    selection = dict(mask_selection(masks), threshold=alpha)
    return MethodResult(model, total, {"time": {"fisher": fisher_time, "train": 0.0, "total": total},
                                       "selection": selection})

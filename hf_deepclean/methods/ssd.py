"""Selective Synaptic Dampening (Foster et al. 2023, arXiv 2308.07707): no training, one multiplication.

Importances are the "batch" Fisher diagonal (squared mini-batch mean gradient, averaged over
batches, as the paper's code computes them) on D_f and on the whole training set D. A weight is
selected when ``I_f > alpha * I_D`` and multiplied by ``beta = min(lambda * I_D / I_f, 1)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..images import collate_fn
from ..fisher import fisher_diagonal
from .base import MethodResult, mask_selection, model_inputs, require_splits, training_set


@dataclass
class SSDConfig:
    """Selective Synaptic Dampening; defaults are the paper's.

    Args:
        alpha: Selection: weights with ``I_f > alpha * I_D`` are dampened.
        dampening: lambda: a selected weight is multiplied by ``min(lambda * I_D / I_f, 1)``.
        batch_size: Mini-batch size of the importance pass (the batch Fisher depends on it).
    """

    alpha: float = field(default=10.0, metadata={"help": "Select weights with I_f > alpha * I_D."})
    dampening: float = field(default=1.0, metadata={"help": "lambda: dampen selected weights by min(lambda*I_D/I_f, 1)."})
    batch_size: int = field(default=32, metadata={"help": "Mini-batch size of the importance (batch Fisher) pass."})

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha} must be > 0.")
        if not self.dampening > 0:
            raise ValueError(f"dampening={self.dampening} must be > 0.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1.")


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
    common = dict(estimator="batch", batch_size=config.batch_size, collate_fn=collate_fn, seed=seed, show_progress=False)
    importance_full = fisher_diagonal(model, model_inputs(training_set(splits), processor), **common)
    importance_forget = fisher_diagonal(model, model_inputs(splits["forget"], processor), **common)
    fisher_time = time.perf_counter() - start
    masks = dampen(model, importance_forget, importance_full, alpha=config.alpha, dampening=config.dampening)
    total = time.perf_counter() - start
    selection = dict(mask_selection(masks), threshold=config.alpha)
    return MethodResult(model, total, {"time": {"fisher": fisher_time, "train": 0.0, "total": total}, "selection": selection})

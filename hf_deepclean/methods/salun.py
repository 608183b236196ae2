"""SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR).

1. Saliency: ``|d L(D_f) / d w|``, the magnitude of the gradient of the mean cross-entropy on D_f
   at the original weights. The top ``saliency_fraction`` of all weights (the paper's 50 %%) form the mask.
2. Random-label training on D_f (each label a random other class) mixed with D_r, updating only
   the masked weights (:class:`~hf_deepclean.masking.GradientMask`: every other weight stays bit-exact).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..forget import relabel_to_wrong_classes
from ..images import collate_fn
from ..masking import GradientMask
from ..selection import ParameterMask, select_parameters
from .base import (
    MaskedTrainer,
    MethodResult,
    UnlearningArguments,
    concat,
    model_inputs,
    num_labels,
    require_splits,
    train,
    with_seed,
)


@dataclass
class SalUnConfig(UnlearningArguments):
    """SalUn: saliency mask, then random-label training on D_f and D_r restricted to it.

    Args:
        saliency_fraction: Fraction of all weights with the largest forget-gradient magnitude that
            may change (the paper's default 0.5).
        saliency_batch_size: Batch size of the saliency (gradient) pass.
        num_train_epochs: Epochs over D_f (random labels) + D_r.
        learning_rate: Peak learning rate.
    """

    saliency_fraction: float = field(default=0.5, metadata={"help": "Top fraction of weights by |grad L(D_f)| (0.5 = 50%%)."})
    saliency_batch_size: int = field(default=64, metadata={"help": "Batch size of the saliency pass."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over relabelled D_f + D_r."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.saliency_fraction <= 1.0:
            raise ValueError(f"saliency_fraction={self.saliency_fraction} must be in (0, 1].")


def forget_gradient_saliency(model: torch.nn.Module, forget_dataset, *, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``|grad of the mean cross-entropy over forget_dataset|`` per trainable weight (eval mode)."""
    loader = torch.utils.data.DataLoader(forget_dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    totals = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    device = next(iter(params.values())).device
    was_training = model.training
    model.eval()  # no dropout noise, and BatchNorm running statistics stay untouched
    try:
        with torch.enable_grad():
            for batch in loader:
                logits = model(pixel_values=batch["pixel_values"].to(device)).logits
                loss = F.cross_entropy(logits.float(), batch["labels"].to(device), reduction="sum")
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for (name, _), g in zip(params.items(), grads):
                    if g is not None:
                        totals[name] += g.double()
    finally:
        model.train(was_training)
    return {n: (t / len(forget_dataset)).abs().float() for n, t in totals.items()}


def saliency_mask(saliency: dict[str, torch.Tensor], fraction: float) -> ParameterMask:
    """The exact top ``fraction`` of weights by saliency."""
    # select_parameters ranks I_f / (I_r + eps); with I_r = 0 and eps = 1 the rank is the saliency itself
    zeros = {n: torch.zeros_like(s) for n, s in saliency.items()}
    return select_parameters(saliency, zeros, top_fraction=fraction, eps=1.0)


def run(model, splits, processor=None, config: SalUnConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "forget", "retain")
    args = with_seed(config or SalUnConfig(), seed)
    start = time.perf_counter()
    saliency = forget_gradient_saliency(model, model_inputs(splits["forget"], processor), batch_size=args.saliency_batch_size)
    mask = saliency_mask(saliency, args.saliency_fraction)
    saliency_time = time.perf_counter() - start
    relabelled = relabel_to_wrong_classes(splits["forget"], num_labels(model), seed)
    data = concat(model_inputs(relabelled, processor), model_inputs(splits["retain"], processor))
    gradient_mask = GradientMask(model, mask).attach()
    try:
        model, train_time = train(MaskedTrainer, model, args, data, gradient_mask=gradient_mask)
    finally:
        gradient_mask.detach()
    total = time.perf_counter() - start
    selection = {"threshold": mask.threshold, "selected_fraction": mask.selected_fraction, "num_selected": mask.num_selected}
    return MethodResult(
        model, total, {"time": {"fisher": saliency_time, "train": train_time, "total": total}, "selection": selection}
    )

"""Reset-only sweeps: from one Fisher computation, reset the top fraction (or the weights above gamma) for
each candidate, with no fine-tune, and measure what forward passes alone tell: forget, validation and
(sampled) retain accuracy, and the loss MIA between the forget set and validation data.

``hf-deepclean sweep`` prints them; ``top_fraction="auto"`` (:mod:`hf_deepclean.auto`) makes its first choice
from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch

from .evaluation import collect_outputs, mia_loss_lr, seeded_subset
from .masking import reset_selected_weights
from .selection import DEFAULT_FRACTIONS, select_for_config

logger = logging.getLogger(__name__)


def reset_sweep(
    model: torch.nn.Module,
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    splits: Mapping[str, object],
    config,
    *,
    fractions: Sequence[float] | None = None,
    thresholds: Sequence[float] | None = None,
    image_processor=None,
    retain_sample_size: int | None = 500,
    batch_size: int = 256,
) -> list[dict]:
    """Reset-only models for each fraction (or gamma), evaluated with forward passes only.

    ``config`` (a :class:`~hf_deepclean.config.DeepCleanConfig`) gives what ``unlearn`` would select and reset:
    each candidate's mask is :func:`~hf_deepclean.selection.select_for_config` (include and exclude lists,
    ``norm_policy``, ``ratio_eps``) and the reset follows ``reset``, ``norm_policy`` and ``seed``. ``splits``
    holds ``forget``, ``retain`` and ``validation`` datasets. The model is restored to its original weights
    afterwards. Rows: ``fraction`` or ``threshold``, ``selected_fraction``, ``num_selected``,
    ``threshold_effective``, ``forget_accuracy``, ``validation_accuracy``, ``retain_accuracy``, ``mia_loss_lr``,
    ``time_s``.
    """
    if fractions is not None and thresholds is not None:
        raise ValueError("Pass fractions or thresholds, not both.")
    for key in ("forget", "retain", "validation"):
        if key not in splits:
            raise ValueError(f"reset_sweep needs a {key!r} split; got {sorted(splits)}.")
    candidates = [("threshold", t) for t in thresholds] if thresholds is not None else [
        ("fraction", f) for f in (fractions or DEFAULT_FRACTIONS)
    ]
    retain = seeded_subset(splits["retain"], retain_sample_size, config.seed)
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = []

    def evaluate(dataset):
        return collect_outputs(model, dataset, image_processor=image_processor, batch_size=batch_size)

    @torch.no_grad()
    def restore():
        for name, param in model.named_parameters():
            param.copy_(original[name])

    for kind, value in candidates:
        start = time.perf_counter()
        mask = select_for_config(fisher_forget, fisher_retain, config, model,
                                 **({"top_fraction": value} if kind == "fraction" else {"threshold": value}))
        try:
            reset_selected_weights(model, mask, config.reset, norm_policy=config.norm_policy, seed=config.seed)
            forget_out, val_out, retain_out = evaluate(splits["forget"]), evaluate(splits["validation"]), evaluate(retain)
        finally:
            restore()  # every candidate starts from, and the caller gets back, the original weights
        mia = mia_loss_lr(forget_out.losses, val_out.losses, seed=config.seed)
        rows.append({
            kind: float(value),
            "selected_fraction": mask.selected_fraction,
            "num_selected": mask.num_selected,
            "threshold_effective": mask.threshold,
            "forget_accuracy": forget_out.accuracy,
            "validation_accuracy": val_out.accuracy,
            "retain_accuracy": retain_out.accuracy,
            "mia_loss_lr": float(mia["accuracy"]),
            "time_s": time.perf_counter() - start,
        })
    return rows


def sweep_markdown(rows: Sequence[Mapping[str, float]], *, validation_source: str, chosen: float | None = None) -> str:
    key = "fraction" if "fraction" in rows[0] else "threshold"
    lines = [
        f"Reset-only sweep (no fine-tune). Validation: {validation_source}.",
        "",
        f"| {key} | weights reset | Acc_Df | Acc_val | Acc_Dr (sample) | MIA (loss LR) | s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = " **(auto)**" if chosen is not None and key == "fraction" and r[key] == chosen else ""
        lines.append(
            f"| {r[key]:g}{mark} | {r['selected_fraction']:.2%} | {r['forget_accuracy']:.3f} | "
            f"{r['validation_accuracy']:.3f} | {r['retain_accuracy']:.3f} | {r['mia_loss_lr']:.3f} | {r['time_s']:.2f} |"
        )
    return "\n".join(lines)

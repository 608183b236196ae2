"""Choosing the threshold without a gold model.

From one Fisher computation, :func:`reset_sweep` resets the top fraction of weights for each
candidate, with no fine-tune, and measures what forward passes alone can tell: forget accuracy,
validation accuracy, retain accuracy on a seeded sample, and the loss MIA between the forget set
and validation data. :func:`choose_top_fraction` picks the smallest fraction that meets a
criterion needing no gold model:

- class forgetting: forget accuracy at or below chance (1 / number of classes);
- sample forgetting and noisy labels: forget-set losses indistinguishable from validation losses
  (loss-MIA accuracy within ``mia_margin`` of 0.5);
- in both: retain accuracy after the reset at least ``retain_floor``, a level the short masked
  fine-tune recovers from;

then one swept step more (``margin_steps``), because the fine-tune restores part of what the reset removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .data import labels_of
from .masking import reset_selected_weights
from .selection import select_parameters

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def is_class_forgetting(forget, retain) -> bool:
    """True when no class of the forget set appears in the retain set."""
    return not set(np.unique(labels_of(forget))) & set(np.unique(labels_of(retain)))


def reset_sweep(
    model: torch.nn.Module,
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    splits: Mapping[str, object],
    *,
    fractions: Sequence[float] | None = None,
    thresholds: Sequence[float] | None = None,
    image_processor=None,
    reset: str = "zero",
    norm_policy: str = "init",
    eps: float = 1e-12,
    exclude: Sequence[str] | None = None,
    retain_sample_size: int | None = 500,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict]:
    """Reset-only models for each fraction (or gamma), evaluated with forward passes only.

    ``splits`` holds ``forget``, ``retain`` and ``validation`` datasets. The model is restored to
    its original weights afterwards. Rows: ``fraction`` or ``threshold``, ``selected_fraction``,
    ``forget_accuracy``, ``validation_accuracy``, ``retain_accuracy``, ``mia_loss_lr``, ``time_s``.
    """
    from .evaluation import collect_outputs, mia_loss_lr, seeded_subset

    if fractions is not None and thresholds is not None:
        raise ValueError("Pass fractions or thresholds, not both.")
    for key in ("forget", "retain", "validation"):
        if key not in splits:
            raise ValueError(f"reset_sweep needs a {key!r} split; got {sorted(splits)}.")
    candidates = [("threshold", t) for t in thresholds] if thresholds is not None else [
        ("fraction", f) for f in (fractions or DEFAULT_FRACTIONS)
    ]
    retain = seeded_subset(splits["retain"], retain_sample_size, seed)
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
        mask = select_parameters(
            fisher_forget, fisher_retain, eps=eps, exclude=exclude,
            **({"top_fraction": value} if kind == "fraction" else {"threshold": value}),
        )
        try:
            reset_selected_weights(model, mask, reset, norm_policy=norm_policy, seed=seed)
            forget_out, val_out, retain_out = evaluate(splits["forget"]), evaluate(splits["validation"]), evaluate(retain)
        finally:
            restore()  # every candidate starts from, and the caller gets back, the original weights
        mia = mia_loss_lr(forget_out.losses, val_out.losses, seed=seed)
        rows.append({
            kind: float(value),
            "selected_fraction": mask.selected_fraction,
            "threshold_effective": mask.threshold,
            "forget_accuracy": float((forget_out.predictions == forget_out.labels).mean()),
            "validation_accuracy": float((val_out.predictions == val_out.labels).mean()),
            "retain_accuracy": float((retain_out.predictions == retain_out.labels).mean()),
            "mia_loss_lr": float(mia["accuracy"]),
            "time_s": time.perf_counter() - start,
        })
    return rows


def choose_top_fraction(
    rows: Sequence[Mapping[str, float]],
    *,
    class_forgetting: bool,
    num_classes: int,
    retain_floor: float = 0.5,
    mia_margin: float = 0.05,
    margin_steps: int = 1,
) -> tuple[float, str]:
    """The smallest swept fraction that meets the no-gold criterion (module doc), plus ``margin_steps``.

    The criterion is judged on reset-only models, but the fine-tune afterwards restores part of what the
    reset removed (on the digits ViT a fraction at 0 % forget accuracy after the reset came back to ~4 %).
    So the choice moves ``margin_steps`` swept values up from the smallest passing one, as long as that
    value still keeps retain accuracy above ``retain_floor``. Returns the fraction and why.
    """
    chance = 1.0 / num_classes
    ordered = sorted(rows, key=lambda r: r["fraction"])
    for i, row in enumerate(ordered):
        if row["retain_accuracy"] < retain_floor:
            continue
        if class_forgetting and row["forget_accuracy"] <= chance:
            why = (f"forget accuracy {row['forget_accuracy']:.3f} <= chance {chance:.3f} and retain accuracy "
                   f"{row['retain_accuracy']:.3f} >= {retain_floor}")
        elif not class_forgetting and abs(row["mia_loss_lr"] - 0.5) <= mia_margin:
            why = (f"loss-MIA {row['mia_loss_lr']:.3f} within {mia_margin} of 0.5 and retain accuracy "
                   f"{row['retain_accuracy']:.3f} >= {retain_floor}")
        else:
            continue
        chosen = row
        for candidate in ordered[i + 1 : i + 1 + max(margin_steps, 0)]:
            if candidate["retain_accuracy"] < retain_floor:
                break
            chosen = candidate
        margin = (f"; {chosen['fraction']:g} keeps a margin of {margin_steps} swept step(s) for the fine-tune's recovery"
                  if chosen is not row else "")
        return chosen["fraction"], f"smallest fraction with {why} is {row['fraction']:g}{margin}"
    largest = max(rows, key=lambda r: r["fraction"])
    return largest["fraction"], (
        "no swept fraction met the criterion; using the largest one. Sweep larger fractions "
        "(hf-deepclean sweep --fractions ...) or lower --auto_retain_floor."
    )


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


def plot_sweep(rows: Sequence[Mapping[str, float]], path) -> None:
    """Accuracies and MIA against the swept fraction (plot extra)."""
    from .plots import _figure, _save

    key = "fraction" if "fraction" in rows[0] else "threshold"
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    xs = [r[key] for r in rows]
    for metric, label in (("forget_accuracy", "Acc_Df"), ("validation_accuracy", "Acc_val"),
                          ("retain_accuracy", "Acc_Dr (sample)"), ("mia_loss_lr", "MIA (loss LR)")):
        ax.plot(xs, [r[metric] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("top fraction reset" if key == "fraction" else "threshold gamma")
    ax.set_ylabel("score")
    ax.set_title("Reset-only sweep (no fine-tune)")
    ax.legend()
    return _save(fig, path)

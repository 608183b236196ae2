"""PNG plots (the ``plot`` extra): Fisher-ratio histogram, weights updated vs gamma, metrics per model.

matplotlib is imported on first use and drawn through its Agg canvas directly, so the user's
pyplot backend and global state are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .selection import DEFAULT_EPS, fisher_ratio, threshold_sweep

_BAR_METRICS = (
    ("retain_accuracy", "Acc D_r"),
    ("forget_accuracy", "Acc D_f"),
    ("test_accuracy", "Acc test"),
    ("mia_loss_lr", "MIA (loss LR)"),
    ("mia_efficacy", "MIA-efficacy"),
)


def new_figure(figsize):
    """A matplotlib Figure on its own Agg canvas (no pyplot); ImportError with the install hint without it."""
    try:  # matplotlib is the optional `plot` extra: imported here, on first use
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'hf-deepclean[plot]'") from err
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return path


def plot_ratio_histogram(
    fisher_forget: Mapping[str, torch.Tensor] | None,
    fisher_retain: Mapping[str, torch.Tensor] | None,
    threshold: float | None,
    path,
    *,
    eps: float = DEFAULT_EPS,
    ratios: Mapping[str, torch.Tensor] | None = None,
    bins: int = 80,
    num_selected: int | None = None,
) -> Path:
    """Histogram of ``r = I_forget / (I_retain + eps)`` over all weights (log x and y) with gamma marked.

    Pass the two Fisher dicts, or ``None, None`` and precomputed ``ratios=``. Ratios of exactly 0
    cannot sit on a log axis: their count is given in the title. ``num_selected``: the selection's own count
    for the legend (a top-fraction cut also takes the weights equal to gamma, so ``r > gamma`` would miss them);
    without it, the weights with ``r > gamma``.
    """
    if ratios is None:
        if fisher_forget is None or fisher_retain is None:
            raise ValueError("plot_ratio_histogram needs fisher_forget and fisher_retain, or ratios=.")
        ratios = fisher_ratio(fisher_forget, fisher_retain, eps=eps)
    flat = torch.cat([r.detach().reshape(-1).double().cpu() for r in ratios.values()])
    if flat.numel() == 0:
        raise ValueError("No ratios to plot: the Fisher dicts are empty.")
    positive = flat[flat > 0]
    zeros = int(flat.numel() - positive.numel())
    fig = new_figure((6, 3.8))
    ax = fig.subplots()
    if positive.numel():
        lo, hi = math.log10(positive.min().item()), math.log10(positive.max().item())
        edges = torch.logspace(lo, hi if hi > lo else lo + 1, bins + 1, dtype=torch.float64).numpy()
        ax.hist(positive.numpy(), bins=edges, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    if threshold is not None and threshold > 0:
        selected = int((flat > threshold).sum()) if num_selected is None else int(num_selected)
        ax.axvline(threshold, color="tab:red", linestyle="--",
                   label=f"gamma = {threshold:.3g}: {selected} weights ({selected / flat.numel():.2%}) selected")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("Fisher ratio I_forget / (I_retain + eps)")
    ax.set_ylabel("weights")
    title = f"Fisher ratios of {flat.numel()} weights"
    ax.set_title(title + (f" ({zeros} of exactly 0 not shown)" if zeros else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_fraction_vs_threshold(fisher_forget, fisher_retain, path, *, eps: float = DEFAULT_EPS, num: int = 50) -> Path:
    """Fraction of weights updated against gamma (:func:`selection.threshold_sweep` + its plot)."""
    return plot_threshold_sweep(threshold_sweep(fisher_forget, fisher_retain, eps=eps, num=num), path)


def plot_metric_bars(report, path) -> Path:
    """Original / gold / unlearned metrics side by side (grouped bars, in %).

    ``report`` is an :class:`~hf_deepclean.evaluation.UnlearningReport` or its ``to_dict()``.
    """
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    models = [(name, data.get(key)) for name, key in (("original", "original"), ("gold", "gold"))]
    models = [(name, values) for name, values in models if values]
    models.append((f"unlearned ({data.get('method') or 'unlearned'})", data.get("metrics") or {}))
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    width = 0.8 / len(models)
    colors = {"original": "tab:gray", "gold": "tab:green"}
    for i, (name, values) in enumerate(models):
        heights = [100 * values[k] if isinstance(values.get(k), (int, float)) else float("nan") for k, _ in _BAR_METRICS]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(_BAR_METRICS))]
        bars = ax.bar(xs, heights, width=width, label=name, color=colors.get(name, "tab:blue"))
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(_BAR_METRICS)), [label for _, label in _BAR_METRICS])
    ax.set_ylabel("%")
    ax.set_ylim(0, 125)  # headroom for the legend above the 100 % bars
    scenario = data.get("scenario")
    ax.set_title("Unlearning vs retraining" + (f" ({scenario} forgetting)" if scenario else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=len(models), frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


def save_plots(output_dir, *, report=None, fisher_forget=None, fisher_retain=None, threshold=None,
               eps: float = DEFAULT_EPS, num_selected: int | None = None) -> list[Path]:
    """Write every plot the inputs allow into ``output_dir``; returns the written paths."""
    out = Path(output_dir)
    written = []
    if fisher_forget is not None and fisher_retain is not None:
        written.append(plot_ratio_histogram(fisher_forget, fisher_retain, threshold, out / "fisher_ratio_histogram.png",
                                            eps=eps, num_selected=num_selected))
        written.append(plot_fraction_vs_threshold(fisher_forget, fisher_retain, out / "fraction_vs_threshold.png", eps=eps))
    if report is not None:
        written.append(plot_metric_bars(report, out / "metrics_comparison.png"))
    return written



def plot_threshold_sweep(sweep: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Plot the fraction of weights updated against gamma (log x axis) and save it to ``path``."""
    fig = new_figure((5, 3.5))
    ax = fig.subplots()
    xs = [s["threshold"] for s in sweep]
    ax.plot(xs, [100 * s["selected_fraction"] for s in sweep], marker="o", markersize=3)
    if all(x > 0 for x in xs):
        ax.set_xscale("log")
    ax.set_xlabel("threshold gamma on I_forget / (I_retain + eps)")
    ax.set_ylabel("weights updated (%)")
    ax.set_title("The higher the threshold, the fewer weights updated")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_reset_sweep(rows: Sequence[Mapping[str, float]], path) -> Path:
    """Accuracies and MIA of :func:`hf_deepclean.sweep.reset_sweep`'s rows against the swept fraction or gamma."""
    key = "fraction" if "fraction" in rows[0] else "threshold"
    fig = new_figure((6, 4))
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
    return save_figure(fig, path)

__all__ = [
    "plot_fraction_vs_threshold",
    "plot_metric_bars",
    "plot_ratio_histogram",
    "plot_reset_sweep",
    "plot_threshold_sweep",
    "save_plots",
]

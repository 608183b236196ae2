"""The audit's plots (the ``plot`` extra): the per-example ε histogram and the worst examples' two populations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..evaluation.forgetting_quality import BUCKET_WIDTH, EPSILON_CAP
from ..plots import new_figure, save_figure
from .settings import PLOT_FILES
from .summary import Population

__all__ = ["plot_epsilon_histogram", "plot_worst_examples", "write_audit_plots"]


def plot_epsilon_histogram(summary: dict, path) -> Path:
    """Histogram of the finite, uncapped per-example ε in the score's buckets of 1/2; ∞ and capped ε counted in
    the title; the edge beyond which an ε scores 0 marked."""
    quality = summary["forget_quality"]
    eps = np.array([math.inf if e == "inf" else e for e in quality["epsilons"]], dtype=np.float64)
    shown = eps[np.isfinite(eps) & (eps != EPSILON_CAP)]
    top = float(quality["max_resolvable_epsilon"])
    edges = np.arange(0.0, max(top, float(shown.max()) if shown.size else 0.0) + BUCKET_WIDTH, BUCKET_WIDTH)
    fig = new_figure((6, 3.6))
    ax = fig.subplots()
    ax.hist(shown, bins=edges, color="tab:blue", alpha=0.85)
    ax.axvline(top, color="tab:red", linestyle="--", label=f"ε >= {top:g} scores 0")
    ax.set_xlabel("per-example ε (unlearned vs retrained)")
    ax.set_ylabel("forget examples")
    ax.set_title(f"ε of {quality['num_examples']} forget examples at N = {quality['num_models']} "
                 f"(F = {quality['score']:.3f})\nnot shown: {quality['num_separated']} separated (ε = ∞), "
                 f"{quality['num_capped']} capped", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_worst_examples(unlearned: Population, retrained: Population, summary: dict, path) -> Path:
    """For the forget examples with the largest ε: each model's confidence, unlearned against retrained."""
    worst = summary["worst_examples"]
    cols = min(3, len(worst))
    rows = math.ceil(len(worst) / cols)
    fig = new_figure((4 * cols, 2.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    jitter = np.random.default_rng(0)
    for ax, row in zip(axes, worst):
        i = row["index"]
        for y, (_name, pop, color) in enumerate((("retrained", retrained, "tab:green"),
                                                 ("unlearned", unlearned, "tab:blue"))):
            values = pop.confidences[:, i]
            ax.scatter(values, y + jitter.uniform(-0.15, 0.15, values.shape), s=10, color=color, alpha=0.7)
        eps = row["epsilon"] if isinstance(row["epsilon"], str) else f"{row['epsilon']:.2f}"
        ax.set_title(f"forget example {i}: ε = {eps}", fontsize=9)
        ax.set_yticks([0, 1], ["retrained", "unlearned"])
        ax.set_ylim(-0.5, 1.5)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(worst):]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel("log p_y - log(1 - p_y)", fontsize=8)
    return save_figure(fig, path)


def write_audit_plots(out, unlearned: Population, retrained: Population, summary: dict, log=print) -> list[Path]:
    """Both plots into ``out``; without matplotlib, a line saying so and none."""
    try:
        return [plot_epsilon_histogram(summary, Path(out) / PLOT_FILES[0]),
                plot_worst_examples(unlearned, retrained, summary, Path(out) / PLOT_FILES[1])]
    except ImportError as exc:  # matplotlib is an optional extra
        log(f"(plots skipped: {exc}; --plots false turns them off)")
        return []

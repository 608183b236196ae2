"""The benchmark summary: mean +- std over seeds per (model, scenario, method), as markdown, JSON and a plot."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import numpy as np
import torch
import transformers

from .common import SETTINGS_FILE, read_json, write_json

SUMMARY_MARKDOWN = "benchmark.md"
SUMMARY_JSON = "benchmark.json"
SUMMARY_PLOT = "benchmark.png"

# (column, key in the summary row, shown as a percentage, signed)
COLUMNS = (
    ("Acc_Dr", "retain_accuracy", True, False),
    ("Acc_Df", "forget_accuracy", True, False),
    ("ΔAcc_Df", "delta_forget_accuracy", True, True),
    ("Acc_test", "test_accuracy", True, False),
    ("ΔAcc_test", "delta_test_accuracy", True, True),
    ("MIA", "mia_efficacy", True, False),
    ("ΔMIA", "delta_mia_efficacy", True, True),
    ("Gap", "gap", True, False),
    ("Seconds", "time_s", False, False),
    ("× retrain", "time_ratio", False, False),
)


def cell_values(cell: dict) -> dict[str, float | None]:
    """The numbers one cell contributes to its row."""
    metrics, deltas, bench = cell["metrics"], cell.get("deltas") or {}, cell.get("benchmark", {})
    values = {key: metrics.get(key)
              for key in ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_efficacy", "mia_loss_lr")}
    for key in ("forget_accuracy", "test_accuracy", "mia_efficacy", "mia_loss_lr"):
        values[f"delta_{key}"] = deltas.get(key)
    parts = [deltas.get(k) for k in ("forget_accuracy", "test_accuracy", "mia_efficacy")]
    values["gap"] = sum(abs(p) for p in parts) if all(isinstance(p, (int, float)) for p in parts) else None
    values["time_s"] = bench.get("time_s")
    values["time_ratio"] = bench.get("time_ratio")
    return values


def _mean_std(values: list) -> dict:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def aggregate(cells: list[dict], methods: list[str], scenarios: list[str] | None = None) -> list[dict]:
    """One row per (model, scenario, method): mean, std and count over seeds of every value.

    Rows come in ``scenarios`` order, then models in order of appearance, then ``methods`` order.
    """
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        key = (cell["benchmark"]["model"], cell["scenario"], cell["method"])
        groups.setdefault(key, []).append(cell)
    order = {m: i for i, m in enumerate(methods)}
    scenario_order = {s: i for i, s in enumerate(scenarios or sorted({c["scenario"] for c in cells}))}
    model_order = {m: i for i, m in enumerate(dict.fromkeys(c["benchmark"]["model"] for c in cells))}

    def position(item):
        model, scenario, method = item[0]
        return scenario_order.get(scenario, len(scenario_order)), model_order[model], order.get(method, len(order))

    rows = []
    for (model, scenario, method), group in sorted(groups.items(), key=position):
        values = [cell_values(c) for c in group]
        rows.append({
            "model": model, "scenario": scenario, "method": method,
            "seeds": sorted(c["benchmark"]["seed"] for c in group),
            "stats": {key: _mean_std([v[key] for v in values]) for key in values[0]},
            "gold_time_s": _mean_std([c["benchmark"].get("gold_time_s") for c in group]),
        })
    return rows


def _format(stat: dict, percent: bool, signed: bool) -> str:
    if stat["mean"] is None:
        return "—"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else (2 if stat["mean"] < 100 else 0)
    sign = "+" if signed else ""
    text = f"{scale * stat['mean']:{sign}.{digits}f}"
    return text + (f" ± {scale * stat['std']:.{digits}f}" if stat["n"] > 1 else "")


def to_markdown(rows: list[dict], bench) -> str:
    lines = [
        "# Unlearning benchmark",
        "",
        f"Mean ± std over seeds {list(bench.seeds)}; accuracies and MIA in %; Δ = method − gold (retrained on D_r); "
        "Gap = |ΔAcc_Df| + |ΔAcc_test| + |ΔMIA|; MIA = MIA-efficacy (share of D_f an attacker calls non-member); "
        "× retrain = unlearning seconds / gold retraining seconds."
        + (" **--quick budget: smoke test, not results.**" if bench.quick else ""),
    ]
    sections: dict[tuple, list[dict]] = {}
    for row in rows:
        sections.setdefault((row["scenario"], row["model"]), []).append(row)
    header = "| Method | " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|---|" + "|".join("---:" for _ in COLUMNS) + "|"
    for (scenario, model), section in sections.items():
        gold = section[0]["gold_time_s"]["mean"]
        lines += ["", f"## {scenario} — {model}" + (f" (retrain: {gold:.1f} s)" if gold else ""), "", header, rule]
        for row in section:
            cells = [_format(row["stats"][key], pct, signed) for _, key, pct, signed in COLUMNS]
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_summary(rows: list[dict], path: Path) -> Path:
    """Gap to gold against time / retrain time, one panel per (scenario, model)."""
    try:  # matplotlib is an optional extra ([plot])
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("The benchmark plot needs matplotlib: pip install 'hf-deepclean[plot]'") from err
    panels = list(dict.fromkeys((r["scenario"], r["model"]) for r in rows))
    scenarios = list(dict.fromkeys(s for s, _ in panels))
    models = list(dict.fromkeys(m for _, m in panels))
    fig = Figure(figsize=(4.2 * len(models), 3.4 * len(scenarios)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(scenarios), len(models), squeeze=False)
    floor = 1e-3  # "did nothing" takes 0 s: drawn at the left edge of the log axis
    for (scenario, model) in panels:
        ax = axes[scenarios.index(scenario)][models.index(model)]
        for row in (r for r in rows if r["scenario"] == scenario and r["model"] == model):
            x, y = row["stats"]["time_ratio"]["mean"], row["stats"]["gap"]["mean"]
            if x is None or y is None:
                continue
            x = max(x, floor)
            ax.scatter([x], [100 * y], s=18)
            ax.annotate(row["method"], (x, 100 * y), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(f"{scenario} — {model}", fontsize=9)
        ax.set_xlabel("time / retrain time", fontsize=8)
        ax.set_ylabel("gap to gold (%)", fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    return path


def write_summary(out: Path, cells: list[dict], bench, *, plot: bool = True) -> dict:
    """Write benchmark.md / benchmark.json (and benchmark.png); returns the JSON dict plus ``markdown``."""
    rows = aggregate(cells, list(bench.methods), list(bench.scenarios))
    markdown = to_markdown(rows, bench)
    summary = {
        "settings": read_json(out / SETTINGS_FILE),
        "methods": list(bench.methods), "scenarios": list(bench.scenarios), "seeds": list(bench.seeds),
        "environment": run_environment(bench),
        "rows": rows,
    }
    write_json(out / SUMMARY_JSON, summary)
    (out / SUMMARY_MARKDOWN).write_text(markdown, encoding="utf-8")
    if plot:
        try:
            plot_summary(rows, out / SUMMARY_PLOT)
        except ImportError as err:
            print(f"warning: {err}; benchmark.png not drawn.")
    return dict(summary, markdown=markdown)


def run_environment(bench) -> dict:
    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }

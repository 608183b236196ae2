"""The population comparison's judgement and table: every method against the same N retrains.

Each method's N runs are judged like an audit (:func:`hf_deepclean.audit.summarize`): F at N vs N, F of its first
N/2 runs against the retrains' second half beside the retrains' own F at N/2 vs N/2 (the reference), the final score,
accuracies and seconds as mean and spread. The retrain row is the reference itself. The targets restate the earlier
single-gold targets against the population:

- ``forget``, ``test``: the method's mean accuracy lies in the retrains' 95 % range, mean ± 1.96 std of the N
  retrains (at least one example's worth of accuracy either side);
- ``F``: F at N/2 vs N/2 is at least 0.9x the retrains' reference;
- ``time``: mean seconds at most 0.15x the retrains' mean.
"""

from __future__ import annotations

from pathlib import Path

from ..audit import Population, summarize
from .common import SETTINGS_FILE, read_json, write_json
from .summary import run_environment

POPULATION_MARKDOWN = "population.md"
POPULATION_JSON = "population.json"
TARGETS = {
    "forget": "mean Acc_Df within the retrains' mean ± 1.96 std",
    "test": "mean Acc_test within the retrains' mean ± 1.96 std",
    "F": "F (N/2 vs N/2) >= 0.9 x the retrains' reference",
    "time": "mean seconds <= 0.15 x the retrains' mean",
}
F_RATIO, TIME_RATIO, Z95 = 0.9, 0.15, 1.96

__all__ = ["POPULATION_JSON", "POPULATION_MARKDOWN", "TARGETS", "judge", "targets_met", "write_population_summary"]


def judge(unlearned: Population, retrained: Population, method: str) -> dict:
    """The audit summary of ``unlearned`` against ``retrained`` without the per-example lists; for the retrains
    themselves (the same object) only the reference is a score (F of a population against itself says nothing)."""
    summary = summarize(unlearned, retrained, method=method)
    summary["forget_quality"].pop("epsilons", None)
    summary.pop("worst_examples", None)
    if unlearned is retrained:
        summary["forget_score"] = summary["final_score"] = None
    return summary


def _in_range(mean: float, reference: dict, size: int) -> bool:
    half_width = max(Z95 * reference["std"], 1.0 / max(size, 1))
    return abs(mean - reference["mean"]) <= half_width + 1e-12


def targets_met(row: dict, retrain: dict) -> dict[str, bool | None]:
    """Which of :data:`TARGETS` one method's judgement meets (``None``: not measurable at this N)."""
    accuracy, retrained = row["accuracy"]["unlearned"], row["accuracy"]["retrained"]
    half, ref = row["reference"]["unlearned_vs_retrained"], row["reference"]["retrained_vs_retrained"]
    sizes = row.get("split_sizes", {})
    return {
        "forget": _in_range(accuracy["forget"]["mean"], retrained["forget"], sizes.get("forget", 0)),
        "test": _in_range(accuracy["test"]["mean"], retrained["test"], sizes.get("test", 0)),
        "F": None if half is None or ref is None else half["score"] >= F_RATIO * ref["score"],
        "time": row["time_s"]["unlearned"]["mean"] <= TIME_RATIO * retrain["time_s"]["unlearned"]["mean"],
    }


def _pct(spread: dict) -> str:
    return f"{100 * spread['mean']:.1f} ± {100 * spread['std']:.1f}"


def _score(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def section_markdown(judged: dict, methods: list[str]) -> list[str]:
    """One table: a row per method of one (model, scenario, seed)."""
    retrain = judged["methods"]["retrain"]
    ref = retrain["reference"]
    n, half = retrain["num_models"], ref["num_models"]
    lines = [f"### {judged['scenario']} — {judged['model']} (original seed {judged['seed']}; N = {n}; "
             f"retrains: {retrain['time_s']['unlearned']['mean']:.1f} s each)", "",
             f"| Method | F ({n} vs {n}) | F ({half} vs {half}) | Final score | Acc_Df % | Acc_test % | Acc_Dr % | "
             "Seconds | × retrain | Targets met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for method in ["retrain"] + [m for m in methods if m != "retrain"]:
        row = judged["methods"].get(method)
        if row is None:
            continue
        acc, times = row["accuracy"]["unlearned"], row["time_s"]["unlearned"]
        half_score = row["reference"]["retrained_vs_retrained" if method == "retrain" else "unlearned_vs_retrained"]
        ratio = times["mean"] / retrain["time_s"]["unlearned"]["mean"]
        met = row.get("targets", {})
        shown = "reference" if method == "retrain" else (", ".join(k for k, v in met.items() if v) or "none")
        lines.append(f"| {method} | {_score(row['forget_score'])} | {_score(half_score and half_score['score'])} | "
                     f"{_score(row['final_score'])} | {_pct(acc['forget'])} | {_pct(acc['test'])} | "
                     f"{_pct(acc['retain'])} | {times['mean']:.1f} | {ratio:.2f} | {shown} |")
    return lines


def write_population_summary(out: Path, bench, sections: list[dict]) -> dict:
    """Add the targets to each (model, scenario, seed)'s judgement, write population.{json,md}; returns the JSON
    dict plus ``markdown``."""
    for judged in sections:
        retrain = judged["methods"]["retrain"]
        for method, row in judged["methods"].items():
            if method != "retrain":
                row["targets"] = targets_met(row, retrain)
    lines = ["# Unlearning benchmark against a population of retrains", "",
             f"Each method ran {bench.population_models} times from one original per (model, scenario) against "
             f"{bench.population_models} retrains on D_r (distinct seeds). F: the NeurIPS 2023 unlearning "
             "competition's forget score (1: no forget example's confidence tells the populations apart; 0: every "
             "one does); at N/2 vs N/2 it is read against the retrains' own value (the retrain row). Final score: F "
             "x (RA_U/RA_R) x (TA_U/TA_R). Accuracies: mean ± std over the N models. Targets: "
             + "; ".join(f"**{k}**: {v}" for k, v in TARGETS.items()) + "."
             + (" **--quick budget: smoke test, not results.**" if bench.quick else "")]
    for judged in sections:
        lines += [""] + section_markdown(judged, list(bench.methods))
    markdown = "\n".join(lines) + "\n"
    summary = {"settings": read_json(out / SETTINGS_FILE), "num_models": bench.population_models,
               "methods": list(bench.methods), "scenarios": list(bench.scenarios), "seeds": list(bench.seeds),
               "targets": TARGETS, "environment": run_environment(bench), "sections": sections}
    write_json(out / POPULATION_JSON, summary)
    (out / POPULATION_MARKDOWN).write_text(markdown, encoding="utf-8")
    return dict(summary, markdown=markdown)

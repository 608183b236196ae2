"""What an audit's two populations show: the forget score against the retrains, their own reference, accuracies.

Pure numpy on arrays (no model is run here), so constructed populations can be judged like real ones. The inputs are
two :class:`Population` objects, the unlearned runs and the retrains, each with the logit-scaled confidence of every
forget example under every model and each model's accuracies and seconds; :func:`summarize` gives the JSON-safe
summary that ``audit.json`` holds, :func:`summary_markdown` the words of ``audit.md``.

The retrains' reference: F of the first half of the retrains (by seed) against the second half, at N/2 models each,
the best this N can show (two populations of one distribution do not score 1: the maximum over all decision rules
picks up chance differences in the tails). So that the comparison is like for like, the unlearned population is
also scored at N/2: its first half against the same second half of the retrains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..evaluation.forgetting_quality import DELTA, EPSILON_CAP, forgetting_quality

SPLITS = ("retain", "forget", "test")
NUM_WORST = 6

__all__ = ["NUM_WORST", "SPLITS", "Population", "reference_halves", "summarize", "summary_markdown"]


@dataclass
class Population:
    """One population of an audit: ``seeds`` [N], ``confidences`` [N, num_forget] (logit-scaled, per forget
    example), ``accuracies`` {split: [N]} for ``retain``/``forget``/``test``, ``times`` [N] (the method's or the
    training's own seconds per model)."""

    seeds: list
    confidences: np.ndarray
    accuracies: dict
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.seeds)

    def take(self, index: slice) -> Population:
        return Population(list(self.seeds)[index], self.confidences[index],
                          {k: np.asarray(v)[index] for k, v in self.accuracies.items()}, np.asarray(self.times)[index])


def _spread(values) -> dict:
    """Mean, sample standard deviation (ddof 1; 0 for one model), min, max and the values themselves."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max()), "values": values.tolist()}


def _seed_range(seeds) -> str:
    seeds = [int(s) for s in seeds]
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(str(s) for s in seeds)


def reference_halves(unlearned: Population, retrained: Population, delta: float = DELTA) -> dict:
    """The retrains' own F at N/2 vs N/2 (first half of the retrains against the second) and the unlearned
    population's first half against the same second half; ``None`` scores with a reason when N/2 < 3."""
    half = min(len(unlearned), len(retrained)) // 2
    out = {"num_models": half, "retrained_vs_retrained": None, "unlearned_vs_retrained": None,
           "retrained_first_seeds": _seed_range(retrained.seeds[:half]) if half else "",
           "retrained_second_seeds": _seed_range(retrained.seeds[half:2 * half]) if half else "",
           "unlearned_seeds": _seed_range(unlearned.seeds[:half]) if half else ""}
    if half < 3:
        out["reason"] = (f"N = {min(len(unlearned), len(retrained))} gives halves of {half} model{'s' if half != 1 else ''}; the forget score "
                         "needs at least 3 per population, so the reference needs N >= 6")
        return out
    second = retrained.confidences[half:2 * half]
    for key, first in (("retrained_vs_retrained", retrained.confidences[:half]),
                       ("unlearned_vs_retrained", unlearned.confidences[:half])):
        quality = forgetting_quality(first, second, delta=delta)
        summary = quality.to_dict()
        del summary["epsilons"]
        out[key] = summary
    return out


def summarize(unlearned: Population, retrained: Population, *, delta: float = DELTA, num_worst: int = NUM_WORST,
              method: str = "unlearned") -> dict:
    """F of ``unlearned`` against ``retrained`` (N each), the competition's final score from means over models,
    the retrains' reference at N/2, the accuracies and seconds of both populations with their spread, and the
    forget examples the populations tell apart best. JSON-safe except ``epsilons`` may hold the string "inf"."""
    if len(unlearned) != len(retrained):
        raise ValueError(f"{len(unlearned)} unlearned models but {len(retrained)} retrains: an audit compares N with N")
    quality = forgetting_quality(unlearned.confidences, retrained.confidences, delta=delta)
    accuracy = {name: {split: _spread(pop.accuracies[split]) for split in SPLITS}
                for name, pop in (("unlearned", unlearned), ("retrained", retrained))}
    ratios = {split: accuracy["unlearned"][split]["mean"] / accuracy["retrained"][split]["mean"]
              if accuracy["retrained"][split]["mean"] > 0 else None for split in ("retain", "test")}
    order = np.argsort(-np.minimum(quality.epsilons, 2 * EPSILON_CAP), kind="stable")[:num_worst]
    worst = [{"index": int(i), "epsilon": "inf" if math.isinf(quality.epsilons[i]) else float(quality.epsilons[i]),
              "unlearned_median": float(np.median(unlearned.confidences[:, i])),
              "retrained_median": float(np.median(retrained.confidences[:, i]))} for i in order]
    summary = {
        "method": method,
        "num_models": len(unlearned),
        "num_forget_examples": quality.num_examples,
        "unlearned_seeds": _seed_range(unlearned.seeds),
        "retrained_seeds": _seed_range(retrained.seeds),
        "forget_score": quality.score,
        "forget_quality": quality.to_dict(),
        "final_score": None if None in ratios.values() else quality.score * ratios["retain"] * ratios["test"],
        "accuracy_ratios": ratios,
        "reference": reference_halves(unlearned, retrained, delta),
        "accuracy": accuracy,
        "time_s": {"unlearned": _spread(unlearned.times), "retrained": _spread(retrained.times)},
        "worst_examples": worst,
    }
    summary["statement"] = statement(summary)
    return summary


def statement(summary: dict) -> str:
    """The audit in words a reader can check against audit.json (used by audit.md, the report and the card)."""
    n, ref = summary["num_models"], summary["reference"]
    text = (f"F = {summary['forget_score']:.3f} at N = {n} ({summary['method']}: {n} unlearned runs against {n} "
            f"retrains, {summary['num_forget_examples']} forget examples)")
    if ref["retrained_vs_retrained"] is None:
        return text + f"; no reference of retrains among themselves ({ref['reason']})."
    half = ref["num_models"]
    return (text + f", against {ref['retrained_vs_retrained']['score']:.3f} for retrains among themselves "
            f"(N = {half} vs {half}: retrain seeds {ref['retrained_first_seeds']} against "
            f"{ref['retrained_second_seeds']}). Like for like at N = {half} vs {half}, the unlearned runs of seeds "
            f"{ref['unlearned_seeds']} against the same retrains {ref['retrained_second_seeds']} score "
            f"{ref['unlearned_vs_retrained']['score']:.3f}.")


def _pct_spread(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} [{100 * s['min']:.2f}, {100 * s['max']:.2f}]"


def summary_markdown(summary: dict, *, settings_lines=(), plots=()) -> str:
    """``audit.md``: the statement, the scores, accuracies and seconds with their spread, the worst examples."""
    ref, fq = summary["reference"], summary["forget_quality"]
    lines = [f"## Audit: {summary['method']} against a population of retrains", "", summary["statement"], "",
             "| Score | Value | Models |", "|---|---:|---|",
             f"| F, unlearned vs retrained | {summary['forget_score']:.4f} | {summary['num_models']} vs "
             f"{summary['num_models']} |"]
    if ref["retrained_vs_retrained"] is not None:
        half = ref["num_models"]
        lines += [f"| F, retrains vs retrains (reference) | {ref['retrained_vs_retrained']['score']:.4f} | {half} vs "
                  f"{half} |",
                  f"| F, unlearned vs retrained, same retrains | {ref['unlearned_vs_retrained']['score']:.4f} | "
                  f"{half} vs {half} |"]
    ratios = summary["accuracy_ratios"]
    if summary["final_score"] is not None:
        lines.append(f"| Final score F x (RA_U/RA_R) x (TA_U/TA_R) | {summary['final_score']:.4f} | RA ratio "
                     f"{ratios['retain']:.4f}, TA ratio {ratios['test']:.4f} (means over models) |")
    lines += ["",
              f"Per-example ε at N = {summary['num_models']}: {fq['num_separated']} of {fq['num_examples']} forget "
              f"examples perfectly separated (ε = ∞), {fq['num_capped']} capped (one population nearly constant); "
              f"ε at or above {fq['max_resolvable_epsilon']:g} scores 0. F is 1 when no rule tells the populations "
              "apart on any example (ε < 1/2) and 0 when every example is separated; retrains among themselves do "
              "not reach 1 at a given N, so F is read against their value at the same N. The halves are one split "
              "of the seeds: another split would move both half-N values.", "",
              "| Accuracy (%): mean ± std [min, max] | Unlearned | Retrained |", "|---|---|---|"]
    for split in SPLITS:
        lines.append(f"| {split} | {_pct_spread(summary['accuracy']['unlearned'][split])} | "
                     f"{_pct_spread(summary['accuracy']['retrained'][split])} |")
    times = summary["time_s"]
    lines += ["", f"Seconds per model (the method's or the training's own): unlearned {times['unlearned']['mean']:.1f} "
              f"± {times['unlearned']['std']:.1f}, retrained {times['retrained']['mean']:.1f} ± "
              f"{times['retrained']['std']:.1f}. Seeds: unlearned {summary['unlearned_seeds']}, retrained "
              f"{summary['retrained_seeds']}.", "",
              "| Forget example (index in D_f) | ε | median confidence, unlearned | median confidence, retrained |",
              "|---:|---:|---:|---:|"]
    for row in summary["worst_examples"]:
        eps = row["epsilon"] if isinstance(row["epsilon"], str) else f"{row['epsilon']:.3f}"
        lines.append(f"| {row['index']} | {eps} | {row['unlearned_median']:.3f} | {row['retrained_median']:.3f} |")
    lines += ["", "Confidence: log p_y - log(1 - p_y) of the example's label."]
    if settings_lines:
        lines += ["", "Settings:", ""] + [f"- {line}" for line in settings_lines]
    if plots:
        lines += ["", "Plots: " + ", ".join(str(p) for p in plots)]
    return "\n".join(lines) + "\n"

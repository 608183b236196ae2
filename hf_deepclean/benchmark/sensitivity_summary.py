"""Summary of ``hf-deepclean benchmark --sensitivity``: passing windows, markdown, JSON and curves."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

# The quality targets against the gold model.
TOLERANCES = {"forget_accuracy": 0.02, "test_accuracy": 0.01}
# The targets for the comparison.
TARGETS = {"deepclean_window_ratio": 4.0, "fast_vs_ssd_time_ratio": 1.5}


def passes(row: dict) -> bool:
    """|ΔAcc_Df| <= 0.02 and |ΔAcc_test| <= 0.01 against gold (a missing delta fails)."""
    return all(
        isinstance(row.get(f"delta_{k}"), (int, float)) and abs(row[f"delta_{k}"]) <= tol + 1e-9
        for k, tol in TOLERANCES.items()
    )


def passing_window(rows: list[dict], key: str = "value") -> dict:
    """The largest and smallest ``key`` values whose rows pass, their ratio, and whether the run is unbroken.

    ``ratio`` is ``high / low`` (1.0 for a single passing value, ``None`` when none passes);
    ``contiguous`` is False when a value between ``low`` and ``high`` fails.
    """
    ordered = sorted(rows, key=lambda r: r[key])
    passing = [r[key] for r in ordered if passes(r)]
    if not passing:
        return {"low": None, "high": None, "ratio": None, "contiguous": None, "passing": [], "failing_inside": []}
    low, high = passing[0], passing[-1]
    inside = [r[key] for r in ordered if low <= r[key] <= high and not passes(r)]
    return {
        "low": low, "high": high, "ratio": high / low if low > 0 else math.inf,
        "contiguous": not inside, "passing": passing, "failing_inside": inside,
    }


def mean_rows(cells: list[dict]) -> list[dict]:
    """Cells averaged over seeds: one row per (model, scenario, method, budget, value)."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["model"], c["scenario"], c["method"], c.get("budget"), c["value"])].append(c)
    rows = []
    for (model, scenario, method, budget, value), group in groups.items():
        row = {"model": model, "scenario": scenario, "method": method, "budget": budget, "value": value,
               "param": group[0]["param"], "seeds": sorted(c["seed"] for c in group)}
        for k in ("forget_accuracy", "test_accuracy", "retain_accuracy", "delta_forget_accuracy",
                  "delta_test_accuracy", "gold_forget_accuracy", "time_s"):
            values = [c[k] for c in group if isinstance(c.get(k), (int, float))]
            row[k] = sum(values) / len(values) if values else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["model"], r["scenario"], r["method"], r["budget"] or 0, r["value"]))


def windows(rows: list[dict]) -> list[dict]:
    """One passing window per (model, scenario, method, budget)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["scenario"], r["method"], r["budget"])].append(r)
    return [
        {"model": m, "scenario": s, "method": method, "budget": b, "param": g[0]["param"], **passing_window(g)}
        for (m, s, method, b), g in groups.items()
    ]


def budget_windows(rows: list[dict]) -> list[dict]:
    """One passing window over the fine-tune budget (epochs) per (model, scenario, method, fraction).

    The other axis of DeepClean's sensitivity: for a fraction, how far the number of epochs may stray and still
    land on gold. Methods without a budget (SSD) have none.
    """
    groups = defaultdict(list)
    for r in rows:
        if r["budget"] is not None:
            groups[(r["model"], r["scenario"], r["method"], r["value"])].append(r)
    return [
        {"model": m, "scenario": s, "method": method, "value": v, "param": "num_train_epochs",
         **passing_window(g, key="budget")}
        for (m, s, method, v), g in sorted(groups.items())
    ]


def seed_windows(cells: list[dict]) -> list[dict]:
    """One passing window per (model, scenario, method, budget, seed): each point judged against its own seed's gold.

    The seed-mean windows above answer "which value works for every model like these"; these answer "which values
    work for this model", the question ``top_fraction=auto`` answers per model without a gold one.
    """
    groups = defaultdict(list)
    for c in cells:
        groups[(c["model"], c["scenario"], c["method"], c.get("budget"), c["seed"])].append(c)
    return [
        {"model": m, "scenario": s, "method": method, "budget": b, "seed": seed, "param": g[0]["param"],
         **passing_window(g)}
        for (m, s, method, b, seed), g in sorted(groups.items(), key=lambda kv: (*kv[0][:3], kv[0][3] or 0, kv[0][4]))
    ]


def _fmt(value, pct: bool = False, signed: bool = False) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value * 100:+.1f}" if signed else (f"{value * 100:.1f}" if pct else f"{value:g}")


def _window_text(w: dict) -> str:
    if w["low"] is None:
        return "none"
    text = f"{w['low']:g} – {w['high']:g} ({w['ratio']:.1f}x)"
    return text if w["contiguous"] else text + f", fails at {', '.join(f'{v:g}' for v in w['failing_inside'])}"


def to_markdown(summary: dict) -> str:
    lines = [
        "# Sensitivity",
        "",
        "Passing = |ΔAcc_Df| ≤ 2 points and |ΔAcc_test| ≤ 1 point against the gold model, on the mean over seeds "
        f"{summary['seeds']}. Window = smallest – largest passing value (width = their ratio). DeepClean: top "
        "fraction per fine-tune budget (epochs); SSD: alpha. Targets: DeepClean's window ≥ 4x on both models, "
        "`top_fraction=auto` inside it, the fast preset ≤ 1.5x SSD's time at equal quality.",
        "",
        "## Passing windows",
        "",
        "| Model | Scenario | Method | Budget | Hyperparameter | Window | auto |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in summary["windows"]:
        lines.append(f"| {w['model']} | {w['scenario']} | {w['method']} | {_fmt(w['budget'])} | {w['param']} | "
                     f"{_window_text(w)} | {w.get('auto_text', '')} |")
    if summary.get("budget_windows"):
        lines += _budget_window_lines(summary["budget_windows"])
    if summary.get("noise_floor"):
        lines += ["", "## Noise floor: the gold model retrained with another seed", "",
                  "The same D_r, the same recipe, another seed for the initial weights and the batch order, judged "
                  "against each seed's gold like every point above: how far two retrains differ. Where it fails, "
                  "the targets are tighter than retraining itself can meet.", "",
                  "| Model | Scenario | ΔAcc_Df / ΔAcc_test per seed | mean ΔAcc_Df / ΔAcc_test | passes (mean) "
                  "| seeds passing |", "|---|---|---|---|---|---|"]
        for n in summary["noise_floor"]:
            per_seed = ", ".join(f"{_fmt(p['delta_forget_accuracy'], signed=True)} / "
                                 f"{_fmt(p['delta_test_accuracy'], signed=True)}" for p in n["per_seed"])
            lines.append(f"| {n['model']} | {n['scenario']} | {per_seed} | "
                         f"{_fmt(n['delta_forget_accuracy'], signed=True)} / "
                         f"{_fmt(n['delta_test_accuracy'], signed=True)}"
                         f" | {'yes' if n['passes_mean'] else 'no'} | {n['passes_per_seed']}/{len(n['per_seed'])} |")
    if summary.get("seed_windows"):
        lines += ["", "## Windows per seed (each seed against its own gold)", "",
                  "| Model | Scenario | Method | Budget | Hyperparameter | " + " | ".join(
                      f"seed {seed}" for seed in summary["seeds"]) + " |",
                  "|---|---|---|---|---|" + "---|" * len(summary["seeds"])]
        per_key = defaultdict(dict)
        for w in summary["seed_windows"]:
            per_key[(w["model"], w["scenario"], w["method"], w["budget"], w["param"])][w["seed"]] = w
        for (model, scenario, method, budget, param), by_seed in per_key.items():
            cells = [_window_text(by_seed[seed]) if seed in by_seed else "—" for seed in summary["seeds"]]
            lines.append(f"| {model} | {scenario} | {method} | {_fmt(budget)} | {param} | " + " | ".join(cells) + " |")
    lines += ["", "## top_fraction=auto, run whole (first choice, fine-tune, verification, retries)", "",
              "Validation: a seeded half of the test split. *Passes*: the auto run's own model against this seed's "
              "gold; *held out*: the same on the other half of the test split only (the model's and gold's accuracy "
              "there), which the run never saw, not even to choose when to stop; *in window*: its fraction inside "
              "the seed-mean window at the default budget; *in its seed's*: inside this seed's own window at that "
              "budget.", "",
              "| Model | Scenario | Seed | First choice | Fine-tuned (verified?) | Chosen | ΔAcc_Df / ΔAcc_test "
              "| passes | ΔAcc_test held out | passes held out | in window | in its seed's | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in summary["auto"]:
        tried = ", ".join(
            f"{t['top_fraction']:g} ({'yes' if t['passed'] else 'not recovered' if t.get('collapsed') else 'no'})"
            for t in a.get("attempts", []))
        if a.get("refit") is not None:
            tried += f"; none verified, {a['refit']:g} fine-tuned again (closest)"
        lines.append(f"| {a['model']} | {a['scenario']} | {a['seed']} | {_fmt(a.get('start'))} | {tried} | "
                     f"{_fmt(a['chosen'])} | {_fmt(a.get('delta_forget_accuracy'), signed=True)} / "
                     f"{_fmt(a.get('delta_test_accuracy'), signed=True)} | {'yes' if a['passes'] else 'no'} | "
                     f"{_fmt(a.get('delta_heldout_test_accuracy'), signed=True)} | "
                     f"{'—' if a.get('passes_heldout') is None else ('yes' if a['passes_heldout'] else 'no')} | "
                     f"{'yes' if a['inside'] else 'no'} | "
                     f"{'—' if a.get('inside_own') is None else ('yes' if a['inside_own'] else 'no')} | "
                     f"{_fmt(a.get('time_s') and round(a['time_s'], 2))} |")
    lines += ["", "## Fast preset vs SSD at its tuned alpha (best passing alpha of the sweep, else least gap)", "",
              "| Model | Scenario | Seed | SSD alpha | SSD s | SSD ΔAcc_Df / ΔAcc_test | fast s "
              "| fast ΔAcc_Df / ΔAcc_test | fast passes | time ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f in summary["fast_vs_ssd"]:
        s, d = f["ssd"], f["fast"]
        lines.append(
            f"| {f['model']} | {f['scenario']} | {f['seed']} | {_fmt(f['alpha'])} | {s['time_s']:.2f} | "
            f"{_fmt(s['delta_forget_accuracy'], signed=True)} / {_fmt(s['delta_test_accuracy'], signed=True)} | "
            f"{d['time_s']:.2f} | {_fmt(d['delta_forget_accuracy'], signed=True)} / "
            f"{_fmt(d['delta_test_accuracy'], signed=True)} | {'yes' if passes(d) else 'no'} | {f['time_ratio']:.2f} |")
    lines += ["", "## Curves (mean over seeds; Δ in points)", "",
              "| Model | Scenario | Method | Budget | Value | Acc_Df | ΔAcc_Df | Acc_test | ΔAcc_test | passes | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(
            f"| {r['model']} | {r['scenario']} | {r['method']} | {_fmt(r['budget'])} | {r['value']:g} | "
            f"{_fmt(r['forget_accuracy'], pct=True)} | {_fmt(r['delta_forget_accuracy'], signed=True)} | "
            f"{_fmt(r['test_accuracy'], pct=True)} | {_fmt(r['delta_test_accuracy'], signed=True)} | "
            f"{'yes' if passes(r) else ''} | {_fmt(r['time_s'] and round(r['time_s'], 2))} |")
    return "\n".join(lines) + "\n"


def _budget_window_lines(budget_wins: list[dict]) -> list[str]:
    """A (model, scenario, method) row per line, a fraction per column: the passing range of epochs."""
    fractions = sorted({w["value"] for w in budget_wins})
    lines = ["", "## Passing windows over the fine-tune budget", "",
             "The same points read along the other axis: for each top fraction, the smallest – largest number of "
             "fine-tune epochs that passes (width = their ratio).", "",
             "| Model | Scenario | Method | " + " | ".join(f"top {f:g}" for f in fractions) + " |",
             "|---|---|---|" + "---|" * len(fractions)]
    by_key = defaultdict(dict)
    for w in budget_wins:
        by_key[(w["model"], w["scenario"], w["method"])][w["value"]] = w
    for (model, scenario, method), by_value in by_key.items():
        cells = [_window_text(by_value[f]) if f in by_value else "—" for f in fractions]
        lines.append(f"| {model} | {scenario} | {method} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict], path: Path) -> Path:
    """Acc_Df and ΔAcc_test against the hyperparameter, one panel per (model, scenario, method)."""
    # matplotlib is an optional extra ([plot])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = sorted({(r["model"], r["scenario"], r["method"]) for r in rows})
    cols = 2
    fig = Figure(figsize=(5.5 * cols, 3.2 * math.ceil(len(panels) / cols)))
    FigureCanvasAgg(fig)
    for i, (model, scenario, method) in enumerate(panels):
        ax = fig.add_subplot(math.ceil(len(panels) / cols), cols, i + 1)
        mine = [r for r in rows if (r["model"], r["scenario"], r["method"]) == (model, scenario, method)]
        for budget in sorted({r["budget"] for r in mine}, key=lambda b: b or 0):
            line = sorted((r for r in mine if r["budget"] == budget), key=lambda r: r["value"])
            label = f" ({budget:g} ep)" if budget is not None else ""
            xs = [r["value"] for r in line]
            ax.plot(xs, [r["forget_accuracy"] for r in line], "o-", label=f"Acc_Df{label}")
            ax.plot(xs, [r["delta_test_accuracy"] for r in line], "s--", label=f"ΔAcc_test{label}")
        gold = mine[0].get("gold_forget_accuracy")
        if isinstance(gold, (int, float)):
            ax.axhline(gold, color="grey", lw=0.8, ls=":", label="gold Acc_Df")
        ax.axhspan(-TOLERANCES["test_accuracy"], TOLERANCES["test_accuracy"], color="green", alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel(mine[0]["param"])
        ax.set_title(f"{method} — {model} — {scenario}", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def noise_floor_rows(points: list[dict]) -> list[dict]:
    """Per (model, scenario): the reseeded gold models' deltas against gold, per seed and as the seed mean."""
    groups = defaultdict(list)
    for p in points:
        groups[(p["model"], p["scenario"])].append(p)
    rows = []
    for (model, scenario), group in sorted(groups.items()):
        group = sorted(group, key=lambda p: p["seed"])
        mean = {k: sum(p[k] for p in group) / len(group) for k in ("delta_forget_accuracy", "delta_test_accuracy")}
        rows.append({"model": model, "scenario": scenario, "seeds": [p["seed"] for p in group], **mean,
                     "per_seed": [{k: p[k] for k in ("seed", "delta_forget_accuracy", "delta_test_accuracy")}
                                  for p in group],
                     "passes_mean": passes(mean), "passes_per_seed": sum(passes(p) for p in group)})
    return rows


def summarize(cells: list[dict], autos: list[dict], fast: list[dict], seeds: list[int], default_budget: float,
              noise_floor: list[dict] = ()) -> dict:
    """Windows over the seed means; each ``auto`` run judged on its own deltas and against DeepClean's window at
    ``default_budget``; the reseeded gold models' deltas as the noise floor."""
    rows = mean_rows(cells)
    wins = windows(rows)
    per_seed = seed_windows(cells)
    for a in autos:
        w = next((w for w in wins if (w["model"], w["scenario"], w["method"], w["budget"])
                  == (a["model"], a["scenario"], "deepclean", default_budget)), None)
        a["inside"] = _within(w, a["chosen"])
        own = next((w for w in per_seed if (w["model"], w["scenario"], w["method"], w["budget"], w["seed"])
                    == (a["model"], a["scenario"], "deepclean", default_budget, a["seed"])), None)
        a["inside_own"] = _within(own, a["chosen"]) if own is not None else None
        a["passes"] = passes(a)  # the auto run's own model against this seed's gold
        if "delta_heldout_test_accuracy" in a:  # results written before the held-out half was measured have none
            a["passes_heldout"] = passes({**a, "delta_test_accuracy": a["delta_heldout_test_accuracy"]})
    for w in wins:
        if w["method"] == "deepclean" and w["budget"] == default_budget:
            chosen = [a for a in autos if (a["model"], a["scenario"]) == (w["model"], w["scenario"])]
            w["auto_text"] = ", ".join(
                f"{_fmt(a['chosen'])} ({'passes' if a['passes'] else 'fails'}, {'in' if a['inside'] else 'out'})"
                for a in chosen)
    return {"seeds": seeds, "tolerances": TOLERANCES, "targets": TARGETS, "rows": rows, "windows": wins,
            "budget_windows": budget_windows(rows), "seed_windows": per_seed, "auto": autos, "fast_vs_ssd": fast,
            "noise_floor": noise_floor_rows(list(noise_floor))}


def _within(window: dict | None, value) -> bool:
    return bool(window and window["low"] is not None and value is not None and window["low"] <= value <= window["high"])

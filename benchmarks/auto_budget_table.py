"""Compare `top_fraction=auto` runs across fine-tune budgets, from the sensitivity benchmark's outputs.

Each argument is LABEL=PATH to a `sensitivity.json` written by `hf-deepclean benchmark --sensitivity` (one run per
budget, e.g. with `--sensitivity_auto_overrides '{"early_stopping_patience": 2, "num_train_epochs": 8}'`). For each
model and scenario it prints, per budget, how many seeds' auto models pass against their gold model on the whole
test split and on the held-out half only, how many forgot as gold did (|ΔAcc_Df| within the forget tolerance), how
many auto itself reported as verified, and the mean seconds of an auto run (Fisher included):

    .venv/bin/python benchmarks/auto_budget_table.py fixed2=/tmp/budget_fixed2/sensitivity.json \\
        stop_loss=/tmp/budget_stop_loss/sensitivity.json
"""

from __future__ import annotations

import json
import sys


def _cell(autos: list[dict], forget_tolerance: float) -> str:
    if not autos:
        return "not run"
    whole = sum(a["passes"] for a in autos)
    held = [a["passes_heldout"] for a in autos if a.get("passes_heldout") is not None]
    forgot = sum(abs(a["delta_forget_accuracy"]) <= forget_tolerance for a in autos)
    verified = sum(bool(a["verified"]) for a in autos)
    seconds = sum(a["time_s"] for a in autos) / len(autos)
    return (f"{whole}/{len(autos)}, {sum(held)}/{len(held)} held out; forgot {forgot}/{len(autos)}, "
            f"verified {verified}/{len(autos)}; {seconds:.1f} s")


def main(arguments: list[str]) -> None:
    if not arguments or any("=" not in a for a in arguments):
        sys.exit(__doc__)
    results = {label: json.load(open(path, encoding="utf-8")) for label, path in (a.split("=", 1) for a in arguments)}
    runs = {label: result["auto"] for label, result in results.items()}
    forget_tolerance = next(iter(results.values()))["tolerances"]["forget_accuracy"]
    keys = sorted({(a["model"], a["scenario"]) for autos in runs.values() for a in autos}, reverse=True)
    print("| Model, scenario | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for model, scenario in keys:
        cells = [_cell([a for a in autos if (a["model"], a["scenario"]) == (model, scenario)], forget_tolerance)
                 for autos in runs.values()]
        print(f"| {model}, {scenario} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])

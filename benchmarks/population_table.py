"""Print the condensed population table (BENCHMARKS.md, README) from `hf-deepclean benchmark --population_models N`.

    .venv/bin/python benchmarks/population_table.py runs/pop8/population.json

Per scenario, one row per method and per model: F at N/2 vs N/2 (the retrain row: the retrains' own reference),
ΔAcc_Df and ΔAcc_test of the means against the retrains' means (points), × retrain (mean seconds over the retrains'
mean), and the targets met (f: forget, t: test, F, s: time).
"""

import json
import sys

SHORT = {"forget": "f", "test": "t", "F": "F", "time": "s"}


def cells(row: dict, retrain: dict, method: str) -> list[str]:
    ref = row["reference"]
    half = ref["retrained_vs_retrained" if method == "retrain" else "unlearned_vs_retrained"]
    mine, theirs = row["accuracy"]["unlearned"], retrain["accuracy"]["unlearned"]
    ratio = row["time_s"]["unlearned"]["mean"] / retrain["time_s"]["unlearned"]["mean"]
    met = "ref" if method == "retrain" else ("".join(SHORT[k] for k, v in row["targets"].items() if v) or "—")
    return [f"{half['score']:.3f}" if half else "—",
            f"{100 * (mine['forget']['mean'] - theirs['forget']['mean']):+.1f}",
            f"{100 * (mine['test']['mean'] - theirs['test']['mean']):+.1f}", f"{ratio:.2f}", met]


def main(path: str) -> None:
    data = json.load(open(path, encoding="utf-8"))
    n = data["num_models"]
    for scenario in data["scenarios"]:
        sections = [s for s in data["sections"] if s["scenario"] == scenario]
        models = [s["model"] for s in sections]
        labels = [f"F {n // 2}v{n // 2}", "ΔAcc_Df", "ΔAcc_test", "× retrain", "met"]
        print(f"\n**{scenario}** (N = {n}; Δ: the method's mean minus the retrains' mean, in points)\n")
        print("| Method | " + " | ".join(f"{m} {label}" for m in models for label in labels) + " |")
        print("|---|" + "---:|" * (len(models) * len(labels)))
        for method in ["retrain"] + [m for m in data["methods"] if m != "retrain"]:
            row = []
            for section in sections:
                judged = section["methods"].get(method)
                row += cells(judged, section["methods"]["retrain"], method) if judged else ["—"] * len(labels)
            print(f"| {method} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])

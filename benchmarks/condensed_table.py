"""Print the README's condensed benchmark table from a finished `hf-deepclean benchmark` run.

    .venv/bin/python benchmarks/condensed_table.py benchmark_results/benchmark.json
"""

import json
import sys

COLUMNS = (("delta_forget_accuracy", "ΔAcc_Df"), ("delta_test_accuracy", "ΔAcc_test"), ("delta_mia_efficacy", "ΔMIA"))


def main(path: str) -> None:
    data = json.load(open(path, encoding="utf-8"))
    rows = data["rows"]
    for scenario in data["scenarios"]:
        models = sorted({r["model"] for r in rows if r["scenario"] == scenario}, reverse=True)
        print(f"\n**{scenario}** (mean over seeds {data['seeds']}; Δ in points vs gold; gap = sum of |Δ|)\n")
        labels = [label for _, label in COLUMNS + (("gap", "gap"), ("time_ratio", "× retrain"))]
        header = "| Method | " + " | ".join(f"{m} {label}" for m in models for label in labels) + " |"
        print(header)
        print("|---|" + "---:|" * (len(models) * (len(COLUMNS) + 2)))
        for method in data["methods"]:
            cells = []
            for model in models:
                key = (model, scenario, method)
                row = next((r for r in rows if (r["model"], r["scenario"], r["method"]) == key), None)
                if row is None:
                    cells += ["—"] * (len(COLUMNS) + 2)
                    continue
                stats = row["stats"]
                deltas = [100 * stats[key]["mean"] for key, _ in COLUMNS]
                cells += [f"{d:+.1f}" for d in deltas]
                cells.append(f"{sum(abs(d) for d in deltas):.1f}")
                ratio = stats.get("time_ratio", {}).get("mean")
                cells.append(f"{ratio:.2f}" if ratio is not None else "—")
            print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmark_results/benchmark.json")

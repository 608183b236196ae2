"""Issue #10's end-to-end check: on digits, ``top_fraction="auto"`` lands in DeepClean's passing window.

The window is the benchmark's: the top fractions whose DeepClean model, at the default fine-tune
budget and averaged over seeds 0-2, is within 2 points of the gold model on Acc_Df and within 1 point
on test accuracy. This runs the sensitivity benchmark for real (originals and gold models trained for
the benchmark's 20 epochs, ~10 min on 2 cores), then checks where each seed's auto run landed.

Measured (BENCHMARKS.md): class forgetting is inside the window on every seed, on both models; for noisy
labels no fraction passes at the default budget (2 epochs), so there is no window to land in: those
cases are expected failures, strict, so that the day they pass this test says so. With the no-gold budget rule
(early stopping on validation loss, at most 8 epochs) the ResNet's auto runs on noisy labels reach their gold
models: checked on seeds 0-2 by rerunning only the auto points in the same folder. On the ViT's noisy labels auto's
aimed retries forget the wrong labels on most seeds, though no window exists there.
"""

import json
from pathlib import Path

import pytest

from hf_deepclean.commands import benchmark as bench_mod
from hf_deepclean.commands.benchmark_sensitivity_summary import passes

NO_NOISY_WINDOW = pytest.mark.xfail(
    strict=True, reason="measured: no top fraction passes for noisy labels at the default 2-epoch fine-tune "
    "(ResNet passes only at 0.5 with 4-8 epochs; the ViT nowhere up to 0.5), so auto cannot land in a window")


@pytest.fixture(scope="module")
def sensitivity(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto_window")
    argv = ["--sensitivity", "--architectures", "vit", "resnet", "--scenarios", "class", "noisy_labels",
            "--seeds", "0", "1", "2", "--sensitivity_fractions", "0.02", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5",
            "--sensitivity_epochs", "2", "--sensitivity_alphas", "10", "--sensitivity_timing_repeats", "3",
            "--plot", "false", "--output_dir", str(out)]
    assert bench_mod.run(argv) == 0
    return {**json.loads((out / "sensitivity.json").read_text()), "argv": argv}


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("model, scenario", [
    ("vit", "class"), ("resnet", "class"),
    pytest.param("vit", "noisy_labels", marks=NO_NOISY_WINDOW),
    pytest.param("resnet", "noisy_labels", marks=NO_NOISY_WINDOW),
])
def test_auto_lands_in_the_passing_window(sensitivity, model, scenario):
    window = next(w for w in sensitivity["windows"]
                  if (w["model"], w["scenario"], w["method"]) == (model, scenario, "deepclean"))
    autos = [a for a in sensitivity["auto"] if (a["model"], a["scenario"]) == (model, scenario)]
    assert len(autos) == 3
    assert window["low"] is not None, f"no passing window: {window}"
    for auto in autos:
        assert auto["verified"], auto["attempts"]
        assert window["low"] <= auto["chosen"] <= window["high"], (auto["seed"], auto["chosen"], window)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_aimed_retries_forget_the_vits_wrong_labels(sensitivity):
    """Measured (BENCHMARKS.md, six seeds, 2 epochs): since auto's retries aim where the trend of the last two
    attempts meets the tolerance, the ViT's wrong labels are forgotten as gold forgets them, and verified, on 5/6
    seeds (seeds 0-2: 0 and 1; seed 2 ends 0.1 point over the tolerance), against 2/6 (seeds 0-2: 1) when each retry
    stepped to the next swept fraction."""
    autos = [a for a in sensitivity["auto"] if (a["model"], a["scenario"]) == ("vit", "noisy_labels")]
    assert len(autos) == 3
    forgotten = [a for a in autos if a["verified"]]
    assert len(forgotten) >= 2, [(a["seed"], a["attempts"]) for a in autos]
    for auto in forgotten:
        assert abs(auto["delta_forget_accuracy"]) <= sensitivity["tolerances"]["forget_accuracy"], auto["seed"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_fast_preset_reaches_gold_on_the_resnet_near_ssds_time(sensitivity):
    """Measured (BENCHMARKS.md): on the digits ResNet, class 3, the fast preset (batch Fisher on 512 samples, top 5 %,
    30 steps) passes on 9 of 9 seeds in 1.06-1.32x the time of SSD at its tuned alpha (target <= 1.5x). The time
    bound here is looser (2x, the best of 3 timed runs each) so that a busy CI machine cannot fail it by noise;
    the quality bar is the benchmark's."""
    pairs = [p for p in sensitivity["fast_vs_ssd"] if (p["model"], p["scenario"]) == ("resnet", "class")]
    assert len(pairs) == 3
    for pair in pairs:
        assert passes(pair["fast"]), (pair["seed"], pair["fast"])
        assert pair["time_ratio"] <= 2.0, (pair["seed"], pair["time_ratio"])


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_budget_rule_brings_the_resnets_noisy_label_auto_runs_to_gold(sensitivity):
    """Measured (BENCHMARKS.md, six seeds): with --early_stopping_patience 2 --num_train_epochs 8 the ResNet's auto
    runs on mislabeled samples pass against gold on 6/6 seeds (5/6 on the held-out test half), against 2/6 with the
    default 2 epochs; on seeds 0-2: 3/3, and 2/3 on the held-out half (seed 0 is 2 images short there)."""
    budget = '{"early_stopping_patience": 2, "num_train_epochs": 8}'
    argv = sensitivity["argv"]
    argv = argv[:argv.index("--architectures")] + ["--architectures", "resnet", "--scenarios", "noisy_labels"] + \
        argv[argv.index("--seeds"):] + ["--sensitivity_auto_overrides", budget]
    assert bench_mod.run(argv) == 0
    out = argv[argv.index("--output_dir") + 1]
    autos = json.loads((Path(out) / "sensitivity.json").read_text())["auto"]
    assert [a["seed"] for a in autos] == [0, 1, 2] and all(a["early_stopping_epochs_run"] > 2 for a in autos)
    for auto in autos:
        assert auto["verified"] and passes(auto), (auto["seed"], auto["delta_forget_accuracy"], auto["delta_test_accuracy"])
    assert sum(a["passes_heldout"] for a in autos) >= 2, [a["delta_heldout_test_accuracy"] for a in autos]

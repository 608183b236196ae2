"""Issue #10's end-to-end check: on digits, ``top_fraction="auto"`` picks a fraction that works for the model at hand.

This runs the sensitivity benchmark for real (originals and gold models trained for the benchmark's 20 epochs), then
checks each seed's auto run. It runs only the points the assertions below read (``POINTS``; the sweep's other points,
the ViT's grid and the reseeded gold models of the noise floor among them, are the benchmark's to report), over a
grid that covers auto's own candidates from 0.5 % where a window is asserted, with the (model, seed) groups in two
processes.

What is asserted is what held on both machines this was measured on (BENCHMARKS.md, "The same checks on another
machine"): the trained models differ between CPUs, and with them the seed-mean windows. Auto adapts per model: on an
AMD EPYC the ViT of seed 1 forgets class 3 with a 1 % reset while seed 0 needs 15 %, so the seed-mean window (15-20 %)
leaves out choices that are right for their own model. So:

- class forgetting, both models: every auto run is verified and forgets as the gold model does;
- the ResNet (whose retrains agree within 0.8 test points): each choice lies in its own seed's window and the model
  passes against its gold;
- the ViT: its test accuracy stays within 3 points of gold's, the spread of retraining it (a second retrain misses
  its gold by up to 2.8 points, and the test split's 95 % interval alone spans 3.3-4.4 points); the issue's 1-point
  target is reported, met or missed, by the benchmark, not asserted here;
- noisy labels: whether a window exists at the default budget differs between machines (the ViT's 0.5 alone on one,
  none on the other), so it is not asserted; what holds on both is asserted below: the ViT's wrong labels are forgotten
  by auto's aimed retries, and the ResNet's auto runs reach gold with the no-gold budget rule.
"""

import json

import pytest

from hf_deepclean.arguments import DataArguments, ModelArguments, parse_arguments
from hf_deepclean.benchmark.arguments import BenchmarkArguments, SensitivityArguments
from hf_deepclean.benchmark.sensitivity import run_sensitivity
from hf_deepclean.benchmark.sensitivity_summary import passes

DEFAULT_BUDGET = 2.0  # epochs: DeepClean's default fine-tune, the budget auto runs with here
VIT_TEST_SPREAD = 0.03  # the ViT retrain-to-retrain spread on test accuracy, rounded up (see the docstring)
SEEDS = ["0", "1", "2"]
# What each test below reads, and nothing more. The ResNet's class scenario: the grid (its seed windows), SSD at
# the one alpha swept (the tuned alpha of the timed pair) and the timed pair; the ResNet's noisy labels: only its
# models here (trained alongside the others), its auto run comes with the budget rule in the last test.
POINTS = {
    ("resnet", "class"): ("deepclean", "ssd", "auto", "fast_vs_ssd"),
    ("resnet", "noisy_labels"): (),
    ("vit", "class"): ("auto",),
    ("vit", "noisy_labels"): ("auto",),
}
BUDGET_RULE = '{"early_stopping_patience": 2, "num_train_epochs": 8}'


def _run(out, architectures, scenarios, points, *extra):
    """``hf-deepclean benchmark --sensitivity`` with this file's settings, run on ``points`` only."""
    argv = ["--sensitivity", "--architectures", *architectures, "--scenarios", *scenarios, "--seeds", *SEEDS,
            "--sensitivity_fractions", "0.005", "0.01", "0.02", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5",
            "--sensitivity_epochs", str(DEFAULT_BUDGET), "--sensitivity_alphas", "10",
            "--sensitivity_timing_repeats", "3", "--num_workers", "2", "--plot", "false", "--output_dir", str(out),
            *extra]
    model_args, data_args, bench, sens = parse_arguments(
        (ModelArguments, DataArguments, BenchmarkArguments, SensitivityArguments), argv)
    run_sensitivity(model_args, data_args, bench, sens, points=points)
    return json.loads((out / "sensitivity.json").read_text())


@pytest.fixture(scope="module")
def sensitivity(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto_window")
    # the ViT's groups first: they take longest (slower trainings, longer auto runs), the ResNet's fill in after
    return {**_run(out, ["vit", "resnet"], ["class", "noisy_labels"], POINTS), "out": out}


def _autos(sensitivity, model: str, scenario: str) -> list[dict]:
    autos = [a for a in sensitivity["auto"] if (a["model"], a["scenario"]) == (model, scenario)]
    assert [a["seed"] for a in autos] == [0, 1, 2]
    return autos


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_auto_forgets_the_class_as_gold_does(sensitivity, model):
    tolerance = sensitivity["tolerances"]["forget_accuracy"]
    for auto in _autos(sensitivity, model, "class"):
        assert auto["verified"], (auto["seed"], auto["attempts"])
        assert abs(auto["delta_forget_accuracy"]) <= tolerance, (auto["seed"], auto["delta_forget_accuracy"])


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_auto_lands_in_its_own_models_window_on_the_resnet(sensitivity):
    for auto in _autos(sensitivity, "resnet", "class"):
        window = next(w for w in sensitivity["seed_windows"]
                      if (w["model"], w["scenario"], w["method"], w["budget"], w["seed"])
                      == ("resnet", "class", "deepclean", DEFAULT_BUDGET, auto["seed"]))
        assert window["low"] is not None and window["low"] <= auto["chosen"] <= window["high"], (auto["seed"], window)
        assert passes(auto), (auto["seed"], auto["delta_forget_accuracy"], auto["delta_test_accuracy"])


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_auto_keeps_the_vits_test_accuracy_within_retrainings_spread(sensitivity):
    for auto in _autos(sensitivity, "vit", "class"):
        assert abs(auto["delta_test_accuracy"]) <= VIT_TEST_SPREAD, (auto["seed"], auto["chosen"],
                                                                    auto["delta_test_accuracy"])


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
    autos = _run(sensitivity["out"], ["resnet"], ["noisy_labels"], {("resnet", "noisy_labels"): ("auto",)},
                 "--sensitivity_auto_overrides", BUDGET_RULE)["auto"]
    assert [a["seed"] for a in autos] == [0, 1, 2] and all(a["early_stopping_epochs_run"] > 2 for a in autos)
    for auto in autos:
        assert auto["verified"] and passes(auto), (auto["seed"], auto["delta_forget_accuracy"],
                                                   auto["delta_test_accuracy"])
    assert sum(a["passes_heldout"] for a in autos) >= 2, [a["delta_heldout_test_accuracy"] for a in autos]

"""Issue #10's end-to-end check: on digits, ``top_fraction="auto"`` lands in DeepClean's passing window.

The window is the benchmark's: the top fractions whose DeepClean model, at the default fine-tune
budget and averaged over seeds 0-2, is within 2 points of the gold model on Acc_Df and within 1 point
on test accuracy. This runs the sensitivity benchmark for real (originals and gold models trained for
the benchmark's 20 epochs, ~10 min on 2 cores), then checks where each seed's auto run landed.

Measured (BENCHMARKS.md): class forgetting is inside the window on every seed, on both models; for noisy
labels no fraction passes at the default budget (2 epochs), so there is no window to land in: those
cases are expected failures, strict, so that the day they pass this test says so.
"""

import json

import pytest

from hf_deepclean.commands import benchmark as bench_mod

NO_NOISY_WINDOW = pytest.mark.xfail(
    strict=True, reason="measured: no top fraction passes for noisy labels at the default 2-epoch fine-tune "
    "(ResNet passes only at 0.5 with 4-8 epochs; the ViT nowhere up to 0.5), so auto cannot land in a window")


@pytest.fixture(scope="module")
def sensitivity(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto_window")
    argv = ["--sensitivity", "--architectures", "vit", "resnet", "--scenarios", "class", "noisy_labels",
            "--seeds", "0", "1", "2", "--sensitivity_fractions", "0.02", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5",
            "--sensitivity_epochs", "2", "--sensitivity_alphas", "10", "--sensitivity_timing_repeats", "1",
            "--plot", "false", "--output_dir", str(out)]
    assert bench_mod.run(argv) == 0
    return json.loads((out / "sensitivity.json").read_text())


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

"""The speed scripts in benchmarks/ still run and print every figure the README quotes (tiny settings; no timing
asserted)."""

import json
import subprocess
import sys

import pytest

from _two_processes import ROOT, subprocess_env


def _run(script, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT / "benchmarks",
                          env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.timeout(300)
def test_mask_kernels_script_times_both_kernels():
    out = _run("mask_kernels.py", "--model", "tiny-resnet", "--iterations", "5", "--device", "cpu")
    for kernels in ("per_tensor:", "multi_tensor:"):
        line = next(line for line in out.splitlines() if line.startswith(kernels))
        assert "gradient masking" in line and "restore" in line and "ms per step" in line


@pytest.mark.timeout(300)
def test_trainer_overhead_script_compares_both_kernels_with_the_plain_step():
    out = _run("trainer_overhead.py", "--model", "tiny-resnet", "--steps", "4", "--repeats", "1", "--device", "cpu")
    assert "plain Trainer step:" in out
    for kernels in ("per_tensor", "multi_tensor"):
        assert f"masked DeepClean step, {kernels}:" in out and "masked / plain" in out


def test_auto_budget_table_counts_passes_forgetting_and_verification(tmp_path):
    def auto(seed, passes, passes_heldout, time_s, delta_forget=0.0, verified=True):
        return {"model": "resnet", "scenario": "noisy_labels", "seed": seed, "passes": passes,
                "passes_heldout": passes_heldout, "time_s": time_s, "delta_forget_accuracy": delta_forget,
                "verified": verified}

    tolerances = {"forget_accuracy": 0.02, "test_accuracy": 0.01}
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"tolerances": tolerances, "auto": [
        auto(0, True, False, 2.0), auto(1, False, False, 3.0, delta_forget=0.05, verified=False)]}))
    stop = tmp_path / "stop.json"
    stop.write_text(json.dumps({"tolerances": tolerances, "auto": [
        auto(0, True, True, 5.0), auto(1, True, None, 7.0, delta_forget=-0.02),
        {**auto(0, False, False, 4.0), "model": "vit"}]}))
    out = _run("auto_budget_table.py", f"fixed2={fixed}", f"stop={stop}")
    assert "| Model, scenario | fixed2 | stop |" in out
    assert ("| resnet, noisy_labels | 1/2, 0/2 held out; forgot 1/2, verified 1/2; 2.5 s | "
            "2/2, 1/1 held out; forgot 2/2, verified 2/2; 6.0 s |") in out
    assert "| vit, noisy_labels | not run | 0/1, 0/1 held out; forgot 1/1, verified 1/1; 4.0 s |" in out


def test_forget_fisher_variants_relabel_the_forget_set_and_run_the_sensitivity_benchmark(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import torch

        from forget_fisher_variants import main, relabeled
        from hf_deepclean.images import TensorImageDataset
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    forget = TensorImageDataset(torch.tensor([[0.0], [1.0]]), [1, 2])
    uniform, others = relabeled(forget, 3, "uniform"), relabeled(forget, 3, "others")
    assert uniform.labels.tolist() == [0, 1, 2, 0, 1, 2] and uniform.pixel_values[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert others.labels.tolist() == [0, 2, 0, 1] and others.pixel_values[:, 0].tolist() == [0, 0, 1, 1]
    _run("forget_fisher_variants.py", "uniform", "--sensitivity", "--quick", "--architectures", "vit", "--seeds", "0",
         "--scenarios", "class", "--sensitivity_fractions", "0.15", "--sensitivity_epochs", "0.5",
         "--sensitivity_alphas", "10", "--sensitivity_timing_repeats", "1", "--no_plot", "--output_dir", str(tmp_path))
    rows = json.loads((tmp_path / "sensitivity.json").read_text())["rows"]
    assert [(r["method"], r["value"]) for r in rows] == [("deepclean", 0.15), ("ssd", 10)]
    # An unknown variant: sys.exit(usage), i.e. the usage on stderr and exit status 1 (checked in this process: a
    # second interpreter would spend its seconds importing torch to print one line).
    with pytest.raises(SystemExit) as stopped:
        main(["expected"])
    usage = stopped.value.code
    assert isinstance(usage, str) and "usage: forget_fisher_variants.py {uniform,others,margin,normalised}" in usage


def test_forget_fisher_variants_weight_each_samples_squared_gradient():
    """Logistic regression: d log p(y|x) / dW = (e_y - p) x^T, so both weightings have closed forms."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import torch

        from _fisher_models import LogisticRegression
        from forget_fisher_variants import weighted_fisher
        from hf_deepclean.images import TensorImageDataset
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    torch.manual_seed(0)
    model = LogisticRegression(3, 4)
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    data = TensorImageDataset(x, y)
    p = torch.softmax(model.linear(x), -1).detach()
    residual = torch.nn.functional.one_hot(y, 4).double() - p                      # d log p / d logits
    weight_sq = residual[:, :, None].square() * x[:, None, :].square()              # per-sample squared dW
    bias_sq = residual.square()
    p_label = p.gather(1, y[:, None])[:, 0]
    margin = 1 / (1 - p_label).square()
    fisher = weighted_fisher(model, data, "margin", chunk_size=2)                   # chunks cross sample borders
    torch.testing.assert_close(fisher["linear.weight"].double(), (weight_sq * margin[:, None, None]).mean(0),
                               rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(fisher["linear.bias"].double(), (bias_sq * margin[:, None]).mean(0),
                               rtol=1e-5, atol=1e-8)
    norm = weight_sq.flatten(1).sum(1) + bias_sq.sum(1)
    fisher = weighted_fisher(model, data, "normalised", chunk_size=2)
    torch.testing.assert_close(fisher["linear.weight"].double(), (weight_sq / norm[:, None, None]).mean(0),
                               rtol=1e-5, atol=1e-8)
    # every sample weighs 1 in all: the normalised Fisher sums to 1 over all weights
    assert abs(sum(float(f.double().sum()) for f in fisher.values()) - 1) < 1e-5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_paper_scale_script_runs_unlearns_code_path_at_its_small_setting(tmp_path):
    """issue 25: the paper-scale run's --small setting, on CPU: PNG images through the image processor, the
    Fisher on D_f and D_r, 10 % selected, one masked fine-tune epoch, the retrain estimate; every figure printed."""
    out = _run("paper_scale.py", "--small", "--output", str(tmp_path / "paper_scale.json"))
    for label in ("Fisher D_f + D_r", "masked fine-tune 1 ep", "DeepClean end to end", "plain training epoch",
                  "retrain estimate", "speed-up vs retrain", "accelerator utilisation"):
        assert label in out, out
    figures = json.loads((tmp_path / "paper_scale.json").read_text())
    assert figures["images"] == 240 and figures["forget"] == 60 and figures["retain"] == 180
    assert abs(figures["selected_fraction"] - 0.1) < 1e-3
    assert figures["deepclean_total_s"] >= figures["fisher_s"] > 0 and figures["train_epoch_s"] > 0
    assert abs(figures["speedup_vs_retrain"] * figures["deepclean_total_s"] - figures["retrain_estimate_s"]) < 1e-6


@pytest.mark.timeout(300)
def test_data_path_script_prints_the_transform_to_model_ratio():
    """issue 25: images/s of the transform against the model's Fisher and training samples/s, per worker count."""
    out = _run("data_path.py", "--model", "tiny-vit", "--images", "64", "--batch_size", "16", "--chunk_size", "8",
               "--workers", "0", "1", "--device", "cpu")
    assert "image processor backend pil" in out  # no torchvision here
    assert "Fisher (empirical, per sample)" in out and "samples/s" in out
    lines = [line for line in out.splitlines() if line.startswith("transform with")]
    assert [line.split()[2] for line in lines] == ["0", "1"] and all("x the Fisher pass" in line for line in lines)

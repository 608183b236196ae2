"""The speed scripts in benchmarks/ still run and print every figure the README quotes (tiny settings; no timing asserted)."""

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

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import _fisher_dist_worker as worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_cpu_processes_match_one(tmp_path):
    """37 samples, batch 4: the shards are uneven, so padded duplicates would show."""
    out = tmp_path / "fisher.pt"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(Path(worker.__file__)), str(out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    distributed = torch.load(out)
    single = worker.compute()
    for estimator, fisher in single.items():
        scale = max(v.abs().max().item() for v in fisher.values())
        for name, value in fisher.items():
            torch.testing.assert_close(distributed[estimator][name], value, rtol=1e-6, atol=1e-6 * scale,
                                       msg=f"{estimator} {name}")

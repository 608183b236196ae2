import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import _fisher_dist_worker as worker  # noqa: E402
from _two_processes import run_two_cpu_processes  # noqa: E402


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_cpu_processes_match_one(tmp_path):
    """37 samples, batch 4: the shards are uneven, so padded duplicates would show."""
    out = tmp_path / "fisher.pt"
    run_two_cpu_processes(worker.__file__, str(out))
    distributed = torch.load(out)
    single = worker.compute()
    for estimator, fisher in single.items():
        scale = max(v.abs().max().item() for v in fisher.values())
        for name, value in fisher.items():
            torch.testing.assert_close(distributed[estimator][name], value, rtol=1e-6, atol=1e-6 * scale,
                                       msg=f"{estimator} {name}")

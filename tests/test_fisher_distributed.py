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
    """37 samples, batch 4: the shards are uneven, so padded duplicates would show. Also the pass of
    fisher_max_samples="auto" (seeded order, snapshots, a stop rule): it stops at the same sample with the same
    Fisher on two processes as on one."""
    out = tmp_path / "fisher.pt"
    run_two_cpu_processes(worker.__file__, str(out))
    distributed = torch.load(out)
    single = worker.compute()
    calls, distributed_calls = single.pop("auto_stop_calls"), distributed.pop("auto_stop_calls")
    # the auto stop: the same snapshots (samples over all processes), the same running Fisher at each, the same stop
    assert [samples for samples, _ in calls] == [samples for samples, _ in distributed_calls] == [8, 16]
    for (_, one), (_, two) in zip(calls, distributed_calls):
        assert two == pytest.approx(one, rel=1e-6)
    for estimator, fisher in single.items():
        scale = max(v.abs().max().item() for v in fisher.values())
        for name, value in fisher.items():
            torch.testing.assert_close(distributed[estimator][name], value, rtol=1e-6, atol=1e-6 * scale,
                                       msg=f"{estimator} {name}")

"""Launched on 2 CPU processes by test_fisher_distributed.py: Fisher through accelerate, saved by the main process."""

import os
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(__file__))
from _fisher_models import random_dataset, tiny_vit  # noqa: E402
from hf_deepclean.fisher import fisher_diagonal  # noqa: E402

NUM_SAMPLES, BATCH_SIZE, ESTIMATORS = 37, 4, ("empirical", "batch", "expected")


def compute(accelerator=None):
    model, data = tiny_vit(), random_dataset(NUM_SAMPLES, (3, 16, 16), 4, seed=5)
    kw = dict(batch_size=BATCH_SIZE, accelerator=accelerator, dtype=torch.float64, show_progress=False)
    result = {est: fisher_diagonal(model, data, estimator=est, **kw) for est in ESTIMATORS}
    # fisher_max_samples="auto"'s pass: seeded order, a snapshot every 2 batches (over all processes), stopped by a
    # rule on the running Fisher; the samples it reads, where it stops and what it returns must not depend on the
    # number of processes
    calls = []

    def stop_once_settled(fisher, samples):
        calls.append((samples, float(fisher["classifier.bias"].sum())))
        return samples >= 16

    result["auto_stop"] = fisher_diagonal(model, data, estimator="empirical", seed=3, stop_when=stop_once_settled,
                                          snapshot_batches=2, **kw)
    result["auto_stop_calls"] = calls
    return result


if __name__ == "__main__":
    accelerator = Accelerator()
    assert accelerator.num_processes == 2, accelerator.num_processes
    result = compute(accelerator)
    gathered = accelerator.gather(result["empirical"]["classifier.bias"][None])
    assert torch.equal(gathered[0], gathered[1]), "processes disagree"
    if accelerator.is_main_process:
        torch.save(result, sys.argv[1])
    accelerator.wait_for_everyone()

"""Launched on 2 CPU processes by test_evaluation.py: collect_outputs through accelerate, saved by the main process."""

import os
import sys

import numpy as np
import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(__file__))
from _fisher_models import random_dataset, tiny_vit  # noqa: E402
from hf_deepclean.evaluation import collect_outputs  # noqa: E402

NUM_SAMPLES, BATCH_SIZE = 37, 4


def compute(accelerator=None):
    model, data = tiny_vit(), random_dataset(NUM_SAMPLES, (3, 16, 16), 4, seed=5)
    return collect_outputs(model, data, batch_size=BATCH_SIZE, accelerator=accelerator)


if __name__ == "__main__":
    accelerator = Accelerator()
    assert accelerator.num_processes == 2, accelerator.num_processes
    outputs = compute(accelerator)
    # every process holds the whole split
    lengths = accelerator.gather(torch.tensor([len(outputs)]))
    assert lengths.tolist() == [NUM_SAMPLES, NUM_SAMPLES], lengths
    if accelerator.is_main_process:
        np.savez(sys.argv[1], losses=outputs.losses, labels=outputs.labels, predictions=outputs.predictions)
    accelerator.wait_for_everyone()
    # end the process group before the interpreter does: its teardown of gloo's threads can abort a finished rank
    # ("terminate called without an active exception"), as the CLI's end_distributed_run explains
    torch.distributed.destroy_process_group()

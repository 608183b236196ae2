"""`hf-deepclean ARGS...` with every training step slowed down, so a test can kill it mid fine-tune.

The delay (seconds per step) comes from HF_DEEPCLEAN_STEP_DELAY; everything else is the real CLI.
"""

import os
import sys
import time

import torch

torch.set_num_threads(1)

from hf_deepclean.cli import main  # noqa: E402
from hf_deepclean.trainer import DeepCleanTrainer  # noqa: E402

_training_step = DeepCleanTrainer.training_step


def _slow_training_step(self, *args, **kwargs):
    time.sleep(float(os.environ.get("HF_DEEPCLEAN_STEP_DELAY", "0.3")))
    return _training_step(self, *args, **kwargs)


DeepCleanTrainer.training_step = _slow_training_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

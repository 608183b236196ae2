"""`hf-deepclean unlearn` with a verifier that never passes, so top_fraction=auto retries every candidate.

Launched on two CPU processes by test_distributed_unlearn.py: each retry restores the original weights and
trains again, so DDP wraps the model afresh (and once more for the closing refit of the closest attempt, here the
smallest, since the stub scores every attempt alike); the frozen weights of the final mask must still be exact.
"""

import sys

import hf_deepclean.auto as auto
from hf_deepclean.cli import main


def never_forgot(model, forget, validation, **kwargs):
    return {"passed": False, "forget_accuracy": 1.0, "mia_loss_lr": 1.0, "validation_accuracy": 1.0,
            "reason": "stub verifier: never forgotten", "measure": 1.0, "bound": 0.02, "collapsed": False}


auto.verify_forgetting = never_forgot
sys.exit(main(sys.argv[1:]))

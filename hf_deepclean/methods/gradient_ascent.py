"""Gradient ascent: maximise the loss on D_f (Thudi et al. 2022; the open-unlearning ``GradAscent``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import Trainer

from .base import MethodResult, UnlearningArguments, require_splits, train, with_seed


@dataclass
class GradientAscentConfig(UnlearningArguments):
    """Gradient ascent on D_f. The loss is unbounded above, so the budget is small on purpose.

    Args:
        num_train_epochs: Epochs on D_f.
        learning_rate: Peak learning rate; too large and the model collapses on every class. On the
            digits ViT (class 3) 3e-4 x 2 epochs left Acc_Df at 0.82, 1e-3 collapsed retain accuracy
            to 0.58; 3e-4 x 3 epochs sits between.
        weight_decay: AdamW weight decay (0: decay is not part of the method).
    """

    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs on D_f."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (small: the loss is unbounded)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})


class GradientAscentTrainer(Trainer):
    """Trainer that descends on the negated loss, i.e. ascends the loss of its training set."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if return_outputs:
            loss, outputs = result
            return -loss, outputs
        return -result


def run(model, splits, processor=None, config: GradientAscentConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "forget")
    start = time.perf_counter()
    args = with_seed(config or GradientAscentConfig(), seed)
    model, train_time = train(GradientAscentTrainer, model, args, splits["forget"], processor)
    total = time.perf_counter() - start
    return MethodResult(model, total, {"time": {"fisher": None, "train": train_time, "total": total}})

"""Random labels: fine-tune on D_f relabelled with random wrong classes (Graves et al. 2021, "Amnesiac ML")."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import Trainer

from ..forget import relabel_to_wrong_classes
from .base import MethodResult, UnlearningArguments, num_labels, require_splits, train, with_seed


@dataclass
class RandomLabelsConfig(UnlearningArguments):
    """Training on D_f with each label replaced by a seeded random other class.

    Args:
        num_train_epochs: Epochs on the relabelled D_f.
        learning_rate: Peak learning rate.
    """

    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs on the relabelled D_f."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})


def run(model, splits, processor=None, config: RandomLabelsConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "forget")
    start = time.perf_counter()
    relabelled = relabel_to_wrong_classes(splits["forget"], num_labels(model), seed)
    model, train_time = train(Trainer, model, with_seed(config or RandomLabelsConfig(), seed), relabelled, processor)
    total = time.perf_counter() - start
    return MethodResult(model, total, {"time": {"fisher": None, "train": train_time, "total": total}})

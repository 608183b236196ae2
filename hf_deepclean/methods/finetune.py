"""Fine-tune: keep training the original model on D_r alone and let catastrophic forgetting erase D_f."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import Trainer

from .base import MethodResult, UnlearningArguments, require_splits, train, with_seed


@dataclass
class FinetuneConfig(UnlearningArguments):
    """Fine-tuning on D_r (Golatkar et al. 2020; Jia et al. 2023 use a few epochs at a large rate).

    Args:
        num_train_epochs: Epochs on D_r.
        learning_rate: Peak learning rate; a large one forgets more, and costs retain accuracy.
    """

    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs on D_r."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (large forgets more)."})


def run(model, splits, processor=None, config: FinetuneConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "retain")
    start = time.perf_counter()
    model, train_time = train(Trainer, model, with_seed(config or FinetuneConfig(), seed), splits["retain"], processor)
    total = time.perf_counter() - start
    return MethodResult(model, total, {"time": {"fisher": None, "train": train_time, "total": total}})

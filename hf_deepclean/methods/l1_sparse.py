"""l1-sparse unlearning (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning", arXiv 2304.04934).

Fine-tune on D_r with an l1 penalty ``gamma_t * ||w||_1`` whose weight decays linearly from
``l1_weight`` at the first step to 0 at the last (the schedule the paper found best).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import Trainer

from .base import MethodResult, UnlearningArguments, require_splits, train, with_seed


@dataclass
class L1SparseConfig(UnlearningArguments):
    """Fine-tuning on D_r with a linearly decaying l1 penalty.

    Args:
        l1_weight: gamma at the first step (the paper's 5e-4); it decays linearly to 0.
        num_train_epochs: Epochs on D_r.
        learning_rate: Peak learning rate.
    """

    l1_weight: float = field(default=5e-4, metadata={"help": "l1 penalty weight at step 0; decays linearly to 0."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs on D_r."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate."})

    def __post_init__(self):
        super().__post_init__()
        if not self.l1_weight >= 0:
            raise ValueError(f"l1_weight={self.l1_weight} must be >= 0.")


def l1_weight_at(step: int, max_steps: int, l1_weight: float) -> float:
    """``l1_weight * (1 - step / max_steps)``, never below 0."""
    if max_steps <= 0:
        return l1_weight
    return l1_weight * max(0.0, 1.0 - step / max_steps)


class L1SparseTrainer(Trainer):
    """Trainer whose loss adds ``l1_weight_at(step) * sum |w|`` over the trainable weights."""

    current_l1_weight: float | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)
        self.current_l1_weight = l1_weight_at(self.state.global_step, self.state.max_steps, self.args.l1_weight)
        if self.current_l1_weight > 0:
            norm = sum(p.abs().sum() for p in model.parameters() if p.requires_grad)
            loss = loss + self.current_l1_weight * norm
        return (loss, outputs) if return_outputs else loss


def run(model, splits, processor=None, config: L1SparseConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "retain")
    start = time.perf_counter()
    model, train_time = train(L1SparseTrainer, model, with_seed(config or L1SparseConfig(), seed), splits["retain"], processor)
    total = time.perf_counter() - start
    return MethodResult(model, total, {"time": {"fisher": None, "train": train_time, "total": total}})

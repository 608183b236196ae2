"""Retrain: train a fresh model on D_r only. The gold standard every other method is measured against."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForImageClassification, Trainer, set_seed

from .._compat import model_from_config
from ..training import TrainConfig
from .base import MethodResult, require_splits, train, with_seed


@dataclass
class RetrainConfig(TrainConfig):
    """Training of the gold model: the original model's training recipe (:class:`~hf_deepclean.training.TrainConfig`,
    unchanged), on D_r, from a fresh start.

    Args:
        base_model: Start from this checkpoint (the pretrained model the original was fine-tuned
            from); empty: a fresh random initialisation of the original's architecture.
    """

    base_model: str | None = field(
        default=None,
        metadata={"help": "Checkpoint the original was fine-tuned from; empty: fresh init of the same architecture."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Trainer scratch folder."})
    logging_strategy: str = field(default="no", metadata={"help": "Logging: no, steps or epoch."})
    disable_tqdm: bool = field(default=True, metadata={"help": "Hide the per-step progress bar."})


def fresh_model(model: torch.nn.Module, seed: int = 0, base_model: str | None = None) -> torch.nn.Module:
    """A model of ``model``'s architecture and labels: freshly initialised, or loaded from ``base_model``."""
    set_seed(seed)
    config = copy.deepcopy(model.config)
    if base_model:
        return AutoModelForImageClassification.from_pretrained(
            base_model, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id,
            ignore_mismatched_sizes=True,
        )
    return model_from_config(type(model), config)


def run(model, splits, processor=None, config: RetrainConfig | None = None, *, seed: int = 0) -> MethodResult:
    """Train ``fresh_model(model)`` on D_r with ``config`` (a plain Trainer run, like the original's)."""
    require_splits(splits, "retain")
    args = with_seed(config or RetrainConfig(), seed)
    start = time.perf_counter()
    new_model = fresh_model(model, seed, args.base_model).to(next(model.parameters()).device)
    trained, train_time = train(Trainer, new_model, args, splits["retain"], processor)
    total = time.perf_counter() - start
    return MethodResult(trained, total, {"time": {"fisher": None, "train": train_time, "total": total}})

"""What every unlearning method shares: the result type, the training-arguments defaults, data helpers.

A method is ``run(model, splits, processor, config, *, seed) -> MethodResult``. ``splits`` maps
``forget`` (D_f) and ``retain`` (D_r), optionally ``train`` (D = D_f + D_r, e.g. with noisy labels);
each is a raw split (``image``/``label``, transformed with ``processor``) or a dataset that already
yields ``pixel_values`` (such as :class:`TensorImageDataset`). The model is changed in place.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import datasets
import torch
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback

from .._compat import live_objects_frozen
from ..config import TinyModelTrainingArguments
from ..images import TensorImageDataset, collate_fn, model_inputs
from ..masking import GradientMask, GradientMaskTrainerMixin


@dataclass
class MethodResult:
    """The unlearned model, its unlearning wall time (seconds) and method-specific facts.

    ``extra`` may hold ``time`` (``{"fisher", "train", "total"}`` seconds) and ``selection``
    (``threshold``, ``selected_fraction``, ``num_selected`` of the weights a method touched).
    """

    model: torch.nn.Module
    time_s: float
    extra: dict = field(default_factory=dict)


@dataclass
class UnlearningArguments(TinyModelTrainingArguments):
    """TrainingArguments with the short-budget defaults every training-based baseline starts from.

    Args:
        output_dir: Scratch folder of the Trainer (nothing is saved with ``save_strategy="no"``).
        num_train_epochs: Epochs of the unlearning run.
        learning_rate: Peak learning rate (3e-3 suits the tiny digits models).
    """

    output_dir: str | None = field(default=None, metadata={"help": "Trainer scratch folder."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of the unlearning run."})
    logging_strategy: str = field(default="no", metadata={"help": "Logging: no, steps or epoch."})
    disable_tqdm: bool = field(default=True, metadata={"help": "Hide the per-step progress bar."})


def training_set(splits: Mapping):
    """D, the whole training set: ``splits["train"]`` when given, else D_f followed by D_r."""
    if splits.get("train") is not None:
        return splits["train"]
    forget, retain = splits["forget"], splits["retain"]
    if isinstance(forget, TensorImageDataset) and isinstance(retain, TensorImageDataset):
        return TensorImageDataset(
            torch.cat([forget.pixel_values, retain.pixel_values]), torch.cat([forget.labels, retain.labels])
        )
    return datasets.concatenate_datasets([forget, retain])


def concat(*parts):
    """Several datasets (each already yielding pixel_values) as one training set."""
    return torch.utils.data.ConcatDataset(list(parts))


def require_splits(splits: Mapping, *names: str) -> None:
    missing = [n for n in names if splits.get(n) is None]
    if missing:
        raise ValueError(f"This method needs the splits {list(names)}; missing {missing}.")
    for n in names:
        if len(splits[n]) == 0:
            raise ValueError(f"The {n!r} split is empty.")


def with_seed(args, seed: int):
    """A shallow copy of ``args`` with ``seed`` set (the caller's config is left alone)."""
    args = copy.copy(args)
    if hasattr(args, "seed"):
        args.seed = seed
    return args


def num_labels(model) -> int:
    count = getattr(getattr(model, "config", None), "num_labels", None)
    if not count:
        raise ValueError(f"Cannot tell the number of classes of {type(model).__name__}: its config has no num_labels.")
    return int(count)


class MaskedTrainer(GradientMaskTrainerMixin, Trainer):
    """A Trainer that trains only the selected entries of ``gradient_mask`` (the mixin's restore and masking).

    Attach the :class:`~hf_deepclean.masking.GradientMask` before ``train()`` and detach it after.
    """

    def __init__(self, *args, gradient_mask: GradientMask, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient_mask = gradient_mask


def train(trainer_class, model, args, train_dataset, processor=None, **trainer_kwargs) -> tuple[torch.nn.Module, float]:
    """Run ``trainer_class`` (a Trainer) on ``train_dataset``; returns the model and the training seconds."""
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=model_inputs(train_dataset, processor),
        data_collator=collate_fn,
        **trainer_kwargs,
    )
    quiet(trainer)
    start = time.perf_counter()
    with live_objects_frozen():
        trainer.train()
    return trainer.model, time.perf_counter() - start


def quiet(trainer: Trainer) -> Trainer:
    """With ``logging_strategy="no"`` also drop the end-of-training summary Trainer prints."""
    if str(getattr(trainer.args.logging_strategy, "value", trainer.args.logging_strategy)) == "no":
        trainer.remove_callback(PrinterCallback)
    return trainer


def mask_selection(mask: Mapping[str, torch.Tensor]) -> dict:
    """``selected_fraction``/``num_selected`` of a bool mask dict (the report's ``selection`` fields)."""
    selected = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return {"threshold": None, "selected_fraction": selected / total if total else 0.0, "num_selected": selected}


__all__ = [
    "MaskedTrainer", "MethodResult", "TensorImageDataset", "UnlearningArguments", "concat",
    "mask_selection", "model_inputs", "num_labels", "require_splits", "train", "training_set",
    "with_seed",
]

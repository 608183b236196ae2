"""What every unlearning method shares: the result type, the training-arguments defaults, data helpers.

A method is ``run(model, splits, processor, config, *, seed) -> MethodResult``. ``splits`` maps
``forget`` (D_f) and ``retain`` (D_r), optionally ``train`` (D = D_f + D_r, e.g. with noisy labels);
each is a raw split (``image``/``label``, transformed with ``processor``) or a dataset that already
yields ``pixel_values`` (such as :class:`TensorImageDataset`). The model is changed in place.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer

from ..data import IMAGE_COLUMN, LABEL_COLUMN, collate_fn, labels_of, with_image_transform
from ..config import TinyModelTrainingArguments
from ..masking import GradientMask, GradientMaskTrainerMixin
from ..training import live_objects_frozen


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


class TensorImageDataset(torch.utils.data.Dataset):
    """Transformed images held in memory: ``{"pixel_values", "label"}`` items, no per-epoch image work.

    On small data (digits) the per-sample image transform costs as much as a tiny model's
    forward-backward pass; transforming once makes every method and evaluation pass cheaper.
    """

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor | Sequence[int]):
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(pixel_values) != len(labels):
            raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels.")
        self.pixel_values, self.labels = pixel_values, labels

    @classmethod
    def from_dataset(cls, dataset, image_processor, batch_size: int = 256) -> "TensorImageDataset":
        """Transform a raw ``image``/``label`` split once."""
        if isinstance(dataset, cls):
            return dataset
        chunks, labels = [], []
        for start in range(0, len(dataset), batch_size):
            batch = dataset[start : start + batch_size]
            images = [img.convert("RGB") for img in batch[IMAGE_COLUMN]]
            chunks.append(torch.as_tensor(image_processor(images, return_tensors="pt")["pixel_values"]))
            labels.extend(int(v) for v in batch[LABEL_COLUMN])
        return cls(torch.cat(chunks), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], LABEL_COLUMN: int(self.labels[index])}

    def __getitems__(self, indices):
        return [self[i] for i in indices]

    def select(self, indices) -> "TensorImageDataset":
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorImageDataset(self.pixel_values[index], self.labels[index])

    def with_labels(self, labels) -> "TensorImageDataset":
        return TensorImageDataset(self.pixel_values, labels)

    def __repr__(self) -> str:
        return f"TensorImageDataset({len(self)} samples, pixel_values {tuple(self.pixel_values.shape[1:])})"


def model_inputs(dataset, processor=None):
    """``dataset`` as one that yields ``pixel_values``: raw splits get the lazy image transform."""
    if dataset is None or isinstance(dataset, TensorImageDataset):
        return dataset
    columns = getattr(dataset, "column_names", None) or []
    if IMAGE_COLUMN in columns and "pixel_values" not in columns:
        if processor is None:
            raise ValueError("Raw image splits need an image processor (processor=...) to make pixel_values.")
        return with_image_transform(dataset, processor)
    return dataset


def relabel_randomly(dataset, num_classes: int, seed: int = 0):
    """``dataset`` with every label replaced by a seeded random *other* class (random-label forgetting)."""
    if num_classes < 2:
        raise ValueError("Random relabelling needs at least two classes.")
    labels = labels_of(dataset)
    offsets = np.random.default_rng(seed).integers(1, num_classes, size=len(labels))
    new = (labels + offsets) % num_classes  # an offset in 1..C-1 never gives back the true class
    if isinstance(dataset, TensorImageDataset):
        return dataset.with_labels(new)
    feature = dataset.features[LABEL_COLUMN]
    return dataset.remove_columns(LABEL_COLUMN).add_column(LABEL_COLUMN, new.tolist()).cast_column(LABEL_COLUMN, feature)


def training_set(splits: Mapping):
    """D, the whole training set: ``splits["train"]`` when given, else D_f followed by D_r."""
    if splits.get("train") is not None:
        return splits["train"]
    forget, retain = splits["forget"], splits["retain"]
    if isinstance(forget, TensorImageDataset) and isinstance(retain, TensorImageDataset):
        return TensorImageDataset(
            torch.cat([forget.pixel_values, retain.pixel_values]), torch.cat([forget.labels, retain.labels])
        )
    import datasets

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
    from transformers.trainer_callback import PrinterCallback

    if str(getattr(trainer.args.logging_strategy, "value", trainer.args.logging_strategy)) == "no":
        trainer.remove_callback(PrinterCallback)
    return trainer


def mask_selection(mask: Mapping[str, torch.Tensor]) -> dict:
    """``selected_fraction``/``num_selected`` of a bool mask dict (the report's ``selection`` fields)."""
    selected = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return {"threshold": None, "selected_fraction": selected / total if total else 0.0, "num_selected": selected}


__all__ = [
    "MaskedTrainer", "MethodResult", "TensorImageDataset", "UnlearningArguments", "concat", "labels_of",
    "mask_selection", "model_inputs", "num_labels", "relabel_randomly", "require_splits", "train", "training_set",
    "with_seed",
]

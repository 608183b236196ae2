"""Per-sample model outputs on one split, collected once and shared by every metric and attack."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ..data import IMAGE_COLUMN
from ..images import collate_fn, model_inputs


@dataclass
class SplitOutputs:
    """What a model says about each sample of a split (numpy arrays, one entry per sample).

    Attributes:
        losses: Cross-entropy ``-log p(y|x)`` with the split's labels.
        confidences: Maximum softmax probability.
        entropies: Entropy of the softmax distribution (nats).
        predictions: Arg-max class.
        labels: The split's labels.
        true_probs: Softmax probability of the label (``exp(-loss)``).
        logits: The model's logits, float32 ``[n, num_classes]`` (``None`` where a caller built the outputs
            without them).
    """

    losses: np.ndarray
    confidences: np.ndarray
    entropies: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    true_probs: np.ndarray
    logits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @property
    def accuracy(self) -> float:
        """Fraction predicted right; NaN for an empty split."""
        return float(self.correct.mean()) if len(self) else float("nan")

    def in_classes(self, class_ids) -> np.ndarray:
        """Bool mask of the samples whose label is one of ``class_ids`` (the forgotten classes, say)."""
        return np.isin(self.labels, np.asarray(class_ids, dtype=np.int64))

    def subset(self, index) -> SplitOutputs:
        """The outputs of the samples picked by ``index`` (bool mask or integer indices)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SplitOutputs(**{k: None if v is None else v[index] for k, v in values.items()})

    def features(self, names) -> np.ndarray:
        """Stack the named per-sample arrays as the columns of an ``(n, len(names))`` float matrix."""
        return np.stack([np.asarray(getattr(self, name), dtype=np.float64) for name in names], axis=1)

    @classmethod
    def empty(cls) -> SplitOutputs:
        floats, ints = np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        return cls(floats, floats.copy(), floats.copy(), ints, ints.copy(), floats.copy())


def _dataloader(dataset, image_processor, batch_size: int):
    if isinstance(dataset, torch.utils.data.DataLoader):
        return dataset
    first = dataset[0]
    if "pixel_values" not in first and IMAGE_COLUMN not in first:
        raise ValueError(
            f"collect_outputs needs samples with 'pixel_values' or an '{IMAGE_COLUMN}' column; got keys {sorted(first)}."
        )
    if "pixel_values" not in first:  # a raw split (a lazily transformed one already yields pixel_values)
        dataset = model_inputs(dataset, image_processor)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)


def _batch_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    true_log_probs = log_probs.gather(1, labels[:, None]).squeeze(1)
    return {
        "losses": -true_log_probs,
        "confidences": probs.max(dim=-1).values,
        # 0 * log 0 is 0: probs underflowing to exactly 0 must not give NaN
        "entropies": -(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(dim=-1),
        "predictions": logits.argmax(dim=-1),
        "labels": labels,
        "true_probs": true_log_probs.exp(),
        "logits": logits.float(),
    }


@torch.no_grad()
def collect_outputs(model, dataset, *, image_processor=None, batch_size: int = 128, accelerator=None) -> SplitOutputs:
    """Run ``model`` over ``dataset`` once (eval mode, no gradients) and keep the per-sample outputs.

    ``dataset`` is a raw split (``image``/``label`` columns) with ``image_processor``, a dataset that
    already yields ``pixel_values``, or a ``DataLoader`` of ``{pixel_values, labels}`` batches. With an
    ``accelerate.Accelerator`` each process runs its shard and the results are gathered with
    ``gather_for_metrics`` (which drops the samples repeated to even out the last batch), so every
    process returns the outputs of the whole split.
    """
    if not isinstance(dataset, torch.utils.data.DataLoader) and len(dataset) == 0:
        return SplitOutputs.empty()
    loader = _dataloader(dataset, image_processor, batch_size)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
        device = accelerator.device
        model = accelerator.unwrap_model(model)
        model.to(device)
    else:
        device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in loader:
            pixel_values = batch["pixel_values"].to(device=device, dtype=dtype)
            labels = batch["labels"].to(device)
            stats = _batch_stats(model(pixel_values=pixel_values).logits, labels)
            if accelerator is not None:
                stats = accelerator.gather_for_metrics(stats)
            for key, value in stats.items():
                chunks.setdefault(key, []).append(value.cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return SplitOutputs.empty()
    arrays = {key: torch.cat(values).numpy() for key, values in chunks.items()}
    for key in ("losses", "confidences", "entropies", "true_probs"):
        arrays[key] = arrays[key].astype(np.float64)
    for key in ("predictions", "labels"):
        arrays[key] = arrays[key].astype(np.int64)
    arrays["logits"] = arrays["logits"].astype(np.float32)
    return SplitOutputs(**arrays)


__all__ = ["SplitOutputs", "collect_outputs"]

"""Evaluate an unlearned model against the gold (retrained) and original models."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..forget import label_ids
from .intervals import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, INTERVAL_METHOD, accuracy_delta_intervals
from .mia import MIN_SAMPLES_PER_CLASS, mia_efficacy, mia_loss_lr
from .outputs import SplitOutputs, collect_outputs
from .report import UnlearningReport

logger = logging.getLogger(__name__)


def _is_loader(dataset) -> bool:
    return isinstance(dataset, torch.utils.data.DataLoader)


def _num_samples(dataset) -> int:
    # len() of a DataLoader counts batches
    return len(dataset.dataset) if _is_loader(dataset) else len(dataset)


def seeded_subset(dataset, size: int | None, seed: int):
    """A seeded subset of ``size`` rows (the same rows for every model), or the dataset itself."""
    if size is not None and _is_loader(dataset):
        raise ValueError("retain_sample_size needs a dataset, not a DataLoader: subsample the DataLoader's dataset.")
    if size is None or len(dataset) <= size:
        return dataset
    if size < 1:
        raise ValueError(f"retain_sample_size={size} must be at least 1 (or None for the whole retain set).")
    index = np.sort(np.random.default_rng(seed).choice(len(dataset), size=size, replace=False))
    if hasattr(dataset, "select"):
        return dataset.select(index)
    return torch.utils.data.Subset(dataset, index.tolist())


def _class_ids(labels, dataset) -> list[int] | None:
    if labels is None:
        return None
    labels = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    if any(isinstance(v, str) and not v.lstrip("-").isdigit() for v in labels):
        return label_ids(dataset, labels)  # class names -> ids, with the data layer's error messages
    return sorted({int(v) for v in labels})


def metrics_from_outputs(
    retain: SplitOutputs,
    forget: SplitOutputs,
    test: SplitOutputs,
    *,
    forget_labels: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Accuracies and both MIA scores from collected outputs; returns ``(metrics, mia_details)``.

    For class forgetting (``forget_labels``) the loss attack's non-members are the test samples of
    the forgotten classes, and the efficacy attack is trained on test samples of the other classes,
    so both attacks measure membership rather than class.
    """
    metrics = {
        "retain_accuracy": retain.accuracy,
        "forget_accuracy": forget.accuracy,
        "test_accuracy": test.accuracy,
    }
    nonmembers, shadow_test = test, test
    if forget_labels is not None:
        in_forgotten = test.in_classes(forget_labels)
        nonmembers, shadow_test = test.subset(in_forgotten), test.subset(~in_forgotten)
        metrics["test_forget_class_accuracy"] = nonmembers.accuracy
        metrics["test_other_accuracy"] = shadow_test.accuracy
    loss_lr = mia_loss_lr(forget.losses, nonmembers.losses, seed=seed)
    efficacy = mia_efficacy(retain, shadow_test, forget, seed=seed)
    metrics["mia_loss_lr"] = loss_lr["accuracy"]
    metrics["mia_efficacy"] = efficacy["efficacy"]
    return metrics, {"loss_lr": loss_lr, "efficacy": efficacy}


def _selection_dict(selection) -> dict | None:
    if selection is None:
        return None
    if isinstance(selection, Mapping):
        out = dict(selection)
    else:  # a ParameterMask or anything with the same attributes
        out = {k: getattr(selection, k) for k in ("threshold", "top_fraction") if hasattr(selection, k)}
        out.update(selected_fraction=selection.selected_fraction, num_selected=selection.num_selected)
    for key in ("threshold", "selected_fraction", "num_selected"):
        out.setdefault(key, None)
    return out


def _time_dict(time_s) -> dict:
    if time_s is None:
        return {"fisher": None, "train": None, "total": None}
    if isinstance(time_s, numbers.Real):
        return {"fisher": None, "train": None, "total": float(time_s)}
    out = {"fisher": None, "train": None, "total": None, **dict(time_s)}
    if out["total"] is None and out["fisher"] is not None and out["train"] is not None:
        out["total"] = out["fisher"] + out["train"]
    return out


def evaluate_unlearning(
    model,
    splits: Mapping,
    *,
    gold_model=None,
    original_model=None,
    image_processor=None,
    forget_labels=None,
    method: str = "deepclean",
    scenario: str | None = None,
    forget_info: Mapping | None = None,
    selection=None,
    time_s=None,
    gold_time_s: float | None = None,
    batch_size: int = 128,
    accelerator=None,
    seed: int = 0,
    retain_sample_size: int | None = None,
) -> UnlearningReport:
    """Accuracy on D_r / D_f / test and both MIA scores for the unlearned, gold and original models.

    Args:
        model: The unlearned model.
        splits: ``{"retain", "forget", "test"}`` datasets: raw (``image``/``label``, with
            ``image_processor``) or already yielding ``pixel_values``.
        gold_model: The model retrained from scratch on D_r; the deltas are measured against it.
        original_model: The model before unlearning (the "did nothing" reference).
        forget_labels: Class ids (or names) for class forgetting: adds ``test_forget_class_accuracy``
            and ``test_other_accuracy`` and restricts the MIA non-members as in
            :func:`metrics_from_outputs`.
        method, scenario: Recorded in the report (``scenario`` defaults to ``class`` with ``forget_labels``).
        forget_info: Extra ``forget`` fields, e.g. ``{"kind": "ids", "fingerprint": ...}``.
        selection: The weight mask (a ``ParameterMask``) or a dict of its statistics.
        time_s: Unlearning seconds, a number (total) or ``{"fisher", "train", "total"}``.
        gold_time_s: Seconds it took to retrain the gold model.
        accelerator: An ``accelerate.Accelerator``: outputs are sharded and gathered.
        seed: Seed of the attacks' subsampling and cross-validation, and of ``retain_sample_size``.
        retain_sample_size: Evaluate D_r on this many seeded samples (the same for every model) for speed.
    """
    missing = [name for name in ("retain", "forget", "test") if name not in splits]
    if missing:
        raise ValueError(f"splits needs 'retain', 'forget' and 'test' datasets; missing {missing}.")
    class_ids = _class_ids(forget_labels, splits["forget"])
    retain_set = seeded_subset(splits["retain"], retain_sample_size, seed)
    data = {"retain": retain_set, "forget": splits["forget"], "test": splits["test"]}

    def collect_splits(name, candidate):
        outputs = {
            split: collect_outputs(
                candidate, dataset, image_processor=image_processor, batch_size=batch_size, accelerator=accelerator
            )
            for split, dataset in data.items()
        }
        logger.info("Evaluated the %s model on %s samples.", name, {k: len(v) for k, v in outputs.items()})
        return outputs

    models = {"unlearned": model, "gold": gold_model, "original": original_model}
    outputs = {name: collect_splits(name, m) for name, m in models.items() if m is not None}
    results = {
        name: metrics_from_outputs(out["retain"], out["forget"], out["test"], forget_labels=class_ids, seed=seed)
        for name, out in outputs.items()
    }
    metrics, mia = results["unlearned"][0], {name: details for name, (_, details) in results.items()}
    gold = dict(results["gold"][0], time_s=gold_time_s) if "gold" in results else None
    original = results["original"][0] if "original" in results else None
    deltas, delta_intervals = {}, {}
    if gold is not None:
        for key, value in metrics.items():
            ref = gold.get(key)
            deltas[key] = value - ref if np.isfinite(value) and ref is not None and np.isfinite(ref) else None
        delta_intervals = accuracy_delta_intervals(outputs["unlearned"], outputs["gold"], forget_labels=class_ids,
                                                   seed=seed)

    forget = {
        "size": _num_samples(splits["forget"]),
        "labels": class_ids,
        "fingerprint": None,
        "kind": "labels" if class_ids is not None else None,
    }
    forget.update(dict(forget_info or {}))
    report = UnlearningReport(
        method=method,
        scenario=scenario if scenario is not None else ("class" if class_ids is not None else None),
        forget=forget,
        metrics=metrics,
        gold=gold,
        original=original,
        deltas=deltas,
        delta_intervals=delta_intervals,
        selection=_selection_dict(selection),
        time_s=_time_dict(time_s),
        mia=mia,
        notes=_notes(mia, class_ids, scenario) + _retain_drop_without_gold(metrics, original, gold),
        config={
            "seed": seed,
            "batch_size": batch_size,
            "retain_evaluated": _num_samples(retain_set),
            "retain_size": _num_samples(splits["retain"]),
            "test_size": _num_samples(splits["test"]),
            "mia_min_samples_per_class": MIN_SAMPLES_PER_CLASS,
            **({"delta_intervals": {"method": INTERVAL_METHOD, "confidence": DEFAULT_CONFIDENCE,
                                    "resamples": DEFAULT_RESAMPLES}} if delta_intervals else {}),
        },
    )
    return report


# Without a gold model nothing says what retraining would cost on D_r; past this drop under the original's, say so.
RETAIN_DROP_WARNING = 0.05


def _retain_drop_without_gold(metrics: Mapping, original: Mapping | None, gold: Mapping | None) -> list[str]:
    """A note (and a warning) when, with no gold model to compare with, retain accuracy fell more than
    :data:`RETAIN_DROP_WARNING` under the original model's: the model lost what it should keep, or retraining
    would lose it too, and only a gold model (or an audit) can tell which."""
    if gold is not None or original is None:
        return []
    before, after = original.get("retain_accuracy"), metrics.get("retain_accuracy")
    if before is None or after is None or not np.isfinite(before - after) or before - after <= RETAIN_DROP_WARNING:
        return []
    note = (f"Retain accuracy {after:.3f} is {100 * (before - after):.1f} points under the original's {before:.3f}, "
            "and no gold model says whether retraining without the forget set would lose as much: train one "
            "(hf-deepclean train --gold) and pass --gold_model, or give the fine-tune more epochs.")
    logger.warning(note)
    return [note]


def _notes(mia: Mapping, class_ids, scenario) -> list[str]:
    notes = []
    if scenario == "noisy_labels":
        notes.append("Noisy labels: Acc_Df is measured against the corrupted labels (lower = the wrong labels are forgotten).")
    if class_ids is not None:
        notes.append(
            "Class forgetting: the loss attack compares D_f with the test images of the forgotten classes, and the "
            "efficacy attack is trained on retain vs test images of the other classes, so both measure membership, "
            "not class."
        )
    for attack_name, label in (("loss_lr", "MIA (loss LR)"), ("efficacy", "MIA-efficacy")):
        by_note: dict[str, list[str]] = {}  # the counts, hence the notes, are usually the same for every model
        for model_name, details in mia.items():
            result = details[attack_name]
            if result.get("noisy"):
                by_note.setdefault(result["note"], []).append(model_name)
        for note, names in by_note.items():
            notes.append(f"{label} ({', '.join(names)}): {note}.")
    return notes


__all__ = ["evaluate_unlearning", "metrics_from_outputs"]

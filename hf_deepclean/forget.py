"""What to forget, and the forget/retain split: :class:`ForgetSpec` in, disjoint D_f and D_r out.

Classes (ids or names), a seeded random fraction, row indices, the ids of a deletion request, or
samples relabeled to a wrong class (noisy labels); every path either selects at least one sample
and leaves at least one, or stops with a :class:`~hf_deepclean.errors.DataError` that says what to change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .data import LABEL_COLUMN, class_names, labels_of
from .errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class ForgetSpec:
    """What to forget. Give exactly one of ``labels``, ``fraction``, ``indices``, ``ids`` or ``noisy_fraction``.

    - ``labels``: whole classes, as ids or class names.
    - ``fraction``: a seeded random fraction of the samples (``stratified`` keeps class proportions).
    - ``indices``: row indices of the training split.
    - ``ids`` with ``id_column``: values of an id column, e.g. the sample ids of a deletion request.
    - ``noisy_fraction``: relabel a seeded fraction of the samples to a wrong class; exactly those
      mislabeled samples form the forget set (train the original on :func:`apply_label_noise` output).

    ``ignore_missing_ids``: forget the ids that are in the data and warn with the count of the others instead of
    refusing the request; the ids themselves are never printed, being what the request wants gone.
    """

    labels: list[int | str] | None = None
    fraction: float | None = None
    indices: list[int] | None = None
    ids: list[Any] | None = None
    id_column: str | None = None
    noisy_fraction: float | None = None
    seed: int = 0
    stratified: bool = False
    ignore_missing_ids: bool = False

    def __post_init__(self):
        given = [k for k in ("labels", "fraction", "indices", "ids", "noisy_fraction") if getattr(self, k) is not None]
        if len(given) != 1:
            raise DataError(
                "ForgetSpec needs exactly one of labels, fraction, indices, ids or noisy_fraction; "
                f"got {given or 'none'}."
            )
        for name in ("fraction", "noisy_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) < 1.0:
                raise DataError(f"{name}={value} must be strictly between 0 and 1.")
        if self.ids is not None and not self.id_column:
            raise DataError("Forgetting by ids needs id_column (the column holding the ids).")
        for name in ("labels", "indices", "ids"):
            value = getattr(self, name)
            if value is not None:
                value = list(value)
                if not value:
                    raise DataError(f"ForgetSpec.{name} is empty: name at least one item to forget.")
                setattr(self, name, value)

    @property
    def kind(self) -> str:
        for kind, attr in (("labels", "labels"), ("fraction", "fraction"), ("indices", "indices"), ("ids", "ids")):
            if getattr(self, attr) is not None:
                return kind
        return "noisy_labels"

    @property
    def scenario(self) -> str:
        return {"labels": "class", "fraction": "random", "indices": "samples", "ids": "samples"}.get(
            self.kind, "noisy_labels"
        )

    def to_dict(self) -> dict:
        return asdict(self)


_SPEC_FIELD = {"noisy_labels": "noisy_fraction"}


def label_ids(dataset, labels: Iterable[int | str]) -> list[int]:
    """Class ids (or names) -> sorted unique ids of ``dataset``'s ClassLabel, with one-line errors."""
    names = class_names(dataset)
    out = []
    for label in labels:
        if isinstance(label, str) and label in names:
            out.append(names.index(label))
        elif isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            value = int(label)
            if not 0 <= value < len(names):
                raise DataError(f"Unknown label {label!r}: class ids run 0..{len(names) - 1}.")
            out.append(value)
        else:
            raise DataError(f"Unknown class name {label!r}; known classes: {names[:20]}{'...' if len(names) > 20 else ''}.")
    return sorted(set(out))


def forget_indices(dataset, spec: ForgetSpec) -> np.ndarray:
    """Sorted row indices of ``dataset`` that ``spec`` selects for forgetting."""
    n = len(dataset)
    if n == 0:
        raise DataError("The dataset is empty: there is nothing to split into forget and retain.")
    rng = np.random.default_rng(spec.seed)
    if spec.labels is not None:
        targets = np.asarray(dataset[LABEL_COLUMN])
        idx = np.flatnonzero(np.isin(targets, label_ids(dataset, spec.labels)))
    elif spec.fraction is not None or spec.noisy_fraction is not None:
        fraction = spec.fraction if spec.fraction is not None else spec.noisy_fraction
        if spec.stratified:
            targets = np.asarray(dataset[LABEL_COLUMN])
            chosen = []
            for c in np.unique(targets):
                members = np.flatnonzero(targets == c)
                k = int(round(fraction * len(members)))
                chosen.append(rng.choice(members, size=k, replace=False))
            idx = np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)
        else:
            idx = rng.choice(n, size=int(round(fraction * n)), replace=False)
    elif spec.indices is not None:
        idx = np.asarray(spec.indices, dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= n)]
        if len(bad):
            raise DataError(f"{len(bad)} forget indices are out of range 0..{n - 1}, e.g. {bad[:5].tolist()}.")
    else:
        if spec.id_column not in dataset.column_names:
            raise DataError(f"id column {spec.id_column!r} not found; columns are {dataset.column_names}.")
        column = [str(v) for v in dataset[spec.id_column]]
        wanted = {str(v) for v in spec.ids}
        position = {}
        for i, value in enumerate(column):
            position.setdefault(value, []).append(i)
        missing = wanted - position.keys()
        if missing and not spec.ignore_missing_ids:
            raise DataError(
                f"{len(missing)} of {len(wanted)} forget ids were not found in column {spec.id_column!r} (not printed: "
                "they are what the request wants gone). Check the ids file and --id_column, or pass "
                "--ignore_missing_ids to forget the ones that are there."
            )
        if missing:
            logger.warning("%d of %d forget ids are not in column %r; forgetting the other %d (--ignore_missing_ids).",
                           len(missing), len(wanted), spec.id_column, len(wanted) - len(missing))
        idx = np.asarray([i for v in wanted - missing for i in position[v]], dtype=np.int64)
    idx = np.unique(idx)
    if len(idx) == 0:
        raise DataError(
            f"The forget set is empty for {spec.kind}={getattr(spec, _SPEC_FIELD.get(spec.kind, spec.kind), None)!r}: "
            "nothing to forget. "
            "Name classes, ids or a fraction that select at least one training sample."
        )
    if len(idx) == n:
        raise DataError(
            f"The forget set covers the whole dataset ({n} samples): nothing would be left to retain. "
            "Forget fewer samples or classes."
        )
    return idx


def relabel_to_wrong_classes(dataset, num_classes: int, seed: int, indices=None):
    """``dataset`` with the labels at ``indices`` (all by default) replaced by a seeded random *other* class.

    The one label-corruption function: noisy-label scenarios (:func:`apply_label_noise`) and the random-label
    baselines call it. An offset in 1..C-1 never gives back the true class. Works on ``datasets`` splits (the
    ClassLabel feature is kept) and on in-memory :class:`~hf_deepclean.images.TensorImageDataset` splits.
    """
    if num_classes < 2:
        raise DataError(f"Relabelling to a wrong class needs at least two classes; the dataset has {num_classes}.")
    labels = labels_of(dataset).copy()
    where = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    offsets = np.random.default_rng(seed).integers(1, num_classes, size=len(where))
    labels[where] = (labels[where] + offsets) % num_classes
    if hasattr(dataset, "with_labels"):  # TensorImageDataset
        return dataset.with_labels(labels)
    feature = dataset.features[LABEL_COLUMN]
    return dataset.remove_columns(LABEL_COLUMN).add_column(LABEL_COLUMN, labels.tolist()).cast_column(
        LABEL_COLUMN, feature
    )


def apply_label_noise(dataset, spec: ForgetSpec):
    """Return ``dataset`` with the ``spec.noisy_fraction`` selected samples relabeled to a wrong class."""
    if spec.noisy_fraction is None:
        return dataset
    # seed + 1: the corruption draws apart from the selection's draws (forget_indices uses spec.seed)
    return relabel_to_wrong_classes(dataset, len(class_names(dataset)), spec.seed + 1,
                                    indices=forget_indices(dataset, spec))


def split_forget_retain(dataset, spec: ForgetSpec, *, retain=None):
    """Split ``dataset`` into ``DatasetDict(forget=..., retain=...)``: disjoint, covering, deterministic.

    For ``noisy_fraction`` the returned splits carry the corrupted labels (the forget set holds the
    mislabeled samples). When ``retain`` is given explicitly, it must not overlap the forget set
    (compared by ``id_column`` when set, else by row index is impossible, so ids are required).
    """
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError("split_forget_retain takes one split (e.g. dataset['train']), not a DatasetDict.")
    source = apply_label_noise(dataset, spec)
    idx = forget_indices(dataset, spec)
    keep = np.setdiff1d(np.arange(len(dataset)), idx, assume_unique=True)
    forget = source.select(idx)
    if retain is None:
        retain = source.select(keep)
    elif spec.id_column and spec.id_column in retain.column_names and spec.id_column in forget.column_names:
        overlap = {str(v) for v in forget[spec.id_column]} & {str(v) for v in retain[spec.id_column]}
        if overlap:
            raise DataError(
                f"{len(overlap)} samples are in both the forget set and the given retain set (matched by "
                f"{spec.id_column!r}). Remove them from the retain set: nothing forgotten may be trained on again."
            )
    else:
        # Without ids an overlap cannot be ruled out, and a silent one would undo the forgetting.
        raise DataError(
            "A given retain set needs an id column in both it and the dataset (ForgetSpec.id_column) so that it can "
            "be checked not to overlap the forget set."
        )
    return datasets.DatasetDict(forget=forget, retain=retain)


def read_ids_file(path: str | os.PathLike) -> list[str]:
    """Read one id per line (blank lines and ``#`` comments ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read forget ids file {str(path)!r}: {exc}. Pass a UTF-8 text file, one id per line.") from exc
    ids = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise DataError(f"Forget ids file {str(path)!r} holds no ids; write one id per line.")
    return ids

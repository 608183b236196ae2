"""Datasets in, forget/retain splits out.

Everything downstream sees the canonical columns ``image`` (PIL) and ``label``
(ClassLabel); :func:`load_image_dataset` renames a user's columns once, here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
BUILTIN_DATASETS = ("digits",)
_LABEL_CANDIDATES = ("label", "labels", "fine_label", "coarse_label", "class", "target")
_IMAGE_CANDIDATES = ("image", "img", "pixel_values", "picture")


class DataError(ValueError):
    """A dataset, column or forget specification the user must fix."""


# --------------------------------------------------------------------------- loading


def load_builtin_dataset(name: str = "digits", *, image_size: int = 16, test_size: float = 0.2, seed: int = 0):
    """Load a dataset that ships with the package's dependencies (no download).

    ``"digits"`` is scikit-learn's bundled set of 1,797 8x8 handwritten digits,
    upscaled to ``image_size`` RGB PIL images, split 80/20 (stratified, seeded) into
    ``train`` and ``test``. Columns: ``image`` (PIL) and ``label`` (ClassLabel "0".."9").
    """
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if name != "digits":
        raise DataError(f"Unknown built-in dataset {name!r}; the built-in datasets are {list(BUILTIN_DATASETS)}.")
    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    images = [
        Image.fromarray(img, mode="L").resize((image_size, image_size), Image.BILINEAR).convert("RGB") for img in pixels
    ]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
    )
    features = datasets.Features(
        {IMAGE_COLUMN: datasets.Image(), LABEL_COLUMN: datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )

    def build(idx: np.ndarray) -> "datasets.Dataset":
        idx = np.sort(idx)
        return datasets.Dataset.from_dict(
            {IMAGE_COLUMN: [images[i] for i in idx], LABEL_COLUMN: labels[idx].tolist()}, features=features
        )

    return datasets.DatasetDict(train=build(train_idx), test=build(test_idx))


def load_image_dataset(
    dataset_name: str | None = None,
    *,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    train_val_split: float | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """Load the user's image-classification data as a ``DatasetDict(train=..., test=...)``.

    ``dataset_name`` may be ``None``/``"digits"`` (built-in), a ``save_to_disk`` folder, an image
    folder (``class_name/image.png``), a parquet file or folder of parquet files, or a Hub dataset
    name. ``train_dir``/``validation_dir`` are image folders, as in transformers'
    ``run_image_classification.py``. When the data has no test split, ``train_val_split`` (default
    0.15) of ``train`` is carved off, stratified and seeded. Columns are renamed to ``image`` and
    ``label``.
    """
    import datasets

    if train_dir or validation_dir:
        if dataset_name not in (None, "digits") and dataset_name:
            raise DataError("Pass either --dataset_name or --train_dir/--validation_dir, not both.")
        data_files = {}
        for split, folder in (("train", train_dir), ("validation", validation_dir)):
            if folder:
                if not Path(folder).is_dir():
                    raise DataError(f"{split} folder {folder!r} does not exist; pass an existing image folder.")
                data_files[split] = os.path.join(folder, "**")
        raw = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    elif dataset_name in (None, "", "digits"):
        raw = load_builtin_dataset("digits", seed=seed)
    else:
        raw = _load_named_dataset(dataset_name, dataset_config_name, cache_dir)

    if isinstance(raw, datasets.Dataset):
        raw = datasets.DatasetDict(train=raw)
    if len(raw) == 0:
        raise DataError(f"Dataset {dataset_name!r} has no splits; check the path or name.")
    if train_split not in raw:
        raise DataError(
            f"Split {train_split!r} not found in dataset {dataset_name or 'digits'!r}; available: {sorted(raw)}. "
            "Pass one of them with --train_split."
        )
    train = raw[train_split]
    if test_split is None:
        test_split = next((s for s in ("test", "validation", "valid", "val") if s in raw and s != train_split), None)
    elif test_split not in raw:
        raise DataError(f"Split {test_split!r} not found in dataset {dataset_name!r}; available: {sorted(raw)}.")

    image_col, label_col = resolve_columns(train, image_column, label_column)
    train = _canonical(train, image_col, label_col)
    if len(train) == 0:
        raise DataError(
            f"Split {train_split!r} of dataset {dataset_name or 'digits'!r} is empty; pass a dataset (or --train_split) "
            "that holds the training samples."
        )
    if test_split is not None:
        test = _canonical(raw[test_split], image_col, label_col)
        test = test.cast_column(LABEL_COLUMN, train.features[LABEL_COLUMN])
    else:
        fraction = 0.15 if train_val_split is None else train_val_split
        if not 0.0 < fraction < 1.0:
            raise DataError(f"train_val_split={fraction} must be in (0, 1).")
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=LABEL_COLUMN)
        train, test = parts["train"], parts["test"]
        logger.info("No test split found: carved %d samples (%.0f%%) off train as test.", len(test), fraction * 100)
    return datasets.DatasetDict(train=train, test=test)


def _load_named_dataset(name: str, config: str | None, cache_dir: str | None):
    import datasets

    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".parquet":
            raise DataError(
                f"Cannot read dataset file {name!r}: pass a parquet file, an image folder or a save_to_disk folder."
            )
        try:
            return _load_local_dataset(path, cache_dir)
        except Exception as exc:  # datasets raises many types (IndexError, ValueError, ...) for empty or damaged data
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataError(
                f"Cannot read dataset {name!r} ({type(exc).__name__}: {reason}); it may be empty or damaged. "
                "Pass a save_to_disk folder, parquet file(s) or an image folder (class_name/image.png) with samples."
            ) from exc
    if _looks_like_local_path(name):
        raise DataError(
            f"Dataset path {name!r} does not exist. Pass an existing save_to_disk folder, parquet file or image folder, "
            "or omit --dataset_name to use the built-in digits."
        )
    try:
        return datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as exc:  # the Hub client raises many types; all mean "could not get it"
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        reason = "the Hub is unreachable (offline mode)" if offline else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"Could not load dataset {name!r} from the Hugging Face Hub: {reason}. "
            "Pass a local copy instead: a folder written by Dataset.save_to_disk, a parquet file or an image folder "
            "(--dataset_name PATH or --train_dir PATH), or omit --dataset_name to use the built-in digits."
        ) from exc


def _load_local_dataset(path: Path, cache_dir: str | None):
    import datasets

    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        return datasets.load_dataset("parquet", data_files={"train": str(path)}, cache_dir=cache_dir)
    if any(path.glob("*.parquet")):
        files = sorted(str(p) for p in path.glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files={"train": files}, cache_dir=cache_dir)
    return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)


def _looks_like_local_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else that is missing is a mistyped local path.
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or (os.sep != "/" and os.sep in name)
        or name.count("/") > 1
        or name.endswith((".parquet", ".arrow", ".json", ".csv"))
    )


def resolve_columns(dataset, image_column: str | None = None, label_column: str | None = None) -> tuple[str, str]:
    """Return the (image, label) column names, detecting them when not given."""
    import datasets

    features = dataset.features
    columns = list(features)
    if image_column is not None:
        if image_column not in features:
            raise DataError(f"Image column {image_column!r} not found; columns are {columns}. Pass --image_column.")
    else:
        typed = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        named = [c for c in _IMAGE_CANDIDATES if c in features]
        found = typed or named
        if len(found) != 1:
            what = "no image column" if not found else f"several image columns {found}"
            raise DataError(f"Found {what} among {columns}; pass --image_column NAME.")
        image_column = found[0]
    if label_column is not None:
        if label_column not in features:
            raise DataError(f"Label column {label_column!r} not found; columns are {columns}. Pass --label_column.")
    else:
        typed = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        named = [c for c in _LABEL_CANDIDATES if c in features]
        found = typed if len(typed) == 1 else (named[:1] if named else typed)
        if len(found) != 1:
            what = "no label column" if not found else f"several label columns {found}"
            raise DataError(f"Found {what} among {columns}; pass --label_column NAME.")
        label_column = found[0]
    return image_column, label_column


def _canonical(dataset, image_column: str, label_column: str):
    """Rename to ``image``/``label`` and make ``label`` a ClassLabel."""
    import datasets

    for wanted, actual in ((IMAGE_COLUMN, image_column), (LABEL_COLUMN, label_column)):
        if actual != wanted and wanted in dataset.column_names:
            dataset = dataset.remove_columns(wanted)
        if actual != wanted:
            dataset = dataset.rename_column(actual, wanted)
    feature = dataset.features[LABEL_COLUMN]
    if isinstance(feature, datasets.ClassLabel):
        return dataset
    dtype = getattr(feature, "dtype", None)
    if dtype is None or not str(dtype).startswith(("int", "uint")):
        raise DataError(
            f"Label column {label_column!r} has type {dtype or type(feature).__name__}; labels must be integers or a "
            "ClassLabel. Encode string labels first, e.g. dataset.class_encode_column(column)."
        )
    values = np.asarray(dataset[LABEL_COLUMN])
    if len(values) and values.min() < 0:
        raise DataError(f"Label column {label_column!r} holds negative labels ({values.min()}); use 0..C-1.")
    num_classes = int(values.max()) + 1 if len(values) else 0
    return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=[str(i) for i in range(num_classes)]))


def labels_of(dataset) -> np.ndarray:
    """The labels of any split the package handles (raw, lazily transformed, in memory), without decoding images."""
    labels = getattr(dataset, "labels", None)
    if torch.is_tensor(labels):  # methods.base.TensorImageDataset keeps them as one tensor
        return labels.numpy()
    if hasattr(dataset, "with_format"):  # an HF dataset, maybe with a lazy image transform: read the raw column
        raw = dataset.with_format(None)
        column = LABEL_COLUMN if LABEL_COLUMN in raw.column_names else "labels"
        return np.asarray(list(raw[column]), dtype=np.int64)
    return np.asarray([int(item["labels"] if "labels" in item else item[LABEL_COLUMN]) for item in dataset], dtype=np.int64)


def class_names(dataset) -> list[str]:
    return list(dataset.features[LABEL_COLUMN].names)


# --------------------------------------------------------------------------- forget specs


@dataclass
class ForgetSpec:
    """What to forget. Give exactly one of ``labels``, ``fraction``, ``indices``, ``ids`` or ``noisy_fraction``.

    - ``labels``: whole classes, as ids or class names.
    - ``fraction``: a seeded random fraction of the samples (``stratified`` keeps class proportions).
    - ``indices``: row indices of the training split.
    - ``ids`` with ``id_column``: values of an id column, e.g. the sample ids of a deletion request.
    - ``noisy_fraction``: relabel a seeded fraction of the samples to a wrong class; exactly those
      mislabeled samples form the forget set (train the original on :func:`apply_label_noise` output).
    """

    labels: list[int | str] | None = None
    fraction: float | None = None
    indices: list[int] | None = None
    ids: list[Any] | None = None
    id_column: str | None = None
    noisy_fraction: float | None = None
    seed: int = 0
    stratified: bool = False

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


def _label_ids(dataset, labels: Iterable[int | str]) -> list[int]:
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
        idx = np.flatnonzero(np.isin(targets, _label_ids(dataset, spec.labels)))
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
        missing = sorted(wanted - position.keys())
        if missing:
            raise DataError(
                f"{len(missing)} of {len(wanted)} forget ids were not found in column {spec.id_column!r}, "
                f"e.g. {missing[:3]}. Check the ids file and --id_column."
            )
        idx = np.asarray([i for v in wanted for i in position[v]], dtype=np.int64)
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


def apply_label_noise(dataset, spec: ForgetSpec):
    """Return ``dataset`` with the ``spec.noisy_fraction`` selected samples relabeled to a wrong class."""
    if spec.noisy_fraction is None:
        return dataset
    idx = forget_indices(dataset, spec)
    num_classes = len(class_names(dataset))
    if num_classes < 2:
        raise DataError("Label noise needs at least two classes.")
    rng = np.random.default_rng(spec.seed + 1)
    labels = np.asarray(dataset[LABEL_COLUMN]).copy()
    # An offset in 1..C-1 guarantees the new label differs from the true one.
    labels[idx] = (labels[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes
    feature = dataset.features[LABEL_COLUMN]
    return dataset.remove_columns(LABEL_COLUMN).add_column(LABEL_COLUMN, labels.tolist()).cast_column(
        LABEL_COLUMN, feature
    )


def split_forget_retain(dataset, spec: ForgetSpec, *, retain=None):
    """Split ``dataset`` into ``DatasetDict(forget=..., retain=...)``: disjoint, covering, deterministic.

    For ``noisy_fraction`` the returned splits carry the corrupted labels (the forget set holds the
    mislabeled samples). When ``retain`` is given explicitly, it must not overlap the forget set
    (compared by ``id_column`` when set, else by row index is impossible, so ids are required).
    """
    import datasets

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


# --------------------------------------------------------------------------- transforms


def load_image_processor(model_name_or_path: str | None, image_size: int = 16):
    """The model's image processor, or a plain resize+normalise one for models built from a config."""
    from transformers import AutoImageProcessor

    try:  # transformers >= 5: the PIL backend needs no torchvision
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor

    if model_name_or_path:
        try:
            return AutoImageProcessor.from_pretrained(model_name_or_path, backend="pil")
        except (OSError, ValueError):
            logger.warning("No image processor found at %s; using a %dx%d resize + normalise.", model_name_or_path, image_size, image_size)
    return ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, do_rescale=True
    )


def with_image_transform(dataset, image_processor):
    """Lazily turn ``image`` into ``pixel_values`` (keeps ``label``; needs ``remove_unused_columns=False``)."""

    def transform(batch: dict) -> dict:
        images = [img.convert("RGB") for img in batch[IMAGE_COLUMN]]
        out = {"pixel_values": image_processor(images, return_tensors="pt")["pixel_values"]}
        out[LABEL_COLUMN] = batch[LABEL_COLUMN]
        return out

    return dataset.with_transform(transform)


def collate_fn(examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack transformed examples into a ``pixel_values``/``labels`` batch."""
    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
    labels = torch.tensor([int(e[LABEL_COLUMN] if LABEL_COLUMN in e else e["labels"]) for e in examples])
    return {"pixel_values": pixel_values, "labels": labels}


def label_maps(dataset) -> tuple[dict[int, str], dict[str, int]]:
    names = class_names(dataset)
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}

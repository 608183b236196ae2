"""Datasets in: built-in digits, Hub, disk, parquet and image folders, as canonical ``image``/``label`` splits.

Everything downstream sees the canonical columns ``image`` (PIL) and ``label``
(ClassLabel); :func:`load_image_dataset` renames a user's columns once, here. What to forget and
the forget/retain split live in :mod:`hf_deepclean.forget`, the image transform in :mod:`hf_deepclean.images`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .errors import DataError

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
BUILTIN_DATASETS = ("digits",)
_LABEL_CANDIDATES = ("label", "labels", "fine_label", "coarse_label", "class", "target")
_IMAGE_CANDIDATES = ("image", "img", "pixel_values", "picture")


# --------------------------------------------------------------------------- loading


def load_builtin_dataset(name: str = "digits", *, image_size: int = 16, test_size: float = 0.2, seed: int = 0):
    """Load a dataset that ships with the package's dependencies (no download).

    ``"digits"`` is scikit-learn's bundled set of 1,797 8x8 handwritten digits,
    upscaled to ``image_size`` RGB PIL images, split 80/20 (stratified, seeded) into
    ``train`` and ``test``. Columns: ``image`` (PIL) and ``label`` (ClassLabel "0".."9").
    """
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

    def build(idx: np.ndarray) -> datasets.Dataset:
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
    if label_column is None:
        raw = with_folder_labels(raw)
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
        test = _canonical(raw[test_split], image_col, label_col, classes=train.features[LABEL_COLUMN])
    else:
        fraction = 0.15 if train_val_split is None else train_val_split
        if not 0.0 < fraction < 1.0:
            raise DataError(f"train_val_split={fraction} must be in (0, 1).")
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=LABEL_COLUMN)
        train, test = parts["train"], parts["test"]
        logger.info("No test split found: carved %d samples (%.0f%%) off train as test.", len(test), fraction * 100)
    return datasets.DatasetDict(train=train, test=test)


def _load_named_dataset(name: str, config: str | None, cache_dir: str | None):
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
    if looks_like_local_path(name):
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
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        return datasets.load_dataset("parquet", data_files={"train": str(path)}, cache_dir=cache_dir)
    if any(path.glob("*.parquet")):
        files = sorted(str(p) for p in path.glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files={"train": files}, cache_dir=cache_dir)
    return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)


def looks_like_local_path(name: str) -> bool:
    """True for a name that can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    # Hub ids are "name" or "owner/name"; anything else that is missing is a mistyped local path.
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or (os.sep != "/" and os.sep in name)
        or name.count("/") > 1
        or name.endswith((".parquet", ".arrow", ".json", ".csv"))
    )


def resolve_columns(dataset, image_column: str | None = None, label_column: str | None = None) -> tuple[str, str]:
    """Return the (image, label) column names, detecting them when not given."""
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


def with_folder_labels(raw: datasets.DatasetDict) -> datasets.DatasetDict:
    """Image folders whose ``metadata.csv`` (e.g. ``file_name,sample_id`` for forgetting by id) made ``datasets``
    drop the labels of the class folders get them back: a ``label`` ClassLabel named after each image's folder
    (sorted names, shared by every split), when no split has a label column of its own."""
    if any(_label_candidates(split.features) for split in raw.values()):
        return raw
    folders = {}
    for name, split in raw.items():
        feature = split.features.get(IMAGE_COLUMN)
        if not isinstance(feature, datasets.Image):
            return raw
        paths = [value.get("path") for value in split.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))[IMAGE_COLUMN]]
        if not paths or any(not p for p in paths):
            return raw
        folders[name] = [Path(p).parent.name for p in paths]
    names = sorted({folder for values in folders.values() for folder in values})
    if len(names) < 2:
        return raw
    classes = datasets.ClassLabel(names=names)
    logger.info("Labels from the image folders (%s): the metadata file has no label column.", ", ".join(names))
    return datasets.DatasetDict({
        name: split.add_column(LABEL_COLUMN, [classes.str2int(f) for f in folders[name]]).cast_column(LABEL_COLUMN, classes)
        for name, split in raw.items()
    })


def _label_candidates(features) -> list[str]:
    return [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)] + [
        c for c in _LABEL_CANDIDATES if c in features]


def _canonical(dataset, image_column: str, label_column: str, classes: datasets.ClassLabel | None = None):
    """Rename to ``image``/``label`` and make ``label`` a ClassLabel: ``classes`` when given (a test split takes
    the training split's), else its own; string labels become classes in sorted order."""
    for wanted, actual in ((IMAGE_COLUMN, image_column), (LABEL_COLUMN, label_column)):
        if actual != wanted and wanted in dataset.column_names:
            dataset = dataset.remove_columns(wanted)
        if actual != wanted:
            dataset = dataset.rename_column(actual, wanted)
    feature = dataset.features[LABEL_COLUMN]
    dtype = getattr(feature, "dtype", None)
    if str(dtype) in ("string", "large_string"):
        values = sorted({str(v) for v in dataset[LABEL_COLUMN]})
        target = classes or datasets.ClassLabel(names=values)
        unknown = [v for v in values if v not in target.names]
        if unknown:
            raise DataError(f"Label column {label_column!r} of the test split holds {len(unknown)} classes the training "
                            f"split does not have (e.g. {unknown[0]!r}); use one set of classes for both splits.")
        return dataset.cast_column(LABEL_COLUMN, target)
    if classes is not None:
        return dataset.cast_column(LABEL_COLUMN, classes)
    if isinstance(feature, datasets.ClassLabel):
        return dataset
    if dtype is None or not str(dtype).startswith(("int", "uint")):
        raise DataError(
            f"Label column {label_column!r} has type {dtype or type(feature).__name__}; labels must be integers, "
            "strings (class names) or a ClassLabel."
        )
    values = np.asarray(dataset[LABEL_COLUMN])
    if len(values) and values.min() < 0:
        raise DataError(f"Label column {label_column!r} holds negative labels ({values.min()}); use 0..C-1.")
    num_classes = int(values.max()) + 1 if len(values) else 0
    return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=[str(i) for i in range(num_classes)]))


def labels_of(dataset) -> np.ndarray:
    """The labels of any split the package handles (raw, lazily transformed, in memory), without decoding images."""
    labels = getattr(dataset, "labels", None)
    if torch.is_tensor(labels):  # images.TensorImageDataset keeps them as one tensor
        return labels.numpy()
    if hasattr(dataset, "with_format"):  # an HF dataset, maybe with a lazy image transform: read the raw column
        raw = dataset.with_format(None)
        column = LABEL_COLUMN if LABEL_COLUMN in raw.column_names else "labels"
        return np.asarray(list(raw[column]), dtype=np.int64)
    return np.asarray([int(item["labels"] if "labels" in item else item[LABEL_COLUMN]) for item in dataset], dtype=np.int64)


def class_names(dataset) -> list[str]:
    return list(dataset.features[LABEL_COLUMN].names)


def label_maps(dataset) -> tuple[dict[int, str], dict[str, int]]:
    names = class_names(dataset)
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}

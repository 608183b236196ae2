"""One small file per finished model of an audit (``retrain/seed_00007.npz``, ``unlearn/seed_00007.npz``).

Each holds the model's logits on the forget set, its accuracies, its seconds and the settings key, and is written
atomically (a temporary file renamed into place) as soon as the model is evaluated, so a killed audit loses at
most the model it was training. A file that cannot be read or carries another key is recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ModelRecord", "load_record", "record_path", "save_record"]


@dataclass
class ModelRecord:
    """What an audit keeps of one model: ``logits`` [num_forget, num_classes] (float32) on the forget set, the forget
    ``labels``, ``accuracies`` {retain, forget, test}, ``time_s`` (the method's or the training's own seconds),
    ``wall_s`` (with the evaluation), the ``seed`` and the method's ``extra`` facts (e.g. DeepClean's selection)."""

    seed: int
    logits: np.ndarray
    labels: np.ndarray
    accuracies: dict
    time_s: float
    wall_s: float
    extra: dict = field(default_factory=dict)


def record_path(folder: Path, seed: int) -> Path:
    return Path(folder) / f"seed_{seed:05d}.npz"


def save_record(folder: Path, record: ModelRecord, key: str) -> Path:
    path = record_path(folder, record.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, seed=np.int64(record.seed), logits=np.asarray(record.logits, dtype=np.float32),
                 labels=np.asarray(record.labels, dtype=np.int64), time_s=np.float64(record.time_s),
                 wall_s=np.float64(record.wall_s), key=np.str_(key),
                 accuracies=np.str_(json.dumps(record.accuracies)),
                 extra=np.str_(json.dumps(record.extra, default=str)))
    os.replace(tmp, path)
    return path


def load_record(folder: Path, seed: int, key: str, *, still_valid=None) -> ModelRecord | None:
    """The cached record of ``seed``, or ``None`` when there is none (or it is unreadable or of other settings).

    ``still_valid(record)``: a second chance for a record whose key differs (the benchmark's populations compare the
    settings the record stores, so that a field an upgrade adds to a config does not invalidate the cache)."""
    path = record_path(folder, seed)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            record = ModelRecord(seed=int(data["seed"]), logits=data["logits"], labels=data["labels"],
                                 accuracies=json.loads(str(data["accuracies"])), time_s=float(data["time_s"]),
                                 wall_s=float(data["wall_s"]), extra=json.loads(str(data["extra"])))
            stored_key = str(data["key"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("%s cannot be read (%s); it is recomputed.", path, exc)
        return None
    if stored_key != key and not (still_valid is not None and still_valid(record)):
        logger.warning("%s was made with other settings; it is recomputed.", path)
        return None
    return record

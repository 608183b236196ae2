"""What an audit is made of, written to ``settings.json``: the key of its cache.

The models an audit folder holds are valid only for the settings they were made with: the original's weights, the
data and forget set, the retrains' recipe (read from the original's ``train_summary.json``), the method and its
resolved config, the retain sample and the base seed. A rerun with the same settings continues where the last one
stopped; other settings are refused in one line (or, with ``--overwrite_output_dir``, the cache is recomputed).
The number of models is not part of the key: the models are seeds ``seed .. seed + N - 1``, so a larger N reuses
the models already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

from transformers import TrainingArguments

from ..errors import ConfigError, OutputDirError
from ..methods import get_method
from ..methods.retrain import RetrainConfig
from ..outputs import check_output_dir
from ..training import NOT_SETTINGS, TRAIN_SUMMARY_FILE, TrainConfig, read_train_summary, recipe_of

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
AUDIT_JSON = "audit.json"
AUDIT_MARKDOWN = "audit.md"
RETRAIN_DIR, UNLEARN_DIR = "retrain", "unlearn"
PLOT_FILES = ("epsilon_histogram.png", "worst_examples.png")
SETTINGS_VERSION = 1
# Recipe fields that do not carry over to the retrains: the seeds are the audit's (``data_seed`` would give every
# retrain the original's batch order), and the retrains neither evaluate, save, resume nor push.
NOT_CARRIED = frozenset({
    "seed", "data_seed", "resume_from_checkpoint", "overwrite_output_dir", "do_train", "do_eval", "do_predict",
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "save_strategy", "save_steps", "save_total_limit", "save_only_model", "push_to_hub",
    "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision", "local_rank",
})
# Fields of a resolved method config that name where or how loudly it runs, not what it does.
_NOT_KEYED = NOT_SETTINGS | {"seed"}

__all__ = ["AUDIT_JSON", "AUDIT_MARKDOWN", "NOT_CARRIED", "PLOT_FILES", "RETRAIN_DIR", "SETTINGS_FILE", "UNLEARN_DIR",
           "audit_settings", "original_recipe", "prepare_folder", "settings_key", "weights_sha256"]


def weights_sha256(folder) -> str | None:
    """SHA-256 over the weight files of a model folder (by name, then content); ``None`` for a Hub id."""
    path = Path(folder)
    files = sorted(list(path.glob("*.safetensors")) + list(path.glob("*.bin"))) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def original_recipe(original_path) -> tuple[dict, str]:
    """The retrains' training arguments: the original's recorded recipe (``train_summary.json``) minus
    :data:`NOT_CARRIED`, or :class:`TrainConfig`'s defaults with a warning. Returns (fields, where they came from)."""
    recipe = read_train_summary(original_path).get("recipe")
    known = {f.name for f in dataclasses.fields(RetrainConfig) if f.init}
    if isinstance(recipe, dict) and recipe:
        return {k: v for k, v in recipe.items() if k in known and k not in NOT_CARRIED}, TRAIN_SUMMARY_FILE
    logger.warning("%s records no training recipe (no %s from `hf-deepclean train`): the retrains use TrainConfig's "
                   "defaults (%g epochs, learning rate %g), which may not be how the original was trained.",
                   original_path, TRAIN_SUMMARY_FILE, TrainConfig.num_train_epochs, TrainConfig.learning_rate)
    defaults = recipe_of(TrainConfig())
    return {k: v for k, v in defaults.items() if k in known and k not in NOT_CARRIED}, "TrainConfig defaults"


def _config_record(config) -> dict:
    values = config.to_dict() if isinstance(config, TrainingArguments) else dataclasses.asdict(config)
    return json.loads(json.dumps({k: v for k, v in values.items() if k not in _NOT_KEYED}, default=str))


def audit_settings(*, original_path, identity: dict, method: str, method_overrides: dict | None, seed: int,
                   retain_sample_size: int | None, base_model: str | None = None) -> dict:
    """The settings of an audit (JSON-safe). ``identity``: ``data`` (name, split seed, sizes) and ``forget``
    (what a gold model records it was trained without). The method config is built here, so unknown overrides
    are refused before anything runs."""
    overrides = dict(method_overrides or {})
    bad = sorted(k for k in overrides if k in ("seed", "output_dir"))
    if bad:
        raise ConfigError(f"--method_overrides may not set {bad}: the audit gives each run its own seed and folder.")
    try:
        config = get_method(method).make_config(None, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--method {method} --method_overrides {json.dumps(overrides)}: {exc}") from exc
    recipe, source = original_recipe(original_path)
    retrain_config = get_method("retrain").make_config(None, **recipe, base_model=base_model)
    return {
        "version": SETTINGS_VERSION,
        "original_weights_sha256": weights_sha256(original_path),
        "data": identity["data"],
        "forget": identity["forget"],
        "retrain": {"source": source, "config": _config_record(retrain_config)},
        "method": {"name": method, "overrides": json.loads(json.dumps(overrides, default=str)),
                   "config": _config_record(config)},
        "retain_sample_size": retain_sample_size,
        "base_seed": int(seed),
    }


def settings_key(settings: dict) -> str:
    """A short hash of the settings, stored in every cached model's file."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} {json.dumps(a, default=str)} there, {json.dumps(b, default=str)} here")
    return found


def prepare_folder(output_dir, settings: dict, *, overwrite: bool, original_path) -> tuple[Path, bool]:
    """Check the audit folder before anything is written; returns (folder, resuming).

    A folder of an audit with the same settings is resumed; one with other settings is refused in one line, or
    with ``overwrite`` cleared of the audit's own files; any other non-empty folder is refused by
    :func:`check_output_dir` unless ``overwrite``.
    """
    out = Path(output_dir) if output_dir else None
    stored = None
    if out is not None and (out / SETTINGS_FILE).is_file():
        try:
            stored = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
    if stored is not None and stored != settings and not overwrite:
        changes = _differences(stored, settings) if isinstance(stored, dict) else ["unreadable settings.json"]
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise OutputDirError(f"--output_dir {output_dir} holds an audit made with other settings ({shown}): choose a "
                             "new folder, rerun with the same settings to continue it, or pass --overwrite_output_dir "
                             "to recompute it.")
    resuming = stored == settings
    out = check_output_dir(output_dir, overwrite=overwrite, inputs=[original_path], resume=resuming)
    if stored is not None and not resuming:  # overwrite: the cache of other settings goes
        for name in (RETRAIN_DIR, UNLEARN_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (SETTINGS_FILE, AUDIT_JSON, AUDIT_MARKDOWN, *PLOT_FILES):
            (out / name).unlink(missing_ok=True)
    return out, resuming

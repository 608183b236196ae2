"""Run an audit: N retrains on D_r and N runs of a method from one original, cached per model, then judged.

:func:`run_audit` trains the retrains (fresh models of the original's architecture, the original's recipe, seeds
``seed .. seed + N - 1``) and runs the method N times (each from a fresh copy of the original, the same seeds),
keeping each model's forget-set logits and accuracies in its own file as soon as it is done (:mod:`.cache`). It
trains one model of each population first and prints the estimated total; the rest follow with a progress bar and
one line per model. Then :func:`~hf_deepclean.audit.summary.summarize` judges the populations and ``audit.json``,
``audit.md`` and the plots are written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..evaluation import collect_outputs, logit_scaled_confidence, seeded_subset
from ..images import TensorImageDataset, in_memory
from ..methods import run_method
from ..outputs import run_folder
from .cache import ModelRecord, load_record, save_record
from .plots import write_audit_plots
from .settings import (
    AUDIT_JSON,
    AUDIT_MARKDOWN,
    RETRAIN_DIR,
    SETTINGS_FILE,
    UNLEARN_DIR,
    audit_settings,
    prepare_folder,
    settings_key,
)
from .summary import SPLITS, Population, summarize, summary_markdown

logger = logging.getLogger(__name__)

DEFAULT_NUM_MODELS = 32
DEFAULT_RETAIN_SAMPLE = 2000
AUDIT_KEYS = ("version", "settings", "original", "num_models", "method", "retain_sample", "num_forget_examples",
              "unlearned_seeds", "retrained_seeds", "forget_score", "forget_quality", "final_score",
              "accuracy_ratios", "reference", "accuracy", "time_s", "worst_examples", "statement", "wall_time_s",
              "models_wall_s", "cached_at_start", "plots")

__all__ = ["AUDIT_KEYS", "DEFAULT_NUM_MODELS", "DEFAULT_RETAIN_SAMPLE", "model_record", "population_of", "run_audit"]


def model_record(result, seed: int, eval_sets: dict, start: float, batch_size: int,
                 processor=None) -> ModelRecord:
    """What a population keeps of one finished model (a :class:`~hf_deepclean.methods.MethodResult`): its logits
    on every forget example and its accuracy on each of ``eval_sets`` (``forget``, ``retain``, ``test``; raw splits
    are transformed by ``processor``)."""
    outputs = {split: collect_outputs(result.model, eval_sets[split], image_processor=processor,
                                      batch_size=batch_size) for split in SPLITS}
    return ModelRecord(seed=seed, logits=outputs["forget"].logits, labels=outputs["forget"].labels,
                       accuracies={split: outputs[split].accuracy for split in SPLITS}, time_s=float(result.time_s),
                       wall_s=time.perf_counter() - start, extra=dict(result.extra or {}))


@contextlib.contextmanager
def _quiet_models():
    """The methods' own INFO lines (the Fisher's seconds, the selection) at WARNING while the models run: the
    audit prints one line per model instead."""
    loggers = [logging.getLogger(name) for name in ("hf_deepclean.fisher", "hf_deepclean.trainer")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def population_of(records: list[ModelRecord]) -> Population:
    """The :class:`Population` of finished models' records (all evaluated on the same forget set)."""
    labels = records[0].labels
    if any(not np.array_equal(r.labels, labels) for r in records):
        raise ValueError("the cached models were evaluated on different forget sets; recompute the audit")
    confidences = logit_scaled_confidence(np.stack([r.logits for r in records]), labels)
    return Population(seeds=[r.seed for r in records], confidences=confidences,
                      accuracies={s: np.array([r.accuracies[s] for r in records]) for s in SPLITS},
                      times=np.array([r.time_s for r in records]))


def _estimate(records: dict, num_models: int, method: str) -> str:
    mean = {kind: float(np.mean([r.wall_s for r in done.values()])) for kind, done in records.items()}
    left = sum(num_models - len(done) for done in records.values())
    to_go = sum((num_models - len(done)) * mean[kind] for kind, done in records.items())
    total = num_models * (mean[RETRAIN_DIR] + mean[UNLEARN_DIR])
    return (f"estimated total: {num_models} x {mean[RETRAIN_DIR]:.1f} s (retrain) + {num_models} x "
            f"{mean[UNLEARN_DIR]:.1f} s ({method}) = {total:.0f} s ({total / 60:.1f} min); {left} models to go, "
            f"about {to_go:.0f} s")


def run_audit(original, splits: dict, processor, *, original_path, identity: dict, output_dir,
              num_models: int = DEFAULT_NUM_MODELS, method: str = "deepclean", method_overrides: dict | None = None,
              seed: int = 0, retain_sample_size: int | None = DEFAULT_RETAIN_SAMPLE, base_model: str | None = None,
              overwrite: bool = False, plots: bool = True, batch_size: int = 256, log=None) -> dict:
    """Audit ``method`` on ``original`` (loaded from ``original_path``) against N retrains; returns audit.json.

    ``splits``: raw ``forget``, ``retain`` and ``test`` splits. ``identity``: ``data`` and ``forget`` records (see
    :func:`~hf_deepclean.audit.settings.audit_settings`). Retain accuracy is measured on a seeded sample of
    ``retain_sample_size`` D_r images (seed ``seed``; all of D_r when it is smaller or ``None``).
    """
    log = log or tqdm.write
    if num_models < 3:
        raise ConfigError(f"--num_models {num_models}: the forget score needs at least 3 models per population "
                          "(and 6 for the retrains' own reference); the competition used 512, 32 is a quick audit.")
    started = time.perf_counter()
    settings = audit_settings(original_path=original_path, identity=identity, method=method,
                              method_overrides=method_overrides, seed=seed, retain_sample_size=retain_sample_size,
                              base_model=base_model)
    key = settings_key(settings)
    out, _ = prepare_folder(output_dir, settings, overwrite=overwrite, original_path=original_path)
    train_sets = {"forget": TensorImageDataset.from_dataset(splits["forget"], processor),
                  "retain": in_memory(splits["retain"], processor)}
    eval_sets = {**train_sets, "retain": seeded_subset(train_sets["retain"], retain_sample_size, seed),
                 "test": in_memory(splits["test"], processor)}
    retain_sample = {"size": len(eval_sets["retain"]), "of": len(train_sets["retain"]), "seed": seed}
    retrain_fields = dict(settings["retrain"]["config"])
    overrides = settings["method"]["overrides"]
    seeds = list(range(seed, seed + num_models))
    with run_folder(out):
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        records = {kind: {s: r for s in seeds if (r := load_record(out / kind, s, key)) is not None}
                   for kind in (RETRAIN_DIR, UNLEARN_DIR)}
        cached = sum(len(done) for done in records.values())
        log(f"audit of {method} in {out}: {num_models} retrains + {num_models} runs, seeds {seeds[0]}-{seeds[-1]}; "
            f"{cached} of {2 * num_models} models already done")
        todo = {kind: [s for s in seeds if s not in records[kind]] for kind in records}
        # One model of each population first (unless cached), so that the estimate comes before the bulk.
        first = [(kind, todo[kind].pop(0)) for kind in records if not records[kind] and todo[kind]]
        plan = first + [(kind, s) for kind in records for s in todo[kind]]
        estimated = False
        bar = tqdm(total=2 * num_models, initial=cached, unit="model", desc="audit", dynamic_ncols=True)
        with bar, _quiet_models(), tempfile.TemporaryDirectory(prefix="hf_deepclean_audit_") as scratch:
            for kind, s in plan:
                if all(records.values()) and not estimated:
                    log(_estimate(records, num_models, method))
                    estimated = True
                start = time.perf_counter()
                if kind == RETRAIN_DIR:
                    result = run_method("retrain", original, {"retain": train_sets["retain"]}, processor, seed=s,
                                        output_dir=scratch, **retrain_fields)
                else:
                    result = run_method(method, copy.deepcopy(original), train_sets, processor, seed=s,
                                        output_dir=scratch, **overrides)
                record = model_record(result, s, eval_sets, start, batch_size, processor)
                save_record(out / kind, record, key)
                records[kind][s] = record
                bar.update(1)
                log(f"{'retrain' if kind == RETRAIN_DIR else method} seed {s}: {record.time_s:.1f} s "
                    f"({record.wall_s:.1f} s with evaluation), test {record.accuracies['test']:.2%}, forget "
                    f"{record.accuracies['forget']:.2%}")
        unlearned = population_of([records[UNLEARN_DIR][s] for s in seeds])
        retrained = population_of([records[RETRAIN_DIR][s] for s in seeds])
        summary = summarize(unlearned, retrained, method=method)
        written = write_audit_plots(out, unlearned, retrained, summary, log=log) if plots else []
        audit = {"version": settings["version"], "settings": settings, "original": str(original_path),
                 "retain_sample": retain_sample, **summary,
                 "wall_time_s": time.perf_counter() - started,
                 "models_wall_s": {kind: float(sum(r.wall_s for r in records[kind].values())) for kind in records},
                 "cached_at_start": cached, "plots": [p.name for p in written]}
        (out / AUDIT_JSON).write_text(json.dumps(audit, indent=2, allow_nan=False) + "\n",
                                      encoding="utf-8")
        (out / AUDIT_MARKDOWN).write_text(summary_markdown(summary, settings_lines=_settings_lines(audit),
                                                           plots=audit["plots"]), encoding="utf-8")
    return audit


def _settings_lines(audit: dict) -> list[str]:
    settings, sample = audit["settings"], audit["retain_sample"]
    recipe = settings["retrain"]["config"]
    method = settings["method"]
    lines = [f"Retrains: fresh models of the original's architecture trained on D_r with the recipe from "
             f"{settings['retrain']['source']} ({recipe.get('num_train_epochs'):g} epochs, learning rate "
             f"{recipe.get('learning_rate'):g}, batch {recipe.get('per_device_train_batch_size')}"
             + (f", max_steps {recipe['max_steps']}" if recipe.get("max_steps", -1) > 0 else "") + ").",
             f"Method: {method['name']}" + (f" with {json.dumps(method['overrides'])}" if method["overrides"] else
                                            " with its registered defaults") + ", each run from a fresh copy of the "
             "original.",
             f"Retain accuracy on {'all' if sample['size'] == sample['of'] else 'a seeded sample of'} "
             f"{sample['size']} of the {sample['of']} D_r images" + (f" (seed {sample['seed']})"
                                                                    if sample["size"] < sample["of"] else "") + ".",
             f"This invocation: {audit['wall_time_s']:.0f} s wall ({audit['cached_at_start']} of "
             f"{2 * audit['num_models']} models were cached); the models' own wall seconds, with evaluation: retrains "
             f"{audit['models_wall_s'][RETRAIN_DIR]:.0f}, {method['name']} {audit['models_wall_s'][UNLEARN_DIR]:.0f}."]
    if audit["final_score"] is None:
        lines.append("The final score is undefined: the retrains' mean accuracy is 0 on retain or test.")
    return lines

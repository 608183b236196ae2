"""What both harnesses (the method comparison and the sensitivity sweep) share.

- the set-up of a run: torch threads, quiet libraries, ``--method_overrides``, the guard that an output folder is
  only reused with the settings it was made with, ``--quick``'s budget;
- what a run is made of: the model entries (tiny architectures or one checkpoint) and the base data;
- its outputs: JSON files that are never half-written, and the ``[label i/N elapsed] message`` progress lines.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
import transformers

from ..arguments import DataArguments, ModelArguments
from ..errors import OutputDirError
from ..evaluation.report import _json_safe
from ..images import load_image_processor, processor_backend
from .arguments import BenchmarkArguments, parse_overrides

SETTINGS_FILE = "benchmark_settings.json"
# --quick: a budget for smoke tests, not for numbers
QUICK = {"train_samples": 240, "test_samples": 90, "train_epochs": 1.0, "method_epochs": 0.5, "fisher_max_samples": 48}


def write_json(path: Path, data: dict) -> None:
    """Write via a temporary file, so a killed run never leaves a truncated result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


class Progress:
    """``[label i/N elapsed] message`` lines; ``i`` counts finished (or cached) results."""

    def __init__(self, total: int, label: str = "benchmark"):
        self.total, self.done, self.label, self.started = total, 0, label, time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{self.label} {self.done}/{self.total} {elapsed:7.1f}s] {message}", flush=True)


def quiet_libraries() -> None:
    """Hundreds of runs: keep the per-cell progress lines readable (warnings and errors still show)."""
    logging.getLogger("hf_deepclean").setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def set_up_process(bench: BenchmarkArguments) -> None:
    """``--num_threads`` and quiet libraries, in the main process and in every worker."""
    if bench.num_threads > 0:
        torch.set_num_threads(bench.num_threads)
    quiet_libraries()


def run_settings(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments,
                 overrides: dict) -> dict:
    """What the cached models and cells depend on; a rerun with other values needs another folder.

    The image processors' backend is recorded when it is not PIL's, the only one before it could be chosen: folders
    made with PIL's keep their settings file as it was.
    """
    backend = processor_backend(model_args.image_processor_backend)
    return {
        "model_name_or_path": model_args.model_name_or_path, "image_size": model_args.image_size,
        "data": asdict(data_args), "quick": bench.quick, "forget_class": bench.forget_class,
        "forget_fraction": bench.forget_fraction, "noisy_fraction": bench.noisy_fraction,
        "train_epochs": bench.train_epochs, "train_learning_rate": bench.train_learning_rate,
        "method_overrides": overrides, "retain_eval_samples": bench.retain_eval_samples,
        **({"image_processor_backend": backend} if backend != "pil" else {}),
    }


def check_settings(out: Path, settings: dict) -> None:
    """Refuse a folder made with other settings (or holding something else); record them in a new one."""
    path = out / SETTINGS_FILE
    if path.exists():
        stored = read_json(path)
        changed = sorted(k for k in set(stored) | set(settings)
                         if stored.get(k) != json.loads(json.dumps(settings.get(k))))
        if changed:
            raise OutputDirError(
                f"{out} holds a benchmark run with other settings ({', '.join(changed)}); its cached models and "
                "results would not match. Use a new --output_dir, or delete the folder to start over."
            )
    elif out.exists() and any(p.name not in ("models", "cells", "population") for p in out.iterdir()):
        raise OutputDirError(f"--output_dir {out} is not empty and holds no benchmark; choose a new folder.")
    else:
        write_json(path, settings)


def start_run(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments) -> tuple[Path, dict]:
    """Set up this process, check the output folder's settings, apply ``--quick``'s training budget.

    Returns the output folder and the parsed ``--method_overrides``.
    """
    set_up_process(bench)
    out = Path(bench.output_dir).resolve()
    overrides = parse_overrides(bench.method_overrides)
    check_settings(out, run_settings(model_args, data_args, bench, overrides))
    if bench.quick:
        bench.train_epochs = min(bench.train_epochs, QUICK["train_epochs"])
    return out, overrides


def model_entries(model_args: ModelArguments, bench: BenchmarkArguments) -> list[tuple[str, str]]:
    """``(model_key, architecture)`` per model: the tiny architectures, or the one ``--model_name_or_path`` (its
    path made a folder name)."""
    if model_args.model_name_or_path:
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_args.model_name_or_path.rstrip("/")).strip("_")
        return [(key, model_args.architecture)]
    return [(arch, arch) for arch in bench.architectures]


def load_base(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments):
    """The train/test split (subsampled under ``--quick``; it never depends on the benchmark seed) and the image
    processor."""
    base = data_args.load()
    if bench.quick:
        base["train"] = base["train"].shuffle(seed=0).select(range(min(QUICK["train_samples"], len(base["train"]))))
        base["test"] = base["test"].shuffle(seed=0).select(range(min(QUICK["test_samples"], len(base["test"]))))
    return base, load_image_processor(model_args.model_name_or_path, model_args.image_size,
                                      model_args.image_processor_backend)


def run_groups(run, groups: list[tuple], group_fn, per_group: int, progress: Progress, needs_data=None) -> None:
    """``group_fn(run, model_key, architecture, seed, progress, base)`` for every (model, seed) group: in this
    process one after the other (the base data loaded once, for the first group ``needs_data`` accepts), or with
    ``--num_workers`` in a pool of fresh interpreters (spawn: no forked torch thread pools), each loading its own."""
    if run.bench.num_workers > 1 and len(groups) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(run.bench.num_workers, len(groups)), mp_context=context) as pool:
            futures = [pool.submit(_group_in_process, group_fn, run, *group, per_group) for group in groups]
            for future in futures:
                future.result()
        return
    base = None
    for group in groups:
        if base is None and (needs_data is None or needs_data(group)):
            base = run.load_base()
        group_fn(run, *group, progress, base)


def _group_in_process(group_fn, run, model_key: str, architecture: str, seed: int, total: int) -> None:
    """One (model, seed) group in a worker process of ``--num_workers``."""
    set_up_process(run.bench)
    group_fn(run, model_key, architecture, seed, Progress(total, f"{model_key} seed {seed}"))

"""``hf-deepclean benchmark``: every method x scenario x model x seed, on the same footing.

For each (model, seed) the original model is trained once (once more on noisy labels for the
``noisy_labels`` scenario) and for each scenario the gold model is retrained on D_r; all of them
are cached under ``<output_dir>/models`` and reused. Each finished cell (model, scenario, seed,
method) is a JSON file under ``<output_dir>/cells``: a rerun skips it, so an interrupted run
resumes where it stopped. The summary (mean +- std over seeds) is written as ``benchmark.md``,
``benchmark.json`` and ``benchmark.png``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..arguments import ConfigError, DataArguments, ModelArguments, parse_arguments
from ..outputs import OutputDirError
from .benchmark_cache import SETTINGS_KEY, method_settings, stale_reason
from .benchmark_models import ModelStore, Scenario, build_scenario

logger = logging.getLogger(__name__)

SCENARIOS = ("class", "random", "noisy_labels")
DEFAULT_METHODS = (
    "original", "retrain", "finetune", "gradient_ascent", "random_labels", "ssd", "salun", "fisher_forgetting",
    "l1_sparse", "deepclean", "deepclean_init", "deepclean_none", "deepclean_batch", "deepclean_fast",
)
SETTINGS_FILE = "benchmark_settings.json"
REFERENCE_FILE = "_reference.json"
# --quick: a budget for smoke tests, not for numbers
QUICK = {"train_samples": 240, "test_samples": 90, "train_epochs": 1.0, "method_epochs": 0.5, "fisher_max_samples": 48}


@dataclass
class BenchmarkArguments:
    """Args:
    methods: Methods to compare (names from ``hf_deepclean.methods.METHODS``).
    scenarios: ``class`` (forget one class), ``random`` (a seeded random fraction) and/or
        ``noisy_labels`` (corrupt a seeded fraction of labels, train on them, forget them).
    architectures: Tiny models built from configs, one column of results each (ignored with
        ``--model_name_or_path``).
    seeds: Seeds; each changes the model initialisation, training order and random forget sets.
    output_dir: Folder of the cached models, the per-cell results and the summary.
    quick: A tiny budget (subsampled data, fractions of an epoch) for smoke tests.
    forget_class: The class forgotten in the ``class`` scenario.
    forget_fraction: Fraction forgotten in the ``random`` scenario.
    noisy_fraction: Fraction of labels corrupted (and then forgotten) in ``noisy_labels``.
    train_epochs: Epochs of the original and gold training.
    train_learning_rate: Peak learning rate of the original and gold training.
    method_overrides: JSON (or a YAML/JSON file) ``{method: {setting: value}}`` changing method defaults.
    eval_batch_size: Batch size of the evaluation passes.
    retain_eval_samples: Evaluate D_r on this many seeded samples (default: all).
    num_threads: torch CPU threads per process (1: fastest for tiny models; 0: torch's default).
    num_workers: Processes running (model, seed) groups in parallel. Every process then shares the
        machine, gold training and methods alike, so time ratios stay comparable; seconds do not.
    plot: Also draw ``benchmark.png`` (needs matplotlib).
    """

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to compare."})
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS), metadata={"help": "class, random, noisy_labels."})
    architectures: list[str] = field(
        default_factory=lambda: ["vit", "resnet"], metadata={"help": "Tiny architectures (ignored with --model_name_or_path)."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (mean and std are over these)."})
    output_dir: str = field(default="benchmark_results", metadata={"help": "Cache, per-cell results and summary folder."})
    quick: bool = field(default=False, metadata={"help": "Tiny budget for smoke tests (not for numbers)."})
    forget_class: str = field(default="3", metadata={"help": "Class forgotten in the class scenario."})
    forget_fraction: float = field(default=0.1, metadata={"help": "Fraction forgotten in the random scenario."})
    noisy_fraction: float = field(default=0.1, metadata={"help": "Fraction of labels corrupted in noisy_labels."})
    train_epochs: float = field(default=20.0, metadata={"help": "Epochs of the original and gold training."})
    train_learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of the original and gold training."})
    method_overrides: str | None = field(
        default=None, metadata={"help": "JSON or YAML/JSON file {method: {setting: value}} over the method defaults."}
    )
    eval_batch_size: int = field(default=256, metadata={"help": "Batch size of the evaluation passes."})
    retain_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate D_r on this many samples."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads per process (0: torch's default)."})
    num_workers: int = field(
        default=1, metadata={"help": "Processes running (model, seed) groups in parallel (e.g. 2 on 2 cores)."}
    )
    plot: bool = field(default=True, metadata={"help": "Also draw benchmark.png (needs matplotlib)."})

    def __post_init__(self):
        from ..methods import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"Unknown methods {unknown}; choose from {sorted(METHODS)}.")
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad:
            raise ConfigError(f"Unknown scenarios {bad}; choose from {list(SCENARIOS)}.")
        if self.num_workers < 1:
            raise ConfigError(f"--num_workers {self.num_workers} must be >= 1.")
        for name in ("methods", "scenarios", "architectures", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is empty; name at least one.")
            setattr(self, name, list(dict.fromkeys(getattr(self, name))))  # drop repeats, keep order


def parse_overrides(text: str | None) -> dict[str, dict]:
    """``--method_overrides``: inline JSON or a YAML/JSON file, ``{method: {setting: value}}``."""
    if not text:
        return {}
    import yaml

    source = Path(text).read_text(encoding="utf-8") if Path(text).is_file() else text
    try:
        values = yaml.safe_load(source)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ConfigError(f"--method_overrides is neither a file nor valid JSON/YAML: {exc}") from exc
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError('--method_overrides must map method names to settings, e.g. {"ssd": {"alpha": 5}}.')
    from ..methods import METHODS

    unknown = [m for m in values if m not in METHODS]
    if unknown:
        raise ConfigError(f"--method_overrides names unknown methods {unknown}; choose from {sorted(METHODS)}.")
    return values


# ------------------------------------------------------------------ cells


def _write_json(path: Path, data: dict) -> None:
    """Write via a temporary file, so a killed run never leaves a truncated result behind."""
    from ..evaluation.report import _json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def _evaluate(model, scenario: Scenario, bench: BenchmarkArguments, processor, seed: int, **kwargs):
    from ..evaluation import evaluate_unlearning

    labels = [int(v) for v in sorted(set(scenario.raw["forget"]["label"]))] if scenario.name == "class" else None
    return evaluate_unlearning(
        model, scenario.ready, image_processor=processor, forget_labels=labels, scenario=scenario.name,
        batch_size=bench.eval_batch_size, seed=seed, retain_sample_size=bench.retain_eval_samples, **kwargs,
    )


def reference(folder: Path, gold, gold_time: float, original, scenario, bench, processor, seed) -> dict:
    """Gold and original metrics of one (model, scenario, seed), evaluated once and cached."""
    path = folder / REFERENCE_FILE
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    report = _evaluate(gold, scenario, bench, processor, seed, original_model=original, method="retrain")
    data = {"gold": dict(report.metrics, time_s=gold_time), "original": report.original}
    _write_json(path, data)
    return data


def method_config(method_name: str, bench, overrides: dict, scratch: Path):
    """The config a cell runs ``method_name`` with (registry defaults, preset, overrides, --quick's budget); None
    for ``retrain``, whose cell is the cached gold model."""
    from ..methods import METHODS

    if method_name == "retrain":
        return None
    method = METHODS[method_name]
    settings = dict(overrides.get(method_name, {}))
    if bench.quick:
        fields = method.config_class.__dataclass_fields__
        if "num_train_epochs" in fields:
            settings.setdefault("num_train_epochs", QUICK["method_epochs"])
        for key in ("fisher_max_samples",):
            if key in fields:
                settings.setdefault(key, QUICK[key])
    return method.make_config(scratch / method_name, **settings)


def run_cell(method_name, original, gold, gold_time, ref, scenario, bench, processor, seed, overrides, scratch) -> dict:
    """Unlearn with one method, evaluate, and return the cell's report dict (deltas against the cached gold)."""
    from ..methods import METHODS, MethodResult

    method = METHODS[method_name]
    config = method_config(method_name, bench, overrides, scratch)
    if config is None:
        # the cached gold model is the retrained model: its time is the gold's training time
        result = MethodResult(gold, gold_time, {"time": {"fisher": None, "train": gold_time, "total": gold_time}})
    else:
        splits = {k: scenario.ready[k] for k in ("forget", "retain")}
        result = method(original, splits, processor, config, seed=seed)
    report = _evaluate(
        result.model, scenario, bench, processor, seed, method=method_name,
        selection=result.extra.get("selection"), time_s=result.extra.get("time", result.time_s), gold_time_s=gold_time,
    ).to_dict()
    report["gold"], report["original"] = ref["gold"], ref["original"]
    report["deltas"] = {
        k: (v - ref["gold"][k]) if isinstance(v, (int, float)) and isinstance(ref["gold"].get(k), (int, float)) else None
        for k, v in report["metrics"].items()
    }
    report.pop("mia", None)  # per-model attack details stay in the single-run reports; the table needs the scores
    report["benchmark"] = {
        "seed": seed, "time_s": result.time_s, "gold_time_s": gold_time,
        "time_ratio": result.time_s / gold_time if gold_time else None,
        "extra": {k: v for k, v in result.extra.items() if k not in ("time", "selection")},
    }
    report[SETTINGS_KEY] = method_settings(config)
    return report


# ------------------------------------------------------------------ driver


def _model_entries(model_args: ModelArguments, bench: BenchmarkArguments) -> list[tuple[str, str]]:
    if model_args.model_name_or_path:
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_args.model_name_or_path.rstrip("/")).strip("_")
        return [(key, model_args.architecture)]
    return [(arch, arch) for arch in bench.architectures]


def _settings(model_args, data_args, bench, overrides) -> dict:
    """What the cached models and cells depend on; a rerun with other values needs another folder."""
    return {
        "model_name_or_path": model_args.model_name_or_path, "image_size": model_args.image_size,
        "data": asdict(data_args), "quick": bench.quick, "forget_class": bench.forget_class,
        "forget_fraction": bench.forget_fraction, "noisy_fraction": bench.noisy_fraction,
        "train_epochs": bench.train_epochs, "train_learning_rate": bench.train_learning_rate,
        "method_overrides": overrides, "retain_eval_samples": bench.retain_eval_samples,
    }


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != json.loads(json.dumps(settings.get(k))))
        if changed:
            raise OutputDirError(
                f"{out} holds a benchmark run with other settings ({', '.join(changed)}); its cached models and "
                "results would not match. Use a new --output_dir, or delete the folder to start over."
            )
    elif out.exists() and any(p.name not in ("models", "cells") for p in out.iterdir()):
        raise OutputDirError(f"--output_dir {out} is not empty and holds no benchmark; choose a new folder.")
    else:
        _write_json(path, settings)


def _quiet_libraries() -> None:
    """Hundreds of runs: keep the per-cell progress lines readable (warnings and errors still show)."""
    import datasets
    import transformers

    logging.getLogger("hf_deepclean").setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


class _Progress:
    """``[benchmark i/N elapsed] message`` lines; ``i`` counts finished (or cached) cells."""

    def __init__(self, total: int, label: str = "benchmark"):
        self.total, self.done, self.label, self.started = total, 0, label, time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{self.label} {self.done}/{self.total} {elapsed:7.1f}s] {message}", flush=True)


def _load_base(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments):
    from ..data import load_image_processor

    base = data_args.load()  # the train/test split never depends on the benchmark seed
    if bench.quick:
        base["train"] = base["train"].shuffle(seed=0).select(range(min(QUICK["train_samples"], len(base["train"]))))
        base["test"] = base["test"].shuffle(seed=0).select(range(min(QUICK["test_samples"], len(base["test"]))))
    return base, load_image_processor(model_args.model_name_or_path, model_args.image_size)


def _cell_paths(out: Path, bench: BenchmarkArguments, model_key: str, seed: int, scenario_name: str) -> dict[str, Path]:
    folder = out / "cells" / model_key / scenario_name / f"seed{seed}"
    return {m: folder / f"{m}.json" for m in bench.methods}


def _stale_cells(paths: dict[str, Path], current: dict[str, dict | None], progress) -> dict[str, Path]:
    """The cells of ``paths`` to (re)compute: missing ones, and cached ones whose method settings differ from
    ``current`` (each method's effective settings today)."""
    todo = {}
    for method_name, path in paths.items():
        reason = stale_reason(path, current[method_name])
        if reason is not None:
            todo[method_name] = path
            if reason != "missing":
                progress(f"recomputing {path.parent.name}/{path.name}: {reason}")
    return todo


def run_group(model_args, data_args, bench, overrides, model_key, architecture, seed, progress, base=None) -> None:
    """Every missing cell of one (model, seed): train or load its originals and golds, run the methods."""
    out = Path(bench.output_dir).resolve()
    # A method's config does not depend on the scenario or seed: build each once for the group.
    scratch = Path(tempfile.gettempdir()) / "hf_deepclean_benchmark_settings"
    current = {m: method_settings(method_config(m, bench, overrides, scratch)) for m in bench.methods}
    pending = {s: _stale_cells(_cell_paths(out, bench, model_key, seed, s), current, progress) for s in bench.scenarios}
    if not any(pending.values()):
        return
    base, processor = base or _load_base(model_args, data_args, bench)
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_benchmark_") as scratch_dir:  # Trainer output_dirs
        scratch = Path(scratch_dir)
        store = ModelStore(out, model_args, bench, base, processor, progress, scratch)
        for scenario_name, todo in pending.items():
            if not todo:
                continue
            scenario = build_scenario(scenario_name, base, processor, bench, seed)
            original, _ = store.load(model_key, architecture, seed, scenario.original_key, scenario.train)
            gold, gold_time = store.load(model_key, architecture, seed, f"gold_{scenario_name}", scenario.raw["retain"])
            folder = next(iter(todo.values())).parent
            ref = reference(folder, gold, gold_time, original, scenario, bench, processor, seed)
            for method_name, path in todo.items():
                # a fresh copy from disk per method: methods change the model in place
                original, _ = store.load(model_key, architecture, seed, scenario.original_key, scenario.train)
                report = run_cell(method_name, original, gold, gold_time, ref, scenario, bench, processor, seed,
                                  overrides, scratch)
                report["benchmark"]["model"] = model_key
                _write_json(path, report)
                progress.done += 1
                m, d, b = report["metrics"], report["deltas"], report["benchmark"]
                progress(f"{model_key} {scenario_name} seed {seed} {method_name}: Acc_Df {m['forget_accuracy']:.3f} "
                         f"(gold {ref['gold']['forget_accuracy']:.3f}), Acc_test {m['test_accuracy']:.3f} "
                         f"(d {d['test_accuracy']:+.3f}), {b['time_s']:.1f}s = {b['time_ratio']:.3f} x retrain")


def _worker(model_args, data_args, bench, overrides, model_key, architecture, seed, total) -> None:
    """One (model, seed) group in its own process (``--num_workers``)."""
    import torch

    if bench.num_threads > 0:
        torch.set_num_threads(bench.num_threads)
    _quiet_libraries()
    run_group(model_args, data_args, bench, overrides, model_key, architecture, seed,
              _Progress(total, f"{model_key} seed {seed}"))


def benchmark(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments) -> dict:
    """Run (or resume) every cell, then write and return the summary."""
    import torch

    from .benchmark_summary import write_summary

    if bench.num_threads > 0:
        torch.set_num_threads(bench.num_threads)
    _quiet_libraries()
    out = Path(bench.output_dir).resolve()
    overrides = parse_overrides(bench.method_overrides)
    _check_settings(out, _settings(model_args, data_args, bench, overrides))
    if bench.quick:
        bench.train_epochs = min(bench.train_epochs, QUICK["train_epochs"])
    groups = [(key, arch, seed) for key, arch in _model_entries(model_args, bench) for seed in bench.seeds]
    per_group = len(bench.scenarios) * len(bench.methods)
    paths = [p for key, _, seed in groups for s in bench.scenarios for p in _cell_paths(out, bench, key, seed, s).values()]
    progress = _Progress(len(paths))
    progress.done = sum(p.exists() for p in paths)
    progress(f"{len(paths)} cells ({progress.done} cached) in {len(groups)} (model, seed) groups")
    if bench.num_workers > 1 and len(groups) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker (no forked torch thread pools)
        with ProcessPoolExecutor(min(bench.num_workers, len(groups)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, model_args, data_args, bench, overrides, *g, per_group) for g in groups]
            for future in futures:
                future.result()
    else:
        base = None
        for model_key, architecture, seed in groups:
            if base is None and any(not p.exists() for s in bench.scenarios
                                    for p in _cell_paths(out, bench, model_key, seed, s).values()):
                base = _load_base(model_args, data_args, bench)
            run_group(model_args, data_args, bench, overrides, model_key, architecture, seed, progress, base)
    summary = write_summary(out, [json.loads(p.read_text(encoding="utf-8")) for p in paths], bench, plot=bench.plot)
    progress.done = len(paths)
    progress(f"summary written to {out / 'benchmark.md'}")
    return summary


def run(argv: list[str]) -> int:
    from .benchmark_sensitivity import SensitivityArguments, run_sensitivity

    model_args, data_args, bench, sens = parse_arguments(
        (ModelArguments, DataArguments, BenchmarkArguments, SensitivityArguments),
        argv,
        prog="hf-deepclean benchmark",
        description="Compare unlearning methods across scenarios, models and seeds (resumable; results cached); "
        "--sensitivity sweeps DeepClean's and SSD's hyperparameters instead.",
    )
    summary = run_sensitivity(model_args, data_args, bench, sens) if sens.sensitivity else benchmark(model_args, data_args, bench)
    print(summary["markdown"])
    return 0

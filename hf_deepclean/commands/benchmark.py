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
from ..outputs import OutputDirError, is_complete, run_folder

logger = logging.getLogger(__name__)

SCENARIOS = ("class", "random", "noisy_labels")
DEFAULT_METHODS = (
    "original", "retrain", "finetune", "gradient_ascent", "random_labels", "ssd", "salun", "fisher_forgetting",
    "l1_sparse", "deepclean", "deepclean_init", "deepclean_none", "deepclean_batch",
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
    num_threads: torch CPU threads (1: fastest for tiny models on a shared machine; 0: torch's default).
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
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (0: torch's default)."})
    plot: bool = field(default=True, metadata={"help": "Also draw benchmark.png (needs matplotlib)."})

    def __post_init__(self):
        from ..methods import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"Unknown methods {unknown}; choose from {sorted(METHODS)}.")
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad:
            raise ConfigError(f"Unknown scenarios {bad}; choose from {list(SCENARIOS)}.")
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


# ------------------------------------------------------------------ data and models


@dataclass
class Scenario:
    """The data of one (scenario, seed): raw splits, model-ready splits, and what the original trains on."""

    name: str
    spec: object
    train: object  # D as the original sees it (noisy labels applied)
    raw: dict  # forget / retain / test, raw images
    ready: dict  # the same, transformed once when small enough
    original_key: str


def _materialize(dataset, processor, limit_bytes: int = 2 << 30):
    """Transform ``dataset`` once into memory unless that would take more than ``limit_bytes``."""
    from ..methods import TensorImageDataset

    first = TensorImageDataset.from_dataset(dataset.select(range(1)), processor)
    if first.pixel_values[0].numel() * 4 * len(dataset) > limit_bytes:
        return dataset
    return TensorImageDataset.from_dataset(dataset, processor)


def build_scenario(name: str, base, processor, bench: BenchmarkArguments, seed: int) -> Scenario:
    from ..data import ForgetSpec, apply_label_noise, split_forget_retain

    spec = {
        "class": lambda: ForgetSpec(labels=[bench.forget_class]),
        "random": lambda: ForgetSpec(fraction=bench.forget_fraction, seed=seed),
        "noisy_labels": lambda: ForgetSpec(noisy_fraction=bench.noisy_fraction, seed=seed),
    }[name]()
    parts = split_forget_retain(base["train"], spec)
    raw = {"forget": parts["forget"], "retain": parts["retain"], "test": base["test"]}
    ready = {k: _materialize(v, processor) for k, v in raw.items()}
    original_key = "original_noisy" if name == "noisy_labels" else "original"
    return Scenario(name, spec, apply_label_noise(base["train"], spec), raw, ready, original_key)


class ModelStore:
    """Trains the original and gold models once per (model, seed) and reloads them from disk after."""

    def __init__(self, root: Path, model_args: ModelArguments, bench: BenchmarkArguments, base, processor, log, scratch):
        self.root, self.model_args, self.bench, self.base, self.processor = root, model_args, bench, base, processor
        self.log, self.scratch = log, scratch

    def folder(self, model_key: str, seed: int, role: str) -> Path:
        return self.root / "models" / model_key / f"seed{seed}" / role

    def load(self, model_key: str, architecture: str, seed: int, role: str, train_set) -> tuple[object, float]:
        """The model trained on ``train_set`` for ``role`` (trained now if not cached) and its training seconds."""
        from ..training import default_training_arguments, save_classifier, train_classifier

        path = self.folder(model_key, seed, role)
        if not is_complete(path) or not (path / "train_summary.json").exists():
            self.log(f"training the {role} model ({model_key}, seed {seed}) on {len(train_set)} samples")
            model = self._classifier(None, architecture, seed)
            args = default_training_arguments(
                str(self.scratch / "train"), num_train_epochs=self.bench.train_epochs,
                learning_rate=self.bench.train_learning_rate, seed=seed, logging_strategy="no",
            )
            with run_folder(path):
                result = train_classifier(model, train_set, None, args, self.processor)
                save_classifier(result.model, self.processor, path, dataset=self.base["train"])
                summary = {"train_time_s": result.time_s, "train_samples": len(train_set), "role": role, "seed": seed}
                (path / "train_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        summary = json.loads((path / "train_summary.json").read_text(encoding="utf-8"))
        return self._classifier(str(path), architecture, seed), float(summary["train_time_s"])

    def _classifier(self, path: str | None, architecture: str, seed: int):
        from ..data import label_maps
        from ..training import load_classifier, num_classes

        id2label, label2id = label_maps(self.base["train"])
        m = self.model_args
        start = path or m.model_name_or_path
        return load_classifier(
            start, num_labels=num_classes(self.base["train"]), id2label=id2label, label2id=label2id,
            architecture=architecture, image_size=m.image_size,
            ignore_mismatched_sizes=m.ignore_mismatched_sizes if path is None else False,
            allow_pickle=m.allow_pickle, trust_remote_code=m.trust_remote_code, seed=seed,
        )


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


def run_cell(method_name, original, gold, gold_time, ref, scenario, bench, processor, seed, overrides, scratch) -> dict:
    """Unlearn with one method, evaluate, and return the cell's report dict (deltas against the cached gold)."""
    from ..methods import METHODS, MethodResult

    method = METHODS[method_name]
    if method_name == "retrain":
        # the cached gold model is the retrained model: its time is the gold's training time
        result = MethodResult(gold, gold_time, {"time": {"fisher": None, "train": gold_time, "total": gold_time}})
    else:
        settings = dict(overrides.get(method_name, {}))
        if bench.quick:
            fields = method.config_class.__dataclass_fields__
            if "num_train_epochs" in fields:
                settings.setdefault("num_train_epochs", QUICK["method_epochs"])
            for key in ("fisher_max_samples",):
                if key in fields:
                    settings.setdefault(key, QUICK[key])
        config = method.make_config(scratch / method_name, **settings)
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
    import warnings

    import datasets
    import transformers

    logging.getLogger("hf_deepclean").setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def benchmark(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments) -> dict:
    """Run (or resume) every cell, then write and return the summary."""
    import torch

    from ..data import load_image_processor
    from .benchmark_summary import write_summary

    if bench.num_threads > 0:
        torch.set_num_threads(bench.num_threads)
    _quiet_libraries()
    out = Path(bench.output_dir).resolve()
    overrides = parse_overrides(bench.method_overrides)
    _check_settings(out, _settings(model_args, data_args, bench, overrides))
    if bench.quick:
        bench.train_epochs = min(bench.train_epochs, QUICK["train_epochs"])

    base = data_args.load()  # the train/test split never depends on the benchmark seed
    if bench.quick:
        base["train"] = base["train"].shuffle(seed=0).select(range(min(QUICK["train_samples"], len(base["train"]))))
        base["test"] = base["test"].shuffle(seed=0).select(range(min(QUICK["test_samples"], len(base["test"]))))
    processor = load_image_processor(model_args.model_name_or_path, model_args.image_size)
    models = _model_entries(model_args, bench)
    total = len(models) * len(bench.seeds) * len(bench.scenarios) * len(bench.methods)
    started, done = time.perf_counter(), 0

    def log(message: str) -> None:
        print(f"[benchmark {done}/{total} {time.perf_counter() - started:7.1f}s] {message}", flush=True)

    scratch_dir = tempfile.TemporaryDirectory(prefix="hf_deepclean_benchmark_")  # Trainer output_dirs, nothing kept
    scratch = Path(scratch_dir.name)
    store = ModelStore(out, model_args, bench, base, processor, log, scratch)
    paths = []
    for model_key, architecture in models:
        for seed in bench.seeds:
            for scenario_name in bench.scenarios:
                folder = out / "cells" / model_key / scenario_name / f"seed{seed}"
                cell_paths = {m: folder / f"{m}.json" for m in bench.methods}
                paths += list(cell_paths.values())
                todo = [m for m, p in cell_paths.items() if not p.exists()]
                done += len(cell_paths) - len(todo)
                if not todo:
                    log(f"{model_key} {scenario_name} seed {seed}: all {len(cell_paths)} cells cached")
                    continue
                scenario = build_scenario(scenario_name, base, processor, bench, seed)
                original, _ = store.load(model_key, architecture, seed, scenario.original_key, scenario.train)
                gold, gold_time = store.load(model_key, architecture, seed, f"gold_{scenario_name}", scenario.raw["retain"])
                ref = reference(folder, gold, gold_time, original, scenario, bench, processor, seed)
                for method_name in todo:
                    # a fresh copy from disk per method: methods change the model in place
                    original, _ = store.load(model_key, architecture, seed, scenario.original_key, scenario.train)
                    report = run_cell(method_name, original, gold, gold_time, ref, scenario, bench, processor, seed,
                                      overrides, scratch)
                    report["benchmark"]["model"] = model_key
                    _write_json(cell_paths[method_name], report)
                    done += 1
                    m, d = report["metrics"], report["deltas"]
                    log(f"{model_key} {scenario_name} seed {seed} {method_name}: Acc_Df {m['forget_accuracy']:.3f} "
                        f"(gold {ref['gold']['forget_accuracy']:.3f}), Acc_test {m['test_accuracy']:.3f} "
                        f"(d {d['test_accuracy']:+.3f}), {report['benchmark']['time_s']:.1f}s "
                        f"= {report['benchmark']['time_ratio']:.3f} x retrain")
    scratch_dir.cleanup()
    summary = write_summary(out, [json.loads(p.read_text(encoding="utf-8")) for p in paths], bench, plot=bench.plot)
    log(f"summary written to {out / 'benchmark.md'}")
    return summary


def run(argv: list[str]) -> int:
    model_args, data_args, bench = parse_arguments(
        (ModelArguments, DataArguments, BenchmarkArguments),
        argv,
        prog="hf-deepclean benchmark",
        description="Compare unlearning methods across scenarios, models and seeds (resumable; results cached).",
    )
    summary = benchmark(model_args, data_args, bench)
    print(summary["markdown"])
    return 0

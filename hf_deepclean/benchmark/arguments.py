"""The options of ``hf-deepclean benchmark``: the method comparison's and the sensitivity sweep's.

Both dataclasses are parsed from one command line (with the model and data arguments of every command);
``--sensitivity`` chooses the harness. Everything here validates values and nothing more: no model or data is
touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..methods import METHODS

SCENARIOS = ("class", "random", "noisy_labels")
DEFAULT_METHODS = (
    "original", "retrain", "finetune", "gradient_ascent", "random_labels", "ssd", "salun", "fisher_forgetting",
    "l1_sparse", "deepclean", "deepclean_init", "deepclean_none", "deepclean_batch", "deepclean_fast",
)
DEFAULT_FRACTIONS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]
# --sensitivity with --scenarios left at its default sweeps these
DEFAULT_SENSITIVITY_SCENARIOS = ["class", "noisy_labels"]


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
    population_models: N > 0: judge every method against a population instead of one gold model: per (model,
        scenario, seed) N retrains and N runs of each method from the one original, scored by the forget score
        (``population.md``; at least 6, for the retrains' own reference at N/2 vs N/2).
    """

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to compare."})
    scenarios: list[str] = field(
        default_factory=lambda: list(SCENARIOS), metadata={"help": "class, random, noisy_labels."}
    )
    architectures: list[str] = field(
        default_factory=lambda: ["vit", "resnet"],
        metadata={"help": "Tiny architectures (ignored with --model_name_or_path)."},
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (mean and std are over these)."}
    )
    output_dir: str = field(
        default="benchmark_results", metadata={"help": "Cache, per-cell results and summary folder."}
    )
    quick: bool = field(default=False, metadata={"help": "Tiny budget for smoke tests (not for numbers)."})
    forget_class: str = field(default="3", metadata={"help": "Class forgotten in the class scenario."})
    forget_fraction: float = field(default=0.1, metadata={"help": "Fraction forgotten in the random scenario."})
    noisy_fraction: float = field(default=0.1, metadata={"help": "Fraction of labels corrupted in noisy_labels."})
    train_epochs: float = field(default=20.0, metadata={"help": "Epochs of the original and gold training."})
    train_learning_rate: float = field(
        default=3e-3, metadata={"help": "Learning rate of the original and gold training."}
    )
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
    population_models: int = field(
        default=0, metadata={"help": "N >= 6: judge every method against N retrains (N runs each; population.md)."}
    )

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"Unknown methods {unknown}; choose from {sorted(METHODS)}.")
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad:
            raise ConfigError(f"Unknown scenarios {bad}; choose from {list(SCENARIOS)}.")
        if self.population_models and self.population_models < 6:
            raise ConfigError(f"--population_models {self.population_models}: the retrains' own reference compares "
                              "N/2 with N/2 models and the forget score needs at least 3 per side; pass 6 or more "
                              "(0: the single-gold comparison).")
        if self.num_workers < 1:
            raise ConfigError(f"--num_workers {self.num_workers} must be >= 1.")
        for name in ("methods", "scenarios", "architectures", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is empty; name at least one.")
            setattr(self, name, list(dict.fromkeys(getattr(self, name))))  # drop repeats, keep order


@dataclass
class SensitivityArguments:
    """Args:
    sensitivity: Run the sensitivity sweep instead of the method comparison (``--methods`` is
        ignored; ``--scenarios`` left at its default means class and noisy_labels).
    sensitivity_fractions: DeepClean top fractions swept.
    sensitivity_epochs: DeepClean fine-tune budgets (epochs) swept; each gets its own window.
    sensitivity_alphas: SSD alphas swept.
    sensitivity_timing_repeats: Runs of the fast preset and of SSD for the time ratio (min is kept).
    sensitivity_auto_overrides: DeepClean settings (JSON) for the ``top_fraction="auto"`` run only, on top of
        ``--method_overrides``' deepclean entry: e.g. the no-gold budget rule,
        ``{"early_stopping_patience": 2, "num_train_epochs": 8}``. The auto point also reports test accuracy on the
        half of the test split it never saw, against the gold model's there (early stopping watches the other half).
    """

    sensitivity: bool = field(default=False, metadata={"help": "Sweep DeepClean/SSD hyperparameters (windows)."})
    sensitivity_fractions: list[float] = field(
        default_factory=lambda: list(DEFAULT_FRACTIONS), metadata={"help": "DeepClean top fractions swept."}
    )
    sensitivity_epochs: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0], metadata={"help": "DeepClean fine-tune epochs swept."}
    )
    sensitivity_alphas: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0], metadata={"help": "SSD alphas swept."}
    )
    sensitivity_timing_repeats: int = field(
        default=3, metadata={"help": "Runs of deepclean_fast and SSD for the time ratio (min kept)."}
    )

    sensitivity_auto_overrides: str | None = field(
        default=None,
        metadata={"help": "JSON of DeepClean settings for the top_fraction=auto run only, e.g. "
                  "'{\"early_stopping_patience\": 2, \"num_train_epochs\": 8}'."},
    )

    def __post_init__(self):
        self.auto_overrides = parse_auto_overrides(self.sensitivity_auto_overrides)
        for name in ("sensitivity_fractions", "sensitivity_epochs", "sensitivity_alphas"):
            values = getattr(self, name)
            if not values or any(not v > 0 for v in values):
                raise ConfigError(f"--{name} {values} needs at least one value, all > 0.")
            setattr(self, name, sorted(set(float(v) for v in values)))
        if any(f > 1 for f in self.sensitivity_fractions):
            raise ConfigError(f"--sensitivity_fractions {self.sensitivity_fractions} must be in (0, 1].")
        if self.sensitivity_timing_repeats < 1:
            raise ConfigError(f"--sensitivity_timing_repeats {self.sensitivity_timing_repeats} must be >= 1.")


def parse_overrides(text: str | None) -> dict[str, dict]:
    """``--method_overrides``: inline JSON or a YAML/JSON file, ``{method: {setting: value}}``."""
    if not text:
        return {}
    source = Path(text).read_text(encoding="utf-8") if Path(text).is_file() else text
    try:
        values = yaml.safe_load(source)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ConfigError(f"--method_overrides is neither a file nor valid JSON/YAML: {exc}") from exc
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError('--method_overrides must map method names to settings, e.g. {"ssd": {"alpha": 5}}.')
    unknown = [m for m in values if m not in METHODS]
    if unknown:
        raise ConfigError(f"--method_overrides names unknown methods {unknown}; choose from {sorted(METHODS)}.")
    return values


def parse_auto_overrides(text: str | None) -> dict:
    """``--sensitivity_auto_overrides``: a JSON object of DeepClean settings (``{}`` when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--sensitivity_auto_overrides is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError('--sensitivity_auto_overrides must be a JSON object of settings, e.g. '
                          '{"early_stopping_patience": 2, "num_train_epochs": 8}.')
    return value

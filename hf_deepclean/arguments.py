"""Command-line and YAML arguments shared by the CLI commands.

Field names follow transformers' ``run_image_classification.py`` where one exists, and its
flag names are accepted as aliases, so existing commands and YAML carry over.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .config import fields_set_on_command_line
from .data import load_image_dataset
from .errors import ConfigError, DataError
from .forget import ForgetSpec, read_ids_file
from .training import ARCHITECTURES


@dataclass
class ModelArguments:
    """Which model to start from.

    Args:
        model_name_or_path: Hub id or local folder of an AutoModelForImageClassification checkpoint.
            Empty: a tiny model built from a config (``architecture``).
        architecture: The tiny architecture built when no model path is given.
        image_size: Input size of the tiny model and of the fallback image processor.
        image_processor_backend: ``auto`` (torchvision-backed processors when torchvision is installed), ``pil``
            or ``torchvision``.
        ignore_mismatched_sizes: Re-initialise a classification head whose label count differs.
        allow_pickle: Allow loading pickle (*.bin) weights, which can execute code.
        trust_remote_code: Allow model code from the checkpoint's repository to run.
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of an image classifier; empty builds the tiny default model."},
    )
    architecture: str = field(
        default="vit",
        metadata={"help": "Tiny architecture built when --model_name_or_path is empty: vit, resnet, convnext, deit, swin."},
    )
    image_size: int = field(default=16, metadata={"help": "Image size of the tiny model and the fallback processor."})
    image_processor_backend: str = field(
        default="auto", metadata={"help": "Image processors: auto (torchvision's batched ones when torchvision is "
                                  "installed, the fast extra; else PIL), pil or torchvision."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Re-initialise a classification head whose label count differs."}
    )
    allow_pickle: bool = field(
        default=False, metadata={"help": "Allow pickle (*.bin) checkpoints, which can run code when loaded."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped in the checkpoint's repository."}
    )

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"--architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}.")


@dataclass
class DataArguments:
    """Which data to use.

    Args:
        dataset_name: Hub dataset, local save_to_disk/parquet/image folder, or ``digits`` (default, built in).
        dataset_config_name: Hub dataset configuration.
        train_dir: Image folder for training (as in run_image_classification.py).
        validation_dir: Image folder used as the test split.
        image_column: Image column name (detected when unambiguous).
        label_column: Label column name (detected when unambiguous).
        train_split: Split holding the training data (D = D_r + D_f).
        test_split: Held-out split (default: test, then validation; else carved off train).
        train_val_split: Fraction of train carved off as test when there is no test split.
        split_seed: Seed of the built-in train/test split and of any carving; independent of the training
            ``seed`` so that train, unlearn and evaluate always see the same split.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset name, local save_to_disk/parquet/image folder, or 'digits' (the default)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder with the training images."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder used as the test split."})
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (detected when unambiguous).", "aliases": ["--image_column_name"]}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (detected when unambiguous).", "aliases": ["--label_column_name"]}
    )
    train_split: str = field(default="train", metadata={"help": "Split with the training data (D_r + D_f)."})
    test_split: str | None = field(
        default=None, metadata={"help": "Held-out split (default: test, then validation, else carved off train)."}
    )
    train_val_split: float | None = field(
        default=None, metadata={"help": "Fraction of train carved off as test when there is no test split (0.15)."}
    )

    split_seed: int = field(
        default=0,
        metadata={"help": "Seed of the train/test split and carving (kept apart from --seed so every command sees the same split)."},
    )

    def describe(self) -> str:
        """The data's name for reports and model cards: the Hub name or path given, the image folder, or digits."""
        if self.train_dir:
            return self.train_dir
        return self.dataset_name or "digits"

    def load(self):
        return load_image_dataset(
            self.dataset_name,
            dataset_config_name=self.dataset_config_name,
            train_dir=self.train_dir,
            validation_dir=self.validation_dir,
            image_column=self.image_column,
            label_column=self.label_column,
            train_split=self.train_split,
            test_split=self.test_split,
            train_val_split=self.train_val_split,
            seed=self.split_seed,
        )


@dataclass
class ForgetArguments:
    """What to forget: exactly one of the ``forget_*`` options or ``noisy_fraction``.

    Args:
        forget_labels: Classes to forget, as ids or names.
        forget_fraction: Seeded random fraction of the training samples to forget.
        forget_indices: Row indices of the training split to forget.
        forget_ids_file: File with one sample id per line (a deletion request); needs ``id_column``.
        id_column: Column holding the sample ids.
        noisy_fraction: Corrupt this fraction of training labels, train on them, then forget exactly those.
        forget_seed: Seed of the random and noisy-label selections.
        stratified: Keep class proportions in ``forget_fraction``.
        ignore_missing_ids: Forget the ids that are in the data and only count the others.
    """

    forget_labels: list[str] | None = field(default=None, metadata={"help": "Classes to forget (ids or names)."})
    forget_fraction: float | None = field(default=None, metadata={"help": "Random fraction of train to forget, in (0, 1)."})
    forget_indices: list[int] | None = field(default=None, metadata={"help": "Row indices of train to forget."})
    forget_ids_file: str | None = field(
        default=None, metadata={"help": "Text file, one sample id per line, to forget; needs --id_column."}
    )
    id_column: str | None = field(default=None, metadata={"help": "Column holding the sample ids."})
    noisy_fraction: float | None = field(
        default=None, metadata={"help": "Relabel this fraction of train to wrong classes, then forget exactly those."}
    )
    forget_seed: int = field(default=0, metadata={"help": "Seed of the random and noisy-label selections."})
    stratified: bool = field(default=False, metadata={"help": "Keep class proportions in --forget_fraction."})
    ignore_missing_ids: bool = field(
        default=False, metadata={"help": "Forget the ids of --forget_ids_file that are in the data; only count the "
                                 "others (by default a request with missing ids is refused)."}
    )

    def is_given(self) -> bool:
        return any(
            v is not None
            for v in (self.forget_labels, self.forget_fraction, self.forget_indices, self.forget_ids_file, self.noisy_fraction)
        )

    def to_spec(self) -> ForgetSpec:
        if not self.is_given():
            raise DataError(
                "Nothing to forget: pass one of --forget_labels, --forget_fraction, --forget_indices, "
                "--forget_ids_file (with --id_column) or --noisy_fraction."
            )
        ids = read_ids_file(self.forget_ids_file) if self.forget_ids_file else None
        if ids is not None and not self.id_column:
            raise DataError("--forget_ids_file needs --id_column, the dataset column that holds the ids.")
        return ForgetSpec(
            labels=self.forget_labels,
            fraction=self.forget_fraction,
            indices=self.forget_indices,
            ids=ids,
            id_column=self.id_column,
            noisy_fraction=self.noisy_fraction,
            seed=self.forget_seed,
            stratified=self.stratified,
            ignore_missing_ids=self.ignore_missing_ids,
        )


def yaml_to_argv(path: str | Path, known: set[str]) -> list[str]:
    """Turn a YAML config into command-line tokens (flags given after it override it)."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read config {str(path)!r}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"Config {str(path)!r} must be a mapping of option: value, got {type(values).__name__}.")
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k for k in unknown]
        raise ConfigError(f"Config {str(path)!r} has unknown keys: {', '.join(hints)}.")
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *[str(v) for v in value]]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def option_fields(dataclass_types) -> dict[str, str]:
    """Each option name the command line accepts (field names and their aliases) -> the field it sets."""
    to_field = {}
    for dtype in dataclass_types:
        for f in fields(dtype):
            if f.init:
                to_field[f.name] = f.name
                to_field.update({a.lstrip("-"): f.name for a in f.metadata.get("aliases", [])})
    return to_field


def known_option_names(dataclass_types) -> set[str]:
    return set(option_fields(dataclass_types))


def option_fields_in(argv: list[str], dataclass_types) -> set[str]:
    """The dataclass fields that ``argv``'s flags set (aliases and ``--no_<flag>`` mapped to their field)."""
    to_field = option_fields(dataclass_types)
    to_field.update({f"no_{name}": name for name in set(to_field.values())})
    names = (token[2:].split("=", 1)[0] for token in argv if token.startswith("--"))
    return {to_field[n] for n in names if n in to_field}


def parse_arguments(dataclass_types, argv: list[str], *, prog: str | None = None, description: str | None = None):
    """Parse ``argv`` (with an optional ``--config file.yaml``) into instances of ``dataclass_types``."""
    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file path.")
        config_path = argv[i + 1]
        del argv[i : i + 2]
        argv = yaml_to_argv(config_path, known_option_names(dataclass_types)) + argv
    # allow_abbrev=False: argparse would take --num_train_epoch for --num_train_epochs without a word.
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--config", help="YAML file of option: value pairs; flags given on the command line win.")
    # Unknown flags first: building the dataclasses validates them, and a typo'd --top_fracton would otherwise
    # surface as "pass exactly one of threshold and top_fraction", which never names it.
    _, remaining = parser.parse_known_args(argv)
    if remaining:
        raise ConfigError(f"Unknown arguments: {unknown_argument_hints(remaining, known_option_names(dataclass_types))}. "
                          "See --help.")
    with fields_set_on_command_line(option_fields_in(argv, dataclass_types)):
        parsed = parser.parse_args_into_dataclasses(args=argv)
    # --config comes back as an extra namespace
    return [x for x in parsed if hasattr(x, "__dataclass_fields__")]


def unknown_argument_hints(remaining: list[str], known: set[str]) -> str:
    """``--top_fracton (did you mean --top_fraction?)`` for each unknown flag; stray values as they are."""
    hints = []
    for token in remaining:
        if token.startswith("--"):
            match = difflib.get_close_matches(token[2:].split("=", 1)[0], known, 1)
            hints.append(f"{token} (did you mean --{match[0]}?)" if match else token)
    return ", ".join(hints) or " ".join(remaining)

"""``hf-deepclean demo``: the whole story on the built-in digits, in a few minutes on 2 CPU cores.

1. train the original tiny model on digits (cached in OUTPUT_DIR/original);
2. retrain the gold model on D_r, the data without the forgotten class (cached in OUTPUT_DIR/gold);
3. run DeepClean (OUTPUT_DIR/deepclean) and print original / gold / DeepClean side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..config import DeepCleanConfig
from ..outputs import is_complete, run_folder
from ..training import TrainConfig, read_train_summary, save_trained, train_classifier
from .common import describe_forget_set, load_model_for, load_processor_for, load_run_data
from .unlearn import UnlearnScriptArguments, unlearn

logger = logging.getLogger(__name__)


@dataclass
class DemoArguments:
    """Args:
    output_dir: Folder of the demo's models and reports (original and gold are cached there).
    architecture: Tiny architecture: vit (default) or resnet.
    forget_label: The digit class to forget.
    top_fraction: Fraction of weights DeepClean selects.
    seed: Seed of training and unlearning.
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Demo folder (original and gold are cached there)."})
    architecture: str = field(default="vit", metadata={"help": "Tiny architecture: vit or resnet."})
    forget_label: int = field(default=3, metadata={"help": "Digit class to forget."})
    top_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of weights DeepClean selects and resets (0.2: a margin over the 0.15 that forgets on average)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of training and unlearning."})


def _train_cached(folder: Path, data, model_args, train_set, seed: int, **extra) -> float:
    """Train into ``folder`` unless a finished model is already there; returns the training seconds."""
    cached = read_train_summary(folder)
    if is_complete(folder) and cached:
        logger.info("Reusing the cached model in %s.", folder)
        return cached["train_time_s"]
    args = TrainConfig(output_dir=str(folder), seed=seed, report_to="none", disable_tqdm=True,
                       use_cpu=not torch.cuda.is_available())
    model = load_model_for(data, model_args, seed=seed)
    processor = load_processor_for(model_args)
    with run_folder(folder):
        result = train_classifier(model, train_set, data.test, args, processor)
        save_trained(result, processor, folder, dataset=data.train, train_samples=len(train_set), **extra)
    return result.time_s


def run(argv: list[str]) -> int:
    (demo,) = parse_arguments((DemoArguments,), argv, prog="hf-deepclean demo", description=__doc__.splitlines()[0])
    root = Path(demo.output_dir)
    model_args = ModelArguments(architecture=demo.architecture)
    data_args = DataArguments()
    forget_args = ForgetArguments(forget_labels=[str(demo.forget_label)])
    data = load_run_data(data_args, forget_args, seed=demo.seed)

    print(f"[1/3] Original tiny {demo.architecture} on digits ({len(data.train)} training images)...", flush=True)
    _train_cached(root / "original", data, model_args, data.train, demo.seed)
    print(f"[2/3] Gold model: retrained without digit {demo.forget_label} ({len(data.retain)} images)...", flush=True)
    _train_cached(root / "gold", data, model_args, data.retain, demo.seed, forgotten=describe_forget_set(data))

    print(f"[3/3] DeepClean: forget digit {demo.forget_label} ({len(data.forget)} images), "
          f"top {demo.top_fraction:.0%} of weights by Fisher ratio...", flush=True)
    model_args.model_name_or_path = str(root / "original")
    out = root / "deepclean"
    args = DeepCleanConfig(output_dir=str(out), top_fraction=demo.top_fraction, seed=demo.seed, save_fisher=True,
                           overwrite_output_dir=True, disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    script = UnlearnScriptArguments(gold_model=str(root / "gold"))
    unlearn(model_args, data_args, forget_args, script, args)
    return 0

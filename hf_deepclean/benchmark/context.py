"""What the runs of a benchmark share: the whole run's settings, and one (model, seed) group's models and data.

Both harnesses hand these two objects down instead of long parameter lists: :class:`BenchmarkRun` is fixed
when the command starts (and pickled to the worker processes of ``--num_workers``); :class:`GroupContext` is
built per (model, seed) group inside the process that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers.image_processing_utils import ImageProcessingMixin

from ..arguments import DataArguments, ModelArguments
from .arguments import BenchmarkArguments
from .common import Progress, load_base
from .models import ModelStore, Scenario, build_scenario


def cell_folder(out: Path, model_key: str, scenario_name: str, seed: int) -> Path:
    """Where the cells of one (model, scenario, seed) and its gold/original reference are cached."""
    return out / "cells" / model_key / scenario_name / f"seed{seed}"


@dataclass
class BenchmarkRun:
    """What every group of one ``hf-deepclean benchmark`` run shares.

    Attributes:
        model_args: Where the models come from (tiny architectures, or one checkpoint) and their image size.
        data_args: The dataset (its train/test split never depends on the benchmark seed).
        bench: The benchmark's options; ``train_epochs`` already capped by ``--quick``.
        overrides: ``--method_overrides`` parsed: ``{method: {setting: value}}``.
        out: The output folder (absolute): ``models/``, ``cells/``, ``sensitivity/`` and the summaries.
    """

    model_args: ModelArguments
    data_args: DataArguments
    bench: BenchmarkArguments
    overrides: dict[str, dict]
    out: Path

    def load_base(self):
        """The base train/test data (subsampled under ``--quick``) and the image processor."""
        return load_base(self.model_args, self.data_args, self.bench)


@dataclass
class GroupContext:
    """What the runs of one (model, seed) group share, in both harnesses.

    Attributes:
        run: The benchmark-wide settings (:class:`BenchmarkRun`).
        model_key: The group's model as named in the output folders (``vit``, or the checkpoint's path made a name).
        architecture: The tiny architecture built (or passed to the checkpoint's loader).
        seed: The group's seed: initial weights, batch order, random forget sets, evaluation samples.
        base: The base ``DatasetDict`` (``train``, ``test``), the same for every group.
        processor: The image processor every model shares.
        progress: The progress reporter (``[label i/N elapsed] message``); counts finished results.
        scratch: A temporary folder for the Trainers' output_dirs, removed after the run.
        store: The cache of trained original and gold models (built from the fields above).
    """

    run: BenchmarkRun
    model_key: str
    architecture: str
    seed: int
    base: DatasetDict
    processor: ImageProcessingMixin
    progress: Progress
    scratch: Path
    store: ModelStore = field(init=False)

    def __post_init__(self):
        self.store = ModelStore(self.run.out, self.run.model_args, self.run.bench, self.base, self.processor,
                                self.progress, self.scratch)

    @property
    def bench(self) -> BenchmarkArguments:
        return self.run.bench

    @property
    def overrides(self) -> dict[str, dict]:
        return self.run.overrides

    def scenario(self, name: str) -> Scenario:
        """Scenario ``name``'s forget, retain and test splits for this group's seed."""
        return build_scenario(name, self.base, self.processor, self.bench, self.seed)

    def original(self, scenario: Scenario):
        """A fresh copy of the original model ``scenario`` forgets from (trained first if not cached)."""
        return self.store.load(self.model_key, self.architecture, self.seed, scenario.original_key, scenario.train)[0]

    def gold(self, scenario: Scenario) -> tuple[object, float]:
        """The gold model retrained on ``scenario``'s D_r (trained first if not cached) and its training seconds."""
        return self.store.load(self.model_key, self.architecture, self.seed, scenario.gold_key, scenario.raw["retain"])

    def cell_folder(self, scenario_name: str) -> Path:
        return cell_folder(self.run.out, self.model_key, scenario_name, self.seed)

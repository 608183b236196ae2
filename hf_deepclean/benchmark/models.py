"""The benchmark's data and models: one scenario's splits, and the cache of trained original and gold models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..arguments import ModelArguments
from ..data import label_maps
from ..forget import ForgetSpec, apply_label_noise, split_forget_retain
from ..images import in_memory
from ..outputs import is_complete, run_folder
from ..training import TrainConfig, load_classifier, num_classes, read_train_summary, save_trained, train_classifier
from .arguments import BenchmarkArguments


@dataclass
class Scenario:
    """The data of one (scenario, seed): raw splits, model-ready splits, and what the original trains on."""

    name: str
    spec: ForgetSpec
    train: object  # D as the original sees it (noisy labels applied)
    raw: dict  # forget / retain / test, raw images
    ready: dict  # the same, transformed once when small enough
    original_key: str  # the original model's role: "original", or "original_noisy" for noisy_labels

    @property
    def gold_key(self) -> str:
        """The gold model's role: retrained on this scenario's D_r."""
        return f"gold_{self.name}"


def original_role(scenario_name: str) -> str:
    """The role of the original model a scenario forgets from: the noisy-label scenario has its own original,
    trained on the corrupted labels; the others share one."""
    return "original_noisy" if scenario_name == "noisy_labels" else "original"


def build_scenario(name: str, base, processor, bench: BenchmarkArguments, seed: int) -> Scenario:
    """The forget set of scenario ``name`` for ``seed``, its retain set and the test split."""
    spec = {
        "class": lambda: ForgetSpec(labels=[bench.forget_class]),
        "random": lambda: ForgetSpec(fraction=bench.forget_fraction, seed=seed),
        "noisy_labels": lambda: ForgetSpec(noisy_fraction=bench.noisy_fraction, seed=seed),
    }[name]()
    parts = split_forget_retain(base["train"], spec)
    raw = {"forget": parts["forget"], "retain": parts["retain"], "test": base["test"]}
    ready = {k: in_memory(v, processor) for k, v in raw.items()}
    return Scenario(name, spec, apply_label_noise(base["train"], spec), raw, ready, original_role(name))


class ModelStore:
    """Trains the original and gold models once per (model, seed) and reloads them from disk after."""

    def __init__(self, root: Path, model_args: ModelArguments, bench: BenchmarkArguments, base, processor, log,
                 scratch: Path):
        self.root, self.model_args, self.bench, self.base, self.processor = root, model_args, bench, base, processor
        self.log, self.scratch = log, scratch

    def folder(self, model_key: str, seed: int, role: str) -> Path:
        return self.root / "models" / model_key / f"seed{seed}" / role

    def load(self, model_key: str, architecture: str, seed: int, role: str, train_set,
             train_seed: int | None = None) -> tuple[object, float]:
        """The model trained on ``train_set`` for ``role`` (trained now if not cached) and its training seconds.

        ``train_seed`` (default ``seed``) seeds the initial weights and the batch order; ``seed`` names the folder.
        """
        path = self.folder(model_key, seed, role)
        train_seed = seed if train_seed is None else train_seed
        if not is_complete(path) or not read_train_summary(path):
            self.log(f"training the {role} model ({model_key}, seed {train_seed}) on {len(train_set)} samples")
            model = self._classifier(None, architecture, train_seed)
            args = TrainConfig(
                output_dir=str(self.scratch / "train"), num_train_epochs=self.bench.train_epochs,
                learning_rate=self.bench.train_learning_rate, seed=train_seed, logging_strategy="no",
                report_to="none", disable_tqdm=True,
            )
            with run_folder(path):
                # transformed once, not every epoch: the same weights, bit for bit, in about 2/3 of the time
                result = train_classifier(model, in_memory(train_set, self.processor), None, args, self.processor)
                save_trained(result, self.processor, path, dataset=self.base["train"], train_samples=len(train_set),
                             role=role, seed=train_seed)
        return self._classifier(str(path), architecture, seed), float(read_train_summary(path)["train_time_s"])

    def _classifier(self, path: str | None, architecture: str, seed: int):
        id2label, label2id = label_maps(self.base["train"])
        m = self.model_args
        start = path or m.model_name_or_path
        return load_classifier(
            start, num_labels=num_classes(self.base["train"]), id2label=id2label, label2id=label2id,
            architecture=architecture, image_size=m.image_size,
            ignore_mismatched_sizes=m.ignore_mismatched_sizes if path is None else False,
            allow_pickle=m.allow_pickle, trust_remote_code=m.trust_remote_code, seed=seed,
        )

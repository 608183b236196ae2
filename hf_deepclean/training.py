"""Train the original model, and the gold model (the same training on D_r only).

Both go through :func:`train_classifier`, a plain ``transformers.Trainer`` run, so the
gold model of the evaluation is trained exactly like the original.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers as tf
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageClassification, Trainer, set_seed

from ._compat import live_objects_frozen
from .config import TinyModelTrainingArguments
from .data import class_names, label_maps, looks_like_local_path
from .errors import ModelError
from .images import collate_fn, model_inputs
from .outputs import require_complete

logger = logging.getLogger(__name__)

ARCHITECTURES = ("vit", "resnet", "convnext", "deit", "swin")


def tiny_model_config(architecture: str, num_labels: int, image_size: int = 16):
    """A small config that trains in seconds on CPU; the ViT is the embedded default."""
    # architectures names the head: AutoModelForImageClassification maps DeiT to two heads and needs it to choose
    head = {"vit": "ViT", "deit": "DeiT", "resnet": "ResNet", "convnext": "ConvNext", "swin": "Swin"}.get(architecture)
    common = dict(num_labels=num_labels, num_channels=3, architectures=[f"{head}ForImageClassification"])
    if architecture == "vit":
        # 4 layers, width 64, patch 4: ~98 % test accuracy on 16x16 digits in a prototype.
        return tf.ViTConfig(image_size=image_size, patch_size=4, hidden_size=64, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=128, **common)
    if architecture == "deit":
        return tf.DeiTConfig(image_size=image_size, patch_size=4, hidden_size=64, num_hidden_layers=4,
                             num_attention_heads=4, intermediate_size=128, **common)
    if architecture == "resnet":
        return tf.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic",
                               downsample_in_first_stage=False, **common)
    if architecture == "convnext":
        # num_stages must match the two stages given (the default, 4, indexes past them)
        return tf.ConvNextConfig(patch_size=2, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                                 image_size=image_size, **common)
    if architecture == "swin":
        return tf.SwinConfig(image_size=image_size, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                             window_size=4, **common)
    raise ModelError(f"Unknown architecture {architecture!r}; choose one of {list(ARCHITECTURES)}.")


def check_model_folder(path: str | None, flag: str = "--model_name_or_path") -> None:
    """One-line errors for a model path that cannot be a checkpoint, before anything is loaded: a local folder
    that does not exist (also an ``owner/name`` that is not a folder, while the Hub is offline), a file, a folder
    without ``config.json`` or without weights, or the folder of a run that did not finish."""
    if not path:
        return
    folder = Path(path).expanduser()
    if not folder.exists():
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")
        if looks_like_local_path(str(path)) or offline:
            where = " (HF_HUB_OFFLINE is set, so it is not looked up on the Hub)" if offline else ""
            raise ModelError(f"{flag} {path}: no such folder{where}. Pass the folder a trained model was saved to "
                             "(hf-deepclean train --output_dir writes one) or a Hub model id.")
        return  # a Hub id: from_pretrained says what went wrong
    if not folder.is_dir():
        raise ModelError(f"{flag} {path} is a file; pass the folder save_pretrained wrote (config.json and weights).")
    require_complete(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{flag} {path} holds no config.json, so it is not a saved model: pass the folder "
                         "save_pretrained wrote (hf-deepclean train --output_dir writes one).")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelError(f"{flag} {path} holds a config.json but no weights (model.safetensors): the save did not "
                         "finish or the weights were moved; save the model again with save_pretrained.")


def load_classifier(
    model_name_or_path: str | None,
    *,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    architecture: str = "vit",
    image_size: int = 16,
    ignore_mismatched_sizes: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    seed: int = 0,
):
    """Load ``model_name_or_path`` (safetensors only unless ``allow_pickle``) or build a tiny model.

    The label count must match the dataset's unless ``ignore_mismatched_sizes`` re-initialises the head.
    """
    labels = dict(num_labels=num_labels)
    if id2label is not None:
        labels.update(id2label=id2label, label2id=label2id)
    if not model_name_or_path:
        set_seed(seed)
        config = tiny_model_config(architecture, num_labels, image_size)
        config.update({k: v for k, v in labels.items() if k != "num_labels"})
        return AutoModelForImageClassification.from_config(config)

    check_model_folder(model_name_or_path)
    path = Path(model_name_or_path)
    if path.is_dir() and not allow_pickle and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise ModelError(
            f"{model_name_or_path} holds only pickle weights (*.bin), which can execute code when loaded. "
            "Convert them to safetensors, or pass --allow_pickle if you trust the source."
        )
    try:
        config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise ModelError(
                f"{model_name_or_path!r} needs its own model code to load, which is never run by default. "
                "Inspect that code, and pass --trust_remote_code only if you trust its source."
            ) from exc
        raise ModelError(f"Cannot load a model config from {model_name_or_path!r}: {_one_line(exc)}") from exc
    architectures = getattr(config, "architectures", None) or []
    if architectures and not ignore_mismatched_sizes and not any("ForImageClassification" in a for a in architectures):
        # A backbone checkpoint would get a random head: fine for `train`, silently wrong for `unlearn`.
        raise ModelError(
            f"{model_name_or_path!r} has no classification head (architectures {architectures}). "
            "Fine-tune it first: hf-deepclean train --model_name_or_path PATH --ignore_mismatched_sizes."
        )
    existing = getattr(config, "num_labels", None)
    if existing != num_labels and not ignore_mismatched_sizes and _has_trained_head(config):
        raise ModelError(
            f"Model {model_name_or_path!r} predicts {existing} classes but the dataset has {num_labels}. "
            "Pass --ignore_mismatched_sizes to train a new head (only for `train`), or use the matching dataset."
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(
            model_name_or_path,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
            **(labels if ignore_mismatched_sizes or existing != num_labels else {}),
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelError(
                f"{model_name_or_path!r} is not an image classifier (no AutoModelForImageClassification head)."
            ) from exc
        raise ModelError(f"Cannot load model {model_name_or_path!r}: {_one_line(exc)}") from exc
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise ModelError(
            f"Cannot load model weights from {model_name_or_path!r} ({type(exc).__name__}: {_one_line(exc)}). "
            "The checkpoint may be corrupt or truncated: re-save it with save_pretrained."
        ) from exc
    return model


def _one_line(exc: BaseException) -> str:
    # The CLI prints one line; library messages often put the advice on a later line.
    return " ".join(str(exc).split())


def _has_trained_head(config) -> bool:
    # A Hub backbone checkpoint (e.g. ImageNet-1k) always has 1000 labels; a new task needs the flag.
    return getattr(config, "architectures", None) is not None


def accuracy_metrics(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for Trainer: top-1 accuracy, computed here (no Hub metric download)."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: dict
    time_s: float
    recipe: dict | None = None  # recipe_of(the training arguments), written to train_summary.json


def train_classifier(model, train_dataset, eval_dataset, args, image_processor, *, callbacks=None) -> TrainResult:
    """Train ``model`` on ``train_dataset`` (raw ``image``/``label`` columns, or a :class:`TensorImageDataset`
    transformed once: the same batches, without the per-epoch image work) with a plain Trainer.

    Used for the original model and, on D_r only, for the gold model. Returns the trained model,
    the final evaluation metrics on ``eval_dataset`` and the training wall time.
    """
    if getattr(args, "remove_unused_columns", True):
        args.remove_unused_columns = False  # with_transform needs the raw image column
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=model_inputs(train_dataset, image_processor),
        eval_dataset=model_inputs(eval_dataset, image_processor),
        data_collator=collate_fn,
        compute_metrics=accuracy_metrics,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    with live_objects_frozen():
        trainer.train()
    elapsed = time.perf_counter() - start
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    return TrainResult(model=trainer.model, metrics=metrics, time_s=elapsed, recipe=recipe_of(args))


@dataclass
class TrainConfig(TinyModelTrainingArguments):
    """The training recipe of the original model and of the gold model: the gold model is the original's training
    run on D_r, so both start from these defaults at every entry point (``hf-deepclean train`` with and without
    ``--gold``, the demo, the benchmark's models, the ``retrain`` baseline). They train the embedded tiny models on
    digits in well under a minute; for a pretrained Hub checkpoint pass a fine-tuning budget, e.g.
    ``--learning_rate 5e-5 --num_train_epochs 3``.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Where the trained model is written."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs (20 suits the tiny digits models)."})
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Warm-up steps, or a fraction of all steps when < 1 (the tiny ViT needs it)."}
    )
    logging_strategy: str = field(default="epoch", metadata={"help": "Logging: no, steps or epoch."})


# Fields that say how a run reports, not what it trains: they may differ between an original and its gold model.
REPORTING_FIELDS = frozenset({"output_dir", "logging_dir", "logging_strategy", "logging_steps", "disable_tqdm",
                              "report_to", "run_name"})
# Fields that depend on the machine or the invocation, not on what is computed: pinned memory (on by default only
# with a GPU), the process's rank, tokens, whether a folder may be replaced.
MACHINE_FIELDS = frozenset({"dataloader_pin_memory", "local_rank", "hub_token", "push_to_hub_token",
                            "overwrite_output_dir"})
# What a record of the settings a cached result was computed with leaves out (the benchmark's and the audit's).
NOT_SETTINGS = REPORTING_FIELDS | MACHINE_FIELDS


def recipe_of(args) -> dict:
    """The training arguments that decide the trained weights (``args.to_dict()`` minus :data:`REPORTING_FIELDS`)."""
    return {k: v for k, v in args.to_dict().items() if k not in REPORTING_FIELDS}


def save_classifier(model, image_processor, output_dir: str | Path, dataset=None) -> None:
    """save_pretrained (safetensors) plus the image processor, so from_pretrained reloads both."""
    if dataset is not None:
        id2label, label2id = label_maps(dataset)
        model.config.id2label, model.config.label2id = id2label, label2id
    model.save_pretrained(str(output_dir), safe_serialization=True)
    image_processor.save_pretrained(str(output_dir))


TRAIN_SUMMARY_FILE = "train_summary.json"


def save_trained(result: TrainResult, image_processor, folder: str | Path, *, dataset, train_samples: int, **extra) -> dict:
    """:func:`save_classifier` plus ``train_summary.json``: training seconds, samples, test accuracy, the recipe
    (:func:`recipe_of`) and ``extra`` (a gold model's ``forgotten``: what it was trained without).

    The gold model's seconds in every report (time / retrain time) come from this file.
    """
    save_classifier(result.model, image_processor, folder, dataset=dataset)
    summary = {"train_time_s": result.time_s, "train_samples": train_samples,
               "test_accuracy": result.metrics.get("eval_accuracy"), **extra}
    if result.recipe is not None:
        summary["recipe"] = json.loads(json.dumps(result.recipe, default=str))
    (Path(folder) / TRAIN_SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def read_train_summary(folder: str | Path | None) -> dict:
    """What :func:`save_trained` wrote into ``folder``; ``{}`` when there is none or it cannot be read."""
    if not folder:
        return {}
    try:
        summary = json.loads((Path(folder) / TRAIN_SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def num_classes(dataset) -> int:
    return len(class_names(dataset))


__all__ = [
    "ARCHITECTURES", "MACHINE_FIELDS", "NOT_SETTINGS", "REPORTING_FIELDS", "ModelError", "TrainConfig", "TrainResult", "accuracy_metrics", "recipe_of",
    "check_model_folder", "load_classifier", "num_classes", "read_train_summary", "save_classifier", "save_trained", "tiny_model_config",
    "train_classifier",
]

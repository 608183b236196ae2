"""Unlearning methods behind one interface, so the benchmark treats them all alike.

``METHODS[name](model, splits, processor, config=None, *, seed=0) -> MethodResult`` where
``splits`` maps ``forget`` (D_f), ``retain`` (D_r) and optionally ``train`` (D). ``config=None``
uses the method's registered defaults (:meth:`UnlearningMethod.make_config`). The model is
changed in place (``retrain`` returns a new one).

======================  ==========================================================================
``original``            nothing (the "did nothing" reference)
``retrain``             a fresh model trained on D_r (the gold standard)
``finetune``            keep training on D_r
``gradient_ascent``     ascend the loss on D_f
``random_labels``       train on D_f with random wrong labels
``ssd``                 Selective Synaptic Dampening (Foster et al. 2023), no training
``salun``               SalUn (Fan et al. 2024): saliency mask + masked random-label training
``fisher_forgetting``   Fisher forgetting (Golatkar et al. 2020): noise ~ inverse retain Fisher
``l1_sparse``           l1-sparse unlearning (Jia et al. 2023): fine-tune with a decaying l1 penalty
``l_codec``             L-CODEC (Mehta et al. 2022): per forget batch, L-FOCI units + a Newton step on their weights
``fisher_masking``      Fisher Masking (Liu et al. 2023): zero the top forget-Fisher weights, masked fine-tune on D_r
``deepclean``           DeepClean: Fisher-ratio selection, reset to zero, masked fine-tune on D_r
``deepclean_init``      DeepClean resetting the selected weights to a fresh initialisation
``deepclean_none``      DeepClean without reset (masked fine-tune only)
``deepclean_batch``     DeepClean with the cheap batch Fisher estimator
``deepclean_fast``      DeepClean's ``preset="fast"``: batch Fisher on <= 512 samples, zero reset, 30 steps
``deepclean_assd``      DeepClean with ASSD's parameter-free fraction (Schoepf et al. 2024): no gold, no sweep
``deepclean_auto``      DeepClean with ``top_fraction="auto"``: the smallest verified fraction of a reset sweep
======================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..config import DeepCleanConfig
from . import (
    deepclean,
    finetune,
    fisher_forgetting,
    fisher_masking,
    gradient_ascent,
    l1_sparse,
    l_codec,
    original,
    random_labels,
    retrain,
    salun,
    ssd,
)
from .base import MethodResult, TensorImageDataset, UnlearningArguments


@dataclass(frozen=True)
class UnlearningMethod:
    """A registered method: ``run`` plus its config class and the defaults of this registry entry."""

    name: str
    run: Callable
    config_class: type
    defaults: Mapping = field(default_factory=dict)
    summary: str = ""

    def make_config(self, output_dir: str | os.PathLike | None = None, **overrides):
        """The config with this entry's defaults, then ``overrides``; Trainer methods get ``output_dir``."""
        values = dict(self.defaults)
        values.update(overrides)
        if issubclass(self.config_class, TrainingArguments):
            scratch = os.path.join(tempfile.gettempdir(), "hf_deepclean_methods", self.name)
            values.setdefault("output_dir", str(output_dir) if output_dir is not None else scratch)
        known = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Method {self.name!r} has no settings {unknown}; its settings are {sorted(known)}.")
        return self.config_class(**values)

    def __call__(self, model, splits, processor=None, config=None, *, seed: int = 0) -> MethodResult:
        return self.run(model, splits, processor, config if config is not None else self.make_config(), seed=seed)


_QUIET = {"disable_tqdm": True, "logging_strategy": "no"}

METHODS: dict[str, UnlearningMethod] = {
    m.name: m
    for m in (
        UnlearningMethod("original", original.run, original.OriginalConfig, summary="The original model, unchanged."),
        UnlearningMethod("retrain", retrain.run, retrain.RetrainConfig, summary="A fresh model trained on D_r (gold)."),
        UnlearningMethod("finetune", finetune.run, finetune.FinetuneConfig, summary="Fine-tune on D_r."),
        UnlearningMethod(
            "gradient_ascent", gradient_ascent.run, gradient_ascent.GradientAscentConfig, summary="Gradient ascent on D_f."
        ),
        UnlearningMethod(
            "random_labels", random_labels.run, random_labels.RandomLabelsConfig, summary="Train on D_f with random labels."
        ),
        UnlearningMethod("ssd", ssd.run, ssd.SSDConfig, summary="Selective Synaptic Dampening (no training)."),
        UnlearningMethod("salun", salun.run, salun.SalUnConfig, summary="Saliency mask + masked random-label training."),
        UnlearningMethod(
            "fisher_forgetting", fisher_forgetting.run, fisher_forgetting.FisherForgettingConfig,
            summary="Gaussian noise scaled by the inverse retain Fisher.",
        ),
        UnlearningMethod("l1_sparse", l1_sparse.run, l1_sparse.L1SparseConfig, summary="Fine-tune on D_r with decaying l1."),
        UnlearningMethod(
            "l_codec", l_codec.run, l_codec.LCodecConfig,
            summary="L-CODEC: per forget batch, L-FOCI-selected units get a Newton step (plus its noise).",
        ),
        UnlearningMethod(
            "fisher_masking", fisher_masking.run, fisher_masking.FisherMaskingConfig,
            summary="Fisher Masking: zero the top weights by forget-set Fisher, masked fine-tune on D_r.",
        ),
        UnlearningMethod(
            "deepclean", deepclean.run, DeepCleanConfig, {**deepclean.DIGITS_DEFAULTS, **_QUIET},
            summary="DeepClean: reset the top Fisher-ratio weights to zero, masked fine-tune on D_r.",
        ),
        UnlearningMethod(
            "deepclean_init", deepclean.run, DeepCleanConfig, {**deepclean.DIGITS_DEFAULTS, **_QUIET, "reset": "init"},
            summary="DeepClean, selected weights re-initialised.",
        ),
        UnlearningMethod(
            "deepclean_none", deepclean.run, DeepCleanConfig, {**deepclean.DIGITS_DEFAULTS, **_QUIET, "reset": "none"},
            summary="DeepClean without reset (masked fine-tune only).",
        ),
        UnlearningMethod(
            "deepclean_batch", deepclean.run, DeepCleanConfig,
            {**deepclean.DIGITS_DEFAULTS, **_QUIET, "fisher_estimator": "batch"},
            summary="DeepClean with the batch Fisher estimator.",
        ),
        UnlearningMethod(
            "deepclean_assd", deepclean.run, DeepCleanConfig,
            {**deepclean.DIGITS_DEFAULTS, **_QUIET, "top_fraction": "assd"},
            summary="DeepClean with ASSD's parameter-free fraction, ln(1 + 100 |D_f|/|D|) % of the weights.",
        ),
        UnlearningMethod(
            "deepclean_auto", deepclean.run, DeepCleanConfig,
            {**deepclean.DIGITS_DEFAULTS, **_QUIET, "top_fraction": "auto"},
            summary="DeepClean with top_fraction=auto: a reset sweep, then the smallest fraction that verifies.",
        ),
        UnlearningMethod(
            "deepclean_fast", deepclean.run, DeepCleanConfig,
            {**deepclean.DIGITS_DEFAULTS, **_QUIET, "preset": "fast", "top_fraction": deepclean.FAST_TOP_FRACTION},
            summary="DeepClean's fast preset: batch Fisher on a bounded sample, zero reset, a few dozen steps.",
        ),
    )
}


def get_method(name: str) -> UnlearningMethod:
    """The registered method ``name``, or a ValueError listing the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; choose from {sorted(METHODS)}.") from None


def run_method(name: str, model, splits, processor=None, *, seed: int = 0, output_dir=None, **overrides) -> MethodResult:
    """``METHODS[name]`` with its registered defaults plus ``overrides`` (config field values)."""
    method = get_method(name)
    return method(model, splits, processor, method.make_config(output_dir, **overrides), seed=seed)


__all__ = ["METHODS", "MethodResult", "TensorImageDataset", "UnlearningArguments", "UnlearningMethod", "get_method", "run_method"]

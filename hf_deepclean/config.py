"""DeepCleanConfig: TrainingArguments plus the DeepClean method's settings.

Also :class:`TinyModelTrainingArguments`, the Trainer defaults every command and method of the package
starts from (training the original and gold models, DeepClean's fine-tune, the baselines).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from .masking import MASK_KERNELS

RESET_MODES = ("zero", "init", "none")
NORM_POLICIES = ("init", "exclude", "same")
FISHER_ESTIMATORS = ("empirical", "expected", "batch")
AUTO_KINDS = ("infer", "class", "samples", "noisy_labels")
# Presets fill only the fields nobody set (an explicit value always wins, even one equal to the default). "fast": the cheap
# batch Fisher on a bounded seeded sample, a zero reset and a fine-tune of a few dozen steps; measured
# on the tiny digits ViT and ResNet (class 3) against SSD at a tuned alpha, see BENCHMARKS.md. 512 samples, not 256:
# with 256 the retain Fisher was too noisy for the selection to forget class 3 on 3 of 9 ResNet seeds (0-8); with 512
# every one passed, at 0.8-1.3x SSD's time.
PRESETS = {
    "fast": {"fisher_estimator": "batch", "fisher_max_samples": 512, "reset": "zero", "max_steps": 30},
}


@dataclass
class TinyModelTrainingArguments(TrainingArguments):
    """TrainingArguments with the defaults shared by every Trainer run of the package.

    They suit the embedded tiny digits models on CPU; pass your own budget for large models.
    Images are transformed lazily from the raw column, so ``remove_unused_columns`` stays False.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Output folder of the run."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (3e-3 suits the tiny models)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch size per device."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing: no, steps or epoch."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: images are transformed lazily from the raw column."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the contents of a non-empty --output_dir."}
    )
    dataloader_pin_memory: bool = field(
        default_factory=torch.cuda.is_available, metadata={"help": "Pin batches in memory (only useful with a GPU)."}
    )


@dataclass
class DeepCleanConfig(TinyModelTrainingArguments):
    """Configuration of a DeepClean run: Fisher pass, weight selection, reset, masked fine-tune.

    The training fields are ``transformers.TrainingArguments``; their defaults here are a short
    fine-tune that suits the tiny digits models (pass your own budget for large models).

    Args:
        threshold: gamma; weights with ``I_Df / (I_Dr + ratio_eps) > threshold`` are selected.
            Exactly one of ``threshold`` and ``top_fraction``.
        top_fraction: Select the top fraction (0, 1] of the eligible weights by Fisher ratio, ``"assd"`` (the
            parameter-free fraction of ASSD, :func:`hf_deepclean.selection.assd_fraction`, from the forget set's
            share of the training data), or ``"auto"``
            (see :mod:`hf_deepclean.sweep`: the smallest fraction whose reset-only model forgets by a
            criterion that needs no gold model, verified after the fine-tune and raised to the next
            swept fraction while the fine-tuned model fails it; needs an ``eval_dataset``).
        auto_kind: What is forgotten, which sets auto's criterion: ``infer`` (``class`` when no class of
            D_f is left in D_r, else ``samples``), ``class``, ``samples`` or ``noisy_labels``.
        auto_fractions, auto_retain_floor, auto_margin_steps, auto_mia_margin, auto_forget_tolerance,
            auto_max_accuracy_drop, auto_max_attempts: Settings of ``top_fraction="auto"``.
        early_stopping_patience: The fine-tune's budget without a gold model (see :mod:`hf_deepclean.budget`):
            ``num_train_epochs`` becomes a maximum; the fine-tune stops after this many evaluations on the
            ``eval_dataset`` without improvement of ``metric_for_best_model`` (validation loss unless set) and
            keeps the best evaluation's weights. Evaluations follow ``eval_strategy`` (``epoch`` when left at ``no``).
        fisher_estimator: ``empirical`` (per-sample, the paper's), ``expected`` or ``batch`` (cheap,
            batch-size dependent).
        fisher_batch_size: Batch size of the Fisher pass.
        fisher_chunk_size: Samples per vmap call; bounds per-sample-gradient memory
            (``chunk x parameters x 4`` bytes).
        fisher_max_samples: Use at most this many (seeded) samples per Fisher, or ``"auto"`` (all of D_f; D_r until
            the selection it implies is stable, see :func:`hf_deepclean.fisher.compute_fishers`).
        fisher_stability, fisher_snapshot_samples: Settings of ``fisher_max_samples="auto"``.
        ratio_eps: Absolute eps of the ratio; keeps mathematically-zero gradients from being selected.
        reset: What selected weights become before the fine-tune: ``zero`` (the paper), ``init``
            (re-initialised as the model initialises them) or ``none``.
        norm_policy: Normalisation-layer weights: ``init`` (selected entries reset to their init
            values, 1 for scales and 0 for shifts, whatever ``reset`` says), ``exclude`` (never
            selected) or ``same`` (treated like any weight; zeroing scales can collapse a ResNet).
        include_parameters: Only parameters matching these patterns are eligible (glob, ``re:`` regex
            or module name).
        exclude_parameters: Parameters matching these patterns are never selected.
        freeze_batchnorm_stats: Keep BatchNorm running statistics of layers with no selected weight
            fixed during the fine-tune (they are buffers, not weights; see the README).
        mask_kernels: How the fine-tune keeps frozen weights exact: ``multi_tensor`` (default: a few
            multi-tensor kernels per step for all tensors; faster) or ``per_tensor`` (a hook and a ``where`` per
            tensor; less memory: for float32 weights 1.25x instead of 2x the partially selected tensors). Frozen
            weights stay bit-identical with each and training gives the same weights; FSDP2 shards always use
            ``per_tensor``.
        save_fisher: Also write the Fishers as ``_fisher_forget/_fisher_retain.safetensors``.
        overwrite_output_dir: Replace the contents of a non-empty ``output_dir``.
        preset: ``fast`` (see ``PRESETS``): batch Fisher on at most 512 seeded samples per set, zero
            reset, 30 fine-tune steps (``max_steps``). It sets only the fields you did not pass: anything
            passed as a keyword (Python) or a flag or YAML key (CLI) wins, even a value equal to the default.
    """

    preset: str | None = field(
        default=None,
        metadata={"help": "Settings preset: fast (batch Fisher on <= 512 samples, zero reset, 30 fine-tune steps). "
                  "Fills only the fields you did not set; explicit values win."},
    )

    threshold: float | None = field(
        default=None, metadata={"help": "gamma: select weights with Fisher ratio I_Df/I_Dr above it."}
    )
    top_fraction: str | None = field(
        default=None,
        metadata={"help": "Select the top fraction (0, 1] of weights by Fisher ratio (e.g. 0.1 = 10%%); 'assd': ASSD's "
                  "parameter-free fraction ln(1 + 100 |D_f|/|D|) %% from the forget set's share; or 'auto': the "
                  "smallest fraction whose reset-only model meets a no-gold criterion (needs an eval_dataset)."},
    )
    auto_kind: str = field(
        default="infer",
        metadata={"help": "top_fraction=auto: what is forgotten, which sets the criterion: infer (class when no class "
                  "of the forget set is left in the retain set, else samples), class, samples or noisy_labels."},
    )
    auto_fractions: list[float] | None = field(
        default=None, metadata={"help": "Fractions tried by top_fraction=auto (default 0.005 ... 0.5)."}
    )
    auto_retain_floor: float = field(
        default=0.5, metadata={"help": "top_fraction=auto: minimum retain accuracy right after the reset (first "
                               "choice) and after each fine-tune (verification: below it the fine-tune did not recover)."}
    )
    auto_margin_steps: int = field(
        default=0,
        metadata={"help": "top_fraction=auto: swept steps added above the smallest passing reset-only fraction before "
                  "the first fine-tune (verification raises it anyway when the fine-tuned model has not forgotten)."},
    )
    auto_mia_margin: float = field(
        default=0.05, metadata={"help": "top_fraction=auto, sample forgetting: accept loss-MIA within 0.5 +- margin."}
    )
    auto_forget_tolerance: float = field(
        default=0.02,
        metadata={"help": "top_fraction=auto, class and noisy labels: the fine-tuned model must score at most this "
                  "forget accuracy (a model that never saw the class or the wrong labels scores ~0)."},
    )
    auto_max_accuracy_drop: float = field(
        default=0.05,
        metadata={"help": "top_fraction=auto, verification: the fine-tuned model's validation accuracy (without the "
                  "forgotten classes when forgetting classes) may be at most this far under the original's; further "
                  "under, the fine-tune did not recover from the reset (1 turns the check off)."},
    )
    auto_max_attempts: int = field(
        default=3,
        metadata={"help": "top_fraction=auto: fine-tunes at most (each failed verification restores the original "
                  "weights and tries a larger swept fraction: the next one, then where the last two attempts' trend "
                  "meets the criterion); 1 = no verification retry."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Fine-tune budget without a gold model: num_train_epochs becomes a maximum, the fine-tune "
                  "stops after this many evaluations (each epoch unless eval_strategy says otherwise) without a "
                  "better metric_for_best_model (validation loss unless set), and the best evaluation's weights are "
                  "kept. Needs an eval_dataset (the CLI carves one off the test split)."},
    )
    fisher_estimator: str = field(
        default="empirical", metadata={"help": "Fisher estimator: empirical (paper), expected or batch (cheap)."}
    )
    fisher_batch_size: int = field(default=64, metadata={"help": "Batch size of the Fisher pass."})
    fisher_chunk_size: int = field(
        default=32, metadata={"help": "Samples per vmap call; per-sample gradients use chunk x params x 4 bytes."}
    )
    fisher_max_samples: str | None = field(
        default=None, metadata={"help": "Use at most this many (seeded) samples for each Fisher, or 'auto': all of "
                                "D_f, and D_r until the selection it implies stops changing (--fisher_stability)."}
    )
    fisher_stability: float = field(
        default=0.99, metadata={"help": "fisher_max_samples=auto: stop the D_r pass once the selections of two "
                                "successive snapshots overlap this much (Jaccard), twice in a row."}
    )
    fisher_snapshot_samples: int = field(
        default=256, metadata={"help": "fisher_max_samples=auto: D_r samples between two snapshots of the selection."}
    )
    ratio_eps: float = field(
        default=1e-12, metadata={"help": "Absolute eps in I_Df / (I_Dr + eps); zero-gradient weights stay unselected."}
    )
    reset: str = field(
        default="zero", metadata={"help": "Reset of the selected weights: zero (paper), init or none."}
    )
    norm_policy: str = field(
        default="init",
        metadata={"help": "Normalisation weights: init (reset to 1/0 when selected), exclude, or same as others."},
    )
    include_parameters: list[str] | None = field(
        default=None, metadata={"help": "Only parameters matching these patterns may be selected."}
    )
    exclude_parameters: list[str] | None = field(
        default=None, metadata={"help": "Parameters matching these patterns are never selected."}
    )
    freeze_batchnorm_stats: bool = field(
        default=True, metadata={"help": "Keep BatchNorm running stats of layers with no selected weight fixed."}
    )
    mask_kernels: str = field(
        default="multi_tensor",
        metadata={"help": "Masking kernels: multi_tensor (faster) or per_tensor (less memory); same weights either way."},
    )
    save_fisher: bool = field(
        default=False, metadata={"help": "Also save the Fishers (_fisher_*.safetensors, kept out of Hub pushes)."}
    )
    hub_private_repo: bool | None = field(
        default=True, metadata={"help": "Push to a private repository (an unlearned model can still be sensitive)."}
    )
    # A short masked fine-tune (the fields whose defaults or meaning differ from the shared base).
    output_dir: str | None = field(default=None, metadata={"help": "Where the unlearned model is written."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of the masked fine-tune on D_r."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of the masked fine-tune (3e-3 suits the tiny models)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (frozen weights never decay)."})
    logging_strategy: str = field(default="epoch", metadata={"help": "Logging: no, steps or epoch."})

    def __post_init__(self):
        self._apply_preset()
        eval_strategy = str(getattr(self.eval_strategy, "value", self.eval_strategy))
        if self.early_stopping_patience is not None and eval_strategy == "no":
            self.eval_strategy = "epoch"  # early stopping needs evaluations to watch
        super().__post_init__()
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError(
                f"Pass exactly one of threshold (got {self.threshold}) and top_fraction (got {self.top_fraction})."
            )
        if self.top_fraction is not None and self.top_fraction not in ("auto", "assd"):
            try:
                self.top_fraction = float(self.top_fraction)
            except (TypeError, ValueError):
                raise ValueError(f"top_fraction={self.top_fraction!r} must be a number in (0, 1], 'auto' or "
                                 "'assd'.") from None
            if not 0.0 < self.top_fraction <= 1.0:
                raise ValueError(f"top_fraction={self.top_fraction} must be in (0, 1].")
        if self.threshold is not None and not self.threshold >= 0:
            raise ValueError(f"threshold={self.threshold} must be a number >= 0.")
        if self.fisher_estimator not in FISHER_ESTIMATORS:
            raise ValueError(f"fisher_estimator={self.fisher_estimator!r} must be one of {FISHER_ESTIMATORS}.")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset={self.reset!r} must be one of {RESET_MODES}.")
        if self.norm_policy not in NORM_POLICIES:
            raise ValueError(f"norm_policy={self.norm_policy!r} must be one of {NORM_POLICIES}.")
        if self.mask_kernels not in MASK_KERNELS:
            raise ValueError(f"mask_kernels={self.mask_kernels!r} must be one of {MASK_KERNELS}.")
        for name in ("fisher_batch_size", "fisher_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.fisher_max_samples not in (None, "auto"):
            try:
                self.fisher_max_samples = int(self.fisher_max_samples)
            except (TypeError, ValueError):
                raise ValueError(f"fisher_max_samples={self.fisher_max_samples!r} must be a whole number >= 1, 'auto' "
                                 "or unset.") from None
            if self.fisher_max_samples < 1:
                raise ValueError(f"fisher_max_samples={self.fisher_max_samples} must be >= 1, 'auto' or unset.")
        if not 0.0 < self.fisher_stability <= 1.0:
            raise ValueError(f"fisher_stability={self.fisher_stability} must be in (0, 1] (a Jaccard index).")
        if self.fisher_snapshot_samples < 1:
            raise ValueError(f"fisher_snapshot_samples={self.fisher_snapshot_samples} must be >= 1.")
        if not self.ratio_eps >= 0:
            raise ValueError(f"ratio_eps={self.ratio_eps} must be >= 0.")
        if self.auto_kind not in AUTO_KINDS:
            raise ValueError(f"auto_kind={self.auto_kind!r} must be one of {AUTO_KINDS}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience={self.early_stopping_patience} must be >= 1, or unset for a fixed "
                             "budget of num_train_epochs.")
        if self.auto_max_attempts < 1:
            raise ValueError(f"auto_max_attempts={self.auto_max_attempts} must be >= 1.")
        if not 0.0 <= self.auto_forget_tolerance <= 1.0:
            raise ValueError(f"auto_forget_tolerance={self.auto_forget_tolerance} must be in [0, 1].")
        if not 0.0 <= self.auto_max_accuracy_drop <= 1.0:
            raise ValueError(f"auto_max_accuracy_drop={self.auto_max_accuracy_drop} must be in [0, 1] (an accuracy "
                             "difference; 1 turns the check off).")

    def _apply_preset(self) -> None:
        """Fill the fields nobody set with the preset's values (before validation)."""
        if self.preset is None:
            return
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} must be one of {sorted(PRESETS)} (or unset).")
        explicit = getattr(self, "_explicit_fields", None)
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        for name, value in PRESETS[self.preset].items():
            # Without a record of what was set (a subclass with its own __init__), a value equal to the default
            # is taken as not set.
            unset = name not in explicit if explicit is not None else getattr(self, name) == defaults.get(name)
            if unset:
                setattr(self, name, value)


# Which fields were set: the keywords of a Python call, or the flags of a command line (arguments.parse_arguments
# names them here, because HfArgumentParser passes every field, set or not).
_FIELDS_SET_ON_COMMAND_LINE: contextvars.ContextVar[frozenset | None] = contextvars.ContextVar(
    "fields_set_on_command_line", default=None)


@contextmanager
def fields_set_on_command_line(names: Iterable[str]):
    """While parsing a command line: the fields its flags (and YAML keys) set, for the presets."""
    token = _FIELDS_SET_ON_COMMAND_LINE.set(frozenset(names))
    try:
        yield
    finally:
        _FIELDS_SET_ON_COMMAND_LINE.reset(token)


def record_fields_set(cls):
    """Class decorator: record which fields a call (or a command line) set, for the presets."""
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self, *args, **kwargs):
        from_command_line = _FIELDS_SET_ON_COMMAND_LINE.get()
        self._explicit_fields = frozenset(kwargs) if from_command_line is None else from_command_line
        generated(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


record_fields_set(DeepCleanConfig)

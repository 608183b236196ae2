"""DeepCleanTrainer: Fisher pass -> selection -> reset -> masked fine-tune, inside transformers.Trainer.

The training loop is Trainer's own; DeepClean only adds what happens before it (``unlearn``)
and three hooks: the optimizer gets a post-step restore of the frozen entries, under FSDP2 the
masking moves onto the sharded parameters once Trainer has wrapped the model (a callback at train
begin), and every checkpoint carries the mask so a resumed run continues with the same one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer

from .config import DeepCleanConfig
from .data import IMAGE_COLUMN, collate_fn, with_image_transform
from .fisher import fisher_diagonal
from .masking import (
    GradientMask,
    GradientMaskTrainerMixin,
    freeze_batchnorm_statistics,
    normalization_parameter_names,
    reset_selected_weights,
)
from .selection import ParameterMask, select_parameters, threshold_sweep
from .sharding import BindMaskToShards, fsdp2_wrappable, gather_unsharded
from .sweep import next_fraction
from .training import accuracy_metrics, live_objects_frozen

logger = logging.getLogger(__name__)

MASK_FILE = "_parameter_mask.safetensors"
FISHER_FORGET_FILE = "_fisher_forget.safetensors"
FISHER_RETAIN_FILE = "_fisher_retain.safetensors"


class SelectionError(ValueError):
    """A threshold that selects no weight, or a mask that cannot be used."""


class DeepCleanTrainer(GradientMaskTrainerMixin, Trainer):
    """A ``transformers.Trainer`` that makes ``model`` forget ``forget_dataset`` with DeepClean.

    ``train_dataset`` is the retain set D_r and ``forget_dataset`` the forget set D_f; raw datasets
    with an ``image`` column are transformed lazily with ``processing_class`` (an image processor).
    ``model`` may be a Hub id or a local folder. Pass ``parameter_mask`` (or both Fishers) to skip
    the Fisher pass. After :meth:`unlearn`, ``fisher_forget``, ``fisher_retain`` and
    ``parameter_mask`` are set, and ``unlearning_stats`` holds counts and timings.
    """

    def __init__(
        self,
        model=None,
        args: DeepCleanConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        *,
        forget_dataset=None,
        parameter_mask: ParameterMask | None = None,
        fisher_forget: dict | None = None,
        fisher_retain: dict | None = None,
        **kwargs,
    ):
        if args is None:
            raise ValueError("DeepCleanTrainer needs args=DeepCleanConfig(output_dir=..., top_fraction=... or threshold=...).")
        if not isinstance(args, DeepCleanConfig):
            raise TypeError(f"args must be a DeepCleanConfig, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(str(model), use_safetensors=True)
        if args.early_stopping_patience is not None and eval_dataset is None:
            raise ValueError("early_stopping_patience needs eval_dataset: a validation split the model was not trained "
                             "on (hf-deepclean unlearn carves one off the test split).")
        self._check_distributed_support(
            fsdp=args.fsdp, fsdp_version=(args.fsdp_config or {}).get("version", 2), deepspeed=args.deepspeed)
        self.image_processor = processing_class
        if kwargs.get("compute_metrics") is None:
            kwargs["compute_metrics"] = accuracy_metrics  # evaluations report eval_accuracy, for early stopping too
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or collate_fn,
            train_dataset=self._prepare(train_dataset),
            eval_dataset=self._prepare(eval_dataset),
            processing_class=processing_class,
            **kwargs,
        )
        # An accelerate config switches the engines on without touching args.
        self._check_distributed_support(
            fsdp=self.is_fsdp_enabled, fsdp_version=self._fsdp_version(), deepspeed=self.is_deepspeed_enabled)
        if self.is_fsdp_enabled:
            self._check_fsdp2_precision(self.model, self.accelerator.mixed_precision)
            if args.early_stopping_patience is not None:
                raise ValueError("early_stopping_patience keeps the best epoch's weights in memory, which is not "
                                 "supported on FSDP2's sharded model; train with DDP, or set a fixed num_train_epochs.")
        self.forget_dataset = self._prepare(forget_dataset)
        self.parameter_mask = parameter_mask
        self.fisher_forget = fisher_forget
        self.fisher_retain = fisher_retain
        self.unlearning_stats: dict = {}
        self.unlearning_report = None  # set it (an UnlearningReport or its dict) to put the evidence in the card
        self.auto_sweep: dict | None = None
        self.gradient_mask: GradientMask | None = None

    # ------------------------------------------------------------------ set-up

    def _prepare(self, dataset):
        if dataset is None or isinstance(dataset, dict):
            return dataset
        columns = getattr(dataset, "column_names", None) or []
        if IMAGE_COLUMN in columns and "pixel_values" not in columns:
            if self.image_processor is None:
                raise ValueError("Raw image datasets need processing_class=<an image processor> to make pixel_values.")
            return with_image_transform(dataset, self.image_processor)
        return dataset

    @staticmethod
    def _check_distributed_support(*, fsdp, fsdp_version=2, deepspeed) -> None:
        # Element-wise masks need per-parameter tensors; refuse set-ups that hide them.
        if deepspeed:
            raise ValueError(
                "DeepClean does not support DeepSpeed: its engine steps inside backward, past the frozen-weight "
                "restore. Use FSDP2 (recipes/accelerate/fsdp2.yaml) or DDP (accelerate multi-GPU) instead."
            )
        if fsdp and int(fsdp_version) != 2:
            raise ValueError(
                f"DeepClean does not support FSDP version {fsdp_version}: FSDP1 flattens the parameters the element-wise "
                "mask is bound to. Use FSDP2 (fsdp_config version 2, or fsdp_version: 2 in the accelerate config, as in "
                "recipes/accelerate/fsdp2.yaml) or DDP instead."
            )

    @staticmethod
    def _check_fsdp2_precision(model: torch.nn.Module, mixed_precision: str) -> None:
        # Seen on an H200 (torch 2.11, accelerate 1.15): FSDP2's bf16 policy casts BatchNorm weights to bf16 but
        # not their running statistics, and the backward pass stops with "Expected running_mean to have type
        # BFloat16 but got Float". Refuse before the Fisher pass instead of failing after it.
        if mixed_precision in ("bf16", "fp16") and any(
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError(
                f"FSDP2 with {mixed_precision} mixed precision fails on models with BatchNorm layers "
                f"({type(model).__name__}): it casts their weights but not their running statistics. Launch with "
                "--mixed_precision no (or mixed_precision: no in the accelerate config), or use DDP "
                "(recipes/accelerate/multi_gpu_ddp.yaml), where bf16 autocast keeps BatchNorm in float32."
            )

    def _fsdp_version(self) -> int:
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        return int(getattr(plugin, "fsdp_version", 2) or 2)

    # ------------------------------------------------------------------ DeepClean

    def compute_fishers(self) -> tuple[dict, dict]:
        """Empirical (or configured) Fisher diagonals on D_f and D_r, summed across processes."""
        if self.forget_dataset is None or self.train_dataset is None:
            raise ValueError("unlearn() needs forget_dataset (D_f) and train_dataset (D_r).")
        if len(self.forget_dataset) == 0:
            raise ValueError("The forget set is empty: there is nothing to forget.")
        args = self.args
        common = dict(
            estimator=args.fisher_estimator,
            batch_size=args.fisher_batch_size,
            collate_fn=self.data_collator,
            accelerator=self.accelerator,
            max_samples=args.fisher_max_samples,
            seed=args.seed,
            chunk_size=args.fisher_chunk_size,
            show_progress=not args.disable_tqdm,
        )
        model = self.accelerator.unwrap_model(self.model)
        self.fisher_forget = fisher_diagonal(model, self.forget_dataset, **common)
        self.fisher_retain = fisher_diagonal(model, self.train_dataset, **common)
        return self.fisher_forget, self.fisher_retain

    def _excluded_parameters(self) -> list[str]:
        exclude = list(self.args.exclude_parameters or [])
        if self.args.norm_policy == "exclude":
            exclude += normalization_parameter_names(self.model)
        return exclude

    def select(self, top_fraction: float | None = None) -> ParameterMask:
        """The mask of privacy-sensitive weights from the two Fishers.

        ``top_fraction`` overrides the configured selection (``top_fraction="auto"`` passes each candidate);
        with ``top_fraction="auto"`` configured and none given, the reset-only choice is used.
        """
        args = self.args
        exclude = self._excluded_parameters()
        threshold = None
        if top_fraction is None:
            top_fraction = self.choose_top_fraction() if args.top_fraction == "auto" else args.top_fraction
            threshold = args.threshold
        mask = select_parameters(
            self.fisher_forget,
            self.fisher_retain,
            threshold=threshold,
            top_fraction=top_fraction,
            eps=args.ratio_eps,
            include=args.include_parameters,
            exclude=exclude or None,
        )
        if mask.num_selected == 0:
            sweep = threshold_sweep(self.fisher_forget, self.fisher_retain, eps=args.ratio_eps)
            useful = [row for row in sweep if row["num_selected"] > 0]
            hint = (
                f" The largest threshold that selects anything in the sweep is {useful[-1]['threshold']:.4g} "
                f"({useful[-1]['selected_fraction']:.2%} of weights); or pass --top_fraction."
                if useful else " Pass --top_fraction instead."
            )
            raise SelectionError(f"threshold={args.threshold} selects no weight.{hint}")
        if mask.num_selected == mask.num_total:
            logger.warning("The selection covers every weight: DeepClean then amounts to retraining the whole model.")
        return mask

    def choose_top_fraction(self) -> float:
        """``top_fraction="auto"``, first stage: sweep reset-only models, keep the smallest that forgets (sweep.py)."""
        from .sweep import DEFAULT_FRACTIONS, choose_top_fraction, forget_kind, kept_validation_accuracy, reset_sweep

        if self.eval_dataset is None:
            raise ValueError("top_fraction='auto' needs eval_dataset: a validation split the model was not trained on.")
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        fractions = list(args.auto_fractions or DEFAULT_FRACTIONS)
        rows = reset_sweep(
            model, self.fisher_forget, self.fisher_retain,
            {"forget": self.forget_dataset, "retain": self.train_dataset, "validation": self.eval_dataset},
            fractions=fractions, reset=args.reset, norm_policy=args.norm_policy,
            eps=args.ratio_eps, exclude=self._excluded_parameters() or None, seed=args.seed,
        )
        kind = forget_kind(self.forget_dataset, self.train_dataset, args.auto_kind)
        fraction, reason = choose_top_fraction(
            rows, kind=kind, num_classes=model.config.num_labels,
            retain_floor=args.auto_retain_floor, mia_margin=args.auto_mia_margin, margin_steps=args.auto_margin_steps,
        )
        # What verification holds each fine-tuned model to: the original's accuracy on what it should keep.
        original_accuracy = kept_validation_accuracy(model, self.forget_dataset, self.eval_dataset, kind=kind,
                                                     batch_size=args.per_device_eval_batch_size)
        self.auto_sweep = {"rows": rows, "fractions": fractions, "start": fraction, "chosen": fraction,
                           "reason": reason, "kind": kind, "class_forgetting": kind == "class", "attempts": [],
                           "original_validation_accuracy": original_accuracy}
        logger.info("top_fraction=auto starts at %s: %s.", fraction, reason)
        return fraction

    def unlearn(self, resume_from_checkpoint: str | bool | None = None, **train_kwargs):
        """Fisher -> selection -> reset -> masked fine-tune on D_r. Returns Trainer's TrainOutput.

        With ``top_fraction="auto"`` the fine-tuned model is verified (sweep.verify_forgetting); while it
        fails, the original weights come back and a larger swept fraction (sweep.next_fraction) is fine-tuned,
        up to ``auto_max_attempts`` fine-tunes (none after one whose fine-tune did not recover).
        ``auto_sweep["attempts"]`` records each. When none passes, the run ends with the attempt closest to the
        criterion whose fine-tune recovered, fine-tuned again if it was not the last (``auto_sweep["refit"]``).
        """
        start = time.perf_counter()
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        fisher_time = 0.0
        if checkpoint is not None and (Path(checkpoint) / MASK_FILE).exists():
            self.parameter_mask = ParameterMask.load(Path(checkpoint) / MASK_FILE)
            logger.info("Resuming with the mask saved in %s.", checkpoint)
        elif self.parameter_mask is None and (self.fisher_forget is None or self.fisher_retain is None):
            t0 = time.perf_counter()
            self.compute_fishers()
            fisher_time = time.perf_counter() - t0
        model = self.accelerator.unwrap_model(self.model)
        if self.parameter_mask is None and self.args.top_fraction == "auto":
            output, train_time = self._auto_fine_tunes(model, checkpoint, train_kwargs, fisher_time)
        else:
            self.parameter_mask = self.parameter_mask or self.select()
            output, train_time = self._masked_fine_tune(model, checkpoint, train_kwargs, fisher_time)
        self.unlearning_stats.update(train_time_s=train_time, total_time_s=time.perf_counter() - start)
        return output

    def _auto_fine_tunes(self, model, checkpoint, train_kwargs, fisher_time: float):
        """``top_fraction="auto"``: fine-tune, verify, and while verification fails retry a larger fraction
        (sweep.next_fraction) from the original weights. Returns (output, seconds of fine-tuning)."""
        fraction = self._auto_start()
        fractions = self.auto_sweep["fractions"]
        # Each retry starts from the original weights (buffers included: selected BatchNorm layers update theirs),
        # kept in host memory so that a retry costs no accelerator memory.
        retries = self.args.auto_max_attempts > 1 and any(f > fraction for f in fractions)
        original = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if retries else None
        train_time = 0.0
        while True:
            output, seconds = self._fine_tune_fraction(model, fraction, checkpoint, train_kwargs, fisher_time)
            train_time += seconds
            if self._auto_verified(model, fraction, seconds):
                return output, train_time
            attempts = self.auto_sweep["attempts"]
            # After a fine-tune that did not recover (collapsed, or lost accuracy) a larger fraction, which resets
            # more, would only do worse.
            following = None if attempts[-1]["collapsed"] else next_fraction(fractions, attempts)
            if following is None or len(attempts) >= self.args.auto_max_attempts:
                break
            logger.info("top_fraction=auto: %s did not forget after the fine-tune (%s); trying %s from the original "
                        "weights.", fraction, attempts[-1]["reason"], following)
            self._restore_original(model, original)
            fraction = following
        closest = self._closest_auto_attempt()
        if closest is not None:
            logger.warning("top_fraction=auto: no fine-tuned model passed verification and the last one (%s) is "
                           "further from the criterion than %s; fine-tuning %s again to end with it.",
                           fraction, closest, closest)
            self.auto_sweep["refit"] = closest
            self._restore_original(model, original)
            # The same seed, data and mask give that attempt's model again (tests/test_sweep.py checks it).
            output, seconds = self._fine_tune_fraction(model, closest, checkpoint, train_kwargs, fisher_time)
            train_time += seconds
        return output, train_time

    def _fine_tune_fraction(self, model, fraction: float, checkpoint, train_kwargs, fisher_time: float):
        self.auto_sweep["chosen"] = fraction
        self.parameter_mask = self.select(top_fraction=fraction)
        return self._masked_fine_tune(model, checkpoint, train_kwargs, fisher_time)

    def _restore_original(self, model, original: dict) -> None:
        model.load_state_dict(original)
        self.optimizer, self.lr_scheduler, self.model_wrapped = None, None, self.model  # a fresh run, not a resume

    def _closest_auto_attempt(self) -> float | None:
        """After every auto attempt failed: the fraction to fine-tune again, or None to keep the last model.

        The attempt nearest its criterion (lowest ``measure``; the smaller fraction on ties) among those whose
        fine-tune recovered (``collapsed`` False), when that is not the last attempt already.
        """
        attempts = self.auto_sweep["attempts"]
        usable = [a for a in attempts if not a["collapsed"]]
        if not usable:
            return None
        closest = min(usable, key=lambda a: (a["measure"], a["top_fraction"]))
        return None if closest is attempts[-1] else closest["top_fraction"]

    def _auto_start(self) -> float:
        if self.is_fsdp_enabled:
            raise ValueError("top_fraction='auto' may fine-tune more than once, which FSDP2's wrapped model does not "
                             "allow; choose the fraction with `hf-deepclean sweep`, then pass it as --top_fraction.")
        return self.choose_top_fraction()

    def _auto_verified(self, model, fraction: float, train_seconds: float) -> bool:
        """Verify the fine-tuned model of one auto attempt and record it in ``auto_sweep``."""
        from .sweep import verify_forgetting

        args = self.args
        verdict = verify_forgetting(model, self.forget_dataset, self.eval_dataset, kind=self.auto_sweep["kind"],
                                    tolerance=args.auto_forget_tolerance, mia_margin=args.auto_mia_margin,
                                    retain=self.train_dataset, retain_floor=args.auto_retain_floor,
                                    reference_accuracy=self.auto_sweep["original_validation_accuracy"],
                                    max_accuracy_drop=args.auto_max_accuracy_drop,
                                    batch_size=args.per_device_eval_batch_size, seed=args.seed)
        model.train()
        self.auto_sweep["attempts"].append({"top_fraction": fraction, "train_time_s": train_seconds, **verdict})
        self.auto_sweep["verified"] = verdict["passed"]
        self.log({"deepclean/auto_attempt_fraction": fraction, "deepclean/auto_attempt_passed": float(verdict["passed"]),
                  "deepclean/auto_attempt_forget_accuracy": verdict["forget_accuracy"]})
        return verdict["passed"]

    def _masked_fine_tune(self, model, checkpoint, train_kwargs, fisher_time: float):
        """Reset the selected weights, then train with every other weight frozen. Returns (output, seconds)."""
        mask = self.parameter_mask.to(next(model.parameters()).device)
        num_reset = reset_selected_weights(
            model, mask, self.args.reset, norm_policy=self.args.norm_policy, seed=self.args.seed
        )
        self.gradient_mask = GradientMask(model, mask, kernels=self.args.mask_kernels).attach()
        shard_binder = BindMaskToShards(lambda: self.gradient_mask) if self.is_fsdp_enabled else None
        if shard_binder is not None:
            self.add_callback(shard_binder)
        bn_handles = freeze_batchnorm_statistics(model, mask) if self.args.freeze_batchnorm_stats else []
        budget = self._early_stopping()
        self.unlearning_stats = {
            "num_selected": self.parameter_mask.num_selected,
            "num_total": self.parameter_mask.num_total,
            "selected_fraction": self.parameter_mask.selected_fraction,
            "threshold": self.parameter_mask.threshold,
            "top_fraction": self.auto_sweep["chosen"] if self.auto_sweep else self.args.top_fraction,
            "num_reset": num_reset,
            "fisher_time_s": fisher_time,
        }
        logger.info(
            "DeepClean selected %d of %d weights (%.3f%%); reset %d (%s).",
            self.parameter_mask.num_selected, self.parameter_mask.num_total,
            100 * self.parameter_mask.selected_fraction, num_reset, self.args.reset,
        )
        self.log({f"deepclean/{k}": float(v) for k, v in self.unlearning_stats.items() if isinstance(v, (int, float))})
        try:
            t0 = time.perf_counter()
            with live_objects_frozen(), fsdp2_wrappable(model if self.is_fsdp_enabled else None):
                output = self.train(resume_from_checkpoint=checkpoint, **train_kwargs)
            return output, time.perf_counter() - t0
        finally:
            for handle in bn_handles:
                handle.remove()
            if shard_binder is not None:
                self.remove_callback(shard_binder)
            if budget is not None:
                self.remove_callback(budget)
                self.unlearning_stats.update(budget.summary())
            # How the partially selected tensors were masked (FSDP2 shards always take the per-tensor hooks).
            self.unlearning_stats["multi_tensor_masked_tensors"] = self.gradient_mask.num_multi_tensor
            self.gradient_mask.detach()

    def _early_stopping(self):
        """The no-gold budget rule (budget.py) as a callback of this fine-tune, or None for a fixed budget."""
        from .budget import KeepBestValidationEpoch

        args = self.args
        if args.early_stopping_patience is None:
            return None
        budget = KeepBestValidationEpoch(args.early_stopping_patience, args.metric_for_best_model or "loss",
                                         args.greater_is_better)
        self.add_callback(budget)
        return budget

    def _resolve_checkpoint(self, resume_from_checkpoint):
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
            if last is None:
                raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint.")
            return last
        return resume_from_checkpoint or None

    # ------------------------------------------------------------------ Trainer hooks

    def unsharded_model(self) -> torch.nn.Module:
        """The model as a plain module that one process can run, save and evaluate on its own.

        Under FSDP2 the shards are gathered (a collective: call this on every process) into a fresh instance
        of the model's class; otherwise this is the model itself.
        """
        return gather_unsharded(self.accelerator.unwrap_model(self.model))

    def card_record(self, **extra) -> dict:
        """The model-card record: the evaluation report when one was attached, else what the trainer knows."""
        from .modelcard import record_from_report

        report = self.unlearning_report
        if report is None:
            stats = self.unlearning_stats
            report = {
                "method": "deepclean",
                "forget": {"size": len(self.forget_dataset) if self.forget_dataset is not None else None},
                "selection": {k: stats.get(k) for k in ("threshold", "top_fraction", "selected_fraction", "num_selected")},
                "time_s": {"fisher": stats.get("fisher_time_s"), "train": stats.get("train_time_s"),
                           "total": stats.get("total_time_s")},
            }
        elif hasattr(report, "to_dict"):
            report = report.to_dict()
        hyperparameters = {k: getattr(self.args, k) for k in (
            "threshold", "top_fraction", "fisher_estimator", "reset", "norm_policy", "num_train_epochs", "learning_rate")}
        # Only when they apply, so the card never shows a budget that did not run: max_steps overrides the epochs.
        optional = {"preset": self.args.preset, "max_steps": self.args.max_steps if self.args.max_steps > 0 else None,
                    "fisher_max_samples": self.args.fisher_max_samples}
        hyperparameters.update({k: v for k, v in optional.items() if v is not None})
        if self.args.max_steps > 0:
            del hyperparameters["num_train_epochs"]
        return record_from_report(report, hyperparameters=hyperparameters, **extra)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call=_internal_call)
        # The card and the mask are written on every save, not only on push; Trainer's checkpoints call this
        # with the checkpoint folder, which is how resume_from_checkpoint finds the mask there.
        if self.parameter_mask is not None and self.is_world_process_zero():
            from .modelcard import write_model_card

            self.save_unlearning_artifacts(output_dir)
            write_model_card(output_dir or self.args.output_dir, self.card_record())

    def create_model_card(self, *args, **kwargs):
        """Trainer.push_to_hub calls this: write DeepClean's card instead of the generic one."""
        if self.parameter_mask is None:
            return super().create_model_card(*args, **kwargs)
        from .modelcard import write_model_card

        write_model_card(self.args.output_dir, self.card_record(**({"repo_id": self.hub_model_id}
                                                                  if getattr(self, "hub_model_id", None) else {})))

    def save_unlearning_artifacts(self, output_dir: str | None = None) -> None:
        """Write the mask (and with ``save_fisher`` the Fishers) under ``_`` names, kept out of Hub pushes."""
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.is_world_process_zero():
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.parameter_mask is not None:
            self.parameter_mask.save(output_dir / MASK_FILE)
        if self.args.save_fisher and self.fisher_forget is not None:
            for name, fisher in ((FISHER_FORGET_FILE, self.fisher_forget), (FISHER_RETAIN_FILE, self.fisher_retain)):
                save_file({k: v.detach().float().cpu().contiguous() for k, v in fisher.items()}, str(output_dir / name))


def load_fisher(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Fisher written by :meth:`DeepCleanTrainer.save_unlearning_artifacts`."""
    return load_file(str(path))

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
from transformers import AutoModelForImageClassification, Trainer
from transformers.trainer_utils import get_last_checkpoint

from ._compat import fsdp2_wrappable, live_objects_frozen, saved_names
from .auto import AutoTopFraction
from .budget import KeepBestValidationEpoch
from .config import DeepCleanConfig
from .fisher import compute_fishers
from .images import collate_fn, model_inputs
from .masking import GradientMask, GradientMaskTrainerMixin, freeze_batchnorm_statistics, reset_selected_weights
from .modelcard import record_from_report, write_model_card
from .selection import ParameterMask, assd_fraction, select_for_config
from .sharding import BindMaskToShards, check_distributed_support, check_fsdp2_precision, gather_unsharded
from .training import accuracy_metrics

logger = logging.getLogger(__name__)

MASK_FILE = "_parameter_mask.safetensors"
FISHER_FORGET_FILE = "_fisher_forget.safetensors"
FISHER_RETAIN_FILE = "_fisher_retain.safetensors"


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
            model = AutoModelForImageClassification.from_pretrained(str(model), use_safetensors=True)
        if args.early_stopping_patience is not None and eval_dataset is None:
            raise ValueError("early_stopping_patience needs eval_dataset: a validation split the model was not trained "
                             "on (hf-deepclean unlearn carves one off the test split).")
        check_distributed_support(
            fsdp=args.fsdp, fsdp_version=(args.fsdp_config or {}).get("version", 2), deepspeed=args.deepspeed)
        self.image_processor = processing_class
        if kwargs.get("compute_metrics") is None:
            kwargs["compute_metrics"] = accuracy_metrics  # evaluations report eval_accuracy, for early stopping too
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or collate_fn,
            train_dataset=model_inputs(train_dataset, processing_class),
            eval_dataset=model_inputs(eval_dataset, processing_class),
            processing_class=processing_class,
            **kwargs,
        )
        # An accelerate config switches the engines on without touching args.
        check_distributed_support(
            fsdp=self.is_fsdp_enabled, fsdp_version=self._fsdp_version(), deepspeed=self.is_deepspeed_enabled)
        if self.is_fsdp_enabled:
            check_fsdp2_precision(self.model, self.accelerator.mixed_precision)
            if args.early_stopping_patience is not None:
                raise ValueError("early_stopping_patience keeps the best epoch's weights in memory, which is not "
                                 "supported on FSDP2's sharded model; train with DDP, or set a fixed num_train_epochs.")
        self.forget_dataset = model_inputs(forget_dataset, processing_class)
        self.parameter_mask = parameter_mask
        self.fisher_forget = fisher_forget
        self.fisher_retain = fisher_retain
        self.unlearning_stats: dict = {}
        self.unlearning_report = None  # set it (an UnlearningReport or its dict) to put the evidence in the card
        self.auto_sweep: dict | None = None
        self.gradient_mask: GradientMask | None = None

    # ------------------------------------------------------------------ set-up

    def _fsdp_version(self) -> int:
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        return int(getattr(plugin, "fsdp_version", 2) or 2)

    # ------------------------------------------------------------------ DeepClean

    def compute_fishers(self) -> tuple[dict, dict]:
        """The Fisher diagonals on D_f and D_r with the configured estimator, summed across processes."""
        if self.forget_dataset is None or self.train_dataset is None:
            raise ValueError("unlearn() needs forget_dataset (D_f) and train_dataset (D_r).")
        self.fisher_stats = {}
        self.fisher_forget, self.fisher_retain = compute_fishers(
            self.accelerator.unwrap_model(self.model), self.forget_dataset, self.train_dataset, self.args,
            accelerator=self.accelerator, collate_fn=self.data_collator, stats=self.fisher_stats)
        return self.fisher_forget, self.fisher_retain

    def select(self, top_fraction: float | None = None) -> ParameterMask:
        """The mask of privacy-sensitive weights from the two Fishers: the configured selection, or the top
        ``top_fraction`` with the configured exclusions (``top_fraction="auto"`` passes each candidate)."""
        if top_fraction is None and self.args.top_fraction == "assd":
            top_fraction = self.assd_fraction()
        return select_for_config(self.fisher_forget, self.fisher_retain, self.args,
                                 self.accelerator.unwrap_model(self.model), top_fraction=top_fraction)

    def assd_fraction(self) -> float:
        """``top_fraction="assd"``: ASSD's parameter-free fraction from |D_f| / |D|, D = D_f + D_r."""
        return assd_fraction(len(self.forget_dataset), len(self.forget_dataset) + len(self.train_dataset))

    def unlearn(self, resume_from_checkpoint: str | bool | None = None, **train_kwargs):
        """Fisher -> selection -> reset -> masked fine-tune on D_r. Returns Trainer's TrainOutput.

        With ``top_fraction="auto"`` the fraction comes from :class:`~hf_deepclean.auto.AutoTopFraction`, which
        verifies each fine-tuned model and while it fails has a larger fraction fine-tuned from the original
        weights; ``auto_sweep`` then records its sweep, attempts and verdict.
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
        """``top_fraction="auto"``: fine-tune each fraction the search asks for, each from the original weights.
        Returns (output, seconds of fine-tuning)."""
        if self.is_fsdp_enabled:
            raise ValueError("top_fraction='auto' may fine-tune more than once, which FSDP2's wrapped model does not "
                             "allow; choose the fraction with `hf-deepclean sweep`, then pass it as --top_fraction.")
        search = AutoTopFraction(self.args, forget=self.forget_dataset, retain=self.train_dataset,
                                 validation=self.eval_dataset, log=self.log)
        self.auto_sweep = search.record
        t0 = time.perf_counter()
        fraction = search.start(model, self.fisher_forget, self.fisher_retain)
        search_time = time.perf_counter() - t0  # the reset-only sweep, then each verification
        # Kept in host memory (buffers included: selected BatchNorm layers update theirs), so a retry costs no
        # accelerator memory.
        original = ({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    if search.may_retry else None)
        train_time = 0.0
        while True:
            self.parameter_mask = self.select(top_fraction=fraction)
            output, seconds = self._masked_fine_tune(model, checkpoint, train_kwargs, fisher_time)
            train_time += seconds
            t0 = time.perf_counter()
            fraction = search.after_fine_tune(model, fraction, seconds)
            search_time += time.perf_counter() - t0
            if fraction is None:
                self.unlearning_stats["auto_search_time_s"] = search_time
                return output, train_time
            model.load_state_dict(original)
            self.optimizer, self.lr_scheduler, self.model_wrapped = None, None, self.model  # a fresh run, not a resume

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
            "top_fraction": (self.auto_sweep["chosen"] if self.auto_sweep else self.assd_fraction()
                             if self.args.top_fraction == "assd" else self.args.top_fraction),
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
        args = self.args
        if args.early_stopping_patience is None:
            return None
        budget = KeepBestValidationEpoch(args.early_stopping_patience, args.metric_for_best_model or "loss",
                                         args.greater_is_better)
        self.add_callback(budget)
        return budget

    def _resolve_checkpoint(self, resume_from_checkpoint):
        if resume_from_checkpoint is True:
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
            self.save_unlearning_artifacts(output_dir)
            write_model_card(output_dir or self.args.output_dir, self.card_record())

    def create_model_card(self, *args, **kwargs):
        """Trainer.push_to_hub calls this: write DeepClean's card instead of the generic one."""
        if self.parameter_mask is None:
            return super().create_model_card(*args, **kwargs)
        write_model_card(self.args.output_dir, self.card_record(**({"repo_id": self.hub_model_id}
                                                                  if getattr(self, "hub_model_id", None) else {})))

    def save_unlearning_artifacts(self, output_dir: str | None = None) -> None:
        """Write the mask (and with ``save_fisher`` the Fishers) under ``_`` names, kept out of Hub pushes."""
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.is_world_process_zero():
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.parameter_mask is not None:  # under the keys of model.safetensors, so that the two diff key by key
            model = self.accelerator.unwrap_model(self.model)
            self.parameter_mask.save(output_dir / MASK_FILE, saved_names=saved_names(model, self.parameter_mask.names))
        if self.args.save_fisher and self.fisher_forget is not None:
            for name, fisher in ((FISHER_FORGET_FILE, self.fisher_forget), (FISHER_RETAIN_FILE, self.fisher_retain)):
                save_file({k: v.detach().float().cpu().contiguous() for k, v in fisher.items()}, str(output_dir / name))


def load_fisher(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Fisher written by :meth:`DeepCleanTrainer.save_unlearning_artifacts`."""
    return load_file(str(path))

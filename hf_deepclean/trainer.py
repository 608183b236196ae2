"""DeepCleanTrainer: Fisher pass -> selection -> reset -> masked fine-tune, inside transformers.Trainer.

The training loop is Trainer's own; DeepClean only adds what happens before it (``unlearn``)
and two hooks: the optimizer gets a post-step restore of the frozen entries, and every
checkpoint carries the mask so a resumed run continues with the same one.
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
from .masking import GradientMask, freeze_batchnorm_statistics, normalization_parameter_names, reset_selected_weights
from .selection import ParameterMask, select_parameters, threshold_sweep
from .training import live_objects_frozen

logger = logging.getLogger(__name__)

MASK_FILE = "_parameter_mask.safetensors"
FISHER_FORGET_FILE = "_fisher_forget.safetensors"
FISHER_RETAIN_FILE = "_fisher_retain.safetensors"


class SelectionError(ValueError):
    """A threshold that selects no weight, or a mask that cannot be used."""


class DeepCleanTrainer(Trainer):
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
        self._check_distributed_support(fsdp=args.fsdp, deepspeed=args.deepspeed)
        self.image_processor = processing_class
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
        self._check_distributed_support(fsdp=self.is_fsdp_enabled, deepspeed=self.is_deepspeed_enabled)
        self.forget_dataset = self._prepare(forget_dataset)
        self.parameter_mask = parameter_mask
        self.fisher_forget = fisher_forget
        self.fisher_retain = fisher_retain
        self.unlearning_stats: dict = {}
        self.unlearning_report = None  # set it (an UnlearningReport or its dict) to put the evidence in the card
        self.auto_sweep: dict | None = None
        self._gradient_mask: GradientMask | None = None

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
    def _check_distributed_support(*, fsdp, deepspeed) -> None:
        # Element-wise masks need the original parameter objects; refuse set-ups that hide them.
        if deepspeed:
            raise ValueError(
                "DeepClean does not support DeepSpeed yet: its engine steps inside backward, past the frozen-weight "
                "restore. Use DDP (accelerate multi-GPU) instead."
            )
        if fsdp:
            raise ValueError(
                "DeepClean does not support FSDP yet: FSDP replaces the parameters the element-wise mask is bound to. "
                "Use DDP (accelerate multi-GPU) instead; the Fisher pass itself scales across processes."
            )

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

    def select(self) -> ParameterMask:
        """The mask of privacy-sensitive weights from the two Fishers."""
        args = self.args
        exclude = list(args.exclude_parameters or [])
        if args.norm_policy == "exclude":
            exclude += normalization_parameter_names(self.model)
        top_fraction = self.choose_top_fraction(exclude) if args.top_fraction == "auto" else args.top_fraction
        mask = select_parameters(
            self.fisher_forget,
            self.fisher_retain,
            threshold=args.threshold,
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

    def choose_top_fraction(self, exclude=None) -> float:
        """``top_fraction="auto"``: sweep reset-only models and keep the smallest that forgets (see sweep.py)."""
        from .sweep import DEFAULT_FRACTIONS, choose_top_fraction, is_class_forgetting, reset_sweep

        if self.eval_dataset is None:
            raise ValueError("top_fraction='auto' needs eval_dataset: a validation split the model was not trained on.")
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        rows = reset_sweep(
            model, self.fisher_forget, self.fisher_retain,
            {"forget": self.forget_dataset, "retain": self.train_dataset, "validation": self.eval_dataset},
            fractions=args.auto_fractions or DEFAULT_FRACTIONS, reset=args.reset, norm_policy=args.norm_policy,
            eps=args.ratio_eps, exclude=exclude or None, seed=args.seed,
        )
        class_forgetting = is_class_forgetting(self.forget_dataset, self.train_dataset)
        fraction, reason = choose_top_fraction(
            rows, class_forgetting=class_forgetting, num_classes=model.config.num_labels,
            retain_floor=args.auto_retain_floor, mia_margin=args.auto_mia_margin, margin_steps=args.auto_margin_steps,
        )
        self.auto_sweep = {"rows": rows, "chosen": fraction, "reason": reason, "class_forgetting": class_forgetting}
        logger.info("top_fraction=auto chose %s: %s.", fraction, reason)
        return fraction

    def unlearn(self, resume_from_checkpoint: str | bool | None = None, **train_kwargs):
        """Fisher -> selection -> reset -> masked fine-tune on D_r. Returns Trainer's TrainOutput."""
        start = time.perf_counter()
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        fisher_time = 0.0
        if checkpoint is not None and (Path(checkpoint) / MASK_FILE).exists():
            self.parameter_mask = ParameterMask.load(Path(checkpoint) / MASK_FILE)
            logger.info("Resuming with the mask saved in %s.", checkpoint)
        elif self.parameter_mask is None:
            if self.fisher_forget is None or self.fisher_retain is None:
                t0 = time.perf_counter()
                self.compute_fishers()
                fisher_time = time.perf_counter() - t0
            self.parameter_mask = self.select()
        model = self.accelerator.unwrap_model(self.model)
        mask = self.parameter_mask.to(next(model.parameters()).device)
        num_reset = reset_selected_weights(
            model, mask, self.args.reset, norm_policy=self.args.norm_policy, seed=self.args.seed
        )
        self._gradient_mask = GradientMask(model, mask).attach()
        bn_handles = freeze_batchnorm_statistics(model, mask) if self.args.freeze_batchnorm_stats else []
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
            with live_objects_frozen():
                output = self.train(resume_from_checkpoint=checkpoint, **train_kwargs)
            train_time = time.perf_counter() - t0
        finally:
            for handle in bn_handles:
                handle.remove()
            self._gradient_mask.detach()
        self.unlearning_stats.update(train_time_s=train_time, total_time_s=time.perf_counter() - start)
        return output

    def _resolve_checkpoint(self, resume_from_checkpoint):
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
            if last is None:
                raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint.")
            return last
        return resume_from_checkpoint or None

    # ------------------------------------------------------------------ Trainer hooks

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self._gradient_mask is not None:
            self._gradient_mask.register_with(optimizer)
        return optimizer

    def card_record(self, **extra) -> dict:
        """The model-card record: the evaluation report when one was attached, else what the trainer knows."""
        from .hub import record_from_report

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
        return record_from_report(report, hyperparameters=hyperparameters, **extra)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call=_internal_call)
        # The card and the mask are written on every save, not only on push; Trainer's checkpoints call this
        # with the checkpoint folder, which is how resume_from_checkpoint finds the mask there.
        if self.parameter_mask is not None and self.is_world_process_zero():
            from .hub import write_model_card

            self.save_unlearning_artifacts(output_dir)
            write_model_card(output_dir or self.args.output_dir, self.card_record())

    def create_model_card(self, *args, **kwargs):
        """Trainer.push_to_hub calls this: write DeepClean's card instead of the generic one."""
        if self.parameter_mask is None:
            return super().create_model_card(*args, **kwargs)
        from .hub import write_model_card

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

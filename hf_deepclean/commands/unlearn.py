"""``hf-deepclean unlearn``: make a trained classifier forget part of its training data."""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field

from accelerate import PartialState

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..audit import audit_record
from ..auto import describe_auto
from ..budget import describe_budget
from ..config import DeepCleanConfig
from ..evaluation import evaluate_unlearning
from ..hub import generate_salt
from ..modelcard import record_from_report, write_model_card
from ..outputs import check_output_dir, run_folder
from ..plots import save_plots
from ..trainer import DeepCleanTrainer
from ..training import read_train_summary, save_classifier
from .common import (
    carve_validation,
    check_gold_model,
    check_inputs,
    declared_auto_kind,
    describe_forget_set,
    forget_record,
    forgets_mislabeled_samples,
    load_model_for,
    load_processor_for,
    load_run_data,
)

logger = logging.getLogger(__name__)

SALT_FILE = "_forget_fingerprint_salt.txt"


@dataclass
class UnlearnScriptArguments:
    """Args:
    gold_model: Folder of the gold model (retrained on D_r) to compare against in the report.
    evaluate_original: Also evaluate the original model (the "did nothing" reference).
    fingerprint_salt: Secret salt of the forget-set fingerprint (default: a new random one).
    eval_batch_size: Batch size of the evaluation passes.
    plots: Write the plots next to the report.
    audit_dir: Folder of an ``hf-deepclean audit`` of this original and forget set, carried into the report and card.
    """

    gold_model: str | None = field(
        default=None, metadata={"help": "Gold model folder (retrained on D_r) to compare against in the report."}
    )
    evaluate_original: bool = field(
        default=True, metadata={"help": "Also evaluate the original model, the 'did nothing' reference."}
    )
    fingerprint_salt: str | None = field(
        default=None,
        metadata={"help": "Secret salt of the forget-set fingerprint; default: a new random salt saved locally."},
    )
    eval_batch_size: int = field(default=256, metadata={"help": "Batch size of the evaluation passes."})
    plots: bool = field(
        default=True, metadata={"help": "Write the plots (Fisher-ratio histogram, weights vs gamma, metrics); needs "
                                "the plot extra (matplotlib)."}
    )
    audit_dir: str | None = field(
        default=None, metadata={"help": "Folder of an `hf-deepclean audit` of this original and forget set: its "
                                "evidence against a population of retrains goes into the report and the card."}
    )


MISLABELED_WARNING = (
    "Forgetting mislabeled samples: the fine-tune must also undo what the wrong labels did to the rest of the model, "
    "which a fixed %g-epoch budget often cuts short (BENCHMARKS.md: the digits ResNet matched its gold model on 2 of "
    "6 seeds with 2 epochs, on 6 of 6 with --early_stopping_patience 2 --num_train_epochs 8). Consider those flags: "
    "they let a validation split, not a guess, decide the length.")


def unlearn(model_args, data_args, forget_args, script_args, args: DeepCleanConfig) -> dict:
    """Run DeepClean end to end and write the output folder; returns the report dict."""
    check_inputs(model_args, forget_args, command="unlearn", gold_model=script_args.gold_model)
    out = check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[model_args.model_name_or_path],
                           resume=bool(args.resume_from_checkpoint))
    state = PartialState()
    state.wait_for_everyone()  # every rank has checked the folder before rank 0 creates it
    data = load_run_data(data_args, forget_args, seed=args.seed)
    check_gold_model(script_args.gold_model, data)
    audit = audit_record(script_args.audit_dir, forget=describe_forget_set(data), method="deepclean",
                         original=model_args.model_name_or_path) if script_args.audit_dir else None
    validation = source = None
    if args.top_fraction == "auto":
        args.auto_kind = declared_auto_kind(args.auto_kind, data)
    if (forgets_mislabeled_samples(data) or args.auto_kind == "noisy_labels") and args.early_stopping_patience is None:
        logger.warning(MISLABELED_WARNING, args.num_train_epochs)
    if args.top_fraction == "auto" or args.early_stopping_patience is not None:
        validation, source = carve_validation(data, seed=data_args.split_seed)
        logger.info("Validation split (top_fraction=auto, early stopping): %s.", source)
    model = load_model_for(data, model_args, seed=args.seed)
    processor = load_processor_for(model_args)
    original = copy.deepcopy(model) if script_args.evaluate_original else None
    salt = script_args.fingerprint_salt or generate_salt()
    forget_info = forget_record(data, salt)
    # Built before the folder exists: a refused set-up (FSDP1, DeepSpeed) leaves nothing behind.
    fresh = not out.exists()
    trainer = DeepCleanTrainer(model, args, train_dataset=data.retain, forget_dataset=data.forget,
                               eval_dataset=validation, processing_class=processor)
    if fresh and state.is_main_process and out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # Trainer creates output_dir eagerly; run_folder makes it again, so a failed run leaves none
    # Only the main process owns the output folder; the others help with the Fisher and training.
    with run_folder(out) if state.is_main_process else contextlib.nullcontext(out):
        trainer.unlearn(resume_from_checkpoint=args.resume_from_checkpoint)
        stats = trainer.unlearning_stats
        unlearned = trainer.unsharded_model()  # under FSDP2 every process takes part in gathering the shards
        if not trainer.is_world_process_zero():
            return {}
        gold = load_model_for(data, model_args, path=script_args.gold_model) if script_args.gold_model else None
        save_classifier(unlearned, processor, out)
        trainer.save_unlearning_artifacts(out)
        if not script_args.fingerprint_salt:
            (out / SALT_FILE).write_text(salt + "\n", encoding="utf-8")
        report = evaluate_unlearning(
            unlearned, {"retain": data.retain, "forget": data.forget, "test": data.test}, gold_model=gold,
            original_model=original, image_processor=processor, forget_labels=forget_info.get("labels"),
            method="deepclean", scenario=data.spec.scenario, forget_info=forget_info,
            selection={k: stats[k] for k in ("threshold", "top_fraction", "selected_fraction", "num_selected")},
            time_s={"fisher": stats["fisher_time_s"], "train": stats["train_time_s"], "total": stats["total_time_s"],
                    **({"auto_search": stats["auto_search_time_s"]} if "auto_search_time_s" in stats else {})},
            gold_time_s=read_train_summary(script_args.gold_model).get("train_time_s"),
            batch_size=script_args.eval_batch_size, seed=args.seed,
        )
        notes = [describe_auto(trainer.auto_sweep, source)] if trainer.auto_sweep else []
        if args.early_stopping_patience is not None:
            notes.append(describe_budget(stats, args, None if trainer.auto_sweep else source))
        report.notes = list(report.notes or []) + notes
        report.audit = audit
        report.save(out)
        hyperparameters = {k: getattr(args, k) for k in (
            "threshold", "top_fraction", "fisher_estimator", "reset", "norm_policy", "num_train_epochs",
            "learning_rate", "seed", "early_stopping_patience")}
        write_model_card(out, record_from_report(report, base_model=model_args.model_name_or_path,
                                                 dataset=data_args.describe(), hyperparameters=hyperparameters))
        if script_args.plots:
            _write_plots(out, report, trainer, stats)
    print(report.to_markdown())
    print(f"\nUnlearned model written to {out}")
    if not script_args.fingerprint_salt:
        print(f"The forget-set fingerprint salt is in {out / SALT_FILE}: keep it private (it is never pushed).")
    return report.to_dict()


def _write_plots(out, report, trainer: DeepCleanTrainer, stats: dict) -> None:
    try:
        written = save_plots(out, report=report, fisher_forget=trainer.fisher_forget,
                             fisher_retain=trainer.fisher_retain, threshold=stats.get("threshold"),
                             eps=trainer.args.ratio_eps, num_selected=stats.get("num_selected"))
    except ImportError as exc:  # matplotlib is an optional extra
        print(f"(plots skipped: {exc}; --plots false turns them off)")
        return
    print("Plots: " + ", ".join(str(p) for p in written))


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, script_args, args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, UnlearnScriptArguments, DeepCleanConfig),
        argv,
        prog="hf-deepclean unlearn",
        description="Forget part of a trained classifier's training data with DeepClean.",
    )
    unlearn(model_args, data_args, forget_args, script_args, args)
    return 0

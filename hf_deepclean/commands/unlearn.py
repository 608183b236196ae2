"""``hf-deepclean unlearn``: make a trained classifier forget part of its training data."""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field

from accelerate import PartialState

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..config import DeepCleanConfig
from ..evaluation import evaluate_unlearning
from ..forget import forget_indices
from ..hub import forget_fingerprint, generate_salt
from ..modelcard import record_from_report, write_model_card
from ..outputs import check_output_dir, run_folder
from ..trainer import DeepCleanTrainer
from ..training import read_train_summary, save_classifier
from .common import (RunData, carve_validation, declared_auto_kind, forgets_mislabeled_samples, load_model_for,
                     load_processor_for, load_run_data)

logger = logging.getLogger(__name__)

SALT_FILE = "_forget_fingerprint_salt.txt"


@dataclass
class UnlearnScriptArguments:
    """Args:
    gold_model: Folder of the gold model (retrained on D_r) to compare against in the report.
    evaluate_original: Also evaluate the original model (the "did nothing" reference).
    fingerprint_salt: Secret salt of the forget-set fingerprint (default: a new random one).
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


def forget_record(data: RunData, salt: str) -> dict:
    """What the report and card say about the forget set: counts, classes, kind, a salted fingerprint."""
    spec = data.spec
    values = [str(v) for v in spec.ids] if spec.ids is not None else forget_indices(data.train, spec).tolist()
    labels = sorted({int(v) for v in data.forget["label"]}) if spec.kind == "labels" else None
    return {
        "size": len(data.forget),
        "kind": spec.kind,
        "labels": labels,
        "fingerprint": forget_fingerprint(values, salt),
    }


def evaluate_run(model, data: RunData, processor, *, method, gold_path, original, selection, time_s, gold_time_s,
                 forget_info, batch_size, seed, model_args, accelerator=None):
    """The unlearning report for ``model``: metrics, gold and original columns, deltas."""
    gold = load_model_for(data, model_args, path=gold_path, seed=seed) if gold_path else None
    return evaluate_unlearning(
        model,
        {"retain": data.retain, "forget": data.forget, "test": data.test},
        gold_model=gold,
        original_model=original,
        image_processor=processor,
        forget_labels=forget_info.get("labels"),
        method=method,
        scenario=data.spec.scenario,
        forget_info=forget_info,
        selection=selection,
        time_s=time_s,
        gold_time_s=gold_time_s,
        batch_size=batch_size,
        accelerator=accelerator,
        seed=seed,
    )


def unlearn(model_args, data_args, forget_args, script_args, args: DeepCleanConfig) -> dict:
    """Run DeepClean end to end and write the output folder; returns the report dict."""
    if not model_args.model_name_or_path:
        raise ValueError("unlearn needs --model_name_or_path: the trained model to clean (train one with `hf-deepclean train`).")
    out = check_output_dir(
        args.output_dir, overwrite=args.overwrite_output_dir, inputs=[model_args.model_name_or_path],
        resume=bool(args.resume_from_checkpoint),
    )
    state = PartialState()
    state.wait_for_everyone()  # every rank has checked the folder before rank 0 creates it
    data = load_run_data(data_args, forget_args, seed=args.seed)
    validation = source = None
    if args.top_fraction == "auto":
        args.auto_kind = declared_auto_kind(args.auto_kind, data)
    mislabeled = forgets_mislabeled_samples(data) or args.auto_kind == "noisy_labels"
    if mislabeled and args.early_stopping_patience is None:
        logger.warning(
            "Forgetting mislabeled samples: the fine-tune must also undo what the wrong labels did to the rest of the "
            "model, which a fixed %g-epoch budget often cuts short (BENCHMARKS.md: the digits ResNet matched its gold "
            "model on 2 of 6 seeds with 2 epochs, on 6 of 6 with --early_stopping_patience 2 --num_train_epochs 8). "
            "Consider those flags: they let a validation split, not a guess, decide the length.", args.num_train_epochs)
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
    trainer = DeepCleanTrainer(
        model, args, train_dataset=data.retain, forget_dataset=data.forget, eval_dataset=validation,
        processing_class=processor,
    )
    if fresh and state.is_main_process and out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # Trainer creates output_dir eagerly; run_folder makes it again, so a failed run leaves none
    # Only the main process owns the output folder; the others help with the Fisher and training.
    with run_folder(out) if state.is_main_process else contextlib.nullcontext(out):
        trainer.unlearn(resume_from_checkpoint=args.resume_from_checkpoint)
        stats = trainer.unlearning_stats
        unlearned = trainer.unsharded_model()  # under FSDP2 every process takes part in gathering the shards
        if not trainer.is_world_process_zero():
            return {}
        save_classifier(unlearned, processor, out)
        trainer.save_unlearning_artifacts(out)
        if not script_args.fingerprint_salt:
            (out / SALT_FILE).write_text(salt + "\n", encoding="utf-8")
        report = evaluate_run(
            unlearned, data, processor, method="deepclean", gold_path=script_args.gold_model, original=original,
            selection={k: stats[k] for k in ("threshold", "top_fraction", "selected_fraction", "num_selected")},
            time_s={"fisher": stats["fisher_time_s"], "train": stats["train_time_s"], "total": stats["total_time_s"]},
            gold_time_s=read_train_summary(script_args.gold_model).get("train_time_s"), forget_info=forget_info,
            batch_size=script_args.eval_batch_size, seed=args.seed, model_args=model_args,
        )
        notes = [auto_note(trainer.auto_sweep, source)] if trainer.auto_sweep else []
        if args.early_stopping_patience is not None:
            notes.append(early_stopping_note(stats, args, None if trainer.auto_sweep else source))
        if notes:
            report.notes = list(getattr(report, "notes", None) or []) + notes
        report.save(out)
        hyperparameters = {
            "threshold": args.threshold, "top_fraction": args.top_fraction, "fisher_estimator": args.fisher_estimator,
            "reset": args.reset, "norm_policy": args.norm_policy, "num_train_epochs": args.num_train_epochs,
            "learning_rate": args.learning_rate, "seed": args.seed,
            "early_stopping_patience": args.early_stopping_patience,
        }
        write_model_card(out, record_from_report(
            report, base_model=model_args.model_name_or_path, dataset=data_args.dataset_name or "digits",
            hyperparameters=hyperparameters,
        ))
    print(report.to_markdown())
    print(f"\nUnlearned model written to {out}")
    if not script_args.fingerprint_salt:
        print(f"The forget-set fingerprint salt is in {out / SALT_FILE}: keep it private (it is never pushed).")
    return report.to_dict()


def auto_note(auto: dict, validation_source: str) -> str:
    """What ``top_fraction=auto`` did, for the report and the model card."""
    tried = "; ".join(f"{a['top_fraction']:g}: {a['reason']}" for a in auto.get("attempts", []))
    if auto.get("verified"):
        verdict = "verified after the fine-tune"
    elif auto.get("refit") is not None:
        verdict = ("NOT verified: no fine-tuned model met the criterion; this is the attempt closest to it that did "
                   "not collapse or lose accuracy, fine-tuned again")
    else:
        verdict = "NOT verified: the last fine-tuned model still fails the criterion"
    return (f"top_fraction=auto ({auto['kind']} forgetting) chose {auto['chosen']:g}, {verdict}. First choice: "
            f"{auto['reason'].rstrip('.')}. Fine-tuned: {tried or 'none'}. Validation: {validation_source.rstrip('.')}.")


def early_stopping_note(stats: dict, args: DeepCleanConfig, validation_source: str | None) -> str:
    """What the no-gold budget rule (budget.py) did, for the report and the model card.

    ``validation_source`` None: the split was described already (auto's note), so it is not repeated.
    """
    how = (f"stopped after epoch {stats['early_stopping_epochs_run']:g}" if stats["early_stopping_stopped_early"]
           else f"ran the whole {args.num_train_epochs:g} epochs")
    return (f"Fine-tune budget: at most {args.num_train_epochs:g} epochs with early stopping (patience "
            f"{args.early_stopping_patience}); {how} and kept epoch {stats['early_stopping_best_epoch']:g}, the best "
            f"{stats['early_stopping_metric']} ({stats['early_stopping_best_value']:.4f}). Validation: "
            f"{validation_source.rstrip('.') if validation_source else 'the same split as top_fraction=auto'}.")


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, script_args, args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, UnlearnScriptArguments, DeepCleanConfig),
        argv,
        prog="hf-deepclean unlearn",
        description="Forget part of a trained classifier's training data with DeepClean.",
    )
    unlearn(model_args, data_args, forget_args, script_args, args)
    return 0

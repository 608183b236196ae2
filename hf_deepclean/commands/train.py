"""``hf-deepclean train``: train the original model (or, with ``--gold``, the gold model on D_r)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..outputs import check_output_dir, run_folder
from ..training import TrainConfig, save_trained, train_classifier
from .common import describe_forget_set, load_model_for, load_processor_for, load_run_data

logger = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    """Args:
    gold: Train on the retain set only (needs the forget flags): the gold model of the evaluation.
    """

    gold: bool = field(
        default=False, metadata={"help": "Train on D_r only (the gold model); needs the --forget_* flags."}
    )


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, script_args, args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, TrainScriptArguments, TrainConfig),
        argv,
        prog="hf-deepclean train",
        description="Train or fine-tune an image classifier (the original model, or with --gold the gold model).",
    )
    if script_args.gold and not forget_args.is_given():
        raise ValueError("--gold trains on the retain set: say what is forgotten with a --forget_* flag.")
    out = check_output_dir(
        args.output_dir, overwrite=args.overwrite_output_dir, inputs=[model_args.model_name_or_path],
        resume=bool(args.resume_from_checkpoint),
    )
    data = load_run_data(data_args, forget_args, seed=args.seed)
    train_set = data.retain if script_args.gold else data.train
    model = load_model_for(data, model_args, seed=args.seed)
    processor = load_processor_for(model_args)
    with run_folder(out):
        result = train_classifier(model, train_set, data.test, args, processor)
        forgotten = {"forgotten": describe_forget_set(data)} if script_args.gold else {}
        summary = save_trained(result, processor, out, dataset=data.train, train_samples=len(train_set),
                               gold=script_args.gold, **forgotten)
    print(f"Trained on {len(train_set)} samples in {result.time_s:.1f} s; test accuracy "
          f"{summary['test_accuracy']:.4f}. Saved to {out}")
    return 0

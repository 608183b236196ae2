"""``hf-deepclean evaluate``: compare an unlearned model with the gold (and original) model; write the report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..audit import audit_record
from ..evaluation import REPORT_JSON, evaluate_unlearning
from ..outputs import check_output_dir, run_folder
from ..plots import plot_metric_bars
from ..training import read_train_summary
from .common import (
    check_gold_model,
    check_inputs,
    describe_forget_set,
    load_model_for,
    load_processor_for,
    load_run_data,
)

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    """Args:
    gold_model: Folder of the model retrained from scratch on D_r (``hf-deepclean train --gold``).
    original_model: Folder of the model before unlearning (the "did nothing" reference).
    output_dir: Where unlearning_report.json/.md go (never the model folder).
    overwrite_output_dir: Replace the contents of a non-empty output_dir.
    method: Method name for the report (default: read from the model folder's report, else deepclean).
    batch_size: Evaluation batch size.
    seed: Seed of the data split and of the attacks' subsampling and cross-validation.
    retain_sample_size: Evaluate D_r on this many seeded samples for speed (default: all).
    plots: Also write metrics_comparison.png (needs the plot extra).
    audit_dir: Folder of an ``hf-deepclean audit`` of the same original and forget set, carried into the report.
    """

    gold_model: str | None = field(
        default=None, metadata={"help": "Folder of the gold model, retrained on D_r (hf-deepclean train --gold)."}
    )
    original_model: str | None = field(
        default=None, metadata={"help": "Folder of the model before unlearning (the 'did nothing' reference)."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for unlearning_report.json and .md (required; not the model folder)."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})
    method: str | None = field(
        default=None, metadata={"help": "Method name in the report (default: from the model folder's report, else deepclean)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Evaluation batch size."})
    seed: int = field(default=0, metadata={"help": "Seed of the data split and the attacks."})
    retain_sample_size: int | None = field(
        default=None, metadata={"help": "Evaluate the retain set on this many seeded samples (default: all)."}
    )
    plots: bool = field(default=False, metadata={"help": "Also write metrics_comparison.png (pip install 'hf-deepclean[plot]')."})
    audit_dir: str | None = field(
        default=None, metadata={"help": "Folder of an `hf-deepclean audit` of the same original and forget set: its "
                                "evidence against a population of retrains goes into the report."}
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, eval_args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, EvaluateArguments),
        argv,
        prog="hf-deepclean evaluate",
        description="Evaluate an unlearned model against the gold (retrained) and original models.",
    )
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: the folder of the unlearned model to evaluate.")
    if not forget_args.is_given():
        raise ValueError(
            "Say what was forgotten, with the same flags as the unlearn run: --forget_labels, --forget_fraction, "
            "--forget_indices, --forget_ids_file (with --id_column) or --noisy_fraction."
        )
    check_inputs(model_args, forget_args, command="evaluate", gold_model=eval_args.gold_model,
                 original_model=eval_args.original_model)
    paths = [model_args.model_name_or_path, eval_args.gold_model, eval_args.original_model]
    out = check_output_dir(eval_args.output_dir, overwrite=eval_args.overwrite_output_dir, inputs=paths)
    if eval_args.gold_model is None:
        logger.warning("No --gold_model: the report has no deltas to retraining, the reference of the evaluation.")

    data = load_run_data(data_args, forget_args, seed=eval_args.seed)
    check_gold_model(eval_args.gold_model, data)
    spec = data.spec
    model = load_model_for(data, model_args, seed=eval_args.seed)
    gold = load_model_for(data, model_args, path=eval_args.gold_model) if eval_args.gold_model else None
    original = load_model_for(data, model_args, path=eval_args.original_model) if eval_args.original_model else None
    processor = load_processor_for(model_args)

    # What the unlearn run recorded next to the model (method, mask, timings, fingerprint) and the gold's training time.
    previous = _read_json(Path(model_args.model_name_or_path) / REPORT_JSON)
    method = eval_args.method or previous.get("method") or "deepclean"
    audit = audit_record(eval_args.audit_dir, forget=describe_forget_set(data), method=method,
                         original=eval_args.original_model) if eval_args.audit_dir else None
    gold_summary = read_train_summary(eval_args.gold_model)
    forget_info = {"kind": spec.kind}
    forget_info.update({k: v for k, v in (previous.get("forget") or {}).items() if k in ("fingerprint", "kind") and v})

    with run_folder(out):
        report = evaluate_unlearning(
            model,
            {"retain": data.retain, "forget": data.forget, "test": data.test},
            gold_model=gold,
            original_model=original,
            image_processor=processor,
            forget_labels=spec.labels if spec.kind == "labels" else None,
            method=method,
            scenario=spec.scenario,
            forget_info=forget_info,
            selection=previous.get("selection"),
            time_s=previous.get("time_s"),
            gold_time_s=gold_summary.get("train_time_s"),
            batch_size=eval_args.batch_size,
            seed=eval_args.seed,
            retain_sample_size=eval_args.retain_sample_size,
        )
        report.audit = audit
        report.save(out)
        if eval_args.plots:
            plot_metric_bars(report, out / "metrics_comparison.png")
    print(report.to_markdown())
    print(f"Report written to {out}")
    return 0

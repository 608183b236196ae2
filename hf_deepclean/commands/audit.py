"""``hf-deepclean audit``: N runs of an unlearning method against N retrains, judged by the forget score."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..audit import AUDIT_MARKDOWN, DEFAULT_NUM_MODELS, DEFAULT_RETAIN_SAMPLE, run_audit
from ..errors import ConfigError
from .common import check_inputs, describe_forget_set, load_model_for, load_processor_for, load_run_data

logger = logging.getLogger(__name__)


@dataclass
class AuditArguments:
    """Args:
    num_models: N, the models of each population (N retrains and N runs of the method).
    method: The unlearning method audited (any registered name).
    method_overrides: JSON object of the method's settings, e.g. '{"top_fraction": 0.2}'.
    output_dir: The audit folder (its cache: rerun with the same settings to continue a killed audit).
    overwrite_output_dir: Recompute an audit folder made with other settings.
    seed: Base seed: the models use seeds seed .. seed + N - 1.
    retain_sample_size: Retain accuracy on a seeded sample of this many D_r images (all when smaller).
    base_model: The checkpoint the original was fine-tuned from (retrains start from it); empty: fresh init.
    eval_batch_size: Batch size of the evaluation passes.
    plots: Write the ε histogram and the worst examples' populations (needs the plot extra).
    """

    num_models: int = field(default=DEFAULT_NUM_MODELS, metadata={"help": "N: retrains and runs of the method each."})
    method: str = field(default="deepclean", metadata={"help": "Unlearning method to audit (any registered name)."})
    method_overrides: str | None = field(
        default=None, metadata={"help": "JSON object of the method's settings, e.g. '{\"top_fraction\": 0.2}'."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Audit folder; rerun with the same settings to continue a killed audit."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Recompute an audit folder made with other settings."}
    )
    seed: int = field(default=0, metadata={"help": "Base seed: models use seeds seed .. seed + N - 1."})
    retain_sample_size: int | None = field(
        default=DEFAULT_RETAIN_SAMPLE,
        metadata={"help": "Retain accuracy on a seeded sample of this many D_r images (all of D_r when smaller)."},
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Checkpoint the original was fine-tuned from; empty: fresh init of its "
                                "architecture."}
    )
    eval_batch_size: int = field(default=256, metadata={"help": "Batch size of the evaluation passes."})
    plots: bool = field(
        default=True, metadata={"help": "Write epsilon_histogram.png and worst_examples.png (needs matplotlib)."}
    )


def parse_overrides(text: str | None) -> dict:
    """``--method_overrides`` as a dict; a one-line error unless it is a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--method_overrides {text!r} is not JSON ({exc.msg}); pass an object such as "
                          "'{\"top_fraction\": 0.2}'.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--method_overrides {text!r} must be a JSON object such as '{{\"top_fraction\": 0.2}}'.")
    return value


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, audit_args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, AuditArguments),
        argv,
        prog="hf-deepclean audit",
        description="Judge an unlearning method against a population of retrained models (the NeurIPS 2023 "
                    "unlearning competition's forget score).",
    )
    check_inputs(model_args, forget_args, command="audit")
    overrides = parse_overrides(audit_args.method_overrides)
    data = load_run_data(data_args, forget_args)
    identity = {"data": {"dataset": data_args.describe(), "split_seed": data_args.split_seed,
                         "train_size": len(data.train), "test_size": len(data.test)},
                "forget": describe_forget_set(data)}
    original = load_model_for(data, model_args)
    processor = load_processor_for(model_args)
    audit = run_audit(
        original, {"forget": data.forget, "retain": data.retain, "test": data.test}, processor,
        original_path=model_args.model_name_or_path, identity=identity, output_dir=audit_args.output_dir,
        num_models=audit_args.num_models, method=audit_args.method, method_overrides=overrides, seed=audit_args.seed,
        retain_sample_size=audit_args.retain_sample_size, base_model=audit_args.base_model,
        overwrite=audit_args.overwrite_output_dir, plots=audit_args.plots, batch_size=audit_args.eval_batch_size,
    )
    print((Path(audit_args.output_dir) / AUDIT_MARKDOWN).read_text(encoding="utf-8"))
    print(f"Audit written to {audit_args.output_dir} ({AUDIT_MARKDOWN}, audit.json"
          + "".join(f", {p}" for p in audit["plots"]) + f") in {audit['wall_time_s']:.0f} s")
    return 0

"""``hf-deepclean sweep``: reset-only models for several fractions (or gammas) from one Fisher pass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..auto import choose_top_fraction, forget_kind
from ..config import DeepCleanConfig, record_fields_set
from ..fisher import compute_fishers
from ..images import model_inputs
from ..outputs import check_output_dir, run_folder
from ..plots import plot_reset_sweep
from ..sweep import reset_sweep, sweep_markdown
from .common import carve_validation, declared_auto_kind, load_model_for, load_processor_for, load_run_data


@record_fields_set
@dataclass
class SweepConfig(DeepCleanConfig):
    """``unlearn``'s settings (a :class:`~hf_deepclean.config.DeepCleanConfig`: the same Fisher, selection and
    reset flags, so a fraction read off the sweep selects the same weights in ``unlearn``) plus the candidates.

    Args:
        fractions: Top fractions to reset (default 0.005 ... 0.5).
        thresholds: Gammas to reset above, instead of fractions.
        validation_fraction: Part of the test split carved off as validation.
        retain_sample_size: Retain accuracy on a seeded sample of this size.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Folder for sweep.json, sweep.md, sweep.png."})
    top_fraction: str | None = field(
        default="auto", metadata={"help": "Kept at auto: the sweep shows auto's first choice among the fractions."}
    )
    fractions: list[float] | None = field(default=None, metadata={"help": "Top fractions to reset (default 0.005 ... 0.5)."})
    thresholds: list[float] | None = field(default=None, metadata={"help": "Gammas to reset above, instead of fractions."})
    validation_fraction: float = field(default=0.5, metadata={"help": "Part of the test split carved off as validation."})
    retain_sample_size: int = field(default=500, metadata={"help": "Retain accuracy on a seeded sample of this size."})


def run(argv: list[str]) -> int:
    model_args, data_args, forget_args, args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, SweepConfig), argv, prog="hf-deepclean sweep",
        description=__doc__.splitlines()[0],
    )
    if not model_args.model_name_or_path:
        raise ValueError("sweep needs --model_name_or_path: the trained model to analyse.")
    if args.fractions and args.thresholds:
        raise ValueError("Pass --fractions or --thresholds, not both.")
    out = check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[model_args.model_name_or_path])
    data = load_run_data(data_args, forget_args, seed=args.seed)
    validation, source = carve_validation(data, args.validation_fraction, data_args.split_seed)
    model = load_model_for(data, model_args, seed=args.seed)
    processor = load_processor_for(model_args)
    fishers = compute_fishers(model, model_inputs(data.forget, processor), model_inputs(data.retain, processor), args)
    with run_folder(out):
        rows = reset_sweep(
            model, *fishers, {"forget": data.forget, "retain": data.retain, "validation": validation}, args,
            fractions=args.fractions, thresholds=args.thresholds, image_processor=processor,
            retain_sample_size=args.retain_sample_size,
        )
        chosen = reason = None
        if not args.thresholds:
            chosen, reason = choose_top_fraction(
                rows, kind=forget_kind(data.forget, data.retain, declared_auto_kind(args.auto_kind, data)),
                num_classes=model.config.num_labels, retain_floor=args.auto_retain_floor,
                mia_margin=args.auto_mia_margin, margin_steps=args.auto_margin_steps,
            )
        table = sweep_markdown(rows, validation_source=source, chosen=chosen)
        if chosen is not None:
            table += (f"\n\nFirst choice of --top_fraction auto: {chosen:g}, the {reason}. `unlearn` then verifies it "
                      "after the fine-tune and tries larger fractions while the model has not forgotten.")
        (out / "sweep.md").write_text(table + "\n", encoding="utf-8")
        (out / "sweep.json").write_text(json.dumps({"rows": rows, "validation": source, "auto_top_fraction": chosen,
                                                    "auto_reason": reason}, indent=2), encoding="utf-8")
        try:
            plot_reset_sweep(rows, out / "sweep.png")
        except ImportError as exc:
            print(f"(plot skipped: {exc})")
    print(table)
    return 0

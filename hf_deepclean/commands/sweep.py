"""``hf-deepclean sweep``: reset-only models for several fractions (or gammas) from one Fisher pass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


from ..arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from ..outputs import check_output_dir, run_folder
from .common import carve_validation, declared_auto_kind, load_model_for, load_processor_for, load_run_data


@dataclass
class SweepArguments:
    """Args:
    output_dir: Where sweep.json, sweep.md and sweep.png go.
    fractions: Top fractions to reset (default 0.005 ... 0.5).
    thresholds: Gammas to reset above, instead of fractions.
    reset: zero, init or none (as in unlearn).
    norm_policy: Normalisation weights: init, exclude or same (as in unlearn).
    fisher_estimator: empirical, expected or batch.
    fisher_max_samples: Use at most this many samples per Fisher.
    validation_fraction: Part of the test split carved off as validation.
    retain_sample_size: Retain accuracy on a seeded sample of this size.
    auto_margin_steps: Swept steps the first choice of ``--top_fraction auto`` adds above the smallest passing one.
    auto_kind: What is forgotten (sets auto's criterion): infer, class, samples or noisy_labels.
    seed: Seed of the carving and the samples.
    overwrite_output_dir: Replace the contents of a non-empty output folder.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Folder for sweep.json, sweep.md, sweep.png."})
    fractions: list[float] | None = field(default=None, metadata={"help": "Top fractions to reset (default 0.005 ... 0.5)."})
    thresholds: list[float] | None = field(default=None, metadata={"help": "Gammas to reset above, instead of fractions."})
    reset: str = field(default="zero", metadata={"help": "Reset of the selected weights: zero, init or none."})
    norm_policy: str = field(default="init", metadata={"help": "Normalisation weights: init, exclude or same."})
    fisher_estimator: str = field(default="empirical", metadata={"help": "Fisher estimator: empirical, expected, batch."})
    fisher_max_samples: int | None = field(default=None, metadata={"help": "At most this many samples per Fisher."})
    validation_fraction: float = field(default=0.5, metadata={"help": "Part of the test split carved off as validation."})
    retain_sample_size: int = field(default=500, metadata={"help": "Retain accuracy on a seeded sample of this size."})
    auto_margin_steps: int = field(
        default=0, metadata={"help": "Swept steps the automatic choice adds above the smallest passing fraction."}
    )
    auto_kind: str = field(
        default="infer", metadata={"help": "What is forgotten (sets the criterion): infer, class, samples, noisy_labels "
                                   "(infer means noisy_labels with --noisy_fraction)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the carving and the samples."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})


def run(argv: list[str]) -> int:
    from ..data import with_image_transform, collate_fn
    from ..fisher import fisher_diagonal
    from ..sweep import choose_top_fraction, forget_kind, plot_sweep, reset_sweep, sweep_markdown

    model_args, data_args, forget_args, args = parse_arguments(
        (ModelArguments, DataArguments, ForgetArguments, SweepArguments), argv, prog="hf-deepclean sweep",
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
    fishers = [
        fisher_diagonal(model, with_image_transform(split, processor), collate_fn=collate_fn, estimator=args.fisher_estimator,
                        max_samples=args.fisher_max_samples, seed=args.seed)
        for split in (data.forget, data.retain)
    ]
    with run_folder(out):
        rows = reset_sweep(
            model, *fishers, {"forget": data.forget, "retain": data.retain, "validation": validation},
            fractions=args.fractions, thresholds=args.thresholds, image_processor=processor, reset=args.reset,
            norm_policy=args.norm_policy, retain_sample_size=args.retain_sample_size, seed=args.seed,
        )
        chosen = reason = None
        if not args.thresholds:
            chosen, reason = choose_top_fraction(
                rows, kind=forget_kind(data.forget, data.retain, declared_auto_kind(args.auto_kind, data)), num_classes=model.config.num_labels,
                margin_steps=args.auto_margin_steps,
            )
        table = sweep_markdown(rows, validation_source=source, chosen=chosen)
        if chosen is not None:
            table += (f"\n\nFirst choice of --top_fraction auto: {chosen:g}, the {reason}. `unlearn` then verifies it "
                          "after the fine-tune and tries larger fractions while the model has not forgotten.")
        (out / "sweep.md").write_text(table + "\n", encoding="utf-8")
        (out / "sweep.json").write_text(json.dumps({"rows": rows, "validation": source, "auto_top_fraction": chosen,
                                                    "auto_reason": reason}, indent=2), encoding="utf-8")
        try:
            plot_sweep(rows, out / "sweep.png")
        except ImportError as exc:
            print(f"(plot skipped: {exc})")
    print(table)
    return 0

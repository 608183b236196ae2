"""One cell of the method comparison (model, scenario, seed, method), and what every cell is judged against.

A cell unlearns with one method from the cached original, evaluates the result with the full evaluation (both
attacks included) and stores its deltas to the cached gold model. The gold and original metrics of a
(model, scenario, seed) are evaluated once, cached as ``_reference.json`` beside its cells, and shared with the
sensitivity sweep.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..evaluation import evaluate_unlearning
from ..methods import METHODS, MethodResult
from .arguments import BenchmarkArguments
from .cache import SETTINGS_KEY, method_settings, stale_reason
from .common import QUICK, Progress, read_json, write_json
from .context import GroupContext, cell_folder
from .models import Scenario

REFERENCE_FILE = "_reference.json"
# The output_dir of the method configs built only to read their settings (no run writes there).
SETTINGS_SCRATCH = Path(tempfile.gettempdir()) / "hf_deepclean_benchmark_settings"


def evaluate(ctx: GroupContext, model, scenario: Scenario, **kwargs):
    """The full evaluation of ``model`` on ``scenario``'s splits (the report's ``evaluate_unlearning``)."""
    labels = [int(v) for v in sorted(set(scenario.raw["forget"]["label"]))] if scenario.name == "class" else None
    return evaluate_unlearning(
        model, scenario.ready, image_processor=ctx.processor, forget_labels=labels, scenario=scenario.name,
        batch_size=ctx.bench.eval_batch_size, seed=ctx.seed, retain_sample_size=ctx.bench.retain_eval_samples,
        **kwargs,
    )


def reference(ctx: GroupContext, scenario: Scenario, gold, gold_time: float, original) -> dict:
    """Gold and original metrics of one (model, scenario, seed), evaluated once and cached."""
    path = ctx.cell_folder(scenario.name) / REFERENCE_FILE
    if path.exists():
        return read_json(path)
    report = evaluate(ctx, gold, scenario, original_model=original, method="retrain")
    data = {"gold": dict(report.metrics, time_s=gold_time), "original": report.original}
    write_json(path, data)
    return data


def method_config(method_name: str, bench: BenchmarkArguments, overrides: dict, scratch: Path):
    """The config a cell runs ``method_name`` with (registry defaults, preset, overrides, --quick's budget); None
    for ``retrain``, whose cell is the cached gold model."""
    if method_name == "retrain":
        return None
    method = METHODS[method_name]
    settings = dict(overrides.get(method_name, {}))
    if bench.quick:
        fields = method.config_class.__dataclass_fields__
        if "num_train_epochs" in fields:
            settings.setdefault("num_train_epochs", QUICK["method_epochs"])
        for key in ("fisher_max_samples",):
            if key in fields:
                settings.setdefault(key, QUICK[key])
    return method.make_config(scratch / method_name, **settings)


def current_settings(bench: BenchmarkArguments, overrides: dict) -> dict[str, dict | None]:
    """Each method's effective settings today (a method's config does not depend on the scenario or seed)."""
    return {m: method_settings(method_config(m, bench, overrides, SETTINGS_SCRATCH)) for m in bench.methods}


def run_cell(ctx: GroupContext, scenario: Scenario, method_name: str, original, gold, gold_time: float,
             ref: dict) -> dict:
    """Unlearn with one method, evaluate, and return the cell's report dict (deltas against the cached gold)."""
    method = METHODS[method_name]
    config = method_config(method_name, ctx.bench, ctx.overrides, ctx.scratch)
    if config is None:
        # the cached gold model is the retrained model: its time is the gold's training time
        result = MethodResult(gold, gold_time, {"time": {"fisher": None, "train": gold_time, "total": gold_time}})
    else:
        splits = {k: scenario.ready[k] for k in ("forget", "retain")}
        result = method(original, splits, ctx.processor, config, seed=ctx.seed)
    report = evaluate(
        ctx, result.model, scenario, method=method_name, selection=result.extra.get("selection"),
        time_s=result.extra.get("time", result.time_s), gold_time_s=gold_time,
    ).to_dict()
    gold_metrics = ref["gold"]
    report["gold"], report["original"] = gold_metrics, ref["original"]
    report["deltas"] = {
        k: (v - gold_metrics[k]) if isinstance(v, (int, float)) and isinstance(gold_metrics.get(k), (int, float))
        else None
        for k, v in report["metrics"].items()
    }
    report.pop("mia", None)  # per-model attack details stay in the single-run reports; the table needs the scores
    report["benchmark"] = {
        "seed": ctx.seed, "time_s": result.time_s, "gold_time_s": gold_time,
        "time_ratio": result.time_s / gold_time if gold_time else None,
        "extra": {k: v for k, v in result.extra.items() if k not in ("time", "selection")},
    }
    report[SETTINGS_KEY] = method_settings(config)
    return report


def cell_paths(out: Path, bench: BenchmarkArguments, model_key: str, seed: int, scenario_name: str) -> dict[str, Path]:
    """Each method's cell file for one (model, scenario, seed)."""
    folder = cell_folder(out, model_key, scenario_name, seed)
    return {m: folder / f"{m}.json" for m in bench.methods}


def stale_cells(paths: dict[str, Path], current: dict[str, dict | None], progress: Progress) -> dict[str, Path]:
    """The cells of ``paths`` to (re)compute: missing ones, and cached ones whose method settings differ from
    ``current`` (each method's effective settings today)."""
    todo = {}
    for method_name, path in paths.items():
        reason = stale_reason(path, current[method_name])
        if reason is not None:
            todo[method_name] = path
            if reason != "missing":
                progress(f"recomputing {path.parent.name}/{path.name}: {reason}")
    return todo

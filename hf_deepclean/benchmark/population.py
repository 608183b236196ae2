"""The method comparison judged against a population of retrains (``hf-deepclean benchmark --population_models N``).

For each (model, seed) group and scenario, the group's cached original (as in the method comparison) is the one
starting point; N retrains on D_r (the originals' recipe: ``--train_epochs``, ``--train_learning_rate``) and N runs
of every method (each from a fresh copy of the original) get seeds ``POPULATION_SEED .. POPULATION_SEED + N - 1``.
Each finished model is one record (forget-set logits, accuracies, seconds; :mod:`hf_deepclean.audit.cache`) under
``population/<model>/<scenario>/seed<k>/<method>/``, so a killed run resumes, and more methods or a larger N reuse
what is there. Every method is then judged like an audit (:func:`hf_deepclean.audit.summarize`) against the same
retrains, and :mod:`.population_summary` writes the table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..audit import model_record, population_of
from ..audit.cache import load_record, save_record
from ..audit.settings import settings_key
from ..evaluation import seeded_subset
from ..images import TensorImageDataset
from ..methods import METHODS, get_method, run_method
from .arguments import BenchmarkArguments
from .cache import SETTINGS_KEY, changed_settings, method_settings
from .cells import SETTINGS_SCRATCH, method_config
from .common import Progress, model_entries, read_json, run_groups, start_run, write_json
from .context import BenchmarkRun, GroupContext
from .models import Scenario
from .population_summary import judge, write_population_summary
from .sensitivity_points import AUTO_KIND, carve_validation_half

POPULATION_DIR = "population"
# The population's models are seeded apart from the originals (whose seeds are --seeds, 0-2 by default).
POPULATION_SEED = 100
RETRAIN = "retrain"
JUDGED_FILE = "judged.json"

__all__ = ["POPULATION_DIR", "POPULATION_SEED", "population_folder", "run_population"]


def population_folder(out: Path, model_key: str, scenario_name: str, seed: int) -> Path:
    return out / POPULATION_DIR / model_key / scenario_name / f"seed{seed}"


def population_seeds(bench: BenchmarkArguments) -> list[int]:
    return list(range(POPULATION_SEED, POPULATION_SEED + bench.population_models))


def _retrain_fields(run: BenchmarkRun) -> dict:
    """The retrains' recipe: the one the group's original and gold models are trained with (:class:`ModelStore`)."""
    return {"num_train_epochs": run.bench.train_epochs, "learning_rate": run.bench.train_learning_rate,
            "base_model": run.model_args.model_name_or_path}


def _current_settings(run: BenchmarkRun, kind: str) -> dict | None:
    """What one record depends on beyond the folder's benchmark settings: the method's effective settings."""
    if kind == RETRAIN:
        config = get_method(RETRAIN).make_config(SETTINGS_SCRATCH / RETRAIN, **_retrain_fields(run))
    else:
        config = method_config(kind, run.bench, run.overrides, SETTINGS_SCRATCH)
    return method_settings(config)


def _record_key(kind: str, settings: dict | None) -> str:
    return settings_key({"kind": kind, "settings": settings})


def _load(folder: Path, seed: int, kind: str, settings: dict | None):
    """A cached record that is still valid: the same key, or (the benchmark cells' rule) stored settings that no
    setting known to both sides contradicts."""
    def still_valid(record) -> bool:
        stored = record.extra.get(SETTINGS_KEY)
        return stored is not None and not changed_settings(stored, settings)

    return load_record(folder / kind, seed, _record_key(kind, settings), still_valid=still_valid)


def _eval_sets(scenario: Scenario, bench: BenchmarkArguments, seed: int) -> dict:
    """What each model is evaluated on: D_f whole, the benchmark's retain sample, the test split."""
    return {"forget": scenario.ready["forget"], "retain": seeded_subset(scenario.ready["retain"], bench.retain_eval_samples, seed),
            "test": scenario.ready["test"]}


def _run_one(ctx: GroupContext, scenario: Scenario, kind: str, seed: int):
    splits = {k: scenario.ready[k] for k in ("forget", "retain")}
    if kind == RETRAIN:
        return run_method(RETRAIN, ctx.original(scenario), {"retain": splits["retain"]}, ctx.processor, seed=seed,
                          output_dir=ctx.scratch / RETRAIN, **_retrain_fields(ctx.run))
    config = method_config(kind, ctx.bench, ctx.overrides, ctx.scratch)
    if getattr(config, "top_fraction", None) == "auto":
        # auto decides on held-out images: half of the test split (as the sensitivity sweep's auto run), with the
        # criterion of what the scenario forgets unless --method_overrides names one
        splits["validation"] = carve_validation_half(scenario.ready["test"], ctx.seed)[0]
        if "auto_kind" not in ctx.overrides.get(kind, {}):
            config.auto_kind = AUTO_KIND[scenario.name]
    return METHODS[kind](ctx.original(scenario), splits, ctx.processor, config, seed=seed)


def _population_scenario(ctx: GroupContext, scenario_name: str, settings: dict[str, dict | None]) -> dict:
    """Every missing record of one (model, scenario, seed), then the judgement of every method."""
    bench = ctx.bench
    scenario = ctx.scenario(scenario_name)
    if not isinstance(scenario.ready["forget"], TensorImageDataset):
        scenario.ready["forget"] = TensorImageDataset.from_dataset(scenario.raw["forget"], ctx.processor)
    folder = population_folder(ctx.run.out, ctx.model_key, scenario_name, ctx.seed)
    eval_sets = _eval_sets(scenario, bench, ctx.seed)
    seeds = population_seeds(bench)
    kinds = [RETRAIN] + [m for m in bench.methods if m != RETRAIN]
    records = {}
    for kind in kinds:
        records[kind] = {}
        for s in seeds:
            record = _load(folder, s, kind, settings[kind])
            if record is not None:
                ctx.progress.done += 1  # cached
            else:
                start = time.perf_counter()
                result = _run_one(ctx, scenario, kind, s)
                record = model_record(result, s, eval_sets, start, bench.eval_batch_size, ctx.processor)
                record.extra[SETTINGS_KEY] = settings[kind]
                save_record(folder / kind, record, _record_key(kind, settings[kind]))
                ctx.progress.done += 1
                ctx.progress(f"{ctx.model_key} {scenario_name} seed {ctx.seed} {kind} #{s}: {record.time_s:.1f} s, "
                             f"Acc_Df {record.accuracies['forget']:.3f}, Acc_test {record.accuracies['test']:.3f}")
            records[kind][s] = record
    retrained = population_of([records[RETRAIN][s] for s in seeds])
    sizes = {split: len(eval_sets[split]) for split in eval_sets}
    judged = {kind: judge(retrained if kind == RETRAIN else population_of([records[kind][s] for s in seeds]),
                          retrained, kind) for kind in kinds}
    return {kind: dict(row, split_sizes=sizes) for kind, row in judged.items()}


def run_population_group(run: BenchmarkRun, model_key: str, architecture: str, seed: int, progress: Progress,
                         base=None) -> None:
    """The populations of one (model, seed) group, every scenario; each scenario's judgement is written as
    ``population/<model>/<scenario>/seed<k>/judged.json``."""
    settings = {kind: _current_settings(run, kind) for kind in [RETRAIN, *run.bench.methods]}
    data, processor = base or run.load_base()
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_population_") as scratch:
        ctx = GroupContext(run, model_key, architecture, seed, data, processor, progress, Path(scratch))
        for scenario_name in run.bench.scenarios:
            judged = _population_scenario(ctx, scenario_name, settings)
            write_json(population_folder(run.out, model_key, scenario_name, seed) / JUDGED_FILE,
                       {"model": model_key, "scenario": scenario_name, "seed": seed, "methods": judged})


def run_population(model_args, data_args, bench: BenchmarkArguments) -> dict:
    """Run (or resume) the populations of every (model, seed) group, then write and return the summary."""
    out, overrides = start_run(model_args, data_args, bench)
    run = BenchmarkRun(model_args, data_args, bench, overrides, out)
    groups = [(key, arch, seed) for key, arch in model_entries(model_args, bench) for seed in bench.seeds]
    per_group = len(bench.scenarios) * (1 + len([m for m in bench.methods if m != RETRAIN])) * bench.population_models
    progress = Progress(per_group * len(groups), "population")
    progress(f"{len(groups)} (model, seed) groups x {len(bench.scenarios)} scenarios: {bench.population_models} "
             f"retrains and {bench.population_models} runs of each of {len(bench.methods)} methods")
    run_groups(run, groups, run_population_group, per_group, progress)
    sections = [read_json(population_folder(out, key, scenario, seed) / JUDGED_FILE)
                for scenario in bench.scenarios for key, _, seed in groups]
    summary = write_population_summary(out, bench, sections)
    progress(f"summary written to {out / 'population.md'}")
    return summary

"""The method comparison: every method x scenario x model x seed, on the same footing.

For each (model, seed) the original model is trained once (once more on noisy labels for the
``noisy_labels`` scenario) and for each scenario the gold model is retrained on D_r; all of them
are cached under ``<output_dir>/models`` and reused. Each finished cell (model, scenario, seed,
method) is a JSON file under ``<output_dir>/cells``: a rerun skips it, so an interrupted run
resumes where it stopped. The summary (mean +- std over seeds) is written as ``benchmark.md``,
``benchmark.json`` and ``benchmark.png``. With ``--num_workers`` the (model, seed) groups run in
a pool of processes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..arguments import DataArguments, ModelArguments
from .arguments import BenchmarkArguments
from .cells import cell_paths, current_settings, reference, run_cell, stale_cells
from .common import Progress, model_entries, read_json, run_groups, start_run, write_json
from .context import BenchmarkRun, GroupContext
from .summary import write_summary


def run_group(run: BenchmarkRun, model_key: str, architecture: str, seed: int, progress: Progress,
              base=None) -> None:
    """Every missing cell of one (model, seed): train or load its originals and golds, run the methods.

    ``base`` is the (data, processor) pair of :meth:`BenchmarkRun.load_base` when the caller has it already.
    """
    bench = run.bench
    current = current_settings(bench, run.overrides)
    pending = {s: stale_cells(cell_paths(run.out, bench, model_key, seed, s), current, progress)
               for s in bench.scenarios}
    if not any(pending.values()):
        return
    data, processor = base or run.load_base()
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_benchmark_") as scratch_dir:  # Trainer output_dirs
        ctx = GroupContext(run, model_key, architecture, seed, data, processor, progress, Path(scratch_dir))
        for scenario_name, todo in pending.items():
            if todo:
                _run_scenario(ctx, scenario_name, todo)


def _run_scenario(ctx: GroupContext, scenario_name: str, todo: dict[str, Path]) -> None:
    """The cells ``todo`` of one (model, scenario, seed), each from a fresh copy of the original."""
    scenario = ctx.scenario(scenario_name)
    original = ctx.original(scenario)
    gold, gold_time = ctx.gold(scenario)
    ref = reference(ctx, scenario, gold, gold_time, original)
    for method_name, path in todo.items():
        original = ctx.original(scenario)  # a fresh copy from disk per method: methods change the model in place
        report = run_cell(ctx, scenario, method_name, original, gold, gold_time, ref)
        report["benchmark"]["model"] = ctx.model_key
        write_json(path, report)
        ctx.progress.done += 1
        m, d, b = report["metrics"], report["deltas"], report["benchmark"]
        ctx.progress(f"{ctx.model_key} {scenario_name} seed {ctx.seed} {method_name}: "
                     f"Acc_Df {m['forget_accuracy']:.3f} "
                     f"(gold {ref['gold']['forget_accuracy']:.3f}), Acc_test {m['test_accuracy']:.3f} "
                     f"(d {d['test_accuracy']:+.3f}), {b['time_s']:.1f}s = {b['time_ratio']:.3f} x retrain")


def benchmark(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments) -> dict:
    """Run (or resume) every cell, then write and return the summary."""
    out, overrides = start_run(model_args, data_args, bench)
    run = BenchmarkRun(model_args, data_args, bench, overrides, out)
    groups = [(key, arch, seed) for key, arch in model_entries(model_args, bench) for seed in bench.seeds]
    per_group = len(bench.scenarios) * len(bench.methods)
    cells = {g: [p for s in bench.scenarios for p in cell_paths(out, bench, g[0], g[2], s).values()] for g in groups}
    paths = [p for group_paths in cells.values() for p in group_paths]
    progress = Progress(len(paths))
    progress.done = sum(p.exists() for p in paths)
    progress(f"{len(paths)} cells ({progress.done} cached) in {len(groups)} (model, seed) groups")
    run_groups(run, groups, run_group, per_group, progress,
               needs_data=lambda group: any(not p.exists() for p in cells[group]))
    summary = write_summary(out, [read_json(p) for p in paths], bench, plot=bench.plot)
    progress.done = len(paths)
    progress(f"summary written to {out / 'benchmark.md'}")
    return summary

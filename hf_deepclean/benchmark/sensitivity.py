"""``hf-deepclean benchmark --sensitivity``: how wide is each method's window of good hyperparameters?

For every (model, scenario, seed) it reuses the benchmark's cached original and gold models
(same ``--output_dir``, same settings) and writes one small JSON per point under
``<output_dir>/sensitivity/<model>/<scenario>/seed<k>/``, so an interrupted run resumes:

- DeepClean: every ``--sensitivity_fractions`` x ``--sensitivity_epochs`` (fine-tune budget); the
  Fisher pass runs once per (model, scenario, seed) and its time is added to every point;
- SSD: every ``--sensitivity_alphas``; the importances run once, each alpha only dampens;
- ``top_fraction="auto"``: a whole auto run (first choice, fine-tune, verification, retries) with a
  validation half carved (seeded, stratified) off the test split; its own model is judged against
  gold per seed, and its choice against DeepClean's window at the default budget;
- the noise floor: the gold model retrained with another seed, judged against gold;
- the ``deepclean_fast`` preset and SSD at its tuned alpha (the best passing alpha of the sweep),
  each run whole through the methods registry ``--sensitivity_timing_repeats`` times (min seconds).

Points are evaluated with forward passes only (accuracy on D_f, test and a D_r sample); deltas are
against the cached gold metrics. The summary is ``sensitivity.md``, ``sensitivity.json``, ``sensitivity.png``.
With ``--num_workers`` the groups run in a pool of processes, one task per (model, seed) and original model (the
scenarios that forget from one original stay together, so no two processes train it). From Python,
:func:`run_sensitivity`'s ``points`` runs chosen kinds of points on chosen (model, scenario) pairs only.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..arguments import DataArguments, ModelArguments
from ..methods.deepclean import DIGITS_DEFAULTS
from .arguments import DEFAULT_SENSITIVITY_SCENARIOS, SCENARIOS, BenchmarkArguments, SensitivityArguments
from .cache import SETTINGS_KEY, method_settings, stale_reason
from .cells import reference
from .common import Progress, model_entries, read_json, set_up_process, start_run, write_json
from .context import BenchmarkRun, GroupContext
from .models import original_role
from .sensitivity_points import RESEED_OFFSET, SensitivityGroup, tuned_alpha
from .sensitivity_summary import plot, summarize, to_markdown

# The kinds of points of one (model, scenario, seed), in the order they are computed. fast_vs_ssd needs the SSD
# points: their tuned alpha is the one it runs at.
POINT_KINDS = ("deepclean", "ssd", "auto", "noise_floor", "fast_vs_ssd")


def cached_point(path: Path, compute: Callable[[], dict], progress: Progress, label: str,
                 settings: dict | None = None) -> dict:
    """The point at ``path``, computed unless cached with the same method ``settings`` (``cache.stale_reason``)."""
    reason = stale_reason(path, settings)
    if reason is None:
        return read_json(path)
    if reason != "missing":
        progress(f"recomputing {path.name}: {reason}")
    result = compute()
    if settings is not None:
        result[SETTINGS_KEY] = settings
    write_json(path, result)
    progress.done += 1
    progress(label)
    return result


@dataclass
class SensitivityPoints:
    """The points of one group or of the whole run, in the order they were computed, each tagged with its model."""

    cells: list[dict] = field(default_factory=list)  # DeepClean grid and SSD alphas
    autos: list[dict] = field(default_factory=list)
    fast: list[dict] = field(default_factory=list)
    noise_floor: list[dict] = field(default_factory=list)

    def extend(self, other: SensitivityPoints) -> None:
        for name in ("cells", "autos", "fast", "noise_floor"):
            getattr(self, name).extend(getattr(other, name))


def _count(kinds: Collection[str], sens: SensitivityArguments) -> int:
    """How many points ``kinds`` make for one (model, scenario, seed)."""
    sizes = {"deepclean": len(sens.sensitivity_fractions) * len(sens.sensitivity_epochs),
             "ssd": len(sens.sensitivity_alphas), "auto": 1, "noise_floor": 1, "fast_vs_ssd": 1}
    return sum(sizes[k] for k in kinds)


def scenario_points(group: SensitivityGroup, sens: SensitivityArguments, kinds: Collection[str],
                    progress: Progress) -> SensitivityPoints:
    """The points ``kinds`` of one (model, scenario, seed), each computed unless cached."""
    found = SensitivityPoints()
    where = f"{group.ctx.model_key} {group.scenario.name} seed {group.seed}"
    tag = {"model": group.ctx.model_key}
    folder = group.folder
    if "deepclean" in kinds:
        for epochs in sens.sensitivity_epochs:
            for f in sens.sensitivity_fractions:
                settings = method_settings(group.deepclean_config(top_fraction=f, num_train_epochs=epochs))
                found.cells.append({**cached_point(folder / f"deepclean_e{epochs:g}_f{f:g}.json",
                                                   partial(group.deepclean, f, epochs), progress,
                                                   f"{where} deepclean {epochs:g} ep, top_fraction {f:g}", settings),
                                    **tag})
    ssd_points = []
    if "ssd" in kinds:
        ssd_points = [{**cached_point(folder / f"ssd_a{a:g}.json", partial(group.ssd, a), progress,
                                      f"{where} ssd alpha {a:g}", method_settings(group.ssd_config(alpha=a))), **tag}
                      for a in sens.sensitivity_alphas]
        found.cells += ssd_points
    if "auto" in kinds:
        found.autos.append({**cached_point(folder / "auto_verified.json", group.auto, progress,
                                           f"{where} top_fraction=auto",
                                           method_settings(group.deepclean_config(**group.auto_values()))), **tag})
    if "noise_floor" in kinds:
        found.noise_floor.append({**cached_point(folder / "gold_reseeded.json", group.gold_reseeded, progress,
                                                 f"{where} gold retrained with seed {group.seed + RESEED_OFFSET}"),
                                  **tag})
    if "fast_vs_ssd" in kinds:
        alpha = tuned_alpha(ssd_points)
        found.fast.append({**cached_point(folder / f"fast_vs_ssd_a{alpha:g}.json",
                                          partial(group.fast_vs_ssd, alpha, sens.sensitivity_timing_repeats),
                                          progress, f"{where} deepclean_fast vs ssd alpha {alpha:g}",
                                          group.fast_vs_ssd_method_settings(alpha)), **tag})
    return found


def group_points(ctx: GroupContext, sens: SensitivityArguments,
                 plan: Mapping[str, Collection[str]]) -> dict[str, SensitivityPoints]:
    """The points of one (model, seed) group, per scenario of ``plan`` (scenario -> kinds): its gold model and
    reference first (both cached, shared with the method comparison), then its points."""
    found = {}
    for scenario_name, kinds in plan.items():
        scenario = ctx.scenario(scenario_name)
        gold, gold_time = ctx.gold(scenario)
        ref = reference(ctx, scenario, gold, gold_time, ctx.original(scenario))
        group = SensitivityGroup(ctx, scenario, gold, ref, sens.auto_overrides)
        found[scenario_name] = scenario_points(group, sens, kinds, ctx.progress)
    return found


def group_points_in_process(run: BenchmarkRun, sens: SensitivityArguments, model_key: str, architecture: str,
                            seed: int, plan: Mapping[str, Collection[str]]) -> dict[str, SensitivityPoints]:
    """Some scenarios of one (model, seed) group in a worker process of ``--num_workers``."""
    set_up_process(run.bench)
    progress = Progress(sum(_count(kinds, sens) for kinds in plan.values()), f"sensitivity {model_key} seed {seed}")
    base, processor = run.load_base()
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_sensitivity_") as scratch_dir:
        ctx = GroupContext(run, model_key, architecture, seed, base, processor, progress, Path(scratch_dir))
        return group_points(ctx, sens, plan)


def _tasks(plan: Mapping[str, Collection[str]]) -> list[dict[str, Collection[str]]]:
    """A group's plan split by original model: scenarios that share one stay in one task."""
    tasks: dict[str, dict] = {}
    for scenario_name, kinds in plan.items():
        tasks.setdefault(original_role(scenario_name), {})[scenario_name] = kinds
    return list(tasks.values())


def default_budget(sens: SensitivityArguments) -> float:
    """The fine-tune budget auto runs with and is judged at: DeepClean's default epochs, when swept; else the
    largest budget swept."""
    budget = float(DIGITS_DEFAULTS["num_train_epochs"])
    return budget if budget in sens.sensitivity_epochs else max(sens.sensitivity_epochs)


def _plan(entries: list[tuple[str, str]], scenarios: list[str],
          points: Mapping[tuple[str, str], Collection[str]] | None) -> dict[str, dict[str, tuple[str, ...]]]:
    """model_key -> {scenario: kinds}, in the run's order; ``points`` None means every kind everywhere."""
    plan = {}
    for model_key, _ in entries:
        chosen = {}
        for scenario in scenarios:
            if points is None:
                chosen[scenario] = POINT_KINDS
            elif (model_key, scenario) in points:
                kinds = tuple(points[(model_key, scenario)])
                unknown = set(kinds) - set(POINT_KINDS)
                if unknown or ("fast_vs_ssd" in kinds and "ssd" not in kinds):
                    raise ValueError(f"points[{model_key!r}, {scenario!r}] = {kinds}: kinds are {POINT_KINDS}, "
                                     "and fast_vs_ssd needs ssd (its alpha is tuned on the SSD points).")
                chosen[scenario] = kinds
        plan[model_key] = chosen
    return plan


def run_sensitivity(model_args: ModelArguments, data_args: DataArguments, bench: BenchmarkArguments,
                    sens: SensitivityArguments, *,
                    points: Mapping[tuple[str, str], Collection[str]] | None = None) -> dict:
    """Run (or resume) every sensitivity point, then write and return the summary.

    ``points`` (Python only; default: everything) maps ``(model_key, scenario)`` to the kinds of points
    (:data:`POINT_KINDS`) run there; pairs it does not name are skipped, and a pair with no kinds only trains (or
    loads) its models and evaluates its reference. The summary then records the plan under ``settings.points``.
    """
    if bench.scenarios == list(SCENARIOS):
        bench.scenarios = list(DEFAULT_SENSITIVITY_SCENARIOS)
    out, overrides = start_run(model_args, data_args, bench)
    run = BenchmarkRun(model_args, data_args, bench, overrides, out)
    budget = default_budget(sens)
    entries = model_entries(model_args, bench)
    plan = _plan(entries, bench.scenarios, points)
    groups = [(key, arch, seed) for key, arch in entries for seed in bench.seeds if plan[key]]
    progress = Progress(sum(_count(kinds, sens) for key, _, _ in groups for kinds in plan[key].values()), "sensitivity")
    by_scenario: dict[tuple[str, int], dict[str, SensitivityPoints]] = {}
    tasks = [(key, arch, seed, task) for key, arch, seed in groups for task in _tasks(plan[key])]
    if bench.num_workers > 1 and len(tasks) > 1:
        # spawn: a fresh interpreter per worker (no forked torch thread pools)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(bench.num_workers, len(tasks)), mp_context=context) as pool:
            futures = [(key, seed, pool.submit(group_points_in_process, run, sens, key, arch, seed, task))
                       for key, arch, seed, task in tasks]
            for key, seed, future in futures:
                by_scenario.setdefault((key, seed), {}).update(future.result())
    else:
        base = None
        with tempfile.TemporaryDirectory(prefix="hf_deepclean_sensitivity_") as scratch_dir:
            for model_key, architecture, seed in groups:
                if base is None:
                    base = run.load_base()
                ctx = GroupContext(run, model_key, architecture, seed, *base, progress, Path(scratch_dir))
                by_scenario[(model_key, seed)] = group_points(ctx, sens, plan[model_key])
    found = SensitivityPoints()
    for model_key, _, seed in groups:  # the order of a run in one process, whichever process computed what
        for scenario_name in plan[model_key]:
            found.extend(by_scenario[(model_key, seed)][scenario_name])
    summary = summarize(found.cells, [{k: v for k, v in a.items() if k != "reset_only_rows"} for a in found.autos],
                        found.fast, list(bench.seeds), budget, found.noise_floor)
    summary["auto_reset_only_rows"] = [{k: a[k] for k in ("model", "scenario", "seed", "reset_only_rows")}
                                       for a in found.autos]
    summary["settings"] = {"fractions": sens.sensitivity_fractions, "epochs": sens.sensitivity_epochs,
                           "alphas": sens.sensitivity_alphas, "default_budget": budget,
                           "models": [k for k, _ in entries], "scenarios": bench.scenarios, "quick": bench.quick}
    if points is not None:
        summary["settings"]["points"] = {f"{key}/{s}": list(kinds) for key, chosen in plan.items()
                                         for s, kinds in chosen.items()}
    write_json(out / "sensitivity.json", summary)
    summary["markdown"] = to_markdown(summary)
    (out / "sensitivity.md").write_text(summary["markdown"], encoding="utf-8")
    if bench.plot and summary["rows"]:
        plot(summary["rows"], out / "sensitivity.png")
    progress.done = progress.total
    progress(f"summary written to {out / 'sensitivity.md'}")
    return summary

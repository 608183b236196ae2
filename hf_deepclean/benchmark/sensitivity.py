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
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..arguments import DataArguments, ModelArguments
from ..data import labels_of
from ..evaluation import collect_outputs, seeded_subset
from ..fisher import fisher_diagonal
from ..images import collate_fn
from ..methods import METHODS
from ..methods.base import quiet, training_set, with_seed
from ..methods.deepclean import DIGITS_DEFAULTS
from ..methods.ssd import dampen
from ..trainer import DeepCleanTrainer
from .arguments import DEFAULT_SENSITIVITY_SCENARIOS, SCENARIOS, BenchmarkArguments, SensitivityArguments
from .cache import SETTINGS_KEY, method_settings, stale_reason
from .cells import reference
from .common import QUICK, Progress, model_entries, read_json, set_up_process, start_run, write_json
from .context import BenchmarkRun, GroupContext
from .models import Scenario, original_role
from .sensitivity_summary import passes, plot, summarize, to_markdown

AUTO_KIND = {"class": "class", "noisy_labels": "noisy_labels", "random": "samples"}
SENSITIVITY_DIR = "sensitivity"
# The noise floor's retrain uses seed + RESEED_OFFSET, far from the benchmark's own seeds.
RESEED_OFFSET = 1000
# The kinds of points of one (model, scenario, seed), in the order they are computed. fast_vs_ssd needs the SSD
# points: their tuned alpha is the one it runs at.
POINT_KINDS = ("deepclean", "ssd", "auto", "noise_floor", "fast_vs_ssd")


def _accuracy(model, data, bench: BenchmarkArguments) -> float:
    return collect_outputs(model, data, batch_size=bench.eval_batch_size).accuracy


def _accuracies(model, scenario: Scenario, bench: BenchmarkArguments, seed: int) -> dict:
    """Accuracy on D_f, test and the retain sample the benchmark evaluates (forward passes only)."""
    parts = {"forget": scenario.ready["forget"], "test": scenario.ready["test"],
             "retain": seeded_subset(scenario.ready["retain"], bench.retain_eval_samples or 500, seed)}
    return {f"{key}_accuracy": _accuracy(model, data, bench) for key, data in parts.items()}


def carve_validation_half(test, seed: int):
    """A seeded, stratified half of the (in-memory, transformed) test split, and the other half.

    The same kind of split as ``common.carve_validation`` makes for ``unlearn`` and ``sweep``, drawn by its own
    routine (that one needs the raw split's ``label`` column); the images differ, not the rule.
    """
    labels = labels_of(test)
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picked.extend(rng.choice(members, size=len(members) // 2, replace=False))
    validation = np.sort(np.asarray(picked, dtype=np.int64))
    return test.select(validation), test.select(np.setdiff1d(np.arange(len(labels)), validation))


class SensitivityGroup:
    """The sensitivity points of one (model, scenario, seed): cached models, Fishers computed lazily.

    Args:
        ctx: The (model, seed) group's shared models and data.
        scenario: The scenario forgotten.
        gold: The gold model of this (model, scenario, seed); also judges the auto run on the held-out test half.
        ref: The gold and original metrics every point is judged against (``cells.reference``).
        auto_overrides: DeepClean settings for the ``top_fraction="auto"`` run only.
    """

    def __init__(self, ctx: GroupContext, scenario: Scenario, gold, ref: dict, auto_overrides: Mapping):
        self.ctx, self.scenario, self.gold, self.ref = ctx, scenario, gold, ref
        self.auto_overrides = dict(auto_overrides)
        self.seed = ctx.seed
        self.folder = ctx.run.out / SENSITIVITY_DIR / ctx.model_key / scenario.name / f"seed{ctx.seed}"
        self._fishers = self._importances = None

    def original(self):
        return self.ctx.original(self.scenario)

    def _point(self, model, **info) -> dict:
        acc = _accuracies(model, self.scenario, self.ctx.bench, self.seed)
        gold = self.ref["gold"]
        return {**info, "seed": self.seed, "scenario": self.scenario.name, **acc,
                "gold_forget_accuracy": gold["forget_accuracy"],
                "delta_forget_accuracy": acc["forget_accuracy"] - gold["forget_accuracy"],
                "delta_test_accuracy": acc["test_accuracy"] - gold["test_accuracy"]}

    # ------------------------------------------------------------------ configs

    def deepclean_config(self, **values):
        settings = dict(self.ctx.overrides.get("deepclean", {}), **values)
        if self.ctx.bench.quick:
            settings.setdefault("fisher_max_samples", QUICK["fisher_max_samples"])
        return with_seed(METHODS["deepclean"].make_config(self.ctx.scratch / "deepclean", **settings), self.seed)

    def ssd_config(self, **values):
        return METHODS["ssd"].make_config(**{**self.ctx.overrides.get("ssd", {}), **values})

    def auto_values(self) -> dict:
        return {"top_fraction": "auto", "auto_kind": AUTO_KIND[self.scenario.name], **self.auto_overrides}

    def fast_vs_ssd_settings(self, alpha: float) -> dict:
        """The registry settings of the timed pair: --method_overrides as in the benchmark's cells, the tuned alpha
        winning over SSD's."""
        settings = {"ssd": {**self.ctx.overrides.get("ssd", {}), "alpha": alpha},
                    "deepclean_fast": dict(self.ctx.overrides.get("deepclean_fast", {}))}
        if self.ctx.bench.quick:
            settings["deepclean_fast"].setdefault("fisher_max_samples", QUICK["fisher_max_samples"])
        return settings

    def fast_vs_ssd_config(self, name: str, alpha: float):
        """The config ``name`` (``ssd`` or ``deepclean_fast``) runs with in the timed pair."""
        return METHODS[name].make_config(self.ctx.scratch / name, **self.fast_vs_ssd_settings(alpha)[name])

    def fast_vs_ssd_method_settings(self, alpha: float) -> dict:
        """Both configs' effective settings (``cache.method_settings``), keyed like ``fast_vs_ssd_settings``."""
        return {name: method_settings(self.fast_vs_ssd_config(name, alpha)) for name in ("ssd", "deepclean_fast")}

    # ------------------------------------------------------------------ Fishers and importances (computed once)

    def compute_fishers(self, model) -> tuple[dict, dict, float]:
        """DeepClean's Fisher diagonals of ``model`` on D_f and D_r, and the seconds they took: the one place the
        sensitivity sweep computes them (every DeepClean point and the auto run reuse them)."""
        trainer = DeepCleanTrainer(model, self.deepclean_config(top_fraction=0.1),
                                   train_dataset=self.scenario.ready["retain"],
                                   forget_dataset=self.scenario.ready["forget"])
        start = time.perf_counter()
        fisher_forget, fisher_retain = trainer.compute_fishers()
        return fisher_forget, fisher_retain, time.perf_counter() - start

    def fishers(self) -> tuple[dict, dict, float]:
        if self._fishers is None:
            self._fishers = self.compute_fishers(self.original())
        return self._fishers

    def compute_ssd_importances(self, model, config) -> tuple[dict, dict]:
        """SSD's importances of ``model`` (batch Fisher) on D_f and on D = D_f + D_r: the one place the sweep
        computes them (every alpha only dampens)."""
        common = dict(estimator="batch", batch_size=config.batch_size, collate_fn=collate_fn, seed=self.seed,
                      show_progress=False)
        splits = self.scenario.ready
        full = fisher_diagonal(model, training_set({"forget": splits["forget"], "retain": splits["retain"]}), **common)
        return fisher_diagonal(model, splits["forget"], **common), full

    def ssd_importances(self, config) -> tuple[dict, dict, float]:
        """The importances and their seconds (loading the original included)."""
        if self._importances is None:
            start = time.perf_counter()
            forget_imp, full_imp = self.compute_ssd_importances(self.original(), config)
            self._importances = (forget_imp, full_imp, time.perf_counter() - start)
        return self._importances

    # ------------------------------------------------------------------ points

    def deepclean(self, fraction: float, epochs: float) -> dict:
        fisher_forget, fisher_retain, fisher_time = self.fishers()
        trainer = DeepCleanTrainer(
            self.original(), self.deepclean_config(top_fraction=fraction, num_train_epochs=epochs),
            train_dataset=self.scenario.ready["retain"], forget_dataset=self.scenario.ready["forget"],
            fisher_forget=fisher_forget, fisher_retain=fisher_retain,
        )
        quiet(trainer).unlearn()
        stats = trainer.unlearning_stats
        return self._point(trainer.model, method="deepclean", param="top_fraction", value=fraction, budget=epochs,
                           time_s=fisher_time + stats["total_time_s"], selected_fraction=stats["selected_fraction"])

    def ssd(self, alpha: float) -> dict:
        config = self.ssd_config(alpha=alpha)
        forget_imp, full_imp, imp_time = self.ssd_importances(config)
        model = self.original()
        start = time.perf_counter()
        dampen(model, forget_imp, full_imp, alpha=alpha, dampening=config.dampening)
        return self._point(model, method="ssd", param="alpha", value=alpha, budget=None,
                           time_s=imp_time + time.perf_counter() - start)

    def gold_reseeded(self) -> dict:
        """The gold model retrained on the same D_r with another seed (initial weights, batch order), judged like
        every point against this seed's gold: how far two retrains differ, the noise floor under the targets."""
        c = self.ctx
        model, train_time = c.store.load(c.model_key, c.architecture, self.seed, f"{self.scenario.gold_key}_reseeded",
                                         self.scenario.raw["retain"], train_seed=self.seed + RESEED_OFFSET)
        return self._point(model, method="retrain_reseeded", param="seed", value=self.seed + RESEED_OFFSET,
                           budget=None, time_s=train_time)

    def auto(self) -> dict:
        """``top_fraction="auto"`` run whole through DeepCleanTrainer (first choice, fine-tune, verification and
        retries), on a validation half carved off the test split; the final model is judged like every point.

        The validation half only enters auto's decisions through the loss-MIA of sample forgetting; class and
        noisy-label forgetting are decided on D_f and D_r, so judging on the whole test split leaks nothing.
        """
        values = self.auto_values()
        kind = values["auto_kind"]
        fisher_forget, fisher_retain, fisher_time = self.fishers()
        splits = self.scenario.ready
        validation, heldout = carve_validation_half(splits["test"], self.seed)
        trainer = DeepCleanTrainer(
            self.original(), self.deepclean_config(**values),
            train_dataset=splits["retain"], forget_dataset=splits["forget"], eval_dataset=validation,
            fisher_forget=fisher_forget, fisher_retain=fisher_retain,
        )
        quiet(trainer).unlearn()
        auto, stats = trainer.auto_sweep, trainer.unlearning_stats
        point = self._point(trainer.model, method="deepclean_auto", param="top_fraction", value=auto["chosen"],
                            budget=trainer.args.num_train_epochs, time_s=fisher_time + stats["total_time_s"])
        point.update(self._heldout_test(trainer.model, heldout))
        if trainer.args.early_stopping_patience is not None:
            point.update({k: stats[k] for k in ("early_stopping_best_epoch", "early_stopping_epochs_run")})
        return {**point, "kind": kind, "chosen": auto["chosen"], "start": auto["start"], "reason": auto["reason"],
                "verified": auto["verified"], "attempts": auto["attempts"], "refit": auto.get("refit"),
                "original_validation_accuracy": auto["original_validation_accuracy"],
                "validation_size": len(validation),
                "reset_only_rows": auto["rows"]}

    def _heldout_test(self, model, heldout) -> dict:
        """Test accuracy on the half the auto run never saw, the model's and the gold model's: where the validation
        half chose the fine-tune's length (early stopping), the whole test split would flatter the run."""
        bench = self.ctx.bench
        ours, theirs = _accuracy(model, heldout, bench), _accuracy(self.gold, heldout, bench)
        return {"heldout_test_accuracy": ours, "gold_heldout_test_accuracy": theirs,
                "delta_heldout_test_accuracy": ours - theirs, "heldout_size": len(heldout)}

    def fast_vs_ssd(self, alpha: float, repeats: int) -> dict:
        """``deepclean_fast`` and SSD at ``alpha``, each run whole ``repeats`` times, alternating; min seconds."""
        splits = {k: self.scenario.ready[k] for k in ("forget", "retain")}
        settings = self.fast_vs_ssd_settings(alpha)
        runs = {"ssd": [], "fast": []}
        for _ in range(repeats):
            for key, name in (("ssd", "ssd"), ("fast", "deepclean_fast")):
                config = self.fast_vs_ssd_config(name, alpha)
                result = METHODS[name](self.original(), splits, None, config, seed=self.seed)
                runs[key].append((result.time_s, result.model))
        out = {"seed": self.seed, "scenario": self.scenario.name, "alpha": alpha, "settings": settings}
        for key, values in runs.items():
            best = min(t for t, _ in values)
            out[key] = self._point(values[-1][1], method=key, param=None, value=None, time_s=best,
                                   times=[t for t, _ in values])
        out["time_ratio"] = out["fast"]["time_s"] / out["ssd"]["time_s"]
        return out


def tuned_alpha(points: list[dict]) -> float:
    """SSD's alpha tuned by looking at gold: the passing alpha with the least gap, else the least gap overall."""
    def gap(p):
        return abs(p["delta_forget_accuracy"]) + abs(p["delta_test_accuracy"])

    passing = [p for p in points if passes(p)]
    return min(passing or points, key=gap)["value"]


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

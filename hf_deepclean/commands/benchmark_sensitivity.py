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
- the ``deepclean_fast`` preset and SSD at its tuned alpha (the best passing alpha of the sweep),
  each run whole through the methods registry ``--sensitivity_timing_repeats`` times (min seconds).

Points are evaluated with forward passes only (accuracy on D_f, test and a D_r sample); deltas are
against the cached gold metrics. The summary is ``sensitivity.md``, ``sensitivity.json``, ``sensitivity.png``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arguments import ConfigError
from .benchmark import QUICK
from .benchmark_cache import SETTINGS_KEY, method_settings, stale_reason
from .benchmark_models import ModelStore, build_scenario
from .benchmark_sensitivity_summary import passes, plot, summarize, to_markdown

DEFAULT_FRACTIONS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]
DEFAULT_SCENARIOS = ["class", "noisy_labels"]
AUTO_KIND = {"class": "class", "noisy_labels": "noisy_labels", "random": "samples"}
SENSITIVITY_DIR = "sensitivity"
# The noise floor's retrain uses seed + RESEED_OFFSET, far from the benchmark's own seeds.
RESEED_OFFSET = 1000


@dataclass
class SensitivityArguments:
    """Args:
    sensitivity: Run the sensitivity sweep instead of the method comparison (``--methods`` is
        ignored; ``--scenarios`` left at its default means class and noisy_labels).
    sensitivity_fractions: DeepClean top fractions swept.
    sensitivity_epochs: DeepClean fine-tune budgets (epochs) swept; each gets its own window.
    sensitivity_alphas: SSD alphas swept.
    sensitivity_timing_repeats: Runs of the fast preset and of SSD for the time ratio (min is kept).
    sensitivity_auto_overrides: DeepClean settings (JSON) for the ``top_fraction="auto"`` run only, on top of
        ``--method_overrides``' deepclean entry: e.g. the no-gold budget rule,
        ``{"early_stopping_patience": 2, "num_train_epochs": 8}``. The auto point also reports test accuracy on the
        half of the test split it never saw, against the gold model's there (early stopping watches the other half).
    """

    sensitivity: bool = field(default=False, metadata={"help": "Sweep DeepClean/SSD hyperparameters (windows)."})
    sensitivity_fractions: list[float] = field(
        default_factory=lambda: list(DEFAULT_FRACTIONS), metadata={"help": "DeepClean top fractions swept."}
    )
    sensitivity_epochs: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0], metadata={"help": "DeepClean fine-tune epochs swept."}
    )
    sensitivity_alphas: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0], metadata={"help": "SSD alphas swept."}
    )
    sensitivity_timing_repeats: int = field(
        default=3, metadata={"help": "Runs of deepclean_fast and SSD for the time ratio (min kept)."}
    )

    sensitivity_auto_overrides: str | None = field(
        default=None,
        metadata={"help": "JSON of DeepClean settings for the top_fraction=auto run only, e.g. "
                  "'{\"early_stopping_patience\": 2, \"num_train_epochs\": 8}'."},
    )

    def __post_init__(self):
        self.auto_overrides = _parse_auto_overrides(self.sensitivity_auto_overrides)
        for name in ("sensitivity_fractions", "sensitivity_epochs", "sensitivity_alphas"):
            values = getattr(self, name)
            if not values or any(not v > 0 for v in values):
                raise ConfigError(f"--{name} {values} needs at least one value, all > 0.")
            setattr(self, name, sorted(set(float(v) for v in values)))
        if any(f > 1 for f in self.sensitivity_fractions):
            raise ConfigError(f"--sensitivity_fractions {self.sensitivity_fractions} must be in (0, 1].")
        if self.sensitivity_timing_repeats < 1:
            raise ConfigError(f"--sensitivity_timing_repeats {self.sensitivity_timing_repeats} must be >= 1.")


def _parse_auto_overrides(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--sensitivity_auto_overrides is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError('--sensitivity_auto_overrides must be a JSON object of settings, e.g. '
                          '{"early_stopping_patience": 2, "num_train_epochs": 8}.')
    return value


def _accuracy(model, data, bench) -> float:
    from ..evaluation import collect_outputs

    return collect_outputs(model, data, batch_size=bench.eval_batch_size).accuracy


def _accuracies(model, scenario, bench, seed) -> dict:
    """Accuracy on D_f, test and the retain sample the benchmark evaluates (forward passes only)."""
    from ..evaluation import seeded_subset

    parts = {"forget": scenario.ready["forget"], "test": scenario.ready["test"],
             "retain": seeded_subset(scenario.ready["retain"], bench.retain_eval_samples or 500, seed)}
    return {f"{key}_accuracy": _accuracy(model, data, bench) for key, data in parts.items()}


def _point(model, scenario, bench, seed, ref, **info) -> dict:
    acc = _accuracies(model, scenario, bench, seed)
    gold = ref["gold"]
    return {**info, "seed": seed, "scenario": scenario.name, **acc, "gold_forget_accuracy": gold["forget_accuracy"],
            "delta_forget_accuracy": acc["forget_accuracy"] - gold["forget_accuracy"],
            "delta_test_accuracy": acc["test_accuracy"] - gold["test_accuracy"]}


def carve_validation_half(test, seed: int):
    """A seeded, stratified half of the (in-memory, transformed) test split, and the other half.

    The same kind of split as ``common.carve_validation`` makes for ``unlearn`` and ``sweep``, drawn by its own
    routine (that one needs the raw split's ``label`` column); the images differ, not the rule.
    """
    from ..data import labels_of

    labels = labels_of(test)
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picked.extend(rng.choice(members, size=len(members) // 2, replace=False))
    validation = np.sort(np.asarray(picked, dtype=np.int64))
    return test.select(validation), test.select(np.setdiff1d(np.arange(len(labels)), validation))


class _Group:
    """The sensitivity points of one (model, scenario, seed); cached models, Fishers computed lazily."""

    def __init__(self, ctx, scenario, seed, folder: Path):
        self.ctx, self.scenario, self.seed, self.folder = ctx, scenario, seed, folder
        self._fishers = self._importances = None

    def original(self):
        c = self.ctx
        return c.store.load(c.model_key, c.architecture, self.seed, self.scenario.original_key, self.scenario.train)[0]

    def deepclean_config(self, **values):
        from ..methods import METHODS
        from ..methods.base import with_seed

        settings = dict(self.ctx.overrides.get("deepclean", {}), **values)
        if self.ctx.bench.quick:
            settings.setdefault("fisher_max_samples", QUICK["fisher_max_samples"])
        return with_seed(METHODS["deepclean"].make_config(self.ctx.scratch / "deepclean", **settings), self.seed)

    def ssd_config(self, **values):
        from ..methods import METHODS

        return METHODS["ssd"].make_config(**{**self.ctx.overrides.get("ssd", {}), **values})

    def auto_values(self) -> dict:
        return {"top_fraction": "auto", "auto_kind": AUTO_KIND[self.scenario.name], **self.ctx.auto_overrides}

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
        from ..methods import METHODS

        return METHODS[name].make_config(self.ctx.scratch / name, **self.fast_vs_ssd_settings(alpha)[name])

    def fast_vs_ssd_method_settings(self, alpha: float) -> dict:
        """Both configs' effective settings (benchmark_cache), keyed like ``fast_vs_ssd_settings``."""
        return {name: method_settings(self.fast_vs_ssd_config(name, alpha)) for name in ("ssd", "deepclean_fast")}

    def fishers(self):
        from ..trainer import DeepCleanTrainer

        if self._fishers is None:
            model = self.original()
            trainer = DeepCleanTrainer(model, self.deepclean_config(top_fraction=0.1), train_dataset=self.scenario.ready["retain"],
                                       forget_dataset=self.scenario.ready["forget"])
            start = time.perf_counter()
            self._fishers = (*trainer.compute_fishers(), time.perf_counter() - start)
        return self._fishers

    def deepclean(self, fraction: float, epochs: float) -> dict:
        from ..methods.base import quiet
        from ..trainer import DeepCleanTrainer

        fisher_forget, fisher_retain, fisher_time = self.fishers()
        trainer = DeepCleanTrainer(
            self.original(), self.deepclean_config(top_fraction=fraction, num_train_epochs=epochs),
            train_dataset=self.scenario.ready["retain"], forget_dataset=self.scenario.ready["forget"],
            fisher_forget=fisher_forget, fisher_retain=fisher_retain,
        )
        quiet(trainer).unlearn()
        stats = trainer.unlearning_stats
        return _point(trainer.model, self.scenario, self.ctx.bench, self.seed, self.ctx.ref, method="deepclean",
                      param="top_fraction", value=fraction, budget=epochs, time_s=fisher_time + stats["total_time_s"],
                      selected_fraction=stats["selected_fraction"])

    def ssd(self, alpha: float) -> dict:
        from ..data import collate_fn
        from ..fisher import fisher_diagonal
        from ..methods.base import training_set
        from ..methods.ssd import dampen

        config = self.ssd_config(alpha=alpha)
        if self._importances is None:
            start = time.perf_counter()
            common = dict(estimator="batch", batch_size=config.batch_size, collate_fn=collate_fn, seed=self.seed,
                          show_progress=False)
            model, splits = self.original(), self.scenario.ready
            full = fisher_diagonal(model, training_set({"forget": splits["forget"], "retain": splits["retain"]}), **common)
            self._importances = (fisher_diagonal(model, splits["forget"], **common), full, time.perf_counter() - start)
        forget_imp, full_imp, imp_time = self._importances
        model = self.original()
        start = time.perf_counter()
        dampen(model, forget_imp, full_imp, alpha=alpha, dampening=config.dampening)
        return _point(model, self.scenario, self.ctx.bench, self.seed, self.ctx.ref, method="ssd", param="alpha",
                      value=alpha, budget=None, time_s=imp_time + time.perf_counter() - start)

    def gold_reseeded(self) -> dict:
        """The gold model retrained on the same D_r with another seed (initial weights, batch order), judged like
        every point against this seed's gold: how far two retrains differ, the noise floor under the targets."""
        c = self.ctx
        model, train_time = c.store.load(c.model_key, c.architecture, self.seed, f"gold_{self.scenario.name}_reseeded",
                                         self.scenario.raw["retain"], train_seed=self.seed + RESEED_OFFSET)
        return _point(model, self.scenario, c.bench, self.seed, c.ref, method="retrain_reseeded", param="seed",
                      value=self.seed + RESEED_OFFSET, budget=None, time_s=train_time)

    def auto(self) -> dict:
        """``top_fraction="auto"`` run whole through DeepCleanTrainer (first choice, fine-tune, verification and
        retries), on a validation half carved off the test split; the final model is judged like every point.

        The validation half only enters auto's decisions through the loss-MIA of sample forgetting; class and
        noisy-label forgetting are decided on D_f and D_r, so judging on the whole test split leaks nothing.
        """
        from ..methods.base import quiet
        from ..trainer import DeepCleanTrainer

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
        point = _point(trainer.model, self.scenario, self.ctx.bench, self.seed, self.ctx.ref, method="deepclean_auto",
                       param="top_fraction", value=auto["chosen"], budget=trainer.args.num_train_epochs,
                       time_s=fisher_time + stats["total_time_s"])
        point.update(self._heldout_test(trainer.model, heldout))
        if trainer.args.early_stopping_patience is not None:
            point.update({k: stats[k] for k in ("early_stopping_best_epoch", "early_stopping_epochs_run")})
        return {**point, "kind": kind, "chosen": auto["chosen"], "start": auto["start"], "reason": auto["reason"],
                "verified": auto["verified"], "attempts": auto["attempts"], "refit": auto.get("refit"),
                "original_validation_accuracy": auto["original_validation_accuracy"], "validation_size": len(validation),
                "reset_only_rows": auto["rows"]}

    def _heldout_test(self, model, heldout) -> dict:
        """Test accuracy on the half the auto run never saw, the model's and the gold model's: where the validation
        half chose the fine-tune's length (early stopping), the whole test split would flatter the run."""
        c = self.ctx
        ours, theirs = _accuracy(model, heldout, c.bench), _accuracy(c.gold, heldout, c.bench)
        return {"heldout_test_accuracy": ours, "gold_heldout_test_accuracy": theirs,
                "delta_heldout_test_accuracy": ours - theirs, "heldout_size": len(heldout)}

    def fast_vs_ssd(self, alpha: float, repeats: int) -> dict:
        """``deepclean_fast`` and SSD at ``alpha``, each run whole ``repeats`` times, alternating; min seconds."""
        from ..methods import METHODS

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
            out[key] = _point(values[-1][1], self.scenario, self.ctx.bench, self.seed, self.ctx.ref,
                              method=key, param=None, value=None, time_s=best, times=[t for t, _ in values])
        out["time_ratio"] = out["fast"]["time_s"] / out["ssd"]["time_s"]
        return out


def tuned_alpha(points: list[dict]) -> float:
    """SSD's alpha tuned by looking at gold: the passing alpha with the least gap, else the least gap overall."""
    def gap(p):
        return abs(p["delta_forget_accuracy"]) + abs(p["delta_test_accuracy"])

    passing = [p for p in points if passes(p)]
    return min(passing or points, key=gap)["value"]


def _cached(path: Path, compute, progress, label: str, settings: dict | None = None):
    """The point at ``path``, computed unless cached with the same method ``settings`` (benchmark_cache)."""
    from .benchmark import _write_json

    reason = stale_reason(path, settings)
    if reason is None:
        return json.loads(path.read_text(encoding="utf-8"))
    if reason != "missing":
        progress(f"recomputing {path.name}: {reason}")
    result = compute()
    if settings is not None:
        result[SETTINGS_KEY] = settings
    _write_json(path, result)
    progress.done += 1
    progress(label)
    return result


def run_sensitivity(model_args, data_args, bench, sens: SensitivityArguments) -> dict:
    """Run (or resume) every sensitivity point, then write and return the summary."""
    import torch

    from . import benchmark as b

    if bench.num_threads > 0:
        torch.set_num_threads(bench.num_threads)
    b._quiet_libraries()
    if bench.scenarios == list(b.SCENARIOS):
        bench.scenarios = list(DEFAULT_SCENARIOS)
    out = Path(bench.output_dir).resolve()
    overrides = b.parse_overrides(bench.method_overrides)
    b._check_settings(out, b._settings(model_args, data_args, bench, overrides))
    if bench.quick:
        bench.train_epochs = min(bench.train_epochs, b.QUICK["train_epochs"])
    default_budget = float(b_default_epochs())
    if default_budget not in sens.sensitivity_epochs:
        default_budget = max(sens.sensitivity_epochs)
    entries = b._model_entries(model_args, bench)
    per_group = len(sens.sensitivity_fractions) * len(sens.sensitivity_epochs) + len(sens.sensitivity_alphas) + 3
    progress = b._Progress(len(entries) * len(bench.seeds) * len(bench.scenarios) * per_group, "sensitivity")
    cells, autos, fast, noise_floor, base = [], [], [], [], None
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_sensitivity_") as scratch_dir:
        for model_key, architecture in entries:
            for seed in bench.seeds:
                if base is None:
                    base = b._load_base(model_args, data_args, bench)
                ctx = type("Ctx", (), {})()
                ctx.bench, ctx.overrides, ctx.model_key, ctx.architecture = bench, overrides, model_key, architecture
                ctx.auto_overrides = sens.auto_overrides
                ctx.scratch = Path(scratch_dir)
                ctx.store = ModelStore(out, model_args, bench, base[0], base[1], progress, ctx.scratch)
                for scenario_name in bench.scenarios:
                    scenario = build_scenario(scenario_name, base[0], base[1], bench, seed)
                    gold, gold_time = ctx.store.load(model_key, architecture, seed, f"gold_{scenario_name}",
                                                     scenario.raw["retain"])
                    ref_folder = out / "cells" / model_key / scenario_name / f"seed{seed}"
                    ctx.gold = gold  # also judges the auto run on the held-out test half
                    ctx.ref = b.reference(ref_folder, gold, gold_time, ctx_original(ctx, seed, scenario), scenario,
                                          bench, base[1], seed)
                    folder = out / SENSITIVITY_DIR / model_key / scenario_name / f"seed{seed}"
                    group = _Group(ctx, scenario, seed, folder)
                    where = f"{model_key} {scenario_name} seed {seed}"
                    tag = {"model": model_key}
                    for epochs in sens.sensitivity_epochs:
                        for f in sens.sensitivity_fractions:
                            cells.append({**_cached(folder / f"deepclean_e{epochs:g}_f{f:g}.json",
                                                    lambda: group.deepclean(f, epochs), progress,
                                                    f"{where} deepclean {epochs:g} ep, top_fraction {f:g}",
                                                    method_settings(group.deepclean_config(top_fraction=f,
                                                                                           num_train_epochs=epochs))),
                                          **tag})
                    ssd_points = [{**_cached(folder / f"ssd_a{a:g}.json", lambda: group.ssd(a), progress,
                                             f"{where} ssd alpha {a:g}", method_settings(group.ssd_config(alpha=a))), **tag}
                                  for a in sens.sensitivity_alphas]
                    cells += ssd_points
                    autos.append({**_cached(folder / "auto_verified.json", group.auto, progress, f"{where} top_fraction=auto",
                                            method_settings(group.deepclean_config(**group.auto_values()))), **tag})
                    noise_floor.append({**_cached(folder / "gold_reseeded.json", group.gold_reseeded, progress,
                                                  f"{where} gold retrained with seed {seed + RESEED_OFFSET}"), **tag})
                    alpha = tuned_alpha(ssd_points)
                    fast.append({**_cached(folder / f"fast_vs_ssd_a{alpha:g}.json",
                                           lambda: group.fast_vs_ssd(alpha, sens.sensitivity_timing_repeats),
                                           progress, f"{where} deepclean_fast vs ssd alpha {alpha:g}",
                                           group.fast_vs_ssd_method_settings(alpha)), **tag})
    summary = summarize(cells, [{k: v for k, v in a.items() if k != "reset_only_rows"} for a in autos], fast,
                        list(bench.seeds), default_budget, noise_floor)
    summary["auto_reset_only_rows"] = [{k: a[k] for k in ("model", "scenario", "seed", "reset_only_rows")} for a in autos]
    summary["settings"] = {"fractions": sens.sensitivity_fractions, "epochs": sens.sensitivity_epochs,
                           "alphas": sens.sensitivity_alphas, "default_budget": default_budget,
                           "models": [k for k, _ in entries], "scenarios": bench.scenarios, "quick": bench.quick}
    b._write_json(out / "sensitivity.json", summary)
    summary["markdown"] = to_markdown(summary)
    (out / "sensitivity.md").write_text(summary["markdown"], encoding="utf-8")
    if bench.plot and summary["rows"]:
        plot(summary["rows"], out / "sensitivity.png")
    progress.done = progress.total
    progress(f"summary written to {out / 'sensitivity.md'}")
    return summary


def ctx_original(ctx, seed, scenario):
    return ctx.store.load(ctx.model_key, ctx.architecture, seed, scenario.original_key, scenario.train)[0]


def b_default_epochs() -> float:
    from ..methods.deepclean import DIGITS_DEFAULTS

    return DIGITS_DEFAULTS["num_train_epochs"]

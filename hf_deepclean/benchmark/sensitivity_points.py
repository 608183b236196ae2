"""The points of the sensitivity sweep for one (model, scenario, seed): :class:`SensitivityGroup`.

Each point unlearns from a fresh copy of the cached original (or retrains gold with another seed) and is judged
with forward passes only against the gold model's cached metrics. DeepClean's two Fishers and SSD's importances
are computed once per group, each in one method (``compute_fishers``, ``compute_ssd_importances``), and reused by
every point that needs them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from ..data import labels_of
from ..evaluation import collect_outputs, seeded_subset
from ..fisher import fisher_diagonal
from ..images import collate_fn
from ..methods import METHODS
from ..methods.base import quiet, training_set, with_seed
from ..methods.ssd import dampen
from ..trainer import DeepCleanTrainer
from .arguments import BenchmarkArguments
from .cache import method_settings
from .common import QUICK
from .context import GroupContext
from .models import Scenario
from .sensitivity_summary import passes

AUTO_KIND = {"class": "class", "noisy_labels": "noisy_labels", "random": "samples"}
SENSITIVITY_DIR = "sensitivity"
# The noise floor's retrain uses seed + RESEED_OFFSET, far from the benchmark's own seeds.
RESEED_OFFSET = 1000


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

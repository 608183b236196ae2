"""Fast preset, passing windows and a --quick `hf-deepclean benchmark --sensitivity` run (writes, resumes)."""

import json

import pytest

from hf_deepclean.benchmark import models as models_mod
from hf_deepclean.benchmark import sensitivity_points as points_mod
from hf_deepclean.benchmark.arguments import parse_auto_overrides
from hf_deepclean.benchmark.sensitivity_summary import passing_window, summarize, to_markdown
from hf_deepclean.commands import benchmark as bench_mod
from hf_deepclean.config import PRESETS, DeepCleanConfig
from hf_deepclean.errors import ConfigError


def test_fast_preset_fills_defaults_but_not_user_set_fields(tmp_path):
    config = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.05, preset="fast")
    for name, value in PRESETS["fast"].items():
        assert getattr(config, name) == value, name
    mine = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.05, preset="fast", max_steps=7,
                           fisher_estimator="expected", reset="init")
    assert (mine.max_steps, mine.fisher_estimator, mine.reset) == (7, "expected", "init")
    assert mine.fisher_max_samples == PRESETS["fast"]["fisher_max_samples"]
    plain = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.05)
    assert (plain.fisher_estimator, plain.max_steps) == ("empirical", -1)
    # A value passed equal to the default is still the user's choice, not the preset's.
    same = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.05, preset="fast", fisher_estimator="empirical")
    assert (same.fisher_estimator, same.max_steps) == ("empirical", PRESETS["fast"]["max_steps"])
    import dataclasses

    assert dataclasses.replace(same, seed=3).fisher_estimator == "empirical"  # a copy keeps what was resolved


def test_fast_preset_on_the_command_line_keeps_flags_and_yaml_keys_equal_to_defaults(tmp_path):
    from hf_deepclean.arguments import parse_arguments

    recipe = tmp_path / "fast.yaml"
    recipe.write_text("preset: fast\nreset: zero\nmax_steps: -1\nnum_train_epochs: 1\n")
    (config,) = parse_arguments([DeepCleanConfig], ["--config", str(recipe), "--output_dir", str(tmp_path),
                                                    "--top_fraction", "0.1", "--fisher_estimator", "empirical"])
    # flag and YAML key equal to the default win over the preset; what nobody set takes the preset's value
    assert (config.fisher_estimator, config.max_steps) == ("empirical", -1)
    assert config.fisher_max_samples == PRESETS["fast"]["fisher_max_samples"]
    (plain,) = parse_arguments([DeepCleanConfig], ["--output_dir", str(tmp_path), "--top_fraction", "0.1",
                                                   "--preset", "fast"])
    assert (plain.fisher_estimator, plain.max_steps) == ("batch", PRESETS["fast"]["max_steps"])


def test_unknown_preset_error_names_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"preset='slow'.*fast"):
        DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.05, preset="slow")


def test_fast_method_is_registered_with_the_preset():
    from hf_deepclean.methods import METHODS

    config = METHODS["deepclean_fast"].make_config()
    assert (config.preset, config.fisher_estimator, config.max_steps) == ("fast", "batch", PRESETS["fast"]["max_steps"])


def _row(value, d_df, d_test):
    return {"value": value, "delta_forget_accuracy": d_df, "delta_test_accuracy": d_test}


def test_window_contiguous_none_and_single():
    rows = [_row(0.005, 0.5, 0.0), _row(0.01, 0.01, -0.005), _row(0.05, 0.0, 0.01), _row(0.1, 0.0, -0.02)]
    w = passing_window(rows)
    assert (w["low"], w["high"], w["contiguous"]) == (0.01, 0.05, True) and w["ratio"] == pytest.approx(5.0)
    none = passing_window([_row(1, 0.3, 0.0), _row(2, 0.0, -0.2)])
    assert none["low"] is None and none["ratio"] is None and none["passing"] == []
    single = passing_window([_row(3, 0.0, 0.0), _row(5, 0.24, 0.0)])
    assert (single["low"], single["high"], single["ratio"]) == (3, 3, 1.0)
    gap = passing_window([_row(1, 0, 0), _row(2, 0.5, 0), _row(4, 0, 0)])
    assert gap["ratio"] == 4 and not gap["contiguous"] and gap["failing_inside"] == [2]


def test_windows_per_seed_judge_each_seed_and_auto_against_its_own_gold():
    """Seed 0 passes at 0.1 - 0.2, seed 1 at 0.2 - 0.5: the seed-mean window is 0.2 alone, so auto's 0.1 on seed 0
    is outside it, but inside seed 0's own window; seed 1's 0.1 is outside both."""
    passing = {0: {0.1, 0.2}, 1: {0.2, 0.5}}
    cells = [{"model": "vit", "scenario": "class", "method": "deepclean", "budget": 2.0, "param": "top_fraction",
              "seed": seed, "value": value, "delta_forget_accuracy": 0.0 if value in passing[seed] else 0.3,
              "delta_test_accuracy": 0.0} for seed in (0, 1) for value in (0.1, 0.2, 0.5)]
    autos = [{"model": "vit", "scenario": "class", "seed": seed, "chosen": 0.1, "attempts": [],
              "delta_forget_accuracy": 0.0, "delta_test_accuracy": 0.0} for seed in (0, 1)]
    summary = summarize(cells, autos, [], [0, 1], 2.0)
    (mean_window,) = summary["windows"]
    assert (mean_window["low"], mean_window["high"]) == (0.2, 0.2)
    assert [(w["seed"], w["low"], w["high"]) for w in summary["seed_windows"]] == [(0, 0.1, 0.2), (1, 0.2, 0.5)]
    assert [(a["inside"], a["inside_own"]) for a in summary["auto"]] == [(False, True), (False, False)]
    text = to_markdown(summary)
    assert "| vit | class | deepclean | 2 | top_fraction | 0.1 – 0.2 (2.0x) | 0.2 – 0.5 (2.5x) |" in text
    assert "| no | yes | —" in text and "| no | no | —" in text  # in window, in its seed's, s (none recorded)


def test_budget_windows_read_the_epochs_axis_per_fraction_and_skip_ssd():
    """0.1 passes at 2 and 8 epochs (not 4: a hole), 0.3 at 8 only, 0.05 never; SSD has no budget axis."""
    passing = {0.05: set(), 0.1: {2.0, 8.0}, 0.3: {8.0}}
    cells = [{"model": "resnet", "scenario": "noisy_labels", "method": "deepclean", "budget": budget,
              "param": "top_fraction", "seed": 0, "value": value, "delta_test_accuracy": 0.0,
              "delta_forget_accuracy": 0.0 if budget in passing[value] else 0.1}
             for value in passing for budget in (2.0, 4.0, 8.0)]
    cells.append({"model": "resnet", "scenario": "noisy_labels", "method": "ssd", "budget": None, "param": "alpha",
                  "seed": 0, "value": 10, "delta_forget_accuracy": 0.0, "delta_test_accuracy": 0.0})
    summary = summarize(cells, [], [], [0], 2.0)
    found = {(w["method"], w["value"]): (w["low"], w["high"], w["ratio"], w["failing_inside"])
             for w in summary["budget_windows"]}
    assert found == {("deepclean", 0.05): (None, None, None, []), ("deepclean", 0.1): (2.0, 8.0, 4.0, [4.0]),
                     ("deepclean", 0.3): (8.0, 8.0, 1.0, [])}
    text = to_markdown(summary)
    assert "| Model | Scenario | Method | top 0.05 | top 0.1 | top 0.3 |" in text
    assert "| resnet | noisy_labels | deepclean | none | 2 – 8 (4.0x), fails at 4 | 8 – 8 (1.0x) |" in text


ARGS = ["--sensitivity", "--quick", "--architectures", "vit", "--seeds", "0", "--scenarios", "class",
        "--sensitivity_fractions", "0.05", "0.15", "--sensitivity_epochs", "0.5", "--sensitivity_alphas", "3", "10",
        "--sensitivity_timing_repeats", "1", "--method_overrides", '{"deepclean_fast": {"max_steps": 4}}']


def test_the_auto_table_shows_unrecovered_attempts_and_the_refit():
    auto = {"model": "vit", "scenario": "noisy_labels", "seed": 0, "start": 0.1, "chosen": 0.1, "refit": 0.1,
            "attempts": [{"top_fraction": 0.1, "passed": False, "collapsed": False},
                         {"top_fraction": 0.5, "passed": False, "collapsed": True}],
            "delta_forget_accuracy": 0.03, "delta_test_accuracy": -0.02, "passes": False, "inside": False,
            "time_s": 9.0}
    text = to_markdown({"seeds": [0], "windows": [], "noise_floor": [], "auto": [auto], "fast_vs_ssd": [], "rows": []})
    assert "| 0.1 (no), 0.5 (not recovered); none verified, 0.1 fine-tuned again (closest) | 0.1 |" in text


def test_quick_sensitivity_writes_outputs_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "sens"
    assert bench_mod.run(ARGS + ["--output_dir", str(out)]) == 0
    for name in ("sensitivity.md", "sensitivity.json", "sensitivity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "sensitivity.json").read_text())
    methods = {(w["method"], w["param"]) for w in summary["windows"]}
    assert methods == {("deepclean", "top_fraction"), ("ssd", "alpha")}
    assert len(summary["rows"]) == 4 and len(summary["auto"]) == 1 and len(summary["fast_vs_ssd"]) == 1
    assert summary["fast_vs_ssd"][0]["time_ratio"] > 0
    # --method_overrides reach the fast preset's runs too (the quick mode adds its bounded Fisher sample)
    assert summary["fast_vs_ssd"][0]["settings"]["deepclean_fast"] == {"max_steps": 4, "fisher_max_samples": 48}
    auto = summary["auto"][0]
    # A whole auto run: its attempts end at the chosen fraction, and its own model is judged against gold.
    assert auto["attempts"] and auto["attempts"][-1]["top_fraction"] == auto["chosen"] and auto["kind"] == "class"
    assert isinstance(auto["passes"], bool) and isinstance(auto["delta_test_accuracy"], float)
    assert "## Passing windows" in (out / "sensitivity.md").read_text()
    # The noise floor: gold retrained on the same D_r with another seed, judged against gold.
    (floor,) = summary["noise_floor"]
    assert [p["seed"] for p in floor["per_seed"]] == summary["seeds"]
    assert isinstance(floor["delta_test_accuracy"], float) and isinstance(floor["passes_mean"], bool)
    assert "## Noise floor" in (out / "sensitivity.md").read_text()
    reseeded = sorted(out.glob(f"models/*/seed{summary['seeds'][0]}/gold_*_reseeded"))
    assert len(reseeded) == 1
    from hf_deepclean.training import read_train_summary

    assert read_train_summary(reseeded[0])["seed"] == summary["seeds"][0] + points_mod.RESEED_OFFSET

    def no_compute(*args, **kwargs):
        raise AssertionError("a cached point was recomputed")

    real_auto = points_mod.SensitivityGroup.auto
    for name in ("deepclean", "ssd", "auto", "fast_vs_ssd", "gold_reseeded"):
        monkeypatch.setattr(points_mod.SensitivityGroup, name, no_compute)
    monkeypatch.setattr(models_mod, "train_classifier", no_compute)
    (out / "sensitivity.md").unlink()
    assert bench_mod.run(ARGS + ["--output_dir", str(out)]) == 0
    assert json.loads((out / "sensitivity.json").read_text())["rows"] == summary["rows"]
    assert (out / "sensitivity.md").is_file()

    # A point computed with other method settings (here: the fast preset's run with 9 steps) is recomputed,
    # and only that one.
    (point,) = out.glob("sensitivity/vit/class/seed0/fast_vs_ssd_a*.json")
    stale = json.loads(point.read_text())
    assert stale["method_settings"]["deepclean_fast"]["max_steps"] == 4
    stale["method_settings"]["deepclean_fast"]["max_steps"] = 9
    point.write_text(json.dumps(stale))
    recomputed = []
    monkeypatch.setattr(points_mod.SensitivityGroup, "fast_vs_ssd", lambda self, *a: recomputed.append(a) or stale)
    assert bench_mod.run(ARGS + ["--output_dir", str(out)]) == 0
    assert len(recomputed) == 1
    assert json.loads(point.read_text())["method_settings"]["deepclean_fast"]["max_steps"] == 4

    # Settings for the auto run only (the no-gold budget rule): only the auto point is recomputed, and since its
    # validation half chose the epoch, it also reports test accuracy on the other half against gold's there.
    monkeypatch.setattr(points_mod.SensitivityGroup, "auto", real_auto)
    budget = '{"early_stopping_patience": 1, "num_train_epochs": 1, "eval_strategy": "steps", "eval_steps": 2}'
    assert bench_mod.run(ARGS + ["--output_dir", str(out), "--sensitivity_auto_overrides", budget]) == 0
    assert len(recomputed) == 1
    (auto,) = json.loads((out / "sensitivity.json").read_text())["auto"]
    assert auto["method_settings"]["early_stopping_patience"] == 1
    assert auto["heldout_size"] + auto["validation_size"] > auto["validation_size"] > 0
    assert auto["delta_heldout_test_accuracy"] == pytest.approx(
        auto["heldout_test_accuracy"] - auto["gold_heldout_test_accuracy"])
    assert 0 < auto["early_stopping_best_epoch"] <= auto["early_stopping_epochs_run"] <= 1
    assert isinstance(auto["passes_heldout"], bool) and "| passes held out |" in (out / "sensitivity.md").read_text()


def test_auto_overrides_must_be_a_json_object():
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_auto_overrides("{early_stopping_patience: 2")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        parse_auto_overrides("[2, 8]")
    assert parse_auto_overrides(None) == {}


def test_option_fields_in_maps_aliases_negations_and_equals_forms():
    from hf_deepclean.arguments import DataArguments, option_fields_in

    argv = ["--image_column_name", "img", "--no_freeze_batchnorm_stats", "--fisher_estimator=batch", "pos", "--nope"]
    assert option_fields_in(argv, [DataArguments, DeepCleanConfig]) == {
        "image_column", "freeze_batchnorm_stats", "fisher_estimator"}

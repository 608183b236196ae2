"""`hf-deepclean benchmark`: a --quick smoke run writes the three outputs and resumes without recomputing."""

import json
from types import SimpleNamespace

import pytest

from hf_deepclean.benchmark import harness
from hf_deepclean.benchmark import models as models_mod
from hf_deepclean.benchmark.cache import changed_settings, method_settings
from hf_deepclean.benchmark.summary import aggregate, to_markdown
from hf_deepclean.commands import benchmark as bench_mod

ARGS = ["--quick", "--scenarios", "class", "--architectures", "vit", "--seeds", "0", "--plot", "true"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench_mod.run(ARGS + ["--methods", "deepclean", "--output_dir", str(out)]) == 0
    return out


def test_quick_run_writes_markdown_json_plot_and_cells(first_run):
    out = first_run
    for name in ("benchmark.md", "benchmark.json", "benchmark.png", "benchmark_settings.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    summary = json.loads((out / "benchmark.json").read_text())
    (row,) = summary["rows"]
    assert (row["model"], row["scenario"], row["method"], row["seeds"]) == ("vit", "class", "deepclean", [0])
    for key in ("forget_accuracy", "delta_forget_accuracy", "test_accuracy", "delta_test_accuracy", "mia_efficacy",
                "delta_mia_efficacy", "time_s", "time_ratio", "gap"):
        assert row["stats"][key]["mean"] is not None, key
    cell = json.loads((out / "cells" / "vit" / "class" / "seed0" / "deepclean.json").read_text())
    assert cell["method"] == "deepclean" and cell["forget"]["labels"] == [3]
    assert cell["selection"]["selected_fraction"] == pytest.approx(0.15, abs=1e-3)
    assert cell["deltas"]["forget_accuracy"] == pytest.approx(
        cell["metrics"]["forget_accuracy"] - cell["gold"]["forget_accuracy"])
    assert cell["benchmark"]["time_ratio"] == pytest.approx(cell["benchmark"]["time_s"] / cell["gold"]["time_s"])
    markdown = (out / "benchmark.md").read_text()
    assert "## class — vit" in markdown and "| deepclean |" in markdown and "ΔAcc_Df" in markdown
    assert not (out / "_scratch").exists()
    assert (out / "models" / "vit" / "seed0" / "gold_class" / "model.safetensors").is_file()


def test_rerun_reuses_cells_and_cached_models(first_run, monkeypatch, capsys):
    before = (first_run / "cells" / "vit" / "class" / "seed0" / "deepclean.json").read_text()
    computed = []
    real_run_cell = harness.run_cell

    def counting_run_cell(ctx, scenario, method_name, *args, **kwargs):
        computed.append(method_name)
        return real_run_cell(ctx, scenario, method_name, *args, **kwargs)

    def no_training(*args, **kwargs):
        raise AssertionError("the original and gold models must come from the cache")

    monkeypatch.setattr(harness, "run_cell", counting_run_cell)
    monkeypatch.setattr(models_mod, "train_classifier", no_training)
    # the finished cell is skipped; a newly requested method is the only thing computed
    assert bench_mod.run(ARGS + ["--methods", "deepclean", "original", "--output_dir", str(first_run)]) == 0
    assert computed == ["original"]
    assert (first_run / "cells" / "vit" / "class" / "seed0" / "deepclean.json").read_text() == before
    summary = json.loads((first_run / "benchmark.json").read_text())
    assert [r["method"] for r in summary["rows"]] == ["deepclean", "original"]
    original = summary["rows"][1]["stats"]
    assert original["time_s"]["mean"] == 0.0
    assert "all 1 cells cached" not in capsys.readouterr().out  # one of the two cells was new


def test_rerun_recomputes_a_cell_whose_method_settings_changed(first_run, monkeypatch, capsys):
    """A cached cell records its method's effective settings; one computed under other defaults (an older version
    of the package, another preset) is recomputed, while one from before settings were recorded is reused."""
    cells = first_run / "cells" / "vit" / "class" / "seed0"
    stale = json.loads((cells / "deepclean.json").read_text())
    assert stale["method_settings"]["top_fraction"] == 0.15 and "output_dir" not in stale["method_settings"]
    stale["method_settings"]["top_fraction"] = 0.3
    (cells / "deepclean.json").write_text(json.dumps(stale))
    unrecorded = json.loads((cells / "original.json").read_text())
    del unrecorded["method_settings"]
    (cells / "original.json").write_text(json.dumps(unrecorded))
    computed = []
    real_run_cell = harness.run_cell

    def counting_run_cell(ctx, scenario, method_name, *args, **kwargs):
        computed.append(method_name)
        return real_run_cell(ctx, scenario, method_name, *args, **kwargs)

    monkeypatch.setattr(harness, "run_cell", counting_run_cell)
    assert bench_mod.run(ARGS + ["--methods", "deepclean", "original", "--output_dir", str(first_run)]) == 0
    assert computed == ["deepclean"]
    assert "recomputing seed0/deepclean.json: its method settings changed (top_fraction)" in capsys.readouterr().out
    assert json.loads((cells / "deepclean.json").read_text())["method_settings"]["top_fraction"] == 0.15


def test_method_settings_ignore_where_a_run_writes_and_see_a_changed_preset(tmp_path, monkeypatch):
    from hf_deepclean import config as config_mod
    from hf_deepclean.methods import METHODS

    fast = METHODS["deepclean_fast"]
    today = method_settings(fast.make_config(tmp_path / "a"))
    assert today == method_settings(fast.make_config(tmp_path / "b"))  # another output folder: same computation
    monkeypatch.setitem(config_mod.PRESETS, "fast", {**config_mod.PRESETS["fast"], "fisher_max_samples": 256})
    older = method_settings(fast.make_config(tmp_path / "a"))
    assert changed_settings(older, today) == ["fisher_max_samples"]
    assert changed_settings(None, today) == []  # written before settings were recorded: nothing to compare
    assert changed_settings({"ssd": {"alpha": 3}}, {"ssd": {"alpha": 10}}) == ["ssd.alpha"]
    assert changed_settings({"gone": 1}, {"new": 2}) == []  # a field only one version knows is not a change
    assert method_settings(METHODS["ssd"].make_config(alpha=7))["alpha"] == 7 and method_settings(None) is None


def test_rerun_with_other_settings_is_refused(first_run):
    from hf_deepclean.outputs import OutputDirError

    with pytest.raises(OutputDirError, match="forget_class"):
        bench_mod.run(ARGS + ["--methods", "deepclean", "--forget_class", "4", "--output_dir", str(first_run)])


def test_bad_names_are_clear_cli_errors(tmp_path, capsys):
    from hf_deepclean.cli import main

    assert main(["benchmark", "--methods", "deepclen", "--output_dir", str(tmp_path / "b")]) == 2
    assert "Unknown methods ['deepclen']" in capsys.readouterr().err
    assert main(["benchmark", "--scenarios", "classes", "--output_dir", str(tmp_path / "b")]) == 2
    assert "Unknown scenarios ['classes']" in capsys.readouterr().err
    assert main(["benchmark", "--method_overrides", '{"ssd": 3}', "--output_dir", str(tmp_path / "b")]) == 2
    assert "must map method names to settings" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _cell(method, seed, forget, gold_forget, test, gold_test, time_s):
    metrics = {"retain_accuracy": 0.99, "forget_accuracy": forget, "test_accuracy": test, "mia_efficacy": 0.5,
               "mia_loss_lr": 0.5}
    gold = {"retain_accuracy": 0.99, "forget_accuracy": gold_forget, "test_accuracy": gold_test, "mia_efficacy": 0.6,
            "mia_loss_lr": 0.5, "time_s": 10.0}
    return {
        "method": method, "scenario": "class", "metrics": metrics, "gold": gold,
        "deltas": {k: metrics[k] - gold[k] for k in metrics},
        "benchmark": {"model": "vit", "seed": seed, "time_s": time_s, "time_ratio": time_s / 10.0, "gold_time_s": 10.0},
    }


def test_aggregate_gives_mean_std_and_gap_over_seeds():
    cells = [_cell("deepclean", 0, 0.0, 0.0, 0.86, 0.87, 1.0), _cell("deepclean", 1, 0.02, 0.0, 0.88, 0.87, 2.0),
             _cell("finetune", 0, 0.3, 0.0, 0.85, 0.87, 3.0)]
    rows = aggregate(cells, ["finetune", "deepclean"])
    assert [r["method"] for r in rows] == ["finetune", "deepclean"]
    stats = rows[1]["stats"]
    assert stats["forget_accuracy"]["mean"] == pytest.approx(0.01)
    assert stats["forget_accuracy"]["std"] == pytest.approx(0.0141421, rel=1e-4)  # sample std over the 2 seeds
    assert stats["time_ratio"]["mean"] == pytest.approx(0.15)
    # gap = |dAcc_Df| + |dAcc_test| + |dMIA|, per seed, then averaged
    assert stats["gap"]["mean"] == pytest.approx(((0 + 0.01 + 0.1) + (0.02 + 0.01 + 0.1)) / 2)
    markdown = to_markdown(rows, SimpleNamespace(seeds=[0, 1], quick=False))
    assert "| deepclean | 99.0 ± 0.0 | 1.0 ± 1.4 | +1.0 ± 1.4 |" in markdown
    assert "(retrain: 10.0 s)" in markdown

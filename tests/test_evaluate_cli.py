"""``hf-deepclean evaluate`` end to end through the CLI dispatcher."""

from __future__ import annotations

import json
import shutil

import pytest

from _eval_models import FORGET_CLASS, trained_models
from hf_deepclean.cli import main
from hf_deepclean.evaluation import REPORT_JSON, REPORT_MARKDOWN, UnlearningReport
from hf_deepclean.outputs import INCOMPLETE_MARKER


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Copies of the trained models: an 'unlearned' one carrying an unlearn run's report, and a gold one."""
    models = trained_models()
    root = tmp_path_factory.mktemp("evaluate_cli")
    unlearned, gold = root / "unlearned", root / "gold"
    shutil.copytree(models.gold_dir, unlearned)
    shutil.copytree(models.gold_dir, gold)
    previous = UnlearningReport(
        method="ssd", forget={"size": 1, "fingerprint": "sha256:feed", "kind": "labels"},
        selection={"threshold": 4.0, "selected_fraction": 0.01, "num_selected": 42},
        time_s={"fisher": 1.0, "train": 2.0, "total": 3.0},
    )
    previous.save(unlearned)
    (gold / "train_summary.json").write_text(json.dumps({"train_time_s": 12.5}), encoding="utf-8")
    return {"unlearned": unlearned, "gold": gold, "original": models.original_dir, "root": root}


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_evaluate_writes_the_report_and_prints_the_table(folders, tmp_path, capsys):
    out = tmp_path / "report"
    before = _snapshot(folders["unlearned"])
    code = main([
        "evaluate", "--model_name_or_path", str(folders["unlearned"]), "--gold_model", str(folders["gold"]),
        "--original_model", str(folders["original"]), "--forget_labels", str(FORGET_CLASS),
        "--output_dir", str(out), "--retain_sample_size", "300", "--plots",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Metric | Original | Gold (retrained) | Unlearned (ssd) |" in printed and str(out) in printed
    assert sorted(p.name for p in out.iterdir()) == ["metrics_comparison.png", REPORT_JSON, REPORT_MARKDOWN]
    assert not (out / INCOMPLETE_MARKER).exists()
    assert _snapshot(folders["unlearned"]) == before  # the model folder is never touched

    data = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    assert data["method"] == "ssd" and data["scenario"] == "class"
    assert data["forget"]["labels"] == [FORGET_CLASS] and data["forget"]["fingerprint"] == "sha256:feed"
    assert data["selection"]["num_selected"] == 42 and data["time_s"]["total"] == 3.0
    assert data["gold"]["time_s"] == 12.5
    assert data["config"]["retain_evaluated"] == 300
    # the unlearned model is a copy of the gold model here: every delta is 0
    assert all(delta == 0 for delta in data["deltas"].values())
    assert data["original"]["forget_accuracy"] > data["gold"]["forget_accuracy"]
    assert (out / REPORT_MARKDOWN).read_text(encoding="utf-8") == UnlearningReport.load(out).to_markdown()


def test_evaluate_from_yaml_config_without_gold(folders, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model_name_or_path: {folders['original']}\nforget_fraction: 0.05\noutput_dir: {tmp_path / 'out'}\n"
        "retain_sample_size: 200\n",
        encoding="utf-8",
    )
    assert main(["evaluate", "--config", str(config)]) == 0
    data = json.loads((tmp_path / "out" / REPORT_JSON).read_text(encoding="utf-8"))
    assert data["gold"] is None and data["deltas"] == {} and data["scenario"] == "random"
    assert data["method"] == "deepclean" and data["forget"]["kind"] == "fraction"
    assert "Δ" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--forget_labels", "3"], "--output_dir"),
        (["--output_dir", "{unlearned}", "--forget_labels", "3"], "input model folder"),
        (["--output_dir", "{root}/new"], "Say what was forgotten"),
        (["--output_dir", "{root}/new2", "--forget_labels", "3", "--forget_fraction", "0.1"], "exactly one"),
    ],
)
def test_evaluate_user_errors(folders, extra, message, capsys):
    extra = [token.format(**{k: str(v) for k, v in folders.items()}) for token in extra]
    code = main(["evaluate", "--model_name_or_path", str(folders["unlearned"]), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (folders["root"] / "new").exists()


def test_evaluate_needs_a_model(tmp_path, capsys):
    assert main(["evaluate", "--forget_labels", "3", "--output_dir", str(tmp_path / "o")]) == 2
    assert "--model_name_or_path is required" in capsys.readouterr().err

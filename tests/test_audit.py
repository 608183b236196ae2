"""``hf-deepclean audit``: the summary on constructed populations, the report and card with and without an audit,
the checks of --audit_dir, and (slow) the audit end to end through the CLI: every key, resume, a refused folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_deepclean.audit import (
    AUDIT_JSON,
    AUDIT_KEYS,
    SETTINGS_FILE,
    Population,
    audit_record,
    summarize,
    summary_markdown,
    weights_sha256,
)
from hf_deepclean.cli import main
from hf_deepclean.errors import DataError
from hf_deepclean.evaluation import REPORT_JSON, UnlearningReport
from hf_deepclean.modelcard import record_from_report, render_model_card

FORGET = {"kind": "labels", "size": 5, "labels": [3], "rows_sha256": "ab" * 32}


def _population(confidences, accuracy=0.9, seed0=0):
    n = confidences.shape[0]
    return Population(seeds=list(range(seed0, seed0 + n)), confidences=confidences,
                      accuracies={s: np.full(n, accuracy) for s in ("retain", "forget", "test")},
                      times=np.linspace(1.0, 2.0, n))


def test_a_population_against_itself_scores_1_and_a_separated_one_0():
    rng = np.random.default_rng(0)
    retrained = _population(rng.normal(-5, 1, (8, 20)))
    same = summarize(retrained, retrained, method="retrain")
    assert same["forget_score"] == 1.0 and same["final_score"] == 1.0
    assert same["forget_quality"]["num_separated"] == 0
    separated = summarize(_population(retrained.confidences + 100, accuracy=0.45), retrained, method="original")
    assert separated["forget_score"] == 0.0 and separated["final_score"] == 0.0
    assert separated["forget_quality"]["num_separated"] == 20
    assert all(row["epsilon"] == "inf" for row in separated["worst_examples"])
    assert separated["accuracy_ratios"] == {"retain": 0.5, "test": 0.5}
    json.dumps(separated, allow_nan=False)  # JSON-safe as written


def test_the_reference_is_retrains_among_themselves_at_half_n_and_the_unlearned_half_against_the_same():
    rng = np.random.default_rng(1)
    retrained = _population(rng.normal(0, 1, (12, 40)))
    unlearned = _population(rng.normal(0, 1, (12, 40)) + 3.0)
    summary = summarize(unlearned, retrained, method="deepclean")
    ref = summary["reference"]
    assert ref["num_models"] == 6 and ref["retrained_first_seeds"] == "0-5" and ref["retrained_second_seeds"] == "6-11"
    assert ref["retrained_vs_retrained"]["num_models"] == 6
    assert ref["unlearned_vs_retrained"]["score"] < ref["retrained_vs_retrained"]["score"]
    assert summary["forget_score"] < ref["retrained_vs_retrained"]["score"]
    text = summary["statement"]
    assert text.startswith(f"F = {summary['forget_score']:.3f} at N = 12 (deepclean")
    assert f"against {ref['retrained_vs_retrained']['score']:.3f} for retrains among themselves (N = 6 vs 6" in text
    assert "Like for like at N = 6 vs 6" in text
    markdown = summary_markdown(summary)
    assert text in markdown and "| F, retrains vs retrains (reference) |" in markdown


def test_below_six_models_the_reference_says_why_it_is_missing():
    rng = np.random.default_rng(2)
    summary = summarize(_population(rng.normal(0, 1, (4, 10))), _population(rng.normal(0, 1, (4, 10))))
    assert summary["reference"]["retrained_vs_retrained"] is None
    assert "N >= 6" in summary["reference"]["reason"] and "no reference" in summary["statement"]
    assert "(reference)" not in summary_markdown(summary)


def _audit_folder(tmp_path, original=None, method="deepclean"):
    rng = np.random.default_rng(3)
    summary = summarize(_population(rng.normal(0, 1, (6, 5))), _population(rng.normal(0, 1, (6, 5))), method=method)
    settings = {"forget": FORGET, "method": {"name": method, "overrides": {"top_fraction": 0.2}},
                "original_weights_sha256": weights_sha256(original) if original else None}
    folder = tmp_path / "audit"
    folder.mkdir()
    audit = {"settings": settings, "retain_sample": {"size": 10, "of": 10, "seed": 0}, **summary}
    (folder / AUDIT_JSON).write_text(json.dumps(audit), encoding="utf-8")
    return folder, summary


def test_the_report_and_the_card_carry_the_audit(tmp_path):
    folder, summary = _audit_folder(tmp_path)
    record = audit_record(folder, forget=FORGET, method="deepclean")
    assert record["statement"] == summary["statement"] and "values" not in record["accuracy"]["unlearned"]["test"]
    report = UnlearningReport(method="deepclean", metrics={"test_accuracy": 0.9}, gold={"test_accuracy": 0.91},
                              audit=record)
    loaded = UnlearningReport.from_dict(json.loads(report.to_json()))
    assert loaded.audit == json.loads(json.dumps(record))
    assert summary["statement"] in loaded.to_markdown() and "one retrained model" not in loaded.to_markdown()
    card = str(render_model_card(record_from_report(loaded, base_model="runs/original", dataset="digits")))
    section = card.split("### Evidence against a population of retrains")[1].split("###")[0]
    assert summary["statement"] in section and "| F, retrains among themselves (reference) |" in section
    assert "| Audited setting: top_fraction | 0.2 |" in section


def test_without_an_audit_they_say_the_evidence_is_one_retrained_model():
    report = UnlearningReport(method="deepclean", metrics={"test_accuracy": 0.9}, gold={"test_accuracy": 0.91})
    assert report.to_dict()["audit"] is None
    markdown = report.to_markdown()
    assert "compare with one retrained model" in markdown and "`hf-deepclean audit`" in markdown
    card = str(render_model_card(record_from_report(report, dataset="digits")))
    section = card.split("### Evidence against a population of retrains")[1].split("###")[0]
    assert "a comparison with one retrained model" in section and "`hf-deepclean audit`" in section


def test_an_audit_of_another_forget_set_method_or_original_is_refused_in_one_line(tmp_path):
    original = tmp_path / "original"
    original.mkdir()
    (original / "model.safetensors").write_bytes(b"weights")
    folder, _ = _audit_folder(tmp_path, original=original)
    assert audit_record(folder, forget=FORGET, method="deepclean", original=original)["num_models"] == 6
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.safetensors").write_bytes(b"other weights")
    cases = [({"forget": {**FORGET, "labels": [4]}}, "audited another forget set (labels [3] there, [4] here)"),
             ({"method": "ssd"}, "audited the method deepclean, not ssd"),
             ({"original": tmp_path / "other"}, "audited another original model"),
             ({"folder": tmp_path}, "holds no audit.json")]
    for change, message in cases:
        kwargs = {"forget": FORGET, "method": "deepclean", "original": original, **change}
        with pytest.raises(DataError) as err:
            audit_record(kwargs.pop("folder", folder), **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_audit_end_to_end_resumes_and_refuses_other_settings(tmp_path, capsys):
    original = tmp_path / "original"
    assert main(["train", "--max_steps", "3", "--output_dir", str(original)]) == 0
    out = tmp_path / "audit"
    argv = ["audit", "--model_name_or_path", str(original), "--forget_labels", "3", "--num_models", "4",
            "--method_overrides", '{"max_steps": 2, "fisher_max_samples": 64}', "--retain_sample_size", "300",
            "--output_dir", str(out)]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "estimated total: 4 x " in printed and "F = " in printed
    audit = json.loads((out / AUDIT_JSON).read_text(encoding="utf-8"))
    assert set(AUDIT_KEYS) <= set(audit), set(AUDIT_KEYS) - set(audit)
    assert audit["num_models"] == 4 and audit["retain_sample"] == {"size": 300, "of": 1291, "seed": 0}
    assert audit["settings"]["retrain"]["source"] == "train_summary.json"
    assert audit["settings"]["retrain"]["config"]["max_steps"] == 3  # the original's recipe
    assert len(audit["forget_quality"]["epsilons"]) == audit["num_forget_examples"] == 146
    assert {p.name for p in out.iterdir()} >= {"audit.md", SETTINGS_FILE, "retrain", "unlearn", *audit["plots"]}
    assert len(audit["plots"]) == 2 and not (out / "_INCOMPLETE").exists()

    # A killed audit: two models missing and the folder marked unfinished. Only those two are made again.
    (out / "retrain" / "seed_00002.npz").unlink()
    (out / "unlearn" / "seed_00003.npz").unlink()
    (out / "_INCOMPLETE").write_text("killed\n", encoding="utf-8")
    before = _snapshot(out)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "6 of 8 models already done" in printed
    assert printed.count("retrain seed ") == 1 and printed.count("deepclean seed ") == 1
    after = _snapshot(out)
    kept = [f"{kind}/seed_{s:05d}.npz" for kind, seeds in (("retrain", (0, 1, 3)), ("unlearn", (0, 1, 2)))
            for s in seeds]
    assert all(after[name] == before[name] for name in kept)
    assert {"retrain/seed_00002.npz", "unlearn/seed_00003.npz"} <= set(after) and "_INCOMPLETE" not in after

    # Other settings: refused in one line, nothing touched.
    before = _snapshot(out)
    at = argv.index("--method_overrides") + 1
    other = [*argv[:at], '{"max_steps": 3, "fisher_max_samples": 64}', *argv[at + 1:]]
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --output_dir") and [line for line in err if "error" in line] == err[-1:]
    assert "holds an audit made with other settings" in err[-1] and "method.overrides.max_steps 2 there, 3 here" in err[-1]
    assert _snapshot(out) == before

    # evaluate --audit_dir carries it into the report; another forget set is refused before anything is written.
    report_dir = tmp_path / "report"
    common = ["evaluate", "--model_name_or_path", str(original), "--original_model", str(original),
              "--retain_sample_size", "200", "--audit_dir", str(out), "--output_dir", str(report_dir)]
    assert main([*common, "--forget_labels", "4"]) == 2
    assert "audited another forget set" in capsys.readouterr().err and not report_dir.exists()
    assert main([*common, "--forget_labels", "3"]) == 0
    report = json.loads((report_dir / REPORT_JSON).read_text(encoding="utf-8"))
    assert report["audit"]["statement"] == audit["statement"] and report["audit"]["num_models"] == 4

    # unlearn --audit_dir: the card carries it.
    unlearned = tmp_path / "unlearned"
    assert main(["unlearn", "--model_name_or_path", str(original), "--forget_labels", "3", "--top_fraction", "0.15",
                 "--max_steps", "2", "--fisher_max_samples", "64", "--plots", "false", "--audit_dir", str(out),
                 "--output_dir", str(unlearned)]) == 0
    card = (unlearned / "README.md").read_text(encoding="utf-8")
    assert audit["statement"] in card.split("### Evidence against a population of retrains")[1]

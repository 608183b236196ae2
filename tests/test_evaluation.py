"""Per-split outputs, evaluate_unlearning end to end on tiny trained models, and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from _eval_models import FORGET_CLASS, trained_models
from hf_deepclean.evaluation import (
    REPORT_JSON,
    REPORT_MARKDOWN,
    UnlearningReport,
    collect_outputs,
    evaluate_unlearning,
)
from hf_deepclean.forget import ForgetSpec, split_forget_retain
from hf_deepclean.images import collate_fn, with_image_transform
from hf_deepclean.training import load_classifier

METRIC_KEYS = ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_loss_lr", "mia_efficacy")


@pytest.fixture(scope="module")
def models():
    return trained_models()


@pytest.fixture(scope="module")
def small_test(digits):
    return digits["test"].select(range(50))


@pytest.fixture(scope="module")
def untrained():
    return load_classifier(None, num_labels=10, architecture="resnet", seed=1)


# ----------------------------------------------------------------------------------------- collect_outputs


def test_outputs_match_a_manual_forward_pass(untrained, small_test, image_processor):
    untrained.train()  # collect_outputs must switch to eval (BatchNorm) and back
    out = collect_outputs(untrained, small_test, image_processor=image_processor, batch_size=16)
    assert untrained.training
    batch = collate_fn([with_image_transform(small_test, image_processor)[i] for i in range(len(small_test))])
    untrained.eval()
    with torch.no_grad():
        logits = untrained(pixel_values=batch["pixel_values"]).logits.double()
    untrained.train()
    probs = logits.softmax(-1)
    losses = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    np.testing.assert_allclose(out.losses, losses.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.confidences, probs.max(-1).values.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.entropies, -(probs * probs.log()).sum(-1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.true_probs, np.exp(-out.losses), rtol=1e-4)
    np.testing.assert_array_equal(out.labels, batch["labels"].numpy())
    np.testing.assert_array_equal(out.predictions, logits.argmax(-1).numpy())
    assert out.logits.dtype == np.float32 and out.logits.shape == (50, logits.shape[1])
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.subset([3, 1]).logits, out.logits[[3, 1]])
    assert out.accuracy == pytest.approx(float((out.predictions == out.labels).mean()))
    assert len(out) == 50 and out.losses.dtype == np.float64 and out.labels.dtype == np.int64


def test_outputs_from_transformed_dataset_dataloader_and_accelerator(untrained, small_test, image_processor):
    from accelerate import Accelerator

    raw = collect_outputs(untrained, small_test, image_processor=image_processor, batch_size=16)
    transformed = with_image_transform(small_test, image_processor)
    loader = torch.utils.data.DataLoader(transformed, batch_size=7, collate_fn=collate_fn)
    accelerated = collect_outputs(untrained, small_test, image_processor=image_processor, batch_size=16,
                                  accelerator=Accelerator(cpu=True))
    for other in (collect_outputs(untrained, transformed, batch_size=9), collect_outputs(untrained, loader), accelerated):
        np.testing.assert_allclose(other.losses, raw.losses, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(other.labels, raw.labels)


def test_in_memory_transforms_once_unless_the_split_is_too_large(small_test, image_processor):
    from hf_deepclean.images import TensorImageDataset, in_memory

    held = in_memory(small_test, image_processor)
    assert isinstance(held, TensorImageDataset) and len(held) == len(small_test)
    lazy = with_image_transform(small_test, image_processor)
    torch.testing.assert_close(held[7]["pixel_values"], lazy[7]["pixel_values"], rtol=0, atol=0)
    assert in_memory(held, image_processor) is held
    one_image = held.pixel_values[0].numel() * 4
    assert in_memory(small_test, image_processor, limit_bytes=one_image * (len(small_test) - 1)) is small_test


def test_raw_images_without_processor_is_a_clear_error(untrained, small_test):
    with pytest.raises(ValueError, match="image_processor"):
        collect_outputs(untrained, small_test)


def test_empty_split_gives_empty_outputs(untrained, small_test, image_processor):
    out = collect_outputs(untrained, small_test.select([]), image_processor=image_processor)
    assert len(out) == 0 and math.isnan(out.accuracy)


# ----------------------------------------------------------------------------------------- evaluate_unlearning


@pytest.fixture(scope="module")
def class_report(models):
    splits = {"retain": models.retain, "forget": models.forget, "test": models.test}
    # The gold model stands in for a perfectly unlearned model: its deltas to gold are exactly 0.
    return evaluate_unlearning(
        models.gold, splits, gold_model=models.gold, original_model=models.original,
        image_processor=models.processor, forget_labels=[FORGET_CLASS], gold_time_s=models.gold_time_s,
        time_s={"fisher": 0.5, "train": 1.5}, selection={"threshold": 7.5, "selected_fraction": 0.02, "num_selected": 99},
        forget_info={"fingerprint": "sha256:abc"},
    )


def test_class_forgetting_metrics(class_report, models):
    report = class_report
    for column in (report.metrics, report.gold, report.original):
        assert set(METRIC_KEYS) <= set(column)
        assert {"test_forget_class_accuracy", "test_other_accuracy"} <= set(column)
    # the original saw class 3, the gold model never did
    assert report.original["forget_accuracy"] > 0.9 and report.original["test_forget_class_accuracy"] > 0.8
    assert report.gold["forget_accuracy"] < 0.05 and report.gold["test_forget_class_accuracy"] < 0.05
    assert report.gold["test_other_accuracy"] > 0.85 and report.gold["retain_accuracy"] > 0.9
    assert report.gold["mia_efficacy"] > report.original["mia_efficacy"] + 0.5
    assert all(v == 0 for v in report.deltas.values())
    accuracy_keys = ("retain_accuracy", "forget_accuracy", "test_accuracy", "test_forget_class_accuracy",
                     "test_other_accuracy")
    assert report.delta_intervals == {key: [0.0, 0.0] for key in accuracy_keys}  # a model against itself
    assert report.config["delta_intervals"] == {"method": "paired bootstrap over the evaluated samples",
                                                "confidence": 0.95, "resamples": 10000}
    assert report.gold["time_s"] == models.gold_time_s
    assert report.time_s == {"fisher": 0.5, "train": 1.5, "total": 2.0}
    assert report.scenario == "class"
    assert report.forget == {"size": len(models.forget), "labels": [FORGET_CLASS], "fingerprint": "sha256:abc", "kind": "labels"}


def test_class_forgetting_attack_samples_and_noisy_note(class_report, models):
    n_class_test = int(np.sum(np.asarray(models.test["label"]) == FORGET_CLASS))
    loss_lr = class_report.mia["gold"]["loss_lr"]
    # non-members of the loss attack: only the test images of the forgotten class (~37, too few)
    assert loss_lr["n_test_available"] == n_class_test
    assert loss_lr["n_per_class"] == min(n_class_test, len(models.forget))
    assert loss_lr["noisy"] is True
    efficacy = class_report.mia["gold"]["efficacy"]
    assert efficacy["n_test_available"] == len(models.test) - n_class_test
    assert efficacy["n_forget"] == len(models.forget)
    assert set(class_report.mia) == {"unlearned", "gold", "original"}
    assert any("noisy" in note and str(loss_lr["n_per_class"]) in note for note in class_report.notes)


def test_random_forgetting_and_retain_subsample(models):
    splits = split_forget_retain(models.train, ForgetSpec(fraction=0.1, seed=0))
    report = evaluate_unlearning(
        models.original, {"retain": splits["retain"], "forget": splits["forget"], "test": models.test},
        gold_model=models.gold, image_processor=models.processor, time_s=3.0, retain_sample_size=100,
        method="finetune",
    )
    assert report.original is None and report.scenario is None and report.method == "finetune"
    assert "test_forget_class_accuracy" not in report.metrics
    assert report.config["retain_evaluated"] == 100 and report.config["retain_size"] == len(splits["retain"])
    assert report.mia["unlearned"]["efficacy"]["n_retain_available"] == 100
    assert report.mia["unlearned"]["loss_lr"]["n_test_available"] == len(models.test)
    assert report.time_s["total"] == 3.0
    for key, delta in report.deltas.items():
        assert delta == pytest.approx(report.metrics[key] - report.gold[key])
    assert set(report.delta_intervals) == {"retain_accuracy", "forget_accuracy", "test_accuracy"}
    for key, (low, high) in report.delta_intervals.items():
        assert low <= report.deltas[key] <= high
    assert report.delta_intervals["test_accuracy"][0] < report.delta_intervals["test_accuracy"][1]  # they differ
    with pytest.raises(ValueError, match="missing"):
        evaluate_unlearning(models.gold, {"retain": splits["retain"], "test": models.test})


# ----------------------------------------------------------------------------------------- the report


def test_report_dict_has_the_design_keys_and_is_strict_json(class_report):
    data = class_report.to_dict()
    for key in ("method", "scenario", "forget", "metrics", "gold", "original", "deltas", "selection", "time_s", "mia"):
        assert key in data
    assert set(data["forget"]) >= {"size", "labels", "fingerprint"}
    assert set(data["selection"]) >= {"threshold", "selected_fraction", "num_selected"}
    assert set(data["time_s"]) == {"fisher", "train", "total"}
    assert "time_s" in data["gold"] and set(METRIC_KEYS) <= set(data["deltas"])
    json.dumps(data, allow_nan=False)
    assert dict(class_report) == data  # the hub's record_from_report(report) reads it as a mapping


def test_report_markdown_is_the_paper_table(class_report):
    text = class_report.to_markdown()
    header = next(line for line in text.splitlines() if line.startswith("| Metric"))
    assert header == "| Metric | Original | Gold (retrained) | Unlearned (deepclean) |"
    for row in ("Acc_Dr", "Acc_Df", "ΔAcc_Df", "Acc_test", "ΔAcc_test", "MIA (loss LR)", "ΔMIA (loss LR)",
                "MIA-efficacy", "ΔMIA-efficacy", "time (s)", "Acc_test (forgotten classes)", "Acc_test (other classes)"):
        assert f"| {row} |" in text
    forget_row = next(line for line in text.splitlines() if line.startswith("| Acc_Df |"))
    assert forget_row.split("|")[3].strip() == f"{100 * class_report.gold['forget_accuracy']:.2f}"
    assert "| time (s) | — | " in text and "| 2.0 |" in text
    assert "noisy" in text and "Weights updated: 2.0000% (99) at gamma = 7.5" in text


def test_report_save_load_roundtrip_and_nan(tmp_path):
    report = UnlearningReport(
        method="ssd", scenario="random", forget={"size": 10, "labels": None, "fingerprint": None},
        metrics={"retain_accuracy": np.float32(0.5), "forget_accuracy": float("nan"), "test_accuracy": 0.4,
                 "mia_loss_lr": 0.5, "mia_efficacy": 0.1},
    )
    json_path, md_path = report.save(tmp_path / "out")
    assert json_path.name == REPORT_JSON and md_path.name == REPORT_MARKDOWN
    loaded = UnlearningReport.load(tmp_path / "out")
    assert loaded.metrics["forget_accuracy"] is None and loaded.metrics["retain_accuracy"] == 0.5
    assert UnlearningReport.load(json_path).to_dict() == loaded.to_dict()
    assert "ΔAcc_Df" not in md_path.read_text(encoding="utf-8")  # no gold, no deltas
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [REPORT_JSON, REPORT_MARKDOWN]
    with pytest.raises(FileNotFoundError, match="hf-deepclean evaluate"):
        UnlearningReport.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an unlearning report"):
        UnlearningReport.load(tmp_path / "bad.json")


def test_selection_from_a_mask_object():
    from types import SimpleNamespace

    from hf_deepclean.evaluation.core import _selection_dict

    mask = SimpleNamespace(selected_fraction=0.25, num_selected=5, threshold=None, top_fraction=0.25)
    assert _selection_dict(mask) == {"threshold": None, "top_fraction": 0.25, "selected_fraction": 0.25, "num_selected": 5}


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_cpu_processes_gather_every_sample_once(tmp_path):
    """37 samples, batch 4, 2 processes: gather_for_metrics must drop the padded duplicates."""
    import _eval_dist_worker as worker
    from _two_processes import run_two_cpu_processes

    out = tmp_path / "outputs.npz"
    run_two_cpu_processes(worker.__file__, str(out))
    distributed, single = np.load(out), worker.compute()
    np.testing.assert_array_equal(distributed["labels"], single.labels)
    np.testing.assert_array_equal(distributed["predictions"], single.predictions)
    np.testing.assert_allclose(distributed["losses"], single.losses, rtol=1e-5, atol=1e-6)


def test_dataloader_splits_count_samples_not_batches(untrained, small_test, image_processor):
    loader = torch.utils.data.DataLoader(with_image_transform(small_test, image_processor), batch_size=8,
                                         collate_fn=collate_fn)
    report = evaluate_unlearning(untrained, {"retain": loader, "forget": loader, "test": loader})
    assert report.forget["size"] == 50 and report.config["retain_evaluated"] == 50
    with pytest.raises(ValueError, match="DataLoader"):
        evaluate_unlearning(untrained, {"retain": loader, "forget": loader, "test": loader}, retain_sample_size=10)


def test_a_retain_accuracy_drop_without_a_gold_model_is_said(models, caplog):
    """issue 23: without a gold model a 13-point retain-accuracy drop passed without a word."""
    from hf_deepclean.training import load_classifier

    damaged = load_classifier(None, num_labels=10, architecture="resnet", seed=1)  # untrained: ~chance on D_r
    splits = {"retain": models.retain, "forget": models.forget, "test": models.test}
    with caplog.at_level("WARNING", logger="hf_deepclean.evaluation.core"):
        report = evaluate_unlearning(damaged, splits, original_model=models.original, image_processor=models.processor)
    (note,) = [n for n in report.notes if "no gold model says" in n]
    assert "points under the original's" in note and "--gold_model" in note and note in caplog.text
    with_gold = evaluate_unlearning(damaged, splits, original_model=models.original, gold_model=models.gold,
                                    image_processor=models.processor)
    assert not [n for n in with_gold.notes if "no gold model says" in n]  # the deltas to gold say it
    fine = evaluate_unlearning(models.original, splits, original_model=models.original, image_processor=models.processor)
    assert not [n for n in fine.notes if "no gold model says" in n]

import copy

import pytest
import torch

from _eval_models import FORGET_CLASS, trained_models
from hf_deepclean.auto import (
    choose_top_fraction,
    forget_kind,
    is_class_forgetting,
    kept_validation_accuracy,
    next_fraction,
    verify_forgetting,
)
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.images import collate_fn, with_image_transform
from hf_deepclean.sweep import reset_sweep, sweep_markdown
from hf_deepclean.trainer import DeepCleanTrainer


@pytest.fixture(scope="module")
def setup():
    m = trained_models()
    model = copy.deepcopy(m.original)
    fishers = [fisher_diagonal(model, with_image_transform(s, m.processor), collate_fn=collate_fn, show_progress=False)
               for s in (m.forget, m.retain)]
    validation = m.test.select(range(0, len(m.test), 2))
    return m, model, fishers, validation


def test_reset_sweep_is_monotone_and_restores_the_model(setup):
    m, model, (ff, fr), validation = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = DeepCleanConfig(output_dir="unused", top_fraction="auto")
    rows = reset_sweep(model, ff, fr, {"forget": m.forget, "retain": m.retain, "validation": validation}, config,
                       fractions=[0.001, 0.05, 0.3], image_processor=m.processor, retain_sample_size=200)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert [r["fraction"] for r in rows] == [0.001, 0.05, 0.3]
    assert rows[0]["forget_accuracy"] > 0.8  # resetting almost nothing forgets nothing
    assert rows[-1]["forget_accuracy"] <= rows[0]["forget_accuracy"]
    assert all(0 <= r["mia_loss_lr"] <= 1 for r in rows)
    assert "Reset-only sweep" in sweep_markdown(rows, validation_source="half the test split")


def test_choose_top_fraction_rules():
    rows = [
        {"fraction": 0.01, "forget_accuracy": 0.9, "retain_accuracy": 0.99, "mia_loss_lr": 0.70},
        {"fraction": 0.05, "forget_accuracy": 0.05, "retain_accuracy": 0.95, "mia_loss_lr": 0.53},
        {"fraction": 0.1, "forget_accuracy": 0.0, "retain_accuracy": 0.40, "mia_loss_lr": 0.50},
    ]
    assert choose_top_fraction(rows, kind="class", num_classes=10)[0] == 0.05
    assert choose_top_fraction(rows, kind="samples", num_classes=10, mia_margin=0.05)[0] == 0.05
    assert choose_top_fraction(rows, kind="samples", num_classes=10, mia_margin=0.01)[0] == 0.1
    fraction, reason = choose_top_fraction(rows[:1], kind="class", num_classes=10)
    assert fraction == 0.01 and "no swept fraction met the criterion" in reason


def test_choose_top_fraction_keeps_a_margin_for_the_fine_tune():
    rows = [
        {"fraction": f, "forget_accuracy": acc, "retain_accuracy": retain, "mia_loss_lr": 0.5}
        for f, acc, retain in ((0.02, 0.5, 0.99), (0.05, 0.0, 0.97), (0.1, 0.0, 0.9), (0.2, 0.0, 0.6), (0.3, 0.0, 0.3))
    ]
    assert choose_top_fraction(rows, kind="class", num_classes=10)[0] == 0.05  # no margin by default
    fraction, reason = choose_top_fraction(rows, kind="class", num_classes=10, margin_steps=1)
    assert fraction == 0.1 and "margin of 1 swept step" in reason
    assert choose_top_fraction(rows, kind="class", num_classes=10, margin_steps=2)[0] == 0.2
    # The margin never crosses the retain floor.
    assert choose_top_fraction(rows, kind="class", num_classes=10, margin_steps=5)[0] == 0.2


def test_noisy_labels_are_judged_by_agreement_with_the_wrong_labels_not_by_mia():
    # A model that never saw wrong labels gives them high losses: MIA far from 0.5 (digits gold: 0.97) is expected.
    rows = [
        {"fraction": 0.05, "forget_accuracy": 0.40, "retain_accuracy": 0.99, "mia_loss_lr": 0.50},
        {"fraction": 0.1, "forget_accuracy": 0.08, "retain_accuracy": 0.90, "mia_loss_lr": 0.95},
    ]
    assert choose_top_fraction(rows, kind="noisy_labels", num_classes=10)[0] == 0.1
    assert choose_top_fraction(rows, kind="samples", num_classes=10)[0] == 0.05
    with pytest.raises(ValueError, match="kind='typo'"):
        choose_top_fraction(rows, kind="typo", num_classes=10)


def _failed(*pairs, bound=0.02):
    return [{"top_fraction": f, "measure": m, "bound": bound} for f, m in pairs]


def test_the_first_retry_is_the_next_larger_swept_fraction():
    fractions = [0.3, 0.01, 0.05, 0.1, 0.2, 0.5]
    assert next_fraction(fractions, _failed((0.05, 0.9))) == 0.1
    assert next_fraction(fractions, _failed((0.5, 0.9))) is None
    with pytest.raises(ValueError, match="failed attempt"):
        next_fraction(fractions, [])


def test_later_retries_aim_where_the_power_law_through_the_last_two_attempts_meets_the_bound():
    fractions = [0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]
    # A measure falling as fraction^-1 from 0.4 at 0.01: 0.2 at 0.02, so the bound 0.02 is met at 0.2 (not 0.05).
    assert next_fraction(fractions, _failed((0.01, 0.4), (0.02, 0.2))) == 0.2
    # The digits ViT's wrong labels (seed 0): 5.6 % at 0.1, 4.2 % at 0.15 -> the line meets 2 % at ~0.43 -> 0.5.
    assert next_fraction(fractions, _failed((0.1, 0.056), (0.15, 0.042))) == 0.5
    # Beyond the largest swept fraction: the largest.
    assert next_fraction(fractions, _failed((0.005, 0.9), (0.01, 0.89))) == 0.5
    # Almost there: the aim falls just past the last fraction, so the next swept one.
    assert next_fraction(fractions, _failed((0.05, 0.03), (0.1, 0.021))) == 0.15
    # Only the last two attempts count.
    assert next_fraction(fractions, _failed((0.005, 0.9), (0.01, 0.4), (0.02, 0.2))) == 0.2


def test_without_progress_retries_jump_to_the_largest_fraction_and_a_zero_bound_steps():
    fractions = [0.01, 0.02, 0.05, 0.1, 0.2]
    # The limit of a flattening line: it meets the bound ever further out.
    assert next_fraction(fractions, _failed((0.01, 0.05), (0.02, 0.06))) == 0.2  # the measure rose
    assert next_fraction(fractions, _failed((0.01, 0.05), (0.02, 0.05))) == 0.2  # flat
    assert next_fraction(fractions, _failed((0.01, 0.05), (0.02, 0.04), bound=0.0)) == 0.05


def test_class_forgetting_detection(setup):
    m = setup[0]
    assert is_class_forgetting(m.forget, m.retain)
    assert not is_class_forgetting(m.retain.select(range(10)), m.retain)
    assert forget_kind(m.forget, m.retain) == "class"
    assert forget_kind(m.retain.select(range(10)), m.retain) == "samples"
    assert forget_kind(m.forget, m.retain, "noisy_labels") == "noisy_labels"


def test_verify_forgetting_fails_the_original_and_passes_the_gold_model(setup):
    m, _, _, validation = setup
    original = verify_forgetting(m.original, with_image_transform(m.forget, m.processor),
                                 with_image_transform(validation, m.processor), kind="class")
    gold = verify_forgetting(m.gold, with_image_transform(m.forget, m.processor),
                             with_image_transform(validation, m.processor), kind="class")
    assert not original["passed"] and original["forget_accuracy"] > 0.5
    assert gold["passed"] and gold["forget_accuracy"] == 0.0
    assert "<= 0.02" in gold["reason"]
    assert (gold["measure"], gold["bound"]) == (gold["forget_accuracy"], 0.02)
    samples = verify_forgetting(m.gold, with_image_transform(m.forget, m.processor),
                                with_image_transform(validation, m.processor), kind="samples", mia_margin=0.05)
    assert (samples["measure"], samples["bound"]) == (abs(samples["mia_loss_lr"] - 0.5), 0.05)


def _predicting_one_class(model, label: int):
    """A copy of ``model`` whose classifier always answers ``label``: it 'forgets' every other class."""
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.classifier[-1].weight.zero_()
        broken.classifier[-1].bias.fill_(-10.0)
        broken.classifier[-1].bias[label] = 10.0
    return broken


def test_verification_does_not_accept_a_collapsed_model(setup):
    m, _, _, validation = setup
    forget, val = with_image_transform(m.forget, m.processor), with_image_transform(validation, m.processor)
    retain = with_image_transform(m.retain, m.processor)
    other = (int(FORGET_CLASS) + 1) % 10
    broken = _predicting_one_class(m.gold, other)
    fooled = verify_forgetting(broken, forget, val, kind="class")
    assert fooled["passed"] and fooled["forget_accuracy"] == 0.0  # without the retain check, a dead model passes
    judged = verify_forgetting(broken, forget, val, kind="class", retain=retain, retain_floor=0.5)
    assert not judged["passed"] and judged["collapsed"] and judged["retain_accuracy"] < 0.2
    assert "the fine-tune did not recover" in judged["reason"]
    gold = verify_forgetting(m.gold, forget, val, kind="class", retain=retain, retain_floor=0.5)
    assert gold["passed"] and not gold["collapsed"] and gold["retain_accuracy"] > 0.9


def test_verification_fails_a_fine_tune_that_lost_the_models_accuracy(setup):
    m, _, _, validation = setup
    forget, val = with_image_transform(m.forget, m.processor), with_image_transform(validation, m.processor)
    # The reference leaves the forgotten class out: gold misses every validation image of it, the original none.
    original = kept_validation_accuracy(m.original, forget, val, kind="class")
    gold_kept = kept_validation_accuracy(m.gold, forget, val, kind="class")
    gold_all = kept_validation_accuracy(m.gold, forget, val, kind="samples")
    assert gold_all < gold_kept - 0.05 and abs(gold_kept - original) <= 0.05
    gold = verify_forgetting(m.gold, forget, val, kind="class", reference_accuracy=original)
    assert gold["passed"] and not gold["collapsed"] and gold["kept_validation_accuracy"] == gold_kept
    assert f"outside the forgotten classes {gold_kept:.3f}, the original's {original:.3f}" in gold["reason"]
    # The same model held to an original 6 points better: it forgot, but lost accuracy it should have kept.
    judged = verify_forgetting(m.gold, forget, val, kind="class", reference_accuracy=gold_kept + 0.06)
    assert not judged["passed"] and judged["collapsed"] and judged["forget_accuracy"] == 0.0
    assert "6.0 points under the original's" in judged["reason"] and "--auto_max_accuracy_drop" in judged["reason"]
    lenient = verify_forgetting(m.gold, forget, val, kind="class", reference_accuracy=gold_kept + 0.06,
                                max_accuracy_drop=0.1)
    assert lenient["passed"]


def test_auto_holds_each_fine_tune_to_the_originals_validation_accuracy(tmp_path, setup, monkeypatch):
    import hf_deepclean.auto

    seen = []
    real = hf_deepclean.auto.verify_forgetting

    def recording(model, forget, validation, **kwargs):
        seen.append({k: kwargs[k] for k in ("reference_accuracy", "max_accuracy_drop")})
        return real(model, forget, validation, **kwargs)

    monkeypatch.setattr(hf_deepclean.auto, "verify_forgetting", recording)
    m, _, (ff, fr), validation = setup
    args = DeepCleanConfig(output_dir=str(tmp_path), top_fraction="auto", num_train_epochs=0.25, use_cpu=True,
                           disable_tqdm=True, logging_strategy="no", report_to="none", auto_max_accuracy_drop=0.2,
                           auto_max_attempts=1)
    trainer = DeepCleanTrainer(copy.deepcopy(m.original), args, train_dataset=m.retain, forget_dataset=m.forget,
                               eval_dataset=validation, processing_class=m.processor, fisher_forget=ff, fisher_retain=fr)
    trainer.unlearn()
    reference = kept_validation_accuracy(m.original, with_image_transform(m.forget, m.processor),
                                         with_image_transform(validation, m.processor), kind="class")
    assert trainer.auto_sweep["original_validation_accuracy"] == pytest.approx(reference)
    assert seen == [{"reference_accuracy": pytest.approx(reference), "max_accuracy_drop": 0.2}]
    assert "kept_validation_accuracy" in trainer.auto_sweep["attempts"][0]


def test_auto_top_fraction_forgets_the_class(tmp_path, setup):
    m, _, (ff, fr), validation = setup
    model = copy.deepcopy(m.original)
    args = DeepCleanConfig(output_dir=str(tmp_path), top_fraction="auto", num_train_epochs=1, use_cpu=True,
                           disable_tqdm=True, logging_strategy="no")
    trainer = DeepCleanTrainer(model, args, train_dataset=m.retain, forget_dataset=m.forget, eval_dataset=validation,
                               processing_class=m.processor, fisher_forget=ff, fisher_retain=fr)
    trainer.unlearn()
    chosen = trainer.auto_sweep["chosen"]
    assert trainer.auto_sweep["class_forgetting"] and trainer.auto_sweep["kind"] == "class"
    assert trainer.auto_sweep["informative"]  # the original recognises the class: the check can fail it
    attempts = trainer.auto_sweep["attempts"]
    assert attempts and attempts[-1]["top_fraction"] == chosen and attempts[-1]["passed"] == trainer.auto_sweep["verified"]
    assert abs(trainer.parameter_mask.selected_fraction - chosen) < 1e-3
    from hf_deepclean.evaluation import collect_outputs

    forget = collect_outputs(model, m.forget, image_processor=m.processor)
    assert (forget.predictions == FORGET_CLASS).mean() <= 0.1


def test_auto_never_calls_verified_what_the_untouched_original_already_passes(tmp_path, setup):
    # A "privacy request" for images the model never memorised (here: never saw): their losses already look like
    # validation losses, so the loss-MIA window is met before anything is unlearned and proves nothing after.
    from hf_deepclean.auto import describe_auto

    m, _, (_, fr), _ = setup
    unseen, validation = m.test.select(range(1, 81, 2)), m.test.select(range(0, len(m.test), 2))
    args = DeepCleanConfig(output_dir=str(tmp_path), top_fraction="auto", auto_kind="samples", num_train_epochs=0.25,
                           use_cpu=True, disable_tqdm=True, logging_strategy="no", report_to="none",
                           auto_max_attempts=1, auto_max_accuracy_drop=1.0)
    trainer = DeepCleanTrainer(copy.deepcopy(m.original), args, train_dataset=m.retain, forget_dataset=unseen,
                               eval_dataset=validation, processing_class=m.processor, fisher_retain=fr)
    trainer.unlearn()
    auto = trainer.auto_sweep
    assert auto["kind"] == "samples" and auto["informative"] is False and auto["verified"] is False
    assert "loss-MIA" in auto["original_check"]
    text = describe_auto(auto, "half the test split")
    assert "NOT verified: the original model already meets the criterion" in text and "hf-deepclean audit" in text


def test_auto_escalates_from_the_original_weights_while_verification_fails(tmp_path, setup, monkeypatch):
    # A verifier that fails every model, its forget accuracy falling slowly (0.9, then 0.5): auto must fine-tune 3
    # fractions, each from the original weights: the next one after the first failure, then where the trend of the
    # two meets the tolerance (beyond the sweep: its largest, 0.7, not the next, 0.6), flagged as not verified.
    import hf_deepclean.auto

    measures = iter([0.9, 0.5, 0.4])

    def never_forgot(model, forget, validation, **kwargs):
        measure = next(measures)
        return {"passed": False, "forget_accuracy": measure, "mia_loss_lr": 1.0, "validation_accuracy": 1.0,
                "reason": "stub verifier: never forgotten", "measure": measure, "bound": 0.02, "collapsed": False}

    monkeypatch.setattr(hf_deepclean.auto, "verify_forgetting", never_forgot)
    m, _, (ff, fr), validation = setup
    model = copy.deepcopy(m.original)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    common = dict(output_dir=str(tmp_path), num_train_epochs=0.25, use_cpu=True, disable_tqdm=True,
                  logging_strategy="no", report_to="none")
    args = DeepCleanConfig(top_fraction="auto", auto_retain_floor=0.0, auto_fractions=[0.3, 0.5, 0.6, 0.7], **common)
    trainer = DeepCleanTrainer(model, args, train_dataset=m.retain, forget_dataset=m.forget, eval_dataset=validation,
                               processing_class=m.processor, fisher_forget=ff, fisher_retain=fr)
    trainer.unlearn()
    auto = trainer.auto_sweep
    assert auto["start"] == 0.3  # a reset of 30 % already forgets the class
    assert [a["top_fraction"] for a in auto["attempts"]] == [0.3, 0.5, 0.7]
    assert auto["chosen"] == 0.7 and not auto["verified"]
    assert abs(trainer.parameter_mask.selected_fraction - 0.7) < 1e-3
    assert trainer.unlearning_stats["top_fraction"] == 0.7
    # Earlier attempts left no trace (weights, BatchNorm statistics, optimizer): the result is bit-identical to a
    # direct run at the final fraction.
    direct_model = copy.deepcopy(m.original)
    DeepCleanTrainer(direct_model, DeepCleanConfig(top_fraction=0.7, **common), train_dataset=m.retain,
                     forget_dataset=m.forget, processing_class=m.processor, fisher_forget=ff, fisher_retain=fr).unlearn()
    direct = direct_model.state_dict()
    assert all(torch.equal(value, direct[name]) for name, value in model.state_dict().items())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_auto_needs_a_validation_split(tmp_path, setup):
    m, _, (ff, fr), _ = setup
    args = DeepCleanConfig(output_dir=str(tmp_path), top_fraction="auto", use_cpu=True, disable_tqdm=True)
    trainer = DeepCleanTrainer(copy.deepcopy(m.original), args, train_dataset=m.retain, forget_dataset=m.forget,
                               processing_class=m.processor, fisher_forget=ff, fisher_retain=fr)
    with pytest.raises(ValueError, match="needs eval_dataset"):
        trainer.unlearn()


def test_top_fraction_parsing(tmp_path):
    assert DeepCleanConfig(output_dir=str(tmp_path), top_fraction="0.2").top_fraction == 0.2
    with pytest.raises(ValueError, match="'lots'"):
        DeepCleanConfig(output_dir=str(tmp_path), top_fraction="lots")


def test_auto_settings_are_validated_with_the_field_name(tmp_path):
    for field, value in (("auto_kind", "typo"), ("auto_max_attempts", 0), ("auto_forget_tolerance", 1.5),
                         ("auto_max_accuracy_drop", -0.1)):
        with pytest.raises(ValueError, match=field):
            DeepCleanConfig(output_dir=str(tmp_path), top_fraction="auto", **{field: value})


def test_noisy_fraction_runs_declare_the_noisy_labels_criterion():
    from hf_deepclean.commands.common import RunData, declared_auto_kind
    from hf_deepclean.forget import ForgetSpec

    def run(spec):
        return RunData(train=None, test=None, forget=None, retain=None, spec=spec)

    assert declared_auto_kind("infer", run(ForgetSpec(noisy_fraction=0.1))) == "noisy_labels"
    assert declared_auto_kind("infer", run(ForgetSpec(labels=[3]))) == "infer"  # left to forget_kind's inference
    assert declared_auto_kind("samples", run(ForgetSpec(noisy_fraction=0.1))) == "samples"  # an explicit choice wins


def test_auto_stops_after_a_collapse_and_ends_with_the_closest_attempt(tmp_path, setup, monkeypatch):
    # The second attempt collapses (stub): no third attempt, and the run ends with the first attempt's fraction,
    # fine-tuned again: bit-identical to a direct run at that fraction.
    import hf_deepclean.auto

    verdicts = iter([{"measure": 0.5, "collapsed": False}, {"measure": 0.0, "collapsed": True}])

    def first_close_then_collapsed(model, forget, validation, **kwargs):
        verdict = next(verdicts)
        return {"passed": False, "forget_accuracy": verdict["measure"], "mia_loss_lr": 1.0, "validation_accuracy": 0.1,
                "reason": "stub verifier", "bound": 0.02, **verdict}

    monkeypatch.setattr(hf_deepclean.auto, "verify_forgetting", first_close_then_collapsed)
    m, _, (ff, fr), validation = setup
    model = copy.deepcopy(m.original)
    common = dict(output_dir=str(tmp_path), num_train_epochs=0.25, use_cpu=True, disable_tqdm=True,
                  logging_strategy="no", report_to="none")
    args = DeepCleanConfig(top_fraction="auto", auto_retain_floor=0.0, auto_fractions=[0.3, 0.5, 0.6], **common)
    trainer = DeepCleanTrainer(model, args, train_dataset=m.retain, forget_dataset=m.forget, eval_dataset=validation,
                               processing_class=m.processor, fisher_forget=ff, fisher_retain=fr)
    trainer.unlearn()
    auto = trainer.auto_sweep
    assert [a["top_fraction"] for a in auto["attempts"]] == [0.3, 0.5]
    assert auto["refit"] == 0.3 and auto["chosen"] == 0.3 and not auto["verified"]
    assert abs(trainer.parameter_mask.selected_fraction - 0.3) < 1e-3
    direct_model = copy.deepcopy(m.original)
    DeepCleanTrainer(direct_model, DeepCleanConfig(top_fraction=0.3, **common), train_dataset=m.retain,
                     forget_dataset=m.forget, processing_class=m.processor, fisher_forget=ff, fisher_retain=fr).unlearn()
    direct = direct_model.state_dict()
    assert all(torch.equal(value, direct[name]) for name, value in model.state_dict().items())


@pytest.mark.slow
def test_sweep_and_unlearn_select_the_same_weights_for_the_same_settings(tmp_path):
    """One selection builder (selection.select_for_config) for both commands: the exclude list, norm_policy
    exclude and ratio_eps apply to sweep's candidates as to unlearn's mask (sweep used to ignore them)."""
    import json

    from hf_deepclean.cli import main
    from hf_deepclean.masking import normalization_parameter_names
    from hf_deepclean.selection import ParameterMask

    m = trained_models()
    common = ["--model_name_or_path", str(m.original_dir), "--forget_labels", "3", "--norm_policy", "exclude",
              "--exclude_parameters", "classifier*", "--fisher_max_samples", "200", "--ratio_eps", "1e-10",
              "--seed", "0", "--disable_tqdm", "true"]
    assert main(["sweep", *common, "--fractions", "0.05", "--output_dir", str(tmp_path / "sweep")]) == 0
    assert main(["unlearn", *common, "--top_fraction", "0.05", "--max_steps", "1", "--evaluate_original", "false",
                 "--output_dir", str(tmp_path / "unlearn")]) == 0
    (row,) = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    mask = ParameterMask.load(tmp_path / "unlearn" / "_parameter_mask.safetensors")
    assert row["num_selected"] == mask.num_selected > 0
    assert row["threshold_effective"] == pytest.approx(mask.threshold, rel=1e-6)
    # and what both exclude is never selected
    names = set(normalization_parameter_names(m.original)) | {n for n in mask if n.startswith("classifier")}
    assert names and not any(bool(mask[n].any()) for n in names)

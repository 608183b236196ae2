"""The no-gold fine-tune budget (hf_deepclean/budget.py): stop when validation stops improving, keep the best epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl

from _fisher_models import count_weight_changes, random_dataset, tiny_vit
from hf_deepclean.budget import KeepBestValidationEpoch
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.trainer import DeepCleanTrainer


def _evaluate(callback, model, epoch, loss):
    control = TrainerControl()
    callback.on_evaluate(None, SimpleNamespace(epoch=epoch), control, metrics={"eval_loss": loss}, model=model)
    return control.should_training_stop


def test_stops_after_patience_evaluations_without_improvement_and_restores_the_best_weights():
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen: not copied, never written back
    callback = KeepBestValidationEpoch(patience=2)
    weights_at = {}
    for epoch, loss in [(1, 1.0), (2, 0.8), (3, 0.9), (4, 0.85)]:
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights_at[epoch] = model.weight.detach().clone()
        stop = _evaluate(callback, model, epoch, loss)
        assert stop == (epoch == 4), epoch  # two evaluations (3, 4) without beating epoch 2's 0.8
    bias = model.bias.detach().clone()
    callback.on_train_end(SimpleNamespace(eval_strategy="epoch"), None, None, model=model)
    assert torch.equal(model.weight, weights_at[2])
    assert torch.equal(model.bias, bias)
    summary = callback.summary()
    assert (summary["early_stopping_best_epoch"], summary["early_stopping_best_value"]) == (2.0, 0.8)
    assert summary["early_stopping_stopped_early"] and summary["early_stopping_epochs_run"] == 4.0


def test_a_metric_where_greater_is_better_and_a_missing_metric():
    model = torch.nn.Linear(3, 2)
    callback = KeepBestValidationEpoch(patience=1, metric="accuracy")
    assert callback.metric == "eval_accuracy" and callback.greater_is_better
    control = TrainerControl()
    callback.on_evaluate(None, SimpleNamespace(epoch=1), control, metrics={"eval_accuracy": 0.5}, model=model)
    callback.on_evaluate(None, SimpleNamespace(epoch=2), control, metrics={"eval_accuracy": 0.6}, model=model)
    assert not control.should_training_stop and callback.best_epoch == 2
    with pytest.raises(ValueError, match="did not report.*eval_loss.*metric_for_best_model"):
        callback.on_evaluate(None, SimpleNamespace(epoch=3), control, metrics={"eval_loss": 0.1}, model=model)
    with pytest.raises(ValueError, match="must be >= 1"):
        KeepBestValidationEpoch(patience=0)


def test_config_turns_on_evaluations_and_checks_the_patience(tmp_path):
    args = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.1, early_stopping_patience=2)
    assert str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "epoch"
    steps = DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.1, early_stopping_patience=2,
                            eval_strategy="steps", eval_steps=5)
    assert str(getattr(steps.eval_strategy, "value", steps.eval_strategy)) == "steps"
    with pytest.raises(ValueError, match="early_stopping_patience=0 must be >= 1"):
        DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.1, early_stopping_patience=0)


def _config(tmp_path, **overrides):
    return DeepCleanConfig(
        output_dir=str(tmp_path / "out"), top_fraction=0.2, per_device_train_batch_size=16, learning_rate=1e-2,
        weight_decay=0.1, disable_tqdm=True, report_to="none", logging_strategy="no", use_cpu=True, seed=0,
        fisher_batch_size=16, **overrides,
    )


def test_unlearn_without_a_validation_split_says_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="early_stopping_patience needs eval_dataset"):
        DeepCleanTrainer(tiny_vit(), _config(tmp_path, early_stopping_patience=1),
                         train_dataset=random_dataset(32, (3, 16, 16), 4, seed=0),
                         forget_dataset=random_dataset(8, (3, 16, 16), 4, seed=1))


def test_unlearn_stops_early_keeps_the_best_epoch_and_the_frozen_weights(tmp_path):
    """Validation = the retain images with other labels: the better the fine-tune fits D_r, the worse its loss
    there, so the rule must stop before the maximum and end on the first evaluation's weights."""
    retain = random_dataset(64, (3, 16, 16), 4, seed=0)
    validation = [{"pixel_values": row["pixel_values"], "labels": (row["labels"] + 1) % 4} for row in retain]
    model = tiny_vit()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = DeepCleanTrainer(model, _config(tmp_path, early_stopping_patience=2, num_train_epochs=8),
                               train_dataset=retain, forget_dataset=random_dataset(16, (3, 16, 16), 4, seed=1),
                               eval_dataset=validation)
    trainer.unlearn()
    stats = trainer.unlearning_stats
    assert stats["early_stopping_stopped_early"] and stats["early_stopping_epochs_run"] < 8
    assert stats["early_stopping_epochs_run"] == stats["early_stopping_best_epoch"] + 2  # patience 2, per epoch
    # The model ends with the best evaluation's weights: evaluating again gives the best loss.
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(stats["early_stopping_best_value"], rel=1e-6)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0  # DeepCleanTrainer's default compute_metrics, for metric_for_best_model
    frozen, selected = count_weight_changes(dict(model.named_parameters()), original, trainer.parameter_mask)
    assert frozen == 0 and selected > 0

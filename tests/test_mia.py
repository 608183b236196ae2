"""Membership-inference attacks on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_deepclean.evaluation import SplitOutputs, mia_efficacy, mia_loss_lr


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# ----------------------------------------------------------------------------------------- loss attack


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(1)
    result = mia_loss_lr(rng.exponential(0.5, 2000), rng.exponential(0.5, 2000), seed=0)
    assert abs(result["accuracy"] - 0.5) < 0.04
    assert abs(result["auc"] - 0.5) < 0.06
    assert result["noisy"] is False and result["note"] == ""


def test_separable_losses_give_perfect_attack():
    rng = np.random.default_rng(2)
    result = mia_loss_lr(rng.uniform(0.0, 0.1, 300), rng.uniform(1.0, 2.0, 300))
    assert result["accuracy"] == 1.0 and result["auc"] == 1.0
    assert result["forget_loss_mean"] < result["test_loss_mean"]


def test_attack_is_two_sided_over_forgetting_is_detected():
    # Forget losses far above the test losses (the Streisand effect) are as detectable as far below.
    rng = np.random.default_rng(3)
    result = mia_loss_lr(rng.uniform(5.0, 6.0, 200), rng.uniform(0.0, 1.0, 200))
    assert result["accuracy"] == 1.0
    assert result["forget_loss_mean"] > result["test_loss_mean"]


@pytest.mark.parametrize("transform", ["log", "raw"])
def test_gaussian_overlap_matches_bayes_accuracy(transform):
    # log-losses N(0, 1) vs N(2, 1) with equal priors: the best threshold (at 1) is right with probability Phi(1).
    rng = np.random.default_rng(4)
    forget, test = np.exp(rng.normal(0, 1, 3000)), np.exp(rng.normal(2, 1, 3000))
    result = mia_loss_lr(forget, test, seed=0, transform=transform)
    if transform == "log":
        assert result["accuracy"] == pytest.approx(_normal_cdf(1.0), abs=0.02)
    else:  # the same threshold family, but the heavy tail pulls the raw-loss fit away from the best threshold
        assert 0.7 < result["accuracy"] <= _normal_cdf(1.0) + 0.02
    # AUC of two unit Gaussians 2 apart, Phi(2 / sqrt(2)), does not depend on a monotone transform.
    assert result["auc"] == pytest.approx(_normal_cdf(2 / math.sqrt(2)), abs=0.02)


def test_raw_transform_accepts_any_score_and_log_rejects_negative_losses():
    with pytest.raises(ValueError, match="transform='raw'"):
        mia_loss_lr([-1.0, 0.5], [0.2, 0.3])
    assert mia_loss_lr([-3.0, -2.9, -2.8], [2.0, 2.1, 2.2], transform="raw")["accuracy"] == 1.0


def test_balancing_counts_and_noisy_flag():
    rng = np.random.default_rng(5)
    big = mia_loss_lr(rng.random(500), rng.random(80))
    assert (big["n_members"], big["n_nonmembers"], big["n_per_class"]) == (80, 80, 80)
    assert (big["n_forget_available"], big["n_test_available"]) == (500, 80)
    assert big["noisy"] is False and big["n_splits"] == 5

    small = mia_loss_lr(rng.random(37), rng.random(400))
    assert small["n_per_class"] == 37 and small["n_test_available"] == 400
    assert small["noisy"] is True and "37" in small["note"] and "noisy" in small["note"]


def test_seeded_and_reproducible():
    rng = np.random.default_rng(6)
    forget, test = rng.exponential(1.0, 400), rng.exponential(1.5, 900)
    assert mia_loss_lr(forget, test, seed=3) == mia_loss_lr(forget, test, seed=3)


def test_too_few_samples_is_reported_not_hidden():
    result = mia_loss_lr([0.1], [0.5, 0.7])
    assert math.isnan(result["accuracy"]) and result["noisy"] is True
    assert "not computed" in result["note"]
    # fewer samples than folds: the folds shrink instead of failing
    assert mia_loss_lr([0.1, 0.2, 0.3], [1.0, 1.1, 1.2])["n_splits"] == 3


def test_nan_loss_is_an_error_and_inf_is_capped():
    with pytest.raises(ValueError, match="NaN"):
        mia_loss_lr([0.1, float("nan")], [0.2, 0.3])
    result = mia_loss_lr([0.0, 0.01, 0.02, 0.03, 0.04], [5.0, float("inf"), 6.0, 7.0, 8.0])
    assert result["accuracy"] == 1.0


# ----------------------------------------------------------------------------------------- efficacy


def _outputs(true_probs, entropies) -> SplitOutputs:
    n = len(true_probs)
    zeros = np.zeros(n, dtype=np.int64)
    return SplitOutputs(
        losses=-np.log(true_probs), confidences=np.asarray(true_probs), entropies=np.asarray(entropies),
        predictions=zeros, labels=zeros, true_probs=np.asarray(true_probs),
    )


def _member_like(rng, n):
    return rng.uniform(0.9, 1.0, n), rng.uniform(0.0, 0.1, n)


def _nonmember_like(rng, n):
    return rng.uniform(0.0, 0.3, n), rng.uniform(1.5, 2.0, n)


def test_efficacy_on_separable_toy_data_is_the_known_fraction():
    rng = np.random.default_rng(7)
    retain = _outputs(*_member_like(rng, 400))
    test = _outputs(*_nonmember_like(rng, 120))
    # 30 of 100 forget samples look unseen, 70 look like training data
    unseen, seen = _nonmember_like(rng, 30), _member_like(rng, 70)
    forget = _outputs(np.r_[unseen[0], seen[0]], np.r_[unseen[1], seen[1]])
    result = mia_efficacy(retain, test, forget, seed=0)
    assert result["efficacy"] == pytest.approx(0.30)
    assert result["attack_train_accuracy"] == 1.0
    assert (result["n_train_members"], result["n_train_nonmembers"], result["n_forget"]) == (120, 120, 100)
    assert (result["n_retain_available"], result["n_test_available"]) == (400, 120)
    assert result["noisy"] is False


def test_efficacy_extremes_and_noisy_small_forget_set():
    rng = np.random.default_rng(8)
    retain, test = _outputs(*_member_like(rng, 200)), _outputs(*_nonmember_like(rng, 200))
    assert mia_efficacy(retain, test, _outputs(*_member_like(rng, 60)))["efficacy"] == 0.0
    small = mia_efficacy(retain, test, _outputs(*_nonmember_like(rng, 20)))
    assert small["efficacy"] == 1.0
    assert small["noisy"] is True and "20 forget samples" in small["note"]


def test_efficacy_caps_the_attack_training_set():
    rng = np.random.default_rng(9)
    retain, test = _outputs(*_member_like(rng, 300)), _outputs(*_nonmember_like(rng, 300))
    result = mia_efficacy(retain, test, _outputs(*_member_like(rng, 60)), max_per_class=100)
    assert result["n_per_class"] == 100 and result["n_retain_available"] == 300


def test_efficacy_rejects_nan_features():
    rng = np.random.default_rng(10)
    retain, test = _outputs(*_member_like(rng, 60)), _outputs(*_nonmember_like(rng, 60))
    bad = _outputs(np.array([0.5, np.nan]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        mia_efficacy(retain, test, bad)


# ----------------------------------------------------------------------------------------- evaluate modules


def test_metric_classes_work_offline_as_evaluate_modules():
    import evaluate

    from hf_deepclean.evaluation import AccuracyMetric, MIALossMetric

    accuracy = AccuracyMetric()
    assert isinstance(accuracy, evaluate.Metric)
    accuracy.add_batch(predictions=[0, 1], references=[0, 0])
    accuracy.add_batch(predictions=[2, 2], references=[2, 2])
    assert accuracy.compute() == {"accuracy": 0.75}

    rng = np.random.default_rng(11)
    losses = np.r_[rng.uniform(0, 0.1, 100), rng.uniform(1, 2, 100)]
    members = np.r_[np.ones(100, dtype=int), np.zeros(100, dtype=int)]
    result = MIALossMetric().compute(losses=losses, members=members)
    assert result["accuracy"] == 1.0 and result["n_per_class"] == 100
    assert result == mia_loss_lr(losses[:100], losses[100:])

"""The paired bootstrap interval of an accuracy delta: closed forms, the index bootstrap it replaces, the report."""

import math

import numpy as np
import pytest

from hf_deepclean.evaluation import SplitOutputs, UnlearningReport, accuracy_delta_intervals, paired_bootstrap_interval
from hf_deepclean.modelcard import record_from_report, render_model_card


def _pattern(n: int, wins: int, losses: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of a model and a reference: ``wins`` samples only the model gets right, ``losses`` only the
    reference, the rest both right or both wrong, shuffled."""
    model = np.zeros(n, dtype=bool)
    reference = np.zeros(n, dtype=bool)
    model[:wins] = True
    reference[wins:wins + losses] = True
    both = (n - wins - losses) // 2
    model[wins + losses:wins + losses + both] = reference[wins + losses:wins + losses + both] = True
    order = np.random.default_rng(seed).permutation(n)
    return model[order], reference[order]


def test_identical_predictions_leave_no_room():
    model, _ = _pattern(300, 0, 0)
    assert paired_bootstrap_interval(model, model) == (0.0, 0.0)


def test_interval_matches_the_normal_approximation():
    """d_i in {+1, -1, 0} with P(+1) = P(-1) = 0.1: mean 0, var(mean) = 0.2 / n, so 95 % is +-1.96 * sqrt(0.2 / n)."""
    n = 4000
    model, reference = _pattern(n, 400, 400)
    low, high = paired_bootstrap_interval(model, reference, seed=1)
    half = 1.96 * math.sqrt(0.2 / n)
    assert low == pytest.approx(-half, abs=0.1 * half) and high == pytest.approx(half, abs=0.1 * half)
    # a real difference shifts it: 8 % more right answers, var = (0.1 - 0.0064 + ...) / n, centred on +0.08
    model, reference = _pattern(n, 360, 40)
    low, high = paired_bootstrap_interval(model, reference, seed=1)
    mean, var = 0.08, (0.1 - 0.08 ** 2) / n
    assert (low + high) / 2 == pytest.approx(mean, abs=0.002)
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(var), rel=0.1)


def test_interval_is_the_index_bootstrap_it_replaces():
    model, reference = _pattern(60, 9, 4, seed=3)
    rng = np.random.default_rng(7)
    index = rng.integers(0, 60, size=(20000, 60))
    explicit = model[index].mean(1) - reference[index].mean(1)
    expected = np.quantile(explicit, [0.025, 0.975])
    low, high = paired_bootstrap_interval(model, reference, resamples=20000, seed=5)
    # the distribution is discrete in steps of 1/60: the percentiles agree to one step
    assert abs(low - expected[0]) <= 1 / 60 + 1e-12 and abs(high - expected[1]) <= 1 / 60 + 1e-12
    assert paired_bootstrap_interval(model, reference, seed=5) == paired_bootstrap_interval(model, reference, seed=5)


def test_bad_inputs_say_what_to_pass():
    model, reference = _pattern(10, 2, 1)
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap_interval(model, reference[:9])
    with pytest.raises(ValueError, match=r"confidence=1.5 must be in \(0, 1\)"):
        paired_bootstrap_interval(model, reference, confidence=1.5)
    with pytest.raises(ValueError, match="at least 100"):
        paired_bootstrap_interval(model, reference, resamples=10)
    low, high = paired_bootstrap_interval(np.zeros(0, bool), np.zeros(0, bool))
    assert math.isnan(low) and math.isnan(high)


def _outputs(labels, predictions) -> SplitOutputs:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    floats = np.zeros(len(labels))
    return SplitOutputs(floats, floats, floats, predictions, labels, floats)


def test_delta_intervals_per_split_and_per_class_group():
    labels = np.array([3, 3, 0, 1, 2, 0, 1, 2] * 25)
    gold = _outputs(labels, np.where(labels == 3, 0, labels))            # never predicts class 3
    model = _outputs(labels, np.where(np.arange(200) % 8 == 2, 9, gold.predictions))   # misses 1 other image in 8
    same = {"retain": gold, "forget": gold}
    intervals = accuracy_delta_intervals({**same, "test": model}, {**same, "test": gold}, forget_labels=[3])
    assert intervals["retain_accuracy"] == intervals["forget_accuracy"] == [0.0, 0.0]
    assert intervals["test_forget_class_accuracy"] == [0.0, 0.0]      # both get every 3 wrong
    other = labels != 3
    assert intervals["test_other_accuracy"] == list(paired_bootstrap_interval(model.correct[other], gold.correct[other]))
    low, high = intervals["test_other_accuracy"]
    assert low < -1 / 6 < high < 0                                     # the point delta inside, all of it below 0
    low, high = intervals["test_accuracy"]
    assert low < -0.125 < high < 0
    with pytest.raises(ValueError, match="not over the same samples"):
        accuracy_delta_intervals({**same, "test": _outputs(labels[::-1], labels)}, {**same, "test": gold})


def test_report_and_card_show_the_interval_after_the_delta():
    record = {"method": "deepclean", "forget": {"size": 10}, "metrics": {"test_accuracy": 0.90},
              "gold": {"test_accuracy": 0.92}, "deltas": {"test_accuracy": -0.02},
              "delta_intervals": {"test_accuracy": [-0.041, 0.003]}}
    report = UnlearningReport.from_dict(record)
    text = report.to_markdown()
    assert "| ΔAcc_test | — | -2.00 [-4.10, +0.30] |" in text and "paired bootstrap" in text
    assert report.to_dict()["delta_intervals"] == {"test_accuracy": [-0.041, 0.003]}
    card = str(render_model_card(record_from_report(report)))
    assert "| Test accuracy | 0.9000 | 0.9200 | -0.0200 [-0.0410, +0.0030] |" in card and "paired bootstrap" in card
    without = UnlearningReport.from_dict({k: v for k, v in record.items() if k != "delta_intervals"})
    assert "| ΔAcc_test | — | -2.00 |" in without.to_markdown() and "paired bootstrap" not in without.to_markdown()

"""How much of an accuracy delta to gold the size of the evaluated split alone can explain.

Two models evaluated on the same samples differ only where one is right and the other wrong. The paired
bootstrap resamples the samples with replacement and recomputes the difference of the two accuracies; its
percentile interval says how far that difference would move on another draw of the same size from the same
data. It does not cover training randomness (a second retrain of the gold model differs by more, see the
benchmark's noise floor): a delta outside its interval is more than the split's size explains, one inside it
is not evidence of a difference.

Per sample the paired difference is +1 (only the model is right), -1 (only the reference is right) or 0, so a
resample's total is the count of +1 draws minus the count of -1 draws: one multinomial draw per resample gives
exactly the bootstrap distribution, with no index matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000
INTERVAL_METHOD = "paired bootstrap over the evaluated samples"

__all__ = ["DEFAULT_CONFIDENCE", "DEFAULT_RESAMPLES", "INTERVAL_METHOD", "accuracy_delta_intervals",
           "paired_bootstrap_interval"]


def paired_bootstrap_interval(
    correct, reference_correct, *, confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``accuracy(correct) - accuracy(reference_correct)`` under the paired bootstrap.

    Args:
        correct, reference_correct: per-sample correctness (bool) of the model and of the reference, on the
            same samples in the same order.
        confidence: in (0, 1); 0.95 gives the 2.5 % and 97.5 % percentiles.
        resamples: bootstrap resamples (>= 100).
        seed: seed of the draws (the same inputs and seed give the same interval).

    Returns ``(low, high)`` as fractions (NaN, NaN for an empty split).
    """
    correct, reference = np.asarray(correct, dtype=bool), np.asarray(reference_correct, dtype=bool)
    if correct.shape != reference.shape or correct.ndim != 1:
        raise ValueError(
            f"paired_bootstrap_interval needs two 1-D arrays over the same samples; got shapes {correct.shape} "
            f"and {reference.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95")
    if resamples < 100:
        raise ValueError(f"resamples={resamples} is too few for a percentile interval; use at least 100")
    n = correct.shape[0]
    if n == 0:
        return math.nan, math.nan
    wins, losses = int((correct & ~reference).sum()), int((~correct & reference).sum())
    probabilities = np.array([wins, losses, n - wins - losses], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, probabilities, size=resamples)
    deltas = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return float(low), float(high)


def accuracy_delta_intervals(
    outputs: Mapping, reference_outputs: Mapping, *, forget_labels: Sequence[int] | None = None, seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, list[float]]:
    """``[low, high]`` of each accuracy delta of the report, from two models' outputs on the same splits.

    ``outputs`` and ``reference_outputs`` map ``retain``/``forget``/``test`` to
    :class:`~hf_deepclean.evaluation.SplitOutputs`. With ``forget_labels`` the test split's forgotten and other
    classes get their own intervals, as the report's class rows.
    """
    splits = {"retain_accuracy": "retain", "forget_accuracy": "forget", "test_accuracy": "test"}
    for split in splits.values():
        if not np.array_equal(outputs[split].labels, reference_outputs[split].labels):
            raise ValueError(
                f"the two models' outputs on the {split!r} split are not over the same samples in the same order "
                "(their labels differ); collect both on the same dataset without shuffling"
            )
    pairs = {key: (outputs[split].correct, reference_outputs[split].correct) for key, split in splits.items()}
    if forget_labels is not None:
        in_forgotten = outputs["test"].in_classes(forget_labels)
        test, reference_test = outputs["test"].correct, reference_outputs["test"].correct
        pairs["test_forget_class_accuracy"] = (test[in_forgotten], reference_test[in_forgotten])
        pairs["test_other_accuracy"] = (test[~in_forgotten], reference_test[~in_forgotten])
    return {
        key: list(paired_bootstrap_interval(model, reference, confidence=confidence, resamples=resamples, seed=seed))
        for key, (model, reference) in pairs.items()
    }

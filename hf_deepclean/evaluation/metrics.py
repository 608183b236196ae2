"""Metrics as ``evaluate`` modules that work offline: instantiate them, never ``evaluate.load`` them.

``evaluate.load("accuracy")`` fetches a script from the Hub and fails offline, so these classes
subclass :class:`evaluate.Metric` directly::

    acc = AccuracyMetric()
    acc.add_batch(predictions=[0, 1], references=[0, 0])
    acc.compute()                                  # {"accuracy": 0.5}
    MIALossMetric().compute(losses=[...], members=[1, 0, ...])

They keep their data in memory by default (no cache files), except in distributed mode
(``num_process > 1``), where ``evaluate`` shares data through files.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .mia import mia_loss_lr

_CITATION_DEEPCLEAN = (
    "@inproceedings{shi2024deepclean, title={DeepClean: Machine Unlearning on the Cheap by Resetting Privacy "
    "Sensitive Weights using the Fisher Diagonal}, author={Shi, Jiaeli and Gourgoulias, Konstantinos and Buford, "
    "John and Moran, Sean and Ghalyan, Najah}, booktitle={ECCV Workshops}, year={2024}}"
)


class _InMemoryMetric(evaluate.Metric):
    def __init__(self, *args, **kwargs):
        if kwargs.get("num_process", 1) == 1:
            kwargs.setdefault("keep_in_memory", True)
        super().__init__(*args, **kwargs)


class AccuracyMetric(_InMemoryMetric):
    """Fraction of ``predictions`` equal to ``references`` (integer class ids)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy: the fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions: predicted class ids; references: true class ids.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions=None, references=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((predictions == references).mean()) if len(references) else float("nan")}


class MIALossMetric(_InMemoryMetric):
    """The loss-based membership-inference attack (:func:`~hf_deepclean.evaluation.mia_loss_lr`).

    Inputs: ``losses`` (per-sample loss) and ``members`` (1 = forget set, the samples that should
    be forgotten; 0 = test set). Returns the attack's cross-validated ``accuracy`` (0.5 = cannot
    tell them apart), ``auc``, the sample counts and the ``noisy`` flag.
    """

    def __init__(self, *args, n_splits: int = 5, attack_seed: int = 0, **kwargs):
        self.n_splits, self.attack_seed = n_splits, attack_seed
        super().__init__(*args, **kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Loss-threshold membership inference (logistic regression, balanced, stratified CV).",
            citation=_CITATION_DEEPCLEAN,
            inputs_description="losses: per-sample losses; members: 1 for forget-set samples, 0 for test samples.",
            features=datasets.Features({"losses": datasets.Value("float64"), "members": datasets.Value("int64")}),
        )

    def _compute(self, losses=None, members=None):
        losses, members = np.asarray(losses, dtype=np.float64), np.asarray(members)
        if not np.isin(members, (0, 1)).all():
            raise ValueError("members must be 1 (forget set) or 0 (test set).")
        return mia_loss_lr(losses[members == 1], losses[members == 0], n_splits=self.n_splits, seed=self.attack_seed)


__all__ = ["AccuracyMetric", "MIALossMetric"]

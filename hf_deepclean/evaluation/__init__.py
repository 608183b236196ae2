"""Evaluation of unlearning: per-split outputs, accuracies, membership-inference attacks, the report.

- :func:`collect_outputs` -> :class:`SplitOutputs` (per-sample losses, confidences, entropies, ...).
- :func:`mia_loss_lr` and :func:`mia_efficacy`: the two attacks (sign conventions in :mod:`.mia`).
- :func:`evaluate_unlearning` -> :class:`UnlearningReport` (``to_dict``, ``to_markdown``, ``save``, ``load``).
- :func:`paired_bootstrap_interval`: how much of an accuracy delta to gold the split's size alone explains.
- :class:`AccuracyMetric`, :class:`MIALossMetric`: ``evaluate`` modules that work offline
  (imported on first use: ``evaluate`` is slow to import).
"""

from .core import evaluate_unlearning, metrics_from_outputs, seeded_subset
from .forgetting_quality import ForgettingQuality, forgetting_quality, logit_scaled_confidence
from .intervals import accuracy_delta_intervals, paired_bootstrap_interval
from .mia import mia_efficacy, mia_loss_lr
from .outputs import SplitOutputs, collect_outputs
from .report import REPORT_JSON, REPORT_MARKDOWN, UnlearningReport

_LAZY = {"AccuracyMetric", "MIALossMetric"}


def __getattr__(name):
    if name in _LAZY:  # imported on first use: `evaluate` takes ~6 s to import, the rest of this package ~0.1 s
        from . import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AccuracyMetric",
    "ForgettingQuality",
    "MIALossMetric",
    "REPORT_JSON",
    "REPORT_MARKDOWN",
    "SplitOutputs",
    "UnlearningReport",
    "accuracy_delta_intervals",
    "collect_outputs",
    "evaluate_unlearning",
    "forgetting_quality",
    "logit_scaled_confidence",
    "metrics_from_outputs",
    "mia_efficacy",
    "mia_loss_lr",
    "paired_bootstrap_interval",
    "seeded_subset",
]

"""The fine-tune's budget without a gold model: stop when validation stops improving, keep the best epoch.

A short masked fine-tune can leave test accuracy a point or two under the gold model's (mislabeled samples on the
digits ResNet: 2 epochs pass 2 seeds of 6, 8 epochs 6 of 6; BENCHMARKS.md), and no gold model is there to say how
long is enough. With ``early_stopping_patience`` set, ``num_train_epochs`` becomes a maximum: Trainer evaluates on
the validation split at every evaluation step of ``eval_strategy`` (each epoch unless set), the run stops after
``patience`` evaluations without improvement of ``metric_for_best_model`` (validation loss unless set), and the
weights of the best evaluation come back at the end.

Trainer's own ``load_best_model_at_end`` does the same through checkpoints written to ``output_dir`` every
evaluation; here only the trainable tensors change, so the best ones are kept in memory (a copy of the tensors that
hold a selected weight, and the buffers) and nothing is written. Frozen weights are the same in every copy, so
putting the best copy back keeps them bit-identical. A run resumed from a checkpoint tracks the best evaluation from
the resume point on (the copy is not part of the checkpoint). Under FSDP2 the rule is refused: its shards are not
copied and restored here.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class KeepBestValidationEpoch(TrainerCallback):
    """Stop after ``patience`` evaluations without improvement and restore the best evaluation's weights.

    After training, ``history`` holds ``(epoch, value)`` per evaluation, ``best_epoch`` / ``best_value`` the one
    whose weights the model ends with, and ``stopped_early`` whether the maximum budget was cut short.
    """

    def __init__(self, patience: int, metric: str = "loss", greater_is_better: bool | None = None):
        if patience < 1:
            raise ValueError(f"early_stopping_patience={patience} must be >= 1 (or unset for a fixed budget).")
        self.patience = patience
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater_is_better = (not self.metric.endswith("loss")) if greater_is_better is None else greater_is_better
        self._reset()

    def _reset(self) -> None:
        self.history: list[tuple[float, float]] = []
        self.best_value: float | None = None
        self.best_epoch: float | None = None
        self.stopped_early = False
        self._best_state: dict[str, torch.Tensor] | None = None
        self._waited = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._reset()  # a retry of top_fraction="auto" is a fresh run

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or self.metric not in metrics:
            raise ValueError(
                f"early stopping watches {self.metric!r}, which the evaluation did not report (it gave "
                f"{sorted(metrics or {})}). Set metric_for_best_model to one of those, or pass compute_metrics."
            )
        value, epoch = float(metrics[self.metric]), float(state.epoch or 0.0)
        self.history.append((epoch, value))
        improved = self.best_value is None or (value > self.best_value if self.greater_is_better
                                               else value < self.best_value)
        if improved:
            self.best_value, self.best_epoch, self._waited = value, epoch, 0
            self._best_state = _trainable_state(model)
            return
        self._waited += 1
        if self._waited >= self.patience:
            logger.info("Early stopping at epoch %.2f: %s has not improved on %.4f (epoch %.2f) for %d evaluations.",
                        state.epoch, self.metric, self.best_value, self.best_epoch, self._waited)
            self.stopped_early = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._best_state is None:
            logger.warning("Early stopping was on but no evaluation ran (eval_strategy=%s): the last weights are kept.",
                           args.eval_strategy)
            return
        with torch.no_grad():
            current = dict(model.named_parameters())
            current.update(model.named_buffers())
            for name, saved in self._best_state.items():
                current[name].copy_(saved)
        logger.info("Kept the weights of epoch %.2f (%s %.4f).", self.best_epoch, self.metric, self.best_value)

    def summary(self) -> dict:
        """What the rule did, for ``unlearning_stats`` and the report."""
        return {"early_stopping_best_epoch": self.best_epoch, "early_stopping_best_value": self.best_value,
                "early_stopping_metric": self.metric, "early_stopping_stopped_early": self.stopped_early,
                "early_stopping_epochs_run": self.history[-1][0] if self.history else 0.0}


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what the masked fine-tune can change: tensors with a selected weight, and every buffer."""
    state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach().clone() for name, b in model.named_buffers()})
    return state


def describe_budget(stats: dict, args, validation_source: str | None) -> str:
    """What the no-gold budget rule (budget.py) did, for the report and the model card.

    ``validation_source`` None: the split was described already (auto's note), so it is not repeated.
    """
    how = (f"stopped after epoch {stats['early_stopping_epochs_run']:g}" if stats["early_stopping_stopped_early"]
           else f"ran the whole {args.num_train_epochs:g} epochs")
    return (f"Fine-tune budget: at most {args.num_train_epochs:g} epochs with early stopping (patience "
            f"{args.early_stopping_patience}); {how} and kept epoch {stats['early_stopping_best_epoch']:g}, the best "
            f"{stats['early_stopping_metric']} ({stats['early_stopping_best_value']:.4f}). Validation: "
            f"{validation_source.rstrip('.') if validation_source else 'the same split as top_fraction=auto'}.")

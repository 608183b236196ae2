"""``top_fraction="auto"``: choose the fraction of weights to reset without a gold model, then verify it.

The policy, in three parts that the trainer drives through :class:`AutoTopFraction`:

1. the first choice, from one reset-only sweep (:func:`hf_deepclean.sweep.reset_sweep`, no fine-tune):
   :func:`choose_top_fraction` picks the smallest fraction that meets a criterion needing no gold model,
   by the kind of forgetting:

   - ``class`` (no class of D_f left in D_r): forget accuracy at or below chance (1 / number of classes);
   - ``samples`` (a privacy request): forget-set losses indistinguishable from validation losses
     (loss-MIA accuracy within ``mia_margin`` of 0.5), as for data the model never saw;
   - ``noisy_labels`` (mislabeled samples): agreement with the given, wrong labels at or below chance.
     Not the MIA rule: a model that never saw a wrong label gives it a high loss, so its forget losses
     are very distinguishable from validation losses (the digits gold models score MIA 0.97-0.98);
   - in all: retain accuracy after the reset at least ``retain_floor``, a level the masked fine-tune
     recovers from.

2. the verification: a reset-only model predicts the fine-tuned one only roughly (the fine-tune restores part
   of what the reset removed), so after the fine-tune :func:`verify_forgetting` applies the criterion to the
   fine-tuned model (class and noisy labels: forget accuracy at most a tolerance, 0.02 by default, since a
   model that never saw the class or the wrong labels scores ~0; and a fine-tune that did not recover, with
   retain accuracy under the floor or validation accuracy more than a set drop under the original model's,
   proves nothing and fails);

3. the search: while verification fails, :func:`next_fraction` picks the larger swept fraction to fine-tune
   next, from the original weights (the next one, then where the last two attempts' trend meets the
   criterion), up to ``auto_max_attempts``; when none passes, the attempt closest to the criterion whose
   fine-tune recovered is fine-tuned again to end with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .data import labels_of
from .evaluation import collect_outputs, mia_loss_lr, seeded_subset
from .selection import DEFAULT_FRACTIONS
from .sweep import reset_sweep

logger = logging.getLogger(__name__)

FORGET_KINDS = ("class", "samples", "noisy_labels")


def is_class_forgetting(forget, retain) -> bool:
    """True when no class of the forget set appears in the retain set."""
    return not set(np.unique(labels_of(forget))) & set(np.unique(labels_of(retain)))


def forget_kind(forget, retain, declared: str = "infer") -> str:
    """``declared`` if given, else ``class`` or ``samples`` from the labels (noisy labels cannot be told apart)."""
    if declared != "infer":
        if declared not in FORGET_KINDS:
            raise ValueError(f"forget kind {declared!r} must be one of infer, {', '.join(FORGET_KINDS)}.")
        return declared
    return "class" if is_class_forgetting(forget, retain) else "samples"


def _judge(kind: str, forget_accuracy: float, mia: float, *, bound: float, bound_text: str,
           mia_margin: float) -> tuple[bool, str, float, float]:
    """The forgetting criterion of ``kind`` (module doc), shared by the reset-only choice and the verification.

    Returns whether it passed, why, and the criterion as ``measure <= limit``: forget accuracy and ``bound``, or
    for samples |loss-MIA - 0.5| and ``mia_margin``.
    """
    if kind == "samples":
        measure, limit = abs(mia - 0.5), mia_margin
        passed = measure <= limit
        return passed, f"loss-MIA {mia:.3f} {'within' if passed else 'outside'} {mia_margin} of 0.5", measure, limit
    passed = forget_accuracy <= bound
    what = "forget accuracy" if kind == "class" else "agreement with the given (noisy) labels"
    return passed, f"{what} {forget_accuracy:.3f} {'<=' if passed else '>'} {bound_text}", forget_accuracy, bound


def choose_top_fraction(
    rows: Sequence[Mapping[str, float]],
    *,
    kind: str,
    num_classes: int,
    retain_floor: float = 0.5,
    mia_margin: float = 0.05,
    margin_steps: int = 0,
) -> tuple[float, str]:
    """The smallest swept fraction that meets the reset-only criterion of ``kind`` (module doc).

    ``margin_steps`` moves the choice that many swept values up, as long as they keep retain accuracy
    above ``retain_floor`` (a cheaper hedge than verification, which ``top_fraction="auto"`` runs
    anyway). Returns the fraction and why.
    """
    if kind not in FORGET_KINDS:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(FORGET_KINDS)}.")
    chance = 1.0 / num_classes
    ordered = sorted(rows, key=lambda r: r["fraction"])
    for i, row in enumerate(ordered):
        if row["retain_accuracy"] < retain_floor:
            continue
        passed, why, _, _ = _judge(kind, row["forget_accuracy"], row["mia_loss_lr"], bound=chance,
                                   bound_text=f"chance {chance:.3f}", mia_margin=mia_margin)
        if not passed:
            continue
        chosen = row
        for candidate in ordered[i + 1 : i + 1 + max(margin_steps, 0)]:
            if candidate["retain_accuracy"] < retain_floor:
                break
            chosen = candidate
        margin = (f"; {chosen['fraction']:g} keeps a margin of {margin_steps} swept step(s) for the fine-tune's recovery"
                  if chosen is not row else "")
        return chosen["fraction"], (f"smallest fraction with {why} and retain accuracy {row['retain_accuracy']:.3f} "
                                    f">= {retain_floor} is {row['fraction']:g}{margin}")
    largest = max(rows, key=lambda r: r["fraction"])
    return largest["fraction"], (
        "no swept fraction met the criterion; using the largest one. Sweep larger fractions "
        "(hf-deepclean sweep --fractions ...) or lower --auto_retain_floor."
    )


def next_fraction(fractions: Sequence[float], failed: Sequence[Mapping[str, float]]) -> float | None:
    """The fraction ``top_fraction="auto"`` fine-tunes after its failed verifications, or None when none is larger.

    ``failed`` holds the failed attempts in order, each with its ``top_fraction`` and the verification's
    ``measure`` that had to fall to ``bound`` (:func:`verify_forgetting`). After one failure: the next larger
    swept fraction. After more, when the measure fell between the last two attempts, the next try aims where
    the straight line through them on log-log axes meets the bound (a power law in the fraction): the smallest
    swept fraction at or above that point, and never less than the next one (no progress between the two: the
    largest, where a line flattening to level meets the bound).

    Why: where the memory is spread over many weights the fine-tuned forget accuracy falls slowly (a digits
    ViT's wrong labels: 5.6 %, 4.2 %, 3.5 % at fractions 0.1, 0.15, 0.2), and stepping one swept value at a
    time spent every attempt before the fractions that forget them; where one step suffices (class
    forgetting) nothing changes.
    """
    if not failed:
        raise ValueError("next_fraction needs at least one failed attempt.")
    last = failed[-1]
    larger = sorted(f for f in set(fractions) if f > last["top_fraction"])
    if not larger:
        return None
    if len(failed) < 2 or last["bound"] <= 0:
        return larger[0]  # nothing to extrapolate from yet, or a zero bound that no power law reaches
    before = failed[-2]
    value, previous, bound = last["measure"], before["measure"], last["bound"]
    if value >= previous:
        return larger[-1]  # no progress: the line meets the bound at infinity, so the largest swept fraction
    slope = np.log(value / previous) / np.log(last["top_fraction"] / before["top_fraction"])
    aim = last["top_fraction"] * (bound / value) ** (1.0 / slope)
    return next((f for f in larger if f >= aim), larger[-1])


def kept_validation_accuracy(model: torch.nn.Module, forget, validation, *, kind: str, image_processor=None,
                             batch_size: int = 256) -> float:
    """``model``'s accuracy on ``validation`` without the forgotten classes when ``kind`` is ``class`` (all of it
    otherwise): what an unlearned model should still get right. The reference :func:`verify_forgetting` compares
    the fine-tuned model with, measured on the original."""
    validation_out = collect_outputs(model, validation, image_processor=image_processor, batch_size=batch_size)
    return _kept_accuracy(validation_out, labels_of(forget) if kind == "class" else None)


def _kept_accuracy(validation_out, forgotten_labels=None) -> float:
    """Accuracy on the validation samples whose class is not among ``forgotten_labels`` (all without them)."""
    if forgotten_labels is None:
        return validation_out.accuracy
    kept = ~validation_out.in_classes(forgotten_labels)
    if not kept.any():
        return float("nan")
    return validation_out.subset(kept).accuracy


def _criterion(model, forget, validation, *, kind: str, tolerance: float, mia_margin: float, image_processor,
               batch_size: int, seed: int):
    """The forgetting criterion of ``kind`` applied to ``model`` (no collapse check): (passed, reason, measure,
    bound, forget outputs, validation outputs, loss-MIA)."""
    forget_out, val_out = (collect_outputs(model, data, image_processor=image_processor, batch_size=batch_size)
                           for data in (forget, validation))
    mia = float(mia_loss_lr(forget_out.losses, val_out.losses, seed=seed)["accuracy"])
    passed, reason, measure, bound = _judge(kind, forget_out.accuracy, mia, bound=tolerance, bound_text=f"{tolerance}",
                                            mia_margin=mia_margin)
    return passed, reason, measure, bound, forget_out, val_out, mia


def original_meets_criterion(model, forget, validation, *, kind: str, tolerance: float = 0.02,
                             mia_margin: float = 0.05, image_processor=None, batch_size: int = 256,
                             seed: int = 0) -> tuple[bool, str]:
    """Whether the untouched ``model`` already meets the forgetting criterion of ``kind`` (then passing it after
    unlearning shows nothing), and the measurement in words."""
    passed, reason, *_ = _criterion(model, forget, validation, kind=kind, tolerance=tolerance, mia_margin=mia_margin,
                                    image_processor=image_processor, batch_size=batch_size, seed=seed)
    return passed, reason


def verify_forgetting(
    model: torch.nn.Module,
    forget,
    validation,
    *,
    kind: str,
    tolerance: float = 0.02,
    mia_margin: float = 0.05,
    retain=None,
    retain_floor: float = 0.5,
    retain_sample_size: int | None = 500,
    reference_accuracy: float | None = None,
    max_accuracy_drop: float = 0.05,
    image_processor=None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Judge a fine-tuned model without a gold model: did it forget ``forget``?

    ``class`` and ``noisy_labels``: forget accuracy (for noisy labels, agreement with the wrong labels)
    at most ``tolerance``; a model that never saw the class or the labels scores about 0. ``samples``:
    loss-MIA between the forget set and ``validation`` within ``mia_margin`` of 0.5. A model whose fine-tune
    did not recover from the reset (``collapsed``) fails whatever it forgot, which then proves nothing: with
    ``retain`` (D_r), its accuracy on a seeded sample under ``retain_floor``; with ``reference_accuracy`` (the
    original model's :func:`kept_validation_accuracy`), its own more than ``max_accuracy_drop`` under it.
    Returns ``passed``, ``collapsed``, the measurements, the reason, and the criterion as ``measure`` <=
    ``bound`` (forget accuracy and tolerance; for samples |loss-MIA - 0.5| and the margin).
    """
    if kind not in FORGET_KINDS:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(FORGET_KINDS)}.")

    passed, reason, measure, bound, forget_out, val_out, mia = _criterion(
        model, forget, validation, kind=kind, tolerance=tolerance, mia_margin=mia_margin,
        image_processor=image_processor, batch_size=batch_size, seed=seed)
    forget_accuracy = forget_out.accuracy
    retain_accuracy = None if retain is None else collect_outputs(
        model, seeded_subset(retain, retain_sample_size, seed), image_processor=image_processor,
        batch_size=batch_size).accuracy
    kept_accuracy = _kept_accuracy(val_out, forget_out.labels if kind == "class" else None)
    collapsed = False
    if retain_accuracy is not None and retain_accuracy < retain_floor:
        collapsed = True
        reason += (f", but retain accuracy {retain_accuracy:.3f} < {retain_floor}: the fine-tune did not recover "
                   f"(if the original model scores this low on its own training data, lower --auto_retain_floor)")
    elif reference_accuracy is not None:
        which = "validation accuracy outside the forgotten classes" if kind == "class" else "validation accuracy"
        drop = reference_accuracy - kept_accuracy
        if drop > max_accuracy_drop:
            collapsed = True
            reason += (f", but {which} {kept_accuracy:.3f} is {100 * drop:.1f} points under the original's "
                       f"{reference_accuracy:.3f} (more than {100 * max_accuracy_drop:g}): the fine-tune did not "
                       f"recover the model's accuracy (give it more epochs, e.g. --early_stopping_patience 2 "
                       f"--num_train_epochs 8, or raise --auto_max_accuracy_drop)")
        else:  # the evidence that the model kept what it should, for the report
            reason += f"; {which} {kept_accuracy:.3f}, the original's {reference_accuracy:.3f} ({-100 * drop:+.1f} points)"
    passed = passed and not collapsed
    return {"passed": passed, "collapsed": collapsed, "forget_accuracy": forget_accuracy, "mia_loss_lr": mia,
            "reason": reason, "validation_accuracy": val_out.accuracy, "kept_validation_accuracy": kept_accuracy,
            "retain_accuracy": retain_accuracy, "measure": measure, "bound": bound}




class AutoTopFraction:
    """The search of ``top_fraction="auto"``, driven by the trainer through two calls.

    ::

        search = AutoTopFraction(config, forget=D_f, retain=D_r, validation=V)
        fraction = search.start(model, fisher_forget, fisher_retain)    # reset-only sweep -> first choice
        while fraction is not None:
            ...  # fine-tune ``fraction`` from the original weights
            fraction = search.after_fine_tune(model, fraction, seconds)  # verify -> next fraction, refit or None

    ``record`` holds what a report needs (the trainer exposes it as ``auto_sweep``): the sweep ``rows``, the
    first choice (``start``, ``reason``), the ``kind`` of forgetting, each verified ``attempts``, ``chosen`` (the
    fraction of the model it ends with), ``verified``, and ``refit`` when no attempt passed and the closest one
    was fine-tuned again. ``config`` is the run's :class:`~hf_deepclean.config.DeepCleanConfig`.
    """

    def __init__(self, config, *, forget, retain, validation, log: Callable[[dict], None] | None = None):
        if validation is None:
            raise ValueError("top_fraction='auto' needs eval_dataset: a validation split the model was not trained on.")
        self.config, self.forget, self.retain, self.validation = config, forget, retain, validation
        self.log = log or (lambda values: None)
        self.fractions = list(config.auto_fractions or DEFAULT_FRACTIONS)
        self.record: dict = {}
        self._refitting = False

    @property
    def may_retry(self) -> bool:
        """Whether a second fine-tune can follow the first, so the original weights must be kept."""
        return self.config.auto_max_attempts > 1 and any(f > self.record["start"] for f in self.fractions)

    def start(self, model: torch.nn.Module, fisher_forget, fisher_retain) -> float:
        """Sweep reset-only models and return the first fraction to fine-tune (:func:`choose_top_fraction`)."""
        c = self.config
        rows = reset_sweep(model, fisher_forget, fisher_retain,
                           {"forget": self.forget, "retain": self.retain, "validation": self.validation}, c,
                           fractions=self.fractions)
        kind = forget_kind(self.forget, self.retain, c.auto_kind)
        fraction, reason = choose_top_fraction(
            rows, kind=kind, num_classes=model.config.num_labels, retain_floor=c.auto_retain_floor,
            mia_margin=c.auto_mia_margin, margin_steps=c.auto_margin_steps,
        )
        # What verification holds each fine-tuned model to: the original's accuracy on what it should keep.
        original_accuracy = kept_validation_accuracy(model, self.forget, self.validation, kind=kind,
                                                     batch_size=c.per_device_eval_batch_size)
        # A criterion the untouched original already meets cannot show that anything was forgotten (a model that
        # never memorised D_f passes the loss-MIA window as it is): the search still runs, but nothing it ends
        # with is reported as verified.
        already, original_check = original_meets_criterion(
            model, self.forget, self.validation, kind=kind, tolerance=c.auto_forget_tolerance,
            mia_margin=c.auto_mia_margin, batch_size=c.per_device_eval_batch_size, seed=c.seed)
        informative = not already
        self.record.update(rows=rows, fractions=self.fractions, start=fraction, chosen=fraction, reason=reason,
                           kind=kind, class_forgetting=kind == "class", attempts=[],
                           original_validation_accuracy=original_accuracy, informative=informative,
                           original_check=original_check)
        if not informative:
            logger.warning("top_fraction=auto: the original model already meets the %s criterion (%s), so passing "
                           "it after unlearning shows nothing; the result will not be reported as verified. Judge "
                           "it against retrained models with `hf-deepclean audit`.", kind, original_check)
        logger.info("top_fraction=auto starts at %s: %s.", fraction, reason)
        return fraction

    def after_fine_tune(self, model: torch.nn.Module, fraction: float, train_seconds: float) -> float | None:
        """Verify the model fine-tuned at ``fraction``; return the fraction to fine-tune next from the original
        weights (a larger one, or the closest attempt again), or None to end with this model."""
        if self._refitting:
            return None  # the refit reproduces an attempt already verified (same seed, data and mask)
        passed, attempts = self._verify(model, fraction, train_seconds), self.record["attempts"]
        if passed:
            return None
        # After a fine-tune that did not recover (collapsed, or lost accuracy) a larger fraction, which resets
        # more, would only do worse.
        following = None if attempts[-1]["collapsed"] else next_fraction(self.fractions, attempts)
        if following is not None and len(attempts) < self.config.auto_max_attempts:
            logger.info("top_fraction=auto: %s did not forget after the fine-tune (%s); trying %s from the original "
                        "weights.", fraction, attempts[-1]["reason"], following)
            self.record["chosen"] = following
            return following
        closest = self._closest_attempt()
        if closest is None:
            return None
        logger.warning("top_fraction=auto: no fine-tuned model passed verification and the last one (%s) is further "
                       "from the criterion than %s; fine-tuning %s again to end with it.", fraction, closest, closest)
        self.record["refit"] = self.record["chosen"] = closest
        self._refitting = True
        return closest

    def _verify(self, model: torch.nn.Module, fraction: float, train_seconds: float) -> bool:
        c = self.config
        verdict = verify_forgetting(model, self.forget, self.validation, kind=self.record["kind"],
                                    tolerance=c.auto_forget_tolerance, mia_margin=c.auto_mia_margin,
                                    retain=self.retain, retain_floor=c.auto_retain_floor,
                                    reference_accuracy=self.record["original_validation_accuracy"],
                                    max_accuracy_drop=c.auto_max_accuracy_drop,
                                    batch_size=c.per_device_eval_batch_size, seed=c.seed)
        model.train()
        self.record["attempts"].append({"top_fraction": fraction, "train_time_s": train_seconds, **verdict})
        self.record["verified"] = verdict["passed"] and self.record["informative"]
        self.log({"deepclean/auto_attempt_fraction": fraction, "deepclean/auto_attempt_passed": float(verdict["passed"]),
                  "deepclean/auto_attempt_forget_accuracy": verdict["forget_accuracy"]})
        return verdict["passed"]

    def _closest_attempt(self) -> float | None:
        """After every attempt failed: the fraction to fine-tune again, or None to keep the last model.

        The attempt nearest its criterion (lowest ``measure``; the smaller fraction on ties) among those whose
        fine-tune recovered (``collapsed`` False), when that is not the last attempt already.
        """
        attempts = self.record["attempts"]
        usable = [a for a in attempts if not a["collapsed"]]
        if not usable:
            return None
        closest = min(usable, key=lambda a: (a["measure"], a["top_fraction"]))
        return None if closest is attempts[-1] else closest["top_fraction"]


def describe_auto(auto: dict, validation_source: str) -> str:
    """What ``top_fraction=auto`` did, for the report and the model card."""
    tried = "; ".join(f"{a['top_fraction']:g}: {a['reason']}" for a in auto.get("attempts", []))
    if auto.get("informative") is False:
        verdict = (f"NOT verified: the original model already meets the criterion ({auto['original_check']}), so "
                   "this check cannot show forgetting here; judge the model against retrained ones "
                   "(`hf-deepclean audit`)")
    elif auto.get("verified"):
        verdict = ("verified after the fine-tune (one model against a threshold, where the original fails it; "
                   "`hf-deepclean audit` compares populations)")
    elif auto.get("refit") is not None:
        verdict = ("NOT verified: no fine-tuned model met the criterion; this is the attempt closest to it that did "
                   "not collapse or lose accuracy, fine-tuned again")
    else:
        verdict = "NOT verified: the last fine-tuned model still fails the criterion"
    return (f"top_fraction=auto ({auto['kind']} forgetting) chose {auto['chosen']:g}, {verdict}. First choice: "
            f"{auto['reason'].rstrip('.')}. Fine-tuned: {tried or 'none'}. Validation: {validation_source.rstrip('.')}.")

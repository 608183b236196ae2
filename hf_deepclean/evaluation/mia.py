"""Membership-inference attacks (MIA) that check whether forgotten samples still look like training data.

Two standard attacks, both balanced by seeded subsampling and both reporting how many samples
they used. Sign conventions:

- :func:`mia_loss_lr` (the NeurIPS 2023 Machine Unlearning challenge attack): a logistic
  regression on the per-sample loss tells the forget set (label 1, "member") from the test set
  (label 0, "non-member"); ``accuracy`` is its stratified cross-validated accuracy.
  **0.5 = the attacker cannot tell them apart**, which is what the gold (retrained) model gives
  when forget and test samples come from the same distribution. The attack is two-sided: it
  also scores above 0.5 when the forget losses are *higher* than the test losses (over-forgetting,
  which leaks that the samples were removed); ``forget_loss_mean`` vs ``test_loss_mean`` tells
  the direction. Compare with the gold model's value, not with 0.5 alone.
- :func:`mia_efficacy` (SalUn, Fan et al. 2024; "Model sparsity can simplify machine unlearning",
  Jia et al. 2023): an RBF SVC trained on retain (members, 1) vs test (non-members, 0) features
  (probability of the label and entropy of the prediction, as in Jia et al.'s ``SVC_MIA``),
  applied to the forget set; ``efficacy`` = the fraction of the forget set predicted
  non-member. **Higher = more forgotten**; for random forgetting even the gold model stays well
  below 1 (unseen samples of a well-generalising model look like members), so again compare with gold.

With fewer than ``min_per_class`` (50) samples per side the estimate is noisy (one digits class
has ~37 test images): the result says so in ``noisy`` and ``note``; it is never hidden.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

MIN_SAMPLES_PER_CLASS = 50
# Losses of +inf (probability underflow) would break the scaler; any finite large value ranks the same.
_LOSS_CAP = 1e4
# log(0) is -inf; a loss of 1e-12 already means p(y|x) = 1 in float32.
_LOSS_FLOOR = 1e-12


def _as_losses(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} holds NaN values; check the model outputs.")
    return np.minimum(array, _LOSS_CAP)


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, cap: int | None = None):
    """Subsample both arrays (rows) to the same size, without replacement."""
    n = min(len(a), len(b))
    if cap is not None:
        n = min(n, cap)
    pick_a = np.sort(rng.choice(len(a), size=n, replace=False))
    pick_b = np.sort(rng.choice(len(b), size=n, replace=False))
    return a[pick_a], b[pick_b], n


def _noise_note(n_per_class: int, what: str, min_per_class: int) -> str:
    return (
        f"noisy: only {n_per_class} samples per side for {what} (< {min_per_class}); "
        "the score can move by several points between seeds"
    )


def mia_loss_lr(
    forget_losses,
    test_losses,
    *,
    n_splits: int = 5,
    seed: int = 0,
    transform: str = "log",
    min_per_class: int = MIN_SAMPLES_PER_CLASS,
) -> dict:
    """Loss-based MIA of the NeurIPS 2023 unlearning challenge (see the module doc for the sign convention).

    The larger of the two sets is subsampled (seeded) to the size of the smaller, then a
    logistic regression on the loss is scored by ``n_splits``-fold stratified,
    shuffled, seeded cross-validation. ``transform="log"`` (default) fits on ``log(loss)``: a
    threshold on the log-loss is a threshold on the loss, but the fit no longer lets a few huge
    losses (misclassified samples) squash all the others; ``"raw"`` fits an unscaled logistic
    regression on the loss itself, as the challenge's starter kit did. Returns ``accuracy`` (mean over folds), ``accuracy_std``,
    ``auc`` (ROC-AUC), the counts used (``n_members``, ``n_nonmembers``, ``n_per_class``), the
    available counts, mean losses, ``noisy`` and a ``note``.
    """

    if transform not in ("log", "raw"):
        raise ValueError(f"transform={transform!r} must be 'log' or 'raw'.")
    forget = _as_losses(forget_losses, "forget_losses")
    test = _as_losses(test_losses, "test_losses")
    if transform == "log" and ((forget < 0).any() or (test < 0).any()):
        raise ValueError("Losses must be >= 0 for transform='log'; pass transform='raw' for other scores.")
    rng = np.random.default_rng(seed)
    members, nonmembers, n = _balanced(forget, test, rng)
    result = {
        "attack": f"logistic regression on per-sample loss ({transform}); forget = member (1), test = non-member (0)",
        "accuracy": float("nan"),
        "accuracy_std": float("nan"),
        "auc": float("nan"),
        "n_members": n,
        "n_nonmembers": n,
        "n_per_class": n,
        "n_forget_available": int(len(forget)),
        "n_test_available": int(len(test)),
        "n_splits": 0,
        "forget_loss_mean": float(forget.mean()) if len(forget) else float("nan"),
        "test_loss_mean": float(test.mean()) if len(test) else float("nan"),
        "noisy": n < min_per_class,
        "note": "",
        "seed": seed,
    }
    folds = min(n_splits, n)
    if folds < 2:
        result.update(noisy=True, note=f"not computed: {n} samples per side, the attack needs at least 2")
        return result
    x = np.concatenate([members, nonmembers])[:, None]
    if transform == "log":
        x = np.log(np.maximum(x, _LOSS_FLOOR))
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    attack = make_pipeline(StandardScaler(), LogisticRegression()) if transform == "log" else LogisticRegression()
    scores = cross_validate(attack, x, y, cv=cv, scoring=("accuracy", "roc_auc"))
    result.update(
        accuracy=float(np.mean(scores["test_accuracy"])),
        accuracy_std=float(np.std(scores["test_accuracy"])),
        auc=float(np.mean(scores["test_roc_auc"])),
        n_splits=folds,
    )
    if result["noisy"]:
        result["note"] = _noise_note(n, "the loss attack", min_per_class)
    return result


DEFAULT_EFFICACY_FEATURES = ("true_probs", "entropies")


def mia_efficacy(
    retain_outputs,
    test_outputs,
    forget_outputs,
    *,
    seed: int = 0,
    features=DEFAULT_EFFICACY_FEATURES,
    max_per_class: int | None = 5000,
    min_per_class: int = MIN_SAMPLES_PER_CLASS,
) -> dict:
    """MIA-efficacy of SalUn / Jia et al. (see the module doc for the sign convention).

    ``*_outputs`` are :class:`~hf_deepclean.evaluation.SplitOutputs` (or objects with the named
    ``features`` as per-sample arrays). Retain and test are subsampled (seeded) to the same size,
    at most ``max_per_class`` each (an RBF SVC's fit time grows quadratically), then
    ``SVC(C=3, gamma="auto", kernel="rbf")`` is fitted on them with retain = member (1) and
    test = non-member (0). ``efficacy`` = fraction of the forget set predicted non-member.
    """

    def matrix(outputs, name):
        x = np.stack([np.asarray(getattr(outputs, f), dtype=np.float64).reshape(-1) for f in features], axis=1)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} features {list(features)} hold NaN or Inf values; check the model outputs.")
        return x

    retain, test, forget = matrix(retain_outputs, "retain"), matrix(test_outputs, "test"), matrix(forget_outputs, "forget")
    rng = np.random.default_rng(seed)
    members, nonmembers, n = _balanced(retain, test, rng, cap=max_per_class)
    result = {
        "attack": f"RBF SVC on {list(features)}; retain = member (1), test = non-member (0); applied to forget",
        "efficacy": float("nan"),
        "attack_train_accuracy": float("nan"),
        "n_train_members": n,
        "n_train_nonmembers": n,
        "n_per_class": n,
        "n_retain_available": int(len(retain)),
        "n_test_available": int(len(test)),
        "n_forget": int(len(forget)),
        "noisy": n < min_per_class or len(forget) < min_per_class,
        "note": "",
        "seed": seed,
    }
    if n < 2 or len(forget) == 0:
        result.update(noisy=True, note=f"not computed: {n} training samples per side and {len(forget)} forget samples")
        return result
    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    result.update(
        efficacy=float(np.mean(svc.predict(forget) == 0)),
        attack_train_accuracy=float(np.mean(svc.predict(x) == y)),
    )
    if result["noisy"]:
        small = [f"{n} per side to train the attack"] if n < min_per_class else []
        small += [f"{len(forget)} forget samples"] if len(forget) < min_per_class else []
        result["note"] = f"noisy: only {' and '.join(small)} (< {min_per_class}); the efficacy can move by several points"
    return result


__all__ = ["DEFAULT_EFFICACY_FEATURES", "MIN_SAMPLES_PER_CLASS", "mia_efficacy", "mia_loss_lr"]

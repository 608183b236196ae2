"""The forget score of the NeurIPS 2023 Machine Unlearning competition: unlearned models judged against retrains.

One unlearned model compared with one retrained model cannot separate good unlearning from retraining's own
randomness. The competition (Triantafillou et al., arXiv 2406.09073; scoring code google-deepmind/unlearning_evaluation,
``metric.py``) runs the unlearning N times and the retraining N times and asks, for every forget example, how well
any threshold test on the example's logit-scaled confidence tells the two populations apart, as an (ε, δ) privacy
loss; the score F rewards small ε.

:func:`logit_scaled_confidence` gives the per-example statistic, log p_y - log(1 - p_y).
:func:`forgetting_quality` gives per-example ε and F as a :class:`ForgettingQuality`.

Definition implemented (read from the reference at commit ffae0fff4c3e9523b22618c47df6c26e4eebe0df; this is our own
vectorised code). Per example, with the N confidences of each population:

1. Positive population: the retrained one if its median over models is strictly larger than the unlearned one's,
   else the unlearned one (a tie makes the unlearned population positive).
2. Peaky cap: with r_small and r_large the smaller and larger of the two ranges (max - min), ε = 50 if
   r_small / r_large < 0.01. When both populations are constant the ratio is 0/0 (NaN), the cap does not apply
   and the decision rules below decide.
3. Single-threshold rules: ceil((max - min) * 100) thresholds from the minimum to the maximum of both populations
   pooled, endpoints included (none when all 2N values are equal). The reference builds this grid with
   ``torch.linspace`` in the default float32 dtype; it is built the same way here, so the float32 rounding that
   decides a tie at a threshold is the reference's. A confidence >= the threshold is predicted positive.
4. Two-threshold rules: the "peaky" population is the one with the smaller range (the negative one on equal
   ranges); w is its range. Right thresholds r: ceil((hi - lo) * 100) points from lo = (its min + w) - 2 to
   hi = its max + 2; for each r, 400 left thresholds l from (r - w) - 2 to (r - w) + 2 (numpy ``linspace`` in
   float64, endpoints included, reproduced element for element). A confidence c with l <= c <= r is predicted to
   come from the peaky population, which is the positive class of these rules.
5. Rates are fractions of the N models in float32 (count / N). Per rule: FPR = FNR = 0 (perfect separation)
   gives ε = ∞; exactly one of them 0 discards the rule (taken as too few samples); otherwise
   ε = max(0, ln(1 - δ - FPR) - ln FNR, ln(1 - δ - FNR) - ln FPR) evaluated in float32, a term whose logarithm is
   undefined (1 - δ - rate < 0: a rate of 1 at the default δ) being ignored and a rule with both terms undefined
   discarded.
   δ enters only there: the rules test the (ε, δ) bound FPR + e^ε FNR >= 1 - δ.
6. ε of the example: the maximum over the surviving rules of both families.

The score: with m = ceil(ln(N - 1)) (``max_resolvable_epsilon``), 2m buckets [k/2, k/2 + 1/2), k = 0 .. 2m - 1,
worth 2^-k points; ε >= m scores 0. F is the mean of the points over the examples, so F = 1 means every example's
populations are indistinguishable (ε < 1/2) and F = 0 that every example is perfectly separated or capped. A finite
ε from N models per population is at most ln(N - 1 - Nδ) < m, so only ∞ and the cap score 0; at some N the top
buckets cannot be reached (N = 4: ln 3 < 3/2).

Two populations drawn from one distribution do not score 1: the maximum over all rules picks up chance differences
in the tails (a threshold with a positives and b negatives at or above it, both few, gives ε = ln(a / b) up to δ),
so a score is read against the score of retrains against retrains at the same N.

Where this follows the reference's intent rather than its letter, or differs on purpose:

- The reference checks that some rule survived with ``assert thr_eps`` on a numpy array, which raises for more
  than one surviving rule (the published code cannot run as is) and also fails on a single rule of ε = 0. The
  intent, "some rule survived", is kept; where no rule survives (in degenerate cases, e.g. two equal constant
  populations) the reference would stop, here ε = 0: no rule on the grid tells the populations apart.
- The reference clips the final ε to [0, 50], so it reports perfect separation as 50. ``epsilons`` keeps ∞ (a
  perfect separation is not the peaky cap); ``capped_epsilons`` gives the reference's values, and the scores agree.
- Inputs are taken as float64 (the reference's confidences are float64); the equivalence holds for float64 inputs.
- Unequal model counts are refused (the reference's per-example selection cannot broadcast them), as are fewer
  than 3 models (m <= 0: no bucket, F = 0 whatever the models do) and non-finite confidences (the reference's
  grids cannot be built from them).
- The rates here are count / N rounded to float32, as torch computes the reference's means on a CPU; the
  competition ran on CUDA, whose reductions may round differently, so an ε can differ from a CUDA run of the
  reference in its last float32 digit.

How it is vectorised: ε depends on a rule only through the two counts of models predicted positive (one per
population), so the ε of every count pair is tabulated once per call; each example then needs only the set of
count pairs its rules reach. The two-threshold rules (about 400 x 400 per example) are counted for blocks of
examples at once: for each right threshold the left thresholds form an arithmetic grid, so the number of them at
or below each confidence is found arithmetically (then checked against the exact grid values) and cumulative
histograms give the counts for all 400 left thresholds. Torch tensors (CPU or CUDA) are accepted and converted;
the computation runs in numpy on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
PEAKY_RANGE_RATIO = 0.01
BUCKET_WIDTH = 0.5
# Two-threshold rules: how far (in confidence units) the right thresholds extend beyond the peaky population
# and the left thresholds beyond one window width from the right threshold.
WINDOW_BUFFER = 2.0
NUM_LEFT_THRESHOLDS = math.ceil(2 * WINDOW_BUFFER * THRESHOLDS_PER_UNIT)

# Table entry of a discarded rule; every kept ε is >= 0.
_DISCARDED = -1.0
# Two-threshold entries (examples x right thresholds x left thresholds) per block.
_BLOCK_ENTRIES = 1 << 21
# Single-threshold entries per block.
_SINGLE_BLOCK_ENTRIES = 1 << 22

__all__ = ["DELTA", "EPSILON_CAP", "ForgettingQuality", "forgetting_quality", "logit_scaled_confidence"]


def logit_scaled_confidence(logits, labels):
    """Per example log p_y - log(1 - p_y), the statistic whose populations the forget score compares.

    Computed as z_y - logsumexp over the other classes of z (log p_y = z_y - lse(z) and log(1 - p_y) =
    lse_{c != y}(z_c) - lse(z); the common lse(z) cancels), so it stays exact where p_y rounds to 1 or to 0. The
    reference adds 1e-45 inside both logarithms instead, which bounds it and loses it once a probability
    underflows; the two agree elsewhere.

    Args:
        logits: ``[..., num_examples, num_classes]`` (e.g. ``[num_models, num_examples, num_classes]``), a numpy
            array or a torch tensor (CPU or CUDA).
        labels: integer ``[num_examples]`` (numpy or torch), the class each example is scored on.

    Returns float64 ``logits.shape[:-1]``, a numpy array for numpy logits, a tensor on the logits' device for a
    tensor.
    """
    is_tensor = isinstance(logits, torch.Tensor)
    z = logits.detach() if is_tensor else torch.from_numpy(np.ascontiguousarray(logits))
    if z.ndim < 2:
        raise ValueError(f"logits must be [..., num_examples, num_classes]; got shape {tuple(z.shape)}")
    if z.shape[-1] < 2:
        raise ValueError(f"logits need at least 2 classes for log(1 - p_y); got shape {tuple(z.shape)}")
    if not (z.is_floating_point() or z.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"logits must be real numbers; got dtype {z.dtype}")
    y = labels.detach() if isinstance(labels, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(labels))
    if y.ndim != 1 or y.shape[0] != z.shape[-2]:
        raise ValueError(
            f"labels must be [num_examples] = [{z.shape[-2]}] for logits of shape {tuple(z.shape)}; got shape "
            f"{tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices; got dtype {y.dtype}")
    y = y.to(device=z.device, dtype=torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}); got values in [{int(y.min())}, {int(y.max())}]")
    z = z.to(torch.float64)
    index = y.view(*([1] * (z.ndim - 2)), -1, 1).expand(*z.shape[:-1], 1)
    target = z.gather(-1, index).squeeze(-1)
    others = z.scatter(-1, index, float("-inf")).logsumexp(-1)
    confidence = target - others
    return confidence if is_tensor else confidence.numpy()


@dataclass(frozen=True, eq=False)
class ForgettingQuality:
    """Per-example ε and the forget score F of an unlearned population against a retrained one.

    ``epsilons``: float64 ``[num_examples]``, read-only; ∞ where a rule separates the populations perfectly,
    :data:`EPSILON_CAP` where one population is peaky (the cap rule), otherwise in [0, ln(N - 1 - Nδ)].
    ``score``: F in [0, 1]. ``num_models``: N per population. ``max_resolvable_epsilon``: ceil(ln(N - 1)), the top
    of the bucket range (ε at or above it scores 0). ``delta``: the δ of the (ε, δ) bound.
    """

    epsilons: np.ndarray
    score: float
    num_models: int
    max_resolvable_epsilon: float
    delta: float

    @property
    def num_examples(self) -> int:
        return int(self.epsilons.shape[0])

    @property
    def num_buckets(self) -> int:
        """Buckets of width 1/2 worth 1, 1/2, 1/4, ...: 2 * ceil(ln(N - 1))."""
        return round(self.max_resolvable_epsilon / BUCKET_WIDTH)

    @property
    def capped_epsilons(self) -> np.ndarray:
        """ε clipped to [0, 50] as the reference reports it (∞ becomes 50)."""
        return np.minimum(self.epsilons, EPSILON_CAP)

    @property
    def points(self) -> np.ndarray:
        """Each example's points: 2^-k for ε in bucket k, 0 at or beyond ``max_resolvable_epsilon``."""
        return _bucket_points(self.epsilons, self.num_buckets)

    def to_dict(self) -> dict:
        """JSON-safe summary; an infinite ε is written as the string ``"inf"``."""
        epsilons = ["inf" if math.isinf(e) else float(e) for e in self.epsilons.tolist()]
        return {
            "score": float(self.score),
            "num_models": int(self.num_models),
            "num_examples": self.num_examples,
            "max_resolvable_epsilon": float(self.max_resolvable_epsilon),
            "num_buckets": self.num_buckets,
            "delta": float(self.delta),
            "num_separated": int(np.isinf(self.epsilons).sum()),
            "num_capped": int((self.epsilons == EPSILON_CAP).sum()),
            "epsilons": epsilons,
        }


def forgetting_quality(unlearned, retrained, delta: float = DELTA) -> ForgettingQuality:
    """Per-example ε and the forget score F (the competition's definition, see the module docstring).

    Args:
        unlearned: ``[num_models, num_examples]`` logit-scaled confidences of the forget examples under each
            unlearned model (:func:`logit_scaled_confidence`), numpy or torch (CPU or CUDA).
        retrained: the same under each retrained model, the same shape.
        delta: the δ of the (ε, δ) bound, in [0, 1); the competition's 1e-5 by default.
    """
    u, r = _population(unlearned, "unlearned"), _population(retrained, "retrained")
    if u.shape != r.shape:
        raise ValueError(
            f"unlearned {u.shape} and retrained {r.shape} must both be [num_models, num_examples] with the same "
            "number of models and the same examples in the same order"
        )
    num_models, num_examples = u.shape
    if num_models < 3:
        raise ValueError(f"the forget score needs at least 3 models per population (ceil(ln(N - 1)) buckets); got "
                         f"{num_models}")
    if num_examples == 0:
        raise ValueError("no examples: pass [num_models, num_examples] confidences with num_examples >= 1")
    delta = float(delta)
    if not 0 <= delta < 1:
        raise ValueError(f"delta={delta} must be in [0, 1), e.g. 1e-5")

    retrain_is_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_is_positive, r, u).T  # [num_examples, num_models]
    neg = np.where(retrain_is_positive, u, r).T
    pos_range = pos.max(axis=1) - pos.min(axis=1)
    neg_range = neg.max(axis=1) - neg.min(axis=1)
    smallest = np.where(pos_range > neg_range, neg_range, pos_range)
    largest = np.where(pos_range > neg_range, pos_range, neg_range)
    with np.errstate(divide="ignore", invalid="ignore"):
        capped = smallest / largest < PEAKY_RANGE_RATIO  # 0/0 is NaN: not capped

    table = _epsilon_table(num_models, delta)
    best = np.full(num_examples, _DISCARDED)
    rest = np.flatnonzero(~capped)
    if rest.size:
        best[rest] = np.maximum(_best_single(pos[rest], neg[rest], table),
                                _best_double(pos[rest], neg[rest], pos_range[rest] >= neg_range[rest],
                                             smallest[rest], table))
    epsilons = np.where(capped, EPSILON_CAP, np.maximum(best, 0.0))  # no surviving rule: 0
    epsilons.setflags(write=False)
    max_epsilon = float(math.ceil(math.log(num_models - 1)))
    score = float(_bucket_points(epsilons, round(max_epsilon / BUCKET_WIDTH)).sum() / num_examples)
    return ForgettingQuality(epsilons=epsilons, score=score, num_models=num_models, max_resolvable_epsilon=max_epsilon,
                             delta=delta)


def _population(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [num_models, num_examples] confidences; got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be real confidences; got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(x)).sum())} non-finite confidences; the grids need "
                         "finite values")
    return x


def _bucket_points(epsilons: np.ndarray, num_buckets: int) -> np.ndarray:
    """2^-k for ε in [k/2, k/2 + 1/2) with k < num_buckets, else 0."""
    with np.errstate(invalid="ignore"):
        bucket = np.floor(epsilons / BUCKET_WIDTH)
    inside = bucket < num_buckets  # False for inf
    return np.where(inside, np.exp2(-np.where(inside, bucket, 0.0)), 0.0)


def _epsilon_table(num_models: int, delta: float) -> np.ndarray:
    """ε of a rule by its counts: entry [a, b] for a positives and b negatives predicted positive (float32 math)."""
    n = np.float32(num_models)
    counts = np.arange(num_models + 1, dtype=np.float32)
    fnr = ((n - counts) / n)[:, None]  # by a
    fpr = (counts / n)[None, :]  # by b
    one_minus_delta = np.float32(1.0 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.clip(np.fmax(np.log(one_minus_delta - fpr) - np.log(fnr),
                              np.log(one_minus_delta - fnr) - np.log(fpr)), 0, None).astype(np.float64)
    both_zero = (fpr == 0) & (fnr == 0)
    one_zero = (fpr * fnr == 0) & ~both_zero
    eps = np.where(both_zero, np.inf, np.where(one_zero | np.isnan(eps), _DISCARDED, eps))
    return eps


def _count_at_or_below(values: np.ndarray, queries: np.ndarray, query_rows: np.ndarray, inclusive: bool) -> np.ndarray:
    """For each query q of row i, how many of ``values[i]`` are <= q (``inclusive``) or < q.

    One sort of all values and queries by (row, value), ties ordered so that equal values count only when
    ``inclusive``; a value's rank among its row's values is then a running count.
    """
    rows, width = values.shape
    keys = np.concatenate([values.ravel(), queries])
    row = np.concatenate([np.repeat(np.arange(rows), width), query_rows])
    is_value = np.concatenate([np.ones(values.size, dtype=bool), np.zeros(queries.size, dtype=bool)])
    tie_order = ~is_value if inclusive else is_value  # sorts first on equal keys when False
    order = np.lexsort((tie_order, keys, row))
    values_before = np.cumsum(is_value[order]) - is_value[order]
    counts = np.empty(queries.size, dtype=np.int64)
    query_positions = ~is_value[order]
    counts[order[query_positions] - values.size] = values_before[query_positions]
    return counts - query_rows * width


def _best_single(pos: np.ndarray, neg: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Best ε of the single-threshold rules per example (``_DISCARDED`` where none survives)."""
    num_examples, num_models = pos.shape
    pooled = np.concatenate([pos, neg], axis=1)
    low, high = pooled.min(axis=1), pooled.max(axis=1)
    num_thresholds = np.ceil((high - low) * THRESHOLDS_PER_UNIT).astype(np.int64)
    best = np.full(num_examples, _DISCARDED)
    start = 0
    while start < num_examples:
        # Blocks of examples with a bounded number of thresholds (at least one example per block).
        stop = start + max(1, int(np.searchsorted(np.cumsum(num_thresholds[start:]), _SINGLE_BLOCK_ENTRIES)))
        grids = [torch.linspace(float(low[i]), float(high[i]), int(num_thresholds[i]), dtype=torch.float32).numpy()
                 for i in range(start, stop)]
        thresholds = np.concatenate(grids).astype(np.float64)
        rows = np.repeat(np.arange(stop - start), num_thresholds[start:stop])
        if thresholds.size:
            a = num_models - _count_at_or_below(pos[start:stop], thresholds, rows, inclusive=False)  # pos >= t
            b = num_models - _count_at_or_below(neg[start:stop], thresholds, rows, inclusive=False)
            found = np.full(stop - start, _DISCARDED)
            np.maximum.at(found, rows, table[a, b])
            best[start:stop] = found
        start = stop
    return best


def _rows_linspace(start: np.ndarray, stop: np.ndarray, num: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Element ``index`` of ``np.linspace(start, stop, num)`` per row, as numpy computes it (num >= 2)."""
    step = (stop - start) / (num - 1)
    return np.where(index == num - 1, stop, index * step + start)


def _best_double(pos: np.ndarray, neg: np.ndarray, neg_is_peaky: np.ndarray, width: np.ndarray,
                 table: np.ndarray) -> np.ndarray:
    """Best ε of the two-threshold rules per example (``_DISCARDED`` where none survives)."""
    num_examples = pos.shape[0]
    peaky = np.where(neg_is_peaky[:, None], neg, pos)
    other = np.where(neg_is_peaky[:, None], pos, neg)
    low = (peaky.min(axis=1) + width) - WINDOW_BUFFER
    high = peaky.max(axis=1) + WINDOW_BUFFER
    num_right = np.ceil((high - low) * THRESHOLDS_PER_UNIT).astype(np.int64)
    block = max(1, _BLOCK_ENTRIES // (int(num_right.max()) * NUM_LEFT_THRESHOLDS))
    best = np.empty(num_examples)
    for start in range(0, num_examples, block):
        s = slice(start, start + block)
        best[s] = _best_double_block(peaky[s], other[s], width[s], low[s], high[s], num_right[s], table)
    return best


def _best_double_block(peaky, other, width, low, high, num_right, table) -> np.ndarray:
    rows, num_models = peaky.shape
    num_left = NUM_LEFT_THRESHOLDS
    k = np.arange(int(num_right.max()))
    right = _rows_linspace(low[:, None], high[:, None], num_right[:, None], k[None, :])  # [rows, R]
    valid = k[None, :] < num_right[:, None]
    # Count codes a * (N + 1) + b of the models at or below each right threshold; a window [l, r] holds those
    # minus the ones below l.
    to_right = ((peaky[:, None, :] <= right[..., None]).sum(-1) * (num_models + 1)
                + (other[:, None, :] <= right[..., None]).sum(-1))

    left_start = (right - width[:, None]) - WINDOW_BUFFER  # [rows, R]
    left_stop = (right - width[:, None]) + WINDOW_BUFFER
    left_step = (left_stop - left_start) / (num_left - 1)
    start3, stop3, step3 = left_start[..., None], left_stop[..., None], left_step[..., None]
    # Queries: the 2N confidences and the right threshold itself.
    queries = np.concatenate([np.broadcast_to(np.concatenate([peaky, other], axis=1)[:, None, :],
                                              (rows, k.size, 2 * num_models)), right[..., None]], axis=-1)

    def left(j):
        return np.where(j == num_left - 1, stop3, j * step3 + start3)

    # at_or_below[i, k, c]: how many left thresholds of right threshold k are <= query c (the grid is
    # non-decreasing); estimated from the step, then corrected against the exact grid values.
    with np.errstate(invalid="ignore"):
        estimate = np.floor((queries - start3) / step3) + 1
    at_or_below = np.clip(estimate, 0, num_left).astype(np.int64)
    while True:
        grow = (at_or_below < num_left) & (left(np.minimum(at_or_below, num_left - 1)) <= queries)
        shrink = (at_or_below > 0) & (left(np.maximum(at_or_below - 1, 0)) > queries)
        if not (grow.any() or shrink.any()):
            break
        at_or_below += grow.astype(np.int64) - shrink.astype(np.int64)

    # Models strictly below left threshold j are those whose at_or_below <= j: a cumulative histogram over j,
    # weighted N + 1 for the peaky population and 1 for the other, gives their count code.
    bins = np.arange(rows * k.size).reshape(rows, k.size, 1) * (num_left + 1)
    size = rows * k.size * (num_left + 1)
    hist = (np.bincount((bins + at_or_below[..., :num_models]).ravel(), minlength=size) * (num_models + 1)
            + np.bincount((bins + at_or_below[..., num_models:-1]).ravel(), minlength=size))
    below = hist.reshape(rows, k.size, num_left + 1)[..., :num_left].cumsum(-1)
    # A left threshold above the right one (j >= at_or_below of r) leaves the window empty: code 0, discarded.
    nonempty = np.arange(num_left) < at_or_below[..., -1:]
    codes = np.where(nonempty, to_right[..., None] - below, 0)
    eps = table.ravel()[codes].max(-1)  # [rows, R]
    return np.where(valid, eps, _DISCARDED).max(-1)

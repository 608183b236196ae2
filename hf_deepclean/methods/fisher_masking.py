"""Fisher Masking (Liu, Sun, Wu, Zhou 2023, "Unlearning with Fisher Masking", arXiv 2310.05331).

What is implemented, exactly:

1. The diagonal Fisher information of every weight on the forget set,
   ``F_f(w_i) = 1/|D_f| sum_{(x,y) in D_f} (d log p(y|x) / d w_i)^2`` (the empirical Fisher,
   :func:`~hf_deepclean.fisher.fisher_diagonal`; ``fisher_estimator`` picks another estimator).
2. The mask: the ``mask_fraction`` of all eligible weights with the largest score (exact count), with the score
   ``F_f(w_i)`` itself (``score="forget"``, the default). Those weights are masked, i.e. set to zero.
3. Optionally (``finetune=True``, the default) a fine-tune on D_r of the masked weights only
   (:class:`~hf_deepclean.masking.GradientMask`: every other weight stays bit-identical), as the paper fine-tunes
   after masking; ``finetune=False`` is the paper's "without any fine-tuning" variant.

Where it comes from, and what could not be checked. The paper's own text (its method section and equations) was
not reachable from where this was written: the search corpora hold only its abstract ("by first masking some
important parameters before fine-tuning ... a new masking strategy tailored to unlearning based on Fisher
information ... without any fine-tuning, the proposed Fisher masking could unlearn almost completely"), so no
section or equation number is cited here. The formula above rests on (a) the abstract; (b) the DeepClean slides'
one-line summary of it ("identify the parameters most responsible for performance on D_f and mask them, then
fine-tune the remaining model on D_r"); (c) experiment scripts published under the paper's title
(shivank21/Unlearning-with-Fisher-Masking, not verifiably the authors'; the ``unlearning/`` module that holds the
masking itself is not in the repository), where the Fisher mask is also computed with no retain data
(``only_forget.py`` passes ``None`` for the retain loader unless ``--sample_small``), the largest scores are masked
(``largest=True``), the mask fraction is ``REMOVE_RATIO`` (0.04 in the MNIST configs, 0.02 for CIFAR) and a
fine-tune on the retain data follows. So no normalisation against D_r is applied by default;
``score="ratio"`` ranks by ``F_f / (F_r + ratio_eps)`` instead, for comparison (that selection is DeepClean's,
whose registry entry also zeroes and fine-tunes: the two then differ only in their defaults).

Normalisation-layer weights follow ``norm_policy`` as in DeepClean (zeroing a normalisation scale collapses a
ResNet): ``init`` (default: a selected scale goes back to 1, a shift to 0), ``exclude`` (never selected) or
``same`` (zeroed like any weight).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..config import FISHER_ESTIMATORS, NORM_POLICIES
from ..fisher import fisher_diagonal
from ..images import collate_fn
from ..masking import GradientMask, freeze_batchnorm_statistics, reset_selected_weights
from ..selection import DEFAULT_EPS, ParameterMask, excluded_parameters, select_parameters
from .base import MaskedTrainer, MethodResult, UnlearningArguments, model_inputs, require_splits, train, with_seed

SCORES = ("forget", "ratio")


@dataclass
class FisherMaskingConfig(UnlearningArguments):
    """Fisher Masking: zero the weights with the largest forget-set Fisher, then (optionally) fine-tune them on D_r.

    Args:
        mask_fraction: Fraction of all eligible weights masked (zeroed), the largest scores first (exact count);
            0.04 is the mask ratio of the paper's public MNIST configs.
        score: ``forget`` (default): the Fisher on D_f, ``F_f``; ``ratio``: ``F_f / (F_r + ratio_eps)`` (DeepClean's
            ranking, for comparison).
        finetune: Fine-tune the masked weights on D_r afterwards (every other weight stays bit-identical).
        fisher_estimator: ``empirical`` (per-sample squared gradients at the true labels), ``expected`` or ``batch``.
        fisher_batch_size: Batch size of the Fisher pass.
        fisher_max_samples: Use at most this many (seeded) samples per Fisher.
        ratio_eps: Absolute eps of the ratio (``score="ratio"`` only).
        norm_policy: Normalisation weights: ``init`` (a selected scale becomes 1, a shift 0), ``exclude`` (never
            selected) or ``same`` (zeroed like any weight).
        exclude_parameters: Parameters matching these patterns are never masked.
        freeze_batchnorm_stats: During the fine-tune, keep the running statistics of BatchNorm layers with no
            masked weight fixed.
        num_train_epochs: Epochs of the fine-tune on D_r.
        learning_rate: Peak learning rate of the fine-tune.
    """

    mask_fraction: float = field(default=0.04, metadata={"help": "Fraction of weights masked (largest score first)."})
    score: str = field(default="forget", metadata={"help": "forget: Fisher on D_f; ratio: F_f / (F_r + eps)."})
    finetune: bool = field(default=True, metadata={"help": "Fine-tune the masked weights on D_r afterwards."})
    fisher_estimator: str = field(
        default="empirical", metadata={"help": "Fisher estimator: empirical, expected, batch."}
    )
    fisher_batch_size: int = field(default=64, metadata={"help": "Batch size of the Fisher pass."})
    fisher_max_samples: int | None = field(default=None, metadata={"help": "At most this many samples per Fisher."})
    ratio_eps: float = field(default=DEFAULT_EPS, metadata={"help": "Absolute eps of F_f / (F_r + eps) (score=ratio)."})
    norm_policy: str = field(default="init", metadata={"help": "Normalisation weights: init, exclude or same."})
    exclude_parameters: list[str] | None = field(default=None, metadata={"help": "Parameters never masked."})
    freeze_batchnorm_stats: bool = field(
        default=True, metadata={"help": "Keep BatchNorm running stats of layers with no masked weight fixed."}
    )
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of the fine-tune on D_r."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of the fine-tune."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.mask_fraction <= 1.0:
            raise ValueError(f"mask_fraction={self.mask_fraction} must be in (0, 1].")
        if self.score not in SCORES:
            raise ValueError(f"score={self.score!r} must be one of {SCORES}.")
        if self.fisher_estimator not in FISHER_ESTIMATORS:
            raise ValueError(f"fisher_estimator={self.fisher_estimator!r} must be one of {FISHER_ESTIMATORS}.")
        if self.norm_policy not in NORM_POLICIES:
            raise ValueError(f"norm_policy={self.norm_policy!r} must be one of {NORM_POLICIES}.")


def fisher_mask(
    fisher_forget: Mapping[str, torch.Tensor],
    fraction: float,
    *,
    fisher_retain: Mapping[str, torch.Tensor] | None = None,
    eps: float = DEFAULT_EPS,
    exclude=None,
) -> ParameterMask:
    """The exact top ``fraction`` of the eligible weights by ``F_f`` (``F_f / (F_r + eps)`` given ``fisher_retain``)."""
    if fisher_retain is None:
        # select_parameters ranks F_f / (F_r + eps): with F_r = 0 and eps = 1 the rank is F_f itself
        fisher_retain, eps = {n: torch.zeros_like(f) for n, f in fisher_forget.items()}, 1.0
    return select_parameters(fisher_forget, fisher_retain, top_fraction=fraction, eps=eps, exclude=exclude or None)


def run(model, splits, processor=None, config: FisherMaskingConfig | None = None, *, seed: int = 0) -> MethodResult:
    args = with_seed(config or FisherMaskingConfig(), seed)
    require_splits(splits, "forget", "retain")
    start = time.perf_counter()
    common = dict(estimator=args.fisher_estimator, batch_size=args.fisher_batch_size, collate_fn=collate_fn,
                  max_samples=args.fisher_max_samples, seed=seed, show_progress=False)
    fisher_forget = fisher_diagonal(model, model_inputs(splits["forget"], processor), **common)
    fisher_retain = (fisher_diagonal(model, model_inputs(splits["retain"], processor), **common)
                     if args.score == "ratio" else None)
    mask = fisher_mask(fisher_forget, args.mask_fraction, fisher_retain=fisher_retain, eps=args.ratio_eps,
                       exclude=excluded_parameters(args, model))
    reset_selected_weights(model, mask, "zero", norm_policy="init" if args.norm_policy == "init" else "same")
    fisher_time = time.perf_counter() - start
    train_time = 0.0
    if args.finetune:
        gradient_mask = GradientMask(model, mask).attach()
        handles = freeze_batchnorm_statistics(model, mask) if args.freeze_batchnorm_stats else []
        try:
            model, train_time = train(MaskedTrainer, model, args, splits["retain"], processor,
                                      gradient_mask=gradient_mask)
        finally:
            for handle in handles:
                handle.remove()
            gradient_mask.detach()
    total = time.perf_counter() - start
    selection = {"threshold": mask.threshold, "selected_fraction": mask.selected_fraction,
                 "num_selected": mask.num_selected}
    return MethodResult(model, total, {"time": {"fisher": fisher_time, "train": train_time, "total": total},
                                       "selection": selection})

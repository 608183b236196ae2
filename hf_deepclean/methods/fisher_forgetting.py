"""Fisher forgetting (Golatkar et al. 2020, "Eternal Sunshine of the Spotless Net", arXiv 1911.04933).

Add Gaussian noise to every weight, with a variance inversely proportional to its Fisher
information on D_r: weights that D_r needs (large Fisher) barely move, weights only D_f needed
are scrambled. Variance ``alpha * min(1 / (I_Dr + eps), max_variance)``, as in the authors'
reference code (``alpha`` 1e-6, ``1/(F + 1e-8)`` clamped at 1e3). Their code also averages the
variance over each output row and treats the classifier row of a forgotten class specially;
this version keeps the element-wise rule only, which works for any forget set.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..config import FISHER_ESTIMATORS
from ..fisher import fisher_diagonal
from ..images import collate_fn
from .base import MethodResult, model_inputs, require_splits


@dataclass
class FisherForgettingConfig:
    """Fisher forgetting; defaults follow Golatkar et al.'s reference implementation.

    Args:
        alpha: Scale of the noise variance.
        eps: Added to the Fisher before inverting.
        max_variance: Clamp of ``1 / (I_Dr + eps)`` (before ``alpha``), so weights no sample uses
            get bounded noise.
        fisher_estimator: ``empirical``, ``expected`` or ``batch`` Fisher on D_r.
        fisher_batch_size: Batch size of the Fisher pass.
        fisher_max_samples: Use at most this many (seeded) retain samples for the Fisher.
    """

    alpha: float = field(default=1e-6, metadata={"help": "Noise variance scale: var = alpha * min(1/(I_Dr+eps), max_variance)."})
    eps: float = field(default=1e-8, metadata={"help": "Added to the retain Fisher before inverting."})
    max_variance: float = field(default=1e3, metadata={"help": "Clamp of 1/(I_Dr + eps) before alpha."})
    fisher_estimator: str = field(default="empirical", metadata={"help": "Fisher estimator: empirical, expected or batch."})
    fisher_batch_size: int = field(default=64, metadata={"help": "Batch size of the Fisher pass."})
    fisher_max_samples: int | None = field(default=None, metadata={"help": "At most this many retain samples."})

    def __post_init__(self):
        for name in ("alpha", "eps", "max_variance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0.")
        if self.fisher_estimator not in FISHER_ESTIMATORS:
            raise ValueError(f"fisher_estimator={self.fisher_estimator!r} must be one of {FISHER_ESTIMATORS}.")


def noise_std(fisher: Mapping[str, torch.Tensor], *, alpha: float, eps: float, max_variance: float) -> dict[str, torch.Tensor]:
    """Per-weight noise standard deviation ``sqrt(alpha * min(1 / (I + eps), max_variance))``."""
    return {
        name: (alpha * (1.0 / (f.double() + eps)).clamp(max=max_variance)).sqrt()
        for name, f in fisher.items()
    }


@torch.no_grad()
def add_noise(model: torch.nn.Module, std: Mapping[str, torch.Tensor], seed: int = 0) -> None:
    """``w += std * N(0, 1)`` for each named parameter in ``std``, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for name, s in std.items():
        param = params[name]
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
        param.add_((noise * s.cpu()).to(param.device, param.dtype))


def run(model, splits, processor=None, config: FisherForgettingConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "retain")
    config = config or FisherForgettingConfig()
    start = time.perf_counter()
    fisher = fisher_diagonal(
        model, model_inputs(splits["retain"], processor), estimator=config.fisher_estimator,
        batch_size=config.fisher_batch_size, collate_fn=collate_fn, max_samples=config.fisher_max_samples,
        seed=seed, show_progress=False,
    )
    fisher_time = time.perf_counter() - start
    add_noise(model, noise_std(fisher, alpha=config.alpha, eps=config.eps, max_variance=config.max_variance), seed)
    total = time.perf_counter() - start
    return MethodResult(model, total, {"time": {"fisher": fisher_time, "train": 0.0, "total": total}})

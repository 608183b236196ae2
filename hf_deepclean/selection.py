"""Select the privacy-sensitive weights from the forget / retain Fisher ratio.

``r_i = I_forget(w_i) / (I_retain(w_i) + eps)``; a weight is selected when ``r_i > gamma``
(``threshold``) or when it is among the ``top_fraction`` highest ratios of all eligible
weights (exact count). The result is a :class:`ParameterMask`, one bool tensor per
parameter, with statistics and safetensors save/load.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import SelectionError
from .masking import normalization_parameter_names

logger = logging.getLogger(__name__)

DEFAULT_EPS = 1e-12
# The fractions a reset-only sweep and top_fraction="auto" try unless told otherwise.
DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
_FORMAT = "hf_deepclean.ParameterMask"

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_FRACTIONS",
    "ParameterMask",
    "StableSelection",
    "assd_fraction",
    "excluded_parameters",
    "fisher_ratio",
    "jaccard",
    "select_for_config",
    "select_parameters",
    "threshold_sweep",
]


def _validate(fisher_forget: Mapping[str, torch.Tensor], fisher_retain: Mapping[str, torch.Tensor]) -> None:
    missing_retain = [n for n in fisher_forget if n not in fisher_retain]
    missing_forget = [n for n in fisher_retain if n not in fisher_forget]
    if missing_retain or missing_forget:
        name = (missing_retain or missing_forget)[0]
        where = "retain" if missing_retain else "forget"
        raise ValueError(
            f"Fisher dicts have different parameters: {name!r} is missing from the {where} Fisher "
            f"({len(missing_retain)} missing from retain, {len(missing_forget)} from forget); "
            "compute both on the same model with the same parameter_names"
        )
    for name, forget in fisher_forget.items():
        retain = fisher_retain[name]
        if forget.shape != retain.shape:
            raise ValueError(
                f"Fisher shapes differ for parameter {name!r}: forget {tuple(forget.shape)} vs retain {tuple(retain.shape)}"
            )
        for which, tensor in (("forget", forget), ("retain", retain)):
            if not torch.isfinite(tensor).all():
                raise ValueError(f"the {which} Fisher of parameter {name!r} holds NaN or Inf values")
            if tensor.numel() and tensor.min() < 0:
                raise ValueError(f"the {which} Fisher of parameter {name!r} has negative values; a Fisher diagonal is >= 0")


def fisher_ratio(
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    eps: float = DEFAULT_EPS,
) -> dict[str, torch.Tensor]:
    """``r = I_forget / (I_retain + eps)`` per weight, with an absolute ``eps``.

    The ``eps`` is absolute, not relative, on purpose: some gradients are mathematically zero
    (e.g. attention key biases, whose gradient cancels in the softmax) and come out as float
    noise around 1e-20 in both Fisher estimates. A relative eps would turn that noise over
    noise into arbitrary ratios and select those weights; with an absolute eps both-near-zero
    entries get a ratio near zero (1e-20 / 1e-12 = 1e-8) and are never selected.
    """
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps={eps} must be a finite number >= 0")
    _validate(fisher_forget, fisher_retain)
    ratios = {}
    for name, forget in fisher_forget.items():
        retain = fisher_retain[name].to(device=forget.device)
        dtype = torch.promote_types(forget.dtype, retain.dtype)
        ratio = forget.to(dtype) / (retain.to(dtype) + eps)
        ratios[name] = torch.nan_to_num(ratio, nan=0.0)  # 0/0 only happens with eps=0: no information either way
    return ratios


def _matches(name: str, pattern) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(name) is not None
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.startswith(pattern + ".")


def _eligible(names: Sequence[str], include, exclude) -> list[str]:
    def as_list(patterns):
        return [patterns] if isinstance(patterns, (str, re.Pattern)) else list(patterns or [])

    include, exclude = as_list(include), as_list(exclude)
    for pattern in include + exclude:
        if not any(_matches(n, pattern) for n in names):
            logger.warning("selection pattern %r matches no parameter name", getattr(pattern, "pattern", pattern))
    eligible = [
        n
        for n in names
        if (not include or any(_matches(n, p) for p in include)) and not any(_matches(n, p) for p in exclude)
    ]
    if not eligible:
        raise ValueError(f"include={include} / exclude={exclude} leave no parameter eligible for selection")
    return eligible


def select_parameters(
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    *,
    threshold: float | None = None,
    top_fraction: float | None = None,
    eps: float = DEFAULT_EPS,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> ParameterMask:
    """Mask of the weights whose Fisher ratio ``I_f / (I_r + eps)`` marks them privacy sensitive.

    Args:
        fisher_forget, fisher_retain: outputs of :func:`~hf_deepclean.fisher.fisher_diagonal`
            on the forget and retain sets (same names and shapes, finite).
        threshold: gamma; selects every eligible weight with ratio ``> threshold``.
        top_fraction: in (0, 1]; selects exactly ``round(top_fraction * N)`` of the ``N``
            eligible weights, the highest ratios first (ties: earlier parameter, then lower
            flat index). Exactly one of ``threshold`` and ``top_fraction`` is required.
        eps: absolute eps of the ratio (see :func:`fisher_ratio`).
        include: patterns; when given, only matching parameters are eligible.
        exclude: patterns; matching parameters are not eligible. Non-eligible parameters get an
            all-False mask but still appear in the result. A pattern is a glob (``"*.bias"``),
            a regular expression prefixed with ``"re:"`` (``"re:layers\\.[0-3]\\."``) or a
            compiled ``re.Pattern`` (searched), or a plain name matching that parameter or module
            (``"classifier"`` matches ``classifier.weight`` and ``classifier.bias``).
    """
    if (threshold is None) == (top_fraction is None):
        raise ValueError(
            f"pass exactly one of threshold (got {threshold}) and top_fraction (got {top_fraction})"
        )
    if top_fraction is not None and not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction={top_fraction} must be in (0, 1]")
    if threshold is not None and math.isnan(threshold):
        raise ValueError("threshold is NaN")
    ratios = fisher_ratio(fisher_forget, fisher_retain, eps=eps)
    names = list(ratios)
    eligible = set(_eligible(names, include, exclude))
    masks = {n: torch.zeros_like(r, dtype=torch.bool) for n, r in ratios.items()}
    if threshold is not None:
        for n in eligible:
            masks[n] = ratios[n] > threshold
        effective = float(threshold)
    else:
        order = [n for n in names if n in eligible]
        flat = torch.cat([ratios[n].detach().reshape(-1).cpu() for n in order])
        k = round(top_fraction * flat.numel())
        selected = torch.zeros(flat.numel(), dtype=torch.bool)
        effective = math.inf
        if k > 0:
            values, indices = torch.sort(flat, descending=True, stable=True)
            selected[indices[:k]] = True
            effective = float(values[k - 1])
        else:
            logger.warning("top_fraction=%s of %d weights rounds to 0 weights selected", top_fraction, flat.numel())
        offset = 0
        for n in order:
            size = ratios[n].numel()
            masks[n] = selected[offset : offset + size].view(ratios[n].shape).to(ratios[n].device)
            offset += size
    return ParameterMask(masks, threshold=effective, top_fraction=top_fraction, eps=eps)


def assd_fraction(num_forget: int, num_train: int) -> float:
    """The fraction of weights ASSD's parameter-free threshold selects (Schoepf, Foster, Brintrup, "Parameter-tuning-
    free data entry error unlearning with adaptive selective synaptic dampening", arXiv 2402.10098): weights above
    the ``100 - ln(1 + 100 |D_f| / |D|)``-th percentile of the Fisher ratio, i.e. the top ``ln(1 + 100 |D_f|/|D|)``
    percent (1 % of the data forgotten: 0.69 % of the weights; 10 %: 2.40 %)."""
    if not 0 < num_forget <= num_train:
        raise ValueError(f"assd_fraction needs 0 < |D_f| ({num_forget}) <= |D| ({num_train}).")
    return math.log1p(100.0 * num_forget / num_train) / 100.0


def excluded_parameters(config, model: torch.nn.Module) -> list[str]:
    """The patterns a config keeps out of the selection: ``exclude_parameters``, and with
    ``norm_policy="exclude"`` every normalisation weight of ``model``."""
    exclude = list(config.exclude_parameters or [])
    if config.norm_policy == "exclude":
        exclude += normalization_parameter_names(model)
    return exclude


def select_for_config(
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    config,
    model: torch.nn.Module,
    *,
    threshold: float | None = None,
    top_fraction: float | None = None,
) -> ParameterMask:
    """The selection a :class:`~hf_deepclean.config.DeepCleanConfig` asks for, for every caller (``unlearn``,
    ``sweep``, ``top_fraction="auto"``, the benchmark): ``include_parameters``, :func:`excluded_parameters`
    (the exclude list and ``norm_policy``) and ``ratio_eps`` always apply; the cut is ``threshold`` or
    ``top_fraction`` when one is passed (a sweep's candidate), else the config's own.

    Raises :class:`~hf_deepclean.errors.SelectionError` when the cut selects no weight (for a threshold, with the
    largest threshold that would select some).
    """
    if threshold is None and top_fraction is None:
        threshold, top_fraction = config.threshold, config.top_fraction
        if top_fraction in ("auto", "assd"):
            raise ValueError(f"top_fraction={top_fraction!r} is resolved by the trainer (a search, or the forget set's "
                             "share of the data): pass the resulting top_fraction.")
    exclude = excluded_parameters(config, model)
    mask = select_parameters(fisher_forget, fisher_retain, threshold=threshold, top_fraction=top_fraction,
                             eps=config.ratio_eps, include=config.include_parameters, exclude=exclude or None)
    if mask.num_selected == 0 and top_fraction is not None:
        raise SelectionError(f"top_fraction={top_fraction} of the {mask.num_total} weights rounds to no weight; "
                             "pass a larger --top_fraction.")
    if mask.num_selected == 0:
        sweep = threshold_sweep(fisher_forget, fisher_retain, eps=config.ratio_eps)
        useful = [row for row in sweep if row["num_selected"] > 0]
        hint = (
            f" The largest threshold that selects anything in the sweep is {useful[-1]['threshold']:.4g} "
            f"({useful[-1]['selected_fraction']:.2%} of weights); or pass --top_fraction."
            if useful else " Pass --top_fraction instead."
        )
        raise SelectionError(f"threshold={threshold} selects no weight.{hint}")
    if mask.num_total and mask.num_selected == mask.num_total:
        logger.warning("The selection covers every weight: DeepClean then amounts to retraining the whole model.")
    return mask


def _stats(selected: int, total: int) -> dict[str, float | int]:
    return {"selected": selected, "total": total, "fraction": selected / total if total else 0.0}


class ParameterMask(Mapping):
    """One bool tensor per parameter name: True marks a weight selected for reset / update.

    ``mask[name]``, ``mask.names``, iteration and ``name in mask`` work as on a dict.
    ``threshold`` is the gamma used; for a ``top_fraction`` selection it is the effective
    threshold, the smallest selected ratio (``inf`` when nothing is selected).
    """

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor],
        *,
        threshold: float | None = None,
        top_fraction: float | None = None,
        eps: float | None = None,
    ):
        self._masks = {n: m.to(torch.bool) for n, m in masks.items()}
        self.threshold = threshold
        self.top_fraction = top_fraction
        self.eps = eps

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return (
            f"ParameterMask({len(self)} parameters, {self.num_selected}/{self.num_total} weights selected "
            f"({100 * self.selected_fraction:.3f}%), threshold={self.threshold})"
        )

    @property
    def names(self) -> list[str]:
        return list(self._masks)

    @property
    def num_selected(self) -> int:
        return int(sum(int(m.sum()) for m in self._masks.values()))

    @property
    def num_total(self) -> int:
        return int(sum(m.numel() for m in self._masks.values()))

    @property
    def selected_fraction(self) -> float:
        total = self.num_total
        return self.num_selected / total if total else 0.0

    def to(self, device) -> ParameterMask:
        return ParameterMask(
            {n: m.to(device) for n, m in self._masks.items()},
            threshold=self.threshold,
            top_fraction=self.top_fraction,
            eps=self.eps,
        )

    def per_parameter(self) -> dict[str, dict[str, float | int]]:
        """``{name: {"selected", "total", "fraction"}}``."""
        return {n: _stats(int(m.sum()), m.numel()) for n, m in self._masks.items()}

    def per_module(self, depth: int | None = None) -> dict[str, dict[str, float | int]]:
        """Counts per module: the parameter name without its last part, cut to ``depth`` parts."""
        grouped: dict[str, list[int]] = {}
        for n, m in self._masks.items():
            parts = n.split(".")[:-1] or [n]
            key = ".".join(parts[:depth] if depth else parts)
            counts = grouped.setdefault(key, [0, 0])
            counts[0] += int(m.sum())
            counts[1] += m.numel()
        return {k: _stats(s, t) for k, (s, t) in grouped.items()}

    def to_dict(self) -> dict:
        """Statistics (JSON-serialisable): threshold, counts, fractions overall and per parameter."""
        return {
            "threshold": self.threshold,
            "top_fraction": self.top_fraction,
            "eps": self.eps,
            "num_selected": self.num_selected,
            "num_total": self.num_total,
            "selected_fraction": self.selected_fraction,
            "per_parameter": self.per_parameter(),
        }

    def summary(self, depth: int | None = None) -> str:
        """A text table of selected / total weights per parameter (or per module with ``depth``)."""
        rows = self.per_parameter() if depth is None else self.per_module(depth)
        width = max([len("parameter")] + [len(n) for n in rows])
        lines = [f"{'parameter':<{width}}  {'selected':>10}  {'total':>10}  {'fraction':>9}"]
        lines.append("-" * len(lines[0]))
        for n, s in rows.items():
            lines.append(f"{n:<{width}}  {s['selected']:>10}  {s['total']:>10}  {100 * s['fraction']:>8.3f}%")
        lines.append("-" * len(lines[0]))
        lines.append(
            f"{'total':<{width}}  {self.num_selected:>10}  {self.num_total:>10}  {100 * self.selected_fraction:>8.3f}%"
        )
        how = f"top_fraction={self.top_fraction}, " if self.top_fraction is not None else ""
        lines.append(f"{how}threshold={self.threshold}, eps={self.eps}")
        return "\n".join(lines)

    def save(self, path: str | Path, saved_names: Mapping[str, str] | None = None) -> None:
        """Save as safetensors (bool tensors; threshold, top_fraction, eps in the metadata).

        ``saved_names`` (parameter name -> its key in ``model.safetensors``, :func:`hf_deepclean._compat.saved_names`)
        writes each mask under the key its weights are saved under, so that the mask and the saved model diff
        key by key; :meth:`load` maps them back to the parameter names.
        """
        saved_names = dict(saved_names or {})
        metadata = {
            "format": _FORMAT,
            "threshold": json.dumps(self.threshold),
            "top_fraction": json.dumps(self.top_fraction),
            "eps": json.dumps(self.eps),
            "names": json.dumps(self.names),  # safetensors sorts its keys; keep the model's order
        }
        if saved_names:
            metadata["saved_names"] = json.dumps({n: saved_names.get(n, n) for n in self.names})
        tensors = {saved_names.get(n, n): m.detach().to("cpu", torch.bool).contiguous() for n, m in self._masks.items()}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ParameterMask:
        """Load a mask written by :meth:`save`."""
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a ParameterMask file (metadata format={metadata.get('format')!r})")
            names = json.loads(metadata["names"]) if "names" in metadata else list(f.keys())
            keys = json.loads(metadata.get("saved_names", "{}"))
            masks = {n: f.get_tensor(keys.get(n, n)) for n in names}

        def meta(key):
            value = json.loads(metadata.get(key, "null"))
            return float(value) if isinstance(value, (int, float)) else value

        return cls(masks, threshold=meta("threshold"), top_fraction=meta("top_fraction"), eps=meta("eps"))


class StableSelection:
    """``fisher_max_samples="auto"``: the stop rule of the D_r Fisher pass
    (:func:`hf_deepclean.fisher.fisher_diagonal`'s ``stop_when``).

    At each snapshot of the running D_r Fisher it builds the selection that Fisher implies with the finished D_f
    Fisher (:func:`select_for_config`: the config's cut, or each of ``top_fraction="auto"``'s candidate
    fractions), and stops once the Jaccard index between successive snapshots' selections is at least ``tolerance``
    ``patience`` times in a row (for several cuts, the smallest of their indices). ``history`` keeps
    ``(samples, jaccard)`` per snapshot.
    """

    def __init__(self, fisher_forget: Mapping[str, torch.Tensor], config, model: torch.nn.Module, *,
                 num_forget: int, num_retain: int, tolerance: float = 0.99, patience: int = 2):
        self.fisher_forget, self.config, self.model = fisher_forget, config, model
        self.tolerance, self.patience = tolerance, patience
        if config.threshold is not None:
            self.cuts = [{"threshold": config.threshold}]
        elif config.top_fraction == "auto":
            self.cuts = [{"top_fraction": f} for f in (config.auto_fractions or DEFAULT_FRACTIONS)]
        elif config.top_fraction == "assd":
            self.cuts = [{"top_fraction": assd_fraction(num_forget, num_forget + num_retain)}]
        else:
            self.cuts = [{"top_fraction": config.top_fraction}]
        self.history: list[tuple[int, float]] = []
        self._previous: list[torch.Tensor] | None = None
        self._streak = 0

    def selections(self, fisher_retain: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """One flat bool tensor per cut: the weights selected with this D_r Fisher."""
        out = []
        for cut in self.cuts:
            try:
                mask = select_for_config(self.fisher_forget, fisher_retain, self.config, self.model, **cut)
                out.append(torch.cat([m.reshape(-1).cpu() for m in mask.values()]))
            except SelectionError:  # a threshold above every ratio so far: an empty selection
                out.append(torch.zeros(sum(f.numel() for f in fisher_retain.values()), dtype=torch.bool))
        return out

    def __call__(self, fisher_retain: Mapping[str, torch.Tensor], samples: int) -> bool:
        current = self.selections(fisher_retain)
        if self._previous is not None:
            overlap = min(jaccard(a, b) for a, b in zip(self._previous, current))
            self.history.append((samples, overlap))
            self._streak = self._streak + 1 if overlap >= self.tolerance else 0
        self._previous = current
        return self._streak >= self.patience


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| of two bool tensors (1 for two empty selections)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def threshold_sweep(
    fisher_forget: Mapping[str, torch.Tensor],
    fisher_retain: Mapping[str, torch.Tensor],
    thresholds: Sequence[float] | None = None,
    eps: float = DEFAULT_EPS,
    num: int = 50,
) -> list[dict[str, float | int]]:
    """Fraction of weights selected (``ratio > gamma``) for each gamma.

    Default ``thresholds``: ``num`` values log-spaced over the observed range of positive ratios.
    Returns ``[{"threshold", "num_selected", "selected_fraction"}, ...]`` in threshold order:
    the higher the threshold, the fewer weights get updated.
    """
    ratios = fisher_ratio(fisher_forget, fisher_retain, eps=eps)
    flat = torch.cat([r.detach().reshape(-1).cpu() for r in ratios.values()]).sort().values
    if thresholds is None:
        positive = flat[flat > 0]
        if positive.numel() == 0:
            thresholds = [0.0]
        else:
            lo, hi = math.log10(positive[0].item()), math.log10(positive[-1].item())
            thresholds = torch.logspace(lo, hi, num if hi > lo else 1, dtype=torch.float64).tolist()
    # compare in the ratios' dtype, as select_parameters does, so counts agree at the boundary
    gammas = torch.as_tensor(sorted(float(t) for t in thresholds), dtype=flat.dtype)
    above = flat.numel() - torch.searchsorted(flat, gammas, right=True)
    total = flat.numel()
    return [
        {"threshold": float(g), "num_selected": int(c), "selected_fraction": int(c) / total if total else 0.0}
        for g, c in zip(gammas, above)
    ]

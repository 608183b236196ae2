"""L-CODEC unlearning (Mehta, Pal, Singh, Ravi 2022, "Deep Unlearning via Randomized Conditionally Independent
Hessians", CVPR; public code vsingh-group/LCODEC-deep-unlearning, read to learn the method, not copied).

D_f is removed one forget batch at a time (``forget_batch_size`` samples, in order). For each batch b, with R the data
still kept after it (D_r and the forget batches not yet removed, n = |R|):

1. Selection (the paper's input perturbation + L-FOCI, the code's ``inp_perturb``). The batch's inputs are
   perturbed ``num_perturbations`` times, ``x + perturbation_std * N(0, I)`` (0.1 in the code). Each perturbation
   gives one sample of (features, target): the features are the mean output of every unit of every ``Linear``
   (output feature; mean over the batch and, in a transformer, its tokens) and ``Conv`` layer (output channel; mean
   over the batch and pixels), the target is the batch's mean cross-entropy. FOCI (Azadkia & Chatterjee 2021)
   picks units greedily: first the unit maximising CODEC ``T_n(Y, Z_j)``, then each step the unit maximising the
   conditional ``T_n(Y, Z_j | Z_S)``, stopping when no unit has ``T_n > 0`` (the code's early stop) or at
   ``max_units``. ``T_n`` is the rank/nearest-neighbour statistic of Azadkia & Chatterjee (1-NN in Euclidean
   distance, as the code computes it on the GPU). A unit stands for its parameters: the weight row (``Linear``) or
   filter (``Conv``) and its bias entry, as the code's ``reverseLinearIndexingToLayers`` maps them.
   ``selection="all"`` takes every parameter instead (the code's ``Full``).
2. Newton / influence update restricted to the selected parameters S, with every other weight untouched:
   ``w_S <- w_S + (H_SS + damping I)^-1 g_S``, where ``H_SS`` is the S-block of the Hessian of the mean
   cross-entropy on R (exact Hessian-vector products by double backward, on at most ``hessian_max_samples`` seeded
   samples of R; never the full Hessian: the system is solved by conjugate gradients, stopping at negative
   curvature) and ``damping`` is the code's ``l2_reg`` added to the Hessian (0.01). The right-hand side:

   - ``newton_gradient="forget"`` (default, the paper's and code's Sekhari-style removal step):
     ``g_S = (1/n) sum_{z in b} grad_S loss(z)``, the influence of the removed batch. It is the Newton step of the
     loss on R when the model minimises the loss on R + b (the gradient of the kept data is then minus that);
   - ``newton_gradient="retain"``: ``g_S = -grad_S L_R(w)``, the exact Newton step of the loss on R from the current
     weights, which needs no optimality assumption (with S = all weights, one batch, no damping and no sampling it
     is exactly one Newton step of the retain loss from the original weights; a test checks it against
     ``torch.autograd.functional.hessian``).
3. Noise (the code's ``NoisyReturn``, from Sekhari et al. 2021): ``w_S += N(0, sigma^2)`` with
   ``sigma = (gamma / epsilon) sqrt(2 ln(1.25 / delta))``, ``gamma = 2 M L^2 m^2 / (lambda^3 n^2)``, m = the batch
   size, n = the training samples before the removal, lambda = ``damping``, M = 0.25 and L = 1 (the code's values for
   cross-entropy), epsilon = 0.1, delta = 0.01 (the code's scripts). ``epsilon=None`` turns it off. sigma grows as
   (m / n)^2: calibrated for CIFAR's n = 50,000 and m = 1 it is 6e-3; on a dataset of a thousand samples it is large.

Simplified, and why:

- The Hessian. The code approximates it by finite differences of gradients saved at the last two training epochs
  (``getHessian(..., 'FD')``: an outer product of gradient differences over a weight distance, combined as
  ``(n H_old - H_sample) / (n - 1)``), which needs the training run's own checkpoints; here the S-block of the exact
  Hessian of the kept data is used through Hessian-vector products, which any trained model allows.
- Batches, n and m. The code's default removes one sample per step (``scrub_batch_size`` batches them), scales the
  step by ``1/(n - 1)`` with n the original training-set size and draws the noise with m = 1 whatever the batch;
  here each step removes a batch, n is the number of samples actually kept and m the batch's size (Sekhari et
  al.'s bound for m deletions), so the step is the Newton step of the data that remains.
- 200 perturbations per batch instead of the scripts' 1000, and at most 10 units (the code has no cap): FOCI's
  cost grows with the square of the perturbations and with the units chosen, on 2 CPU cores.
- CODEC's inputs are standardised per unit (the default of Azadkia & Chatterjee's FOCI package); the code uses raw
  activations. Units that do not vary under the perturbations are never selected. The statistic itself is the
  code's (``codec/torch_codec.py``: ``codec2``, ``codec3``; ties in Y counted as Azadkia & Chatterjee define R and L).
- The code undoes a removal that drops validation accuracy by more than 5 points (``val_gap_skip``); there is no
  validation split here (the test split is for the evaluation), so the same rule (``max_accuracy_drop``) reads the
  accuracy on the Hessian's sample of the kept data, before and after the step. An undone step's parameters get
  their exact old values back and do not count as selected.
- BatchNorm and dropout: the model is in eval mode throughout (the code disables BatchNorm updates too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._compat import eager_attention
from ..images import collate_fn
from .base import MethodResult, mask_selection, model_inputs, require_splits

SELECTIONS = ("lfoci", "all")
NEWTON_GRADIENTS = ("forget", "retain")
UNIT_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
# Sekhari et al.'s constants for the cross-entropy loss, as the code's NoisyReturn sets them.
SMOOTHNESS_M = 0.25
LIPSCHITZ_L = 1.0


@dataclass
class LCodecConfig:
    """L-CODEC: per forget batch, L-FOCI selection of a few units, then a Newton step on their parameters.

    Args:
        forget_batch_size: Forget samples removed per step (one selection and one Newton step each).
        num_perturbations: Perturbed copies of a batch whose unit activations and loss feed L-FOCI.
        perturbation_std: Standard deviation of the Gaussian input perturbation (the code's 0.1).
        selection: ``lfoci`` (the paper's) or ``all`` (every parameter; the code's ``Full``).
        max_units: At most this many units per batch (FOCI usually stops earlier, when no unit adds dependence).
        newton_gradient: ``forget`` (the removed batch's gradient over n: the paper's influence step) or ``retain``
            (minus the gradient of the kept data: the exact Newton step from the current weights).
        damping: Added to the Hessian's diagonal (the code's ``l2_reg``), and lambda of the noise.
        hessian_max_samples: Hessian (and ``retain`` gradient) on at most this many seeded samples of the kept data
            (None: all of it).
        hessian_batch_size: Samples per Hessian-vector-product chunk.
        cg_max_iter: Conjugate-gradient iterations per Newton step.
        cg_tol: Stop CG when the residual is below ``cg_tol`` times the right-hand side's norm.
        epsilon: Privacy epsilon of the Gaussian noise on the updated parameters (None: no noise).
        delta: Privacy delta of the noise.
        max_accuracy_drop: Undo a step (update and noise) that lowers the accuracy on the Hessian's sample of the kept
            data by more than this (the code's ``val_gap_skip`` = 0.05, there on a validation split); None: keep all.
    """

    forget_batch_size: int = field(default=32, metadata={"help": "Forget samples removed per selection + Newton step."})
    num_perturbations: int = field(default=200, metadata={"help": "Perturbed copies of a batch for L-FOCI."})
    perturbation_std: float = field(default=0.1, metadata={"help": "Std of the Gaussian input perturbation."})
    selection: str = field(default="lfoci", metadata={"help": "lfoci (the paper's) or all (every parameter)."})
    max_units: int = field(default=10, metadata={"help": "At most this many units selected per batch."})
    newton_gradient: str = field(
        default="forget", metadata={"help": "forget (influence step) or retain (exact Newton)."}
    )
    damping: float = field(default=0.01, metadata={"help": "Added to the Hessian diagonal; lambda of the noise."})
    hessian_max_samples: int | None = field(
        default=512, metadata={"help": "Hessian on at most this many kept samples."}
    )
    hessian_batch_size: int = field(default=128, metadata={"help": "Samples per Hessian-vector-product chunk."})
    cg_max_iter: int = field(default=30, metadata={"help": "Conjugate-gradient iterations per Newton step."})
    cg_tol: float = field(default=1e-4, metadata={"help": "Relative residual at which CG stops."})
    epsilon: float | None = field(default=0.1, metadata={"help": "Noise epsilon (None: no noise)."})
    delta: float = field(default=0.01, metadata={"help": "Noise delta."})
    max_accuracy_drop: float | None = field(
        default=0.05, metadata={"help": "Undo a step that drops kept-data accuracy by more than this (None: never)."}
    )

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r} must be one of {SELECTIONS}.")
        if self.newton_gradient not in NEWTON_GRADIENTS:
            raise ValueError(f"newton_gradient={self.newton_gradient!r} must be one of {NEWTON_GRADIENTS}.")
        for name in ("forget_batch_size", "num_perturbations", "max_units", "hessian_batch_size", "cg_max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.num_perturbations < 3:
            raise ValueError(f"num_perturbations={self.num_perturbations} must be >= 3 (nearest neighbours).")
        if self.hessian_max_samples is not None and self.hessian_max_samples < 1:
            raise ValueError(f"hessian_max_samples={self.hessian_max_samples} must be >= 1 or None.")
        if not (self.damping >= 0 and self.perturbation_std >= 0 and self.cg_tol >= 0):
            raise ValueError("damping, perturbation_std and cg_tol must be >= 0.")
        if self.epsilon is not None and not (self.epsilon > 0 and self.damping > 0 and 0 < self.delta < 1):
            raise ValueError("The noise needs epsilon > 0, damping > 0 and 0 < delta < 1 (or epsilon=None).")


# ------------------------------------------------------------------------------------ CODEC and FOCI


def _ranks(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R_i = #{j: y_j <= y_i}`` and ``L_i = #{j: y_j >= y_i}`` (float64)."""
    y = y.reshape(-1)
    return (y[None, :] <= y[:, None]).sum(1).double(), (y[None, :] >= y[:, None]).sum(1).double()


def _nearest(sq_dist: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest other point along the last dim (``[..., n, n]`` squared distances)."""
    n = sq_dist.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=sq_dist.device)
    return sq_dist.masked_fill(eye, math.inf).argmin(-1)


def _sq_dist(x: torch.Tensor) -> torch.Tensor:
    return (x[:, None, :] - x[None, :, :]).square().sum(-1)


def codec_candidates(y: torch.Tensor, candidates: torch.Tensor, given: torch.Tensor | None = None,
                     *, chunk: int | None = None) -> torch.Tensor:
    """CODEC ``T_n(Y, Z_j | X)`` of each column ``Z_j`` of ``candidates`` (``[n, p]``) given ``X`` (``[n, k]`` or
    None for the unconditional ``T_n(Y, Z_j)``), Azadkia & Chatterjee's estimator with 1-nearest neighbours. A column
    that is constant gets ``-inf``. Distances are float32 (only their order matters), in chunks of columns."""
    y, z = y.double().reshape(-1), candidates.float()
    n, p = z.shape
    rank, rank_ge = _ranks(y)
    base = _sq_dist(given.float()) if given is not None else torch.zeros(n, n, device=z.device)
    if given is not None:
        near_x = rank[_nearest(base)]
        low_x = torch.minimum(rank, near_x)
        den = (rank - low_x).sum()
        if den == 0:  # Y is already a function of X: nothing left to add
            return torch.where(z.std(0) == 0, -math.inf, 0.0).double()
    base.fill_diagonal_(math.inf)  # a point is not its own neighbour
    out = torch.empty(p, dtype=torch.float64, device=z.device)
    step = chunk or max(1, int(4e6 // (n * n)))
    for start in range(0, p, step):
        zc = z[:, start : start + step].T  # [c, n]
        dist = (zc[:, :, None] - zc[:, None, :]).square_().add_(base)  # [c, n, n]
        low = torch.minimum(rank[None], rank[dist.argmin(-1)])  # [c, n]
        if given is None:
            out[start : start + step] = (n * low - rank_ge.square()).sum(1) / (rank_ge * (n - rank_ge)).sum()
        else:
            out[start : start + step] = (low - low_x[None]).sum(1) / den
    out[z.std(0) == 0] = -math.inf
    return out


def codec(y: torch.Tensor, z: torch.Tensor, x: torch.Tensor | None = None) -> float:
    """``T_n(Y, Z | X)`` for one (possibly multi-column) ``Z``: near 0 when Y is independent of Z given X, near 1
    when Y is a function of Z (and X)."""
    y, z = y.double().reshape(-1), z.double().reshape(len(y), -1)
    n = len(y)
    rank, rank_ge = _ranks(y)
    base = _sq_dist(x.double().reshape(n, -1)) if x is not None else torch.zeros(n, n, dtype=torch.float64)
    near = rank[_nearest(base + _sq_dist(z))]
    if x is None:
        return float((n * torch.minimum(rank, near) - rank_ge.square()).sum() / (rank_ge * (n - rank_ge)).sum())
    near_x = rank[_nearest(base)]
    low_x = torch.minimum(rank, near_x)
    return float((torch.minimum(rank, near) - low_x).sum() / (rank - low_x).sum())


def foci(features: torch.Tensor, y: torch.Tensor, *, max_features: int | None = None,
         standardize: bool = True) -> tuple[list[int], list[float]]:
    """FOCI forward selection: the columns of ``features`` (``[n, p]``) that ``y`` depends on, in order, with their
    CODEC values. The first is the best unconditional ``T_n(Y, Z_j)``; each next one maximises
    ``T_n(Y, Z_j | selected)``; selection stops when that maximum is <= 0 or at ``max_features``."""
    x = features.double()
    if standardize:
        std = x.std(0)
        x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    limit = min(max_features or x.shape[1], x.shape[1])
    selected, scores = [], []
    while len(selected) < limit:
        given = x[:, selected] if selected else None
        values = codec_candidates(y, x, given)
        if selected:
            values[selected] = -math.inf
        best = int(values.argmax())
        if not math.isfinite(float(values[best])) or (selected and values[best] <= 0):
            break
        selected.append(best)
        scores.append(float(values[best]))
    return selected, scores


# ------------------------------------------------------------------------------------ units and activations


def unit_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The ``Linear`` and ``Conv`` layers whose output units L-FOCI chooses from, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, UNIT_LAYERS)]


def _out_units(module: torch.nn.Module) -> int:
    return module.out_features if isinstance(module, torch.nn.Linear) else module.out_channels


@torch.no_grad()
def activation_features(model, layers, x: torch.Tensor, y: torch.Tensor, *, num_perturbations: int, std: float,
                        generator: torch.Generator, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``[num_perturbations, units]`` mean unit outputs and ``[num_perturbations]`` mean losses of the batch ``x``
    under Gaussian input perturbations (each perturbation one sample for CODEC)."""
    batch = x.shape[0]
    outputs: list[torch.Tensor] = []
    state = {"count": 0}

    def hook(module, _inputs, output):
        # the perturbation is the outermost index of every leading dim (batch, windows, tokens)
        count = state["count"]
        if isinstance(module, torch.nn.Linear):  # features last; average over the batch and any tokens
            outputs.append(output.reshape(count, -1, output.shape[-1]).mean(1))
        else:  # channels second; average over the batch and the positions
            out = output.reshape(count, output.shape[0] // count, output.shape[1], -1)
            outputs.append(out.mean(dim=(1, 3)))

    handles = [m.register_forward_hook(hook) for _, m in layers]
    features, losses = [], []
    try:
        for start in range(0, num_perturbations, chunk):
            count = min(chunk, num_perturbations - start)
            noise = torch.randn((count, *x.shape), generator=generator, dtype=torch.float32).to(x.device, x.dtype)
            outputs.clear()
            state["count"] = count
            logits = model(pixel_values=(x[None] + std * noise).reshape(count * batch, *x.shape[1:])).logits
            # float64: a confidently classified batch has losses near 0 that float32 rounds into ties
            loss = F.cross_entropy(logits.double(), y.repeat(count), reduction="none").reshape(count, batch).mean(1)
            features.append(torch.cat(outputs, dim=1).float())
            losses.append(loss)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(features), torch.cat(losses)


def units_to_mask(model: torch.nn.Module, layers, units: Sequence[int]) -> dict[str, torch.Tensor]:
    """Bool masks of the parameters of the chosen units (flat unit indices over ``layers``): each unit's weight row
    or filter and its bias entry. Every parameter of the model gets a mask."""
    params = dict(model.named_parameters())
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    offsets, start = [], 0
    for _, module in layers:
        offsets.append(start)
        start += _out_units(module)
    for unit in units:
        index = max(i for i, o in enumerate(offsets) if o <= unit)
        name, module = layers[index]
        for pname, _ in module.named_parameters(recurse=False):
            key = f"{name}.{pname}" if name else pname
            if key in mask:
                mask[key][unit - offsets[index]] = True
    return mask


# ------------------------------------------------------------------------------------ Newton step on a subset


class ParameterSubset:
    """The selected entries of some parameters as one flat float64 vector (gather, scatter, in-place add)."""

    def __init__(self, model: torch.nn.Module, mask: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.names = [n for n, m in mask.items() if bool(m.any())]
        self.tensors = [params[n] for n in self.names]
        self.masks = [mask[n].to(params[n].device, torch.bool) for n in self.names]
        self.size = sum(int(m.sum()) for m in self.masks)

    def gather(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        parts = [torch.zeros(int(m.sum()), dtype=torch.float64, device=m.device) if t is None else t[m].double()
                 for t, m in zip(tensors, self.masks)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def scatter(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for t, m in zip(self.tensors, self.masks):
            full = torch.zeros_like(t)
            count = int(m.sum())
            full[m] = flat[offset : offset + count].to(t.dtype)
            out.append(full)
            offset += count
        return out

    def snapshot(self) -> list[torch.Tensor]:
        return [t.detach()[m].clone() for t, m in zip(self.tensors, self.masks)]

    @torch.no_grad()
    def restore(self, values: Sequence[torch.Tensor]) -> None:
        """Write back the exact values of :meth:`snapshot` (no arithmetic: bit for bit)."""
        for t, m, v in zip(self.tensors, self.masks, values):
            t[m] = v

    @torch.no_grad()
    def add_(self, flat: torch.Tensor) -> None:
        """``w_S += flat``; entries outside the mask are not written."""
        offset = 0
        for t, m in zip(self.tensors, self.masks):
            count = int(m.sum())
            t[m] = t[m] + flat[offset : offset + count].to(t.device, t.dtype)
            offset += count


def _loss_sum(model, x, y) -> torch.Tensor:
    logits = model(pixel_values=x).logits
    if logits.dtype in (torch.float16, torch.bfloat16):  # the log-softmax of half-precision logits is coarse
        logits = logits.float()
    return F.cross_entropy(logits, y, reduction="sum")


@torch.no_grad()
def accuracy(model, chunks) -> float:
    """Accuracy over the ``(x, y)`` chunks (non-finite logits count as wrong)."""
    correct = total = 0
    for x, y in chunks:
        logits = model(pixel_values=x).logits
        correct += int(((logits.argmax(-1) == y) & torch.isfinite(logits).all(-1)).sum())
        total += len(y)
    return correct / total if total else 0.0


def subset_gradient(model, subset: ParameterSubset, chunks) -> torch.Tensor:
    """``sum_z grad_S loss(z)`` over the samples of ``chunks`` (a list of ``(x, y)``)."""
    total = torch.zeros(subset.size, dtype=torch.float64)
    with torch.enable_grad():
        for x, y in chunks:
            grads = torch.autograd.grad(_loss_sum(model, x, y), subset.tensors, allow_unused=True)
            total += subset.gather(grads).cpu()
    return total


def subset_hvp(model, subset: ParameterSubset, chunks, vector: torch.Tensor) -> torch.Tensor:
    """``H_SS v`` of the summed loss over ``chunks`` (double backward; only S-entries of v are non-zero)."""
    direction = subset.scatter(vector.to(subset.masks[0].device))
    total = torch.zeros(subset.size, dtype=torch.float64)
    with torch.enable_grad():
        for x, y in chunks:
            grads = torch.autograd.grad(_loss_sum(model, x, y), subset.tensors, create_graph=True, allow_unused=True)
            dot = sum((g * d).sum() for g, d in zip(grads, direction) if g is not None)
            if not torch.is_tensor(dot) or not dot.requires_grad:
                continue  # the loss is linear in S on this chunk
            total += subset.gather(torch.autograd.grad(dot, subset.tensors, allow_unused=True)).cpu()
    return total


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, damping: float = 0.0,
                       max_iter: int = 50, tol: float = 1e-6) -> tuple[torch.Tensor, dict]:
    """Solve ``(A + damping I) x = b`` by conjugate gradients with ``matvec(v) = A v``; stops at ``max_iter``, at a
    relative residual ``tol`` or at negative curvature (then the iterate so far is returned)."""
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), float(r @ r)
    b_norm = math.sqrt(rs)
    info = {"iterations": 0, "relative_residual": 0.0, "negative_curvature": False}
    if b_norm == 0:
        return x, info
    for it in range(1, max_iter + 1):
        ap = matvec(p) + damping * p
        curvature = float(p @ ap)
        if curvature <= 0:
            info["negative_curvature"] = True
            break
        step = rs / curvature
        x += step * p
        r -= step * ap
        rs_new = float(r @ r)
        info["iterations"] = it
        if math.sqrt(rs_new) <= tol * b_norm:
            rs = rs_new
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    info["relative_residual"] = math.sqrt(rs) / b_norm
    return x, info


def sekhari_noise_std(num_removed: int, num_samples: int, *, epsilon: float, delta: float, strong_convexity: float,
                      smoothness: float = SMOOTHNESS_M, lipschitz: float = LIPSCHITZ_L) -> float:
    """``sigma = (gamma / epsilon) sqrt(2 ln(1.25 / delta))``, ``gamma = 2 M L^2 m^2 / (lambda^3 n^2)``."""
    gamma = 2 * smoothness * lipschitz**2 * num_removed**2 / (strong_convexity**3 * num_samples**2)
    return gamma / epsilon * math.sqrt(2 * math.log(1.25 / delta))


# ------------------------------------------------------------------------------------ the method


def _stack(dataset, indices: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = collate_fn([dataset[int(i)] for i in indices])
    return batch["pixel_values"].to(device), batch["labels"].to(device)


def _chunks(forget, retain, kept_forget: Sequence[int], config: LCodecConfig, generator, device, dtype):
    """The kept data (D_r, then the forget samples still to remove) or a seeded sample of it, in chunks."""
    index = [("r", i) for i in range(len(retain))] + [("f", int(i)) for i in kept_forget]
    if config.hessian_max_samples is not None and config.hessian_max_samples < len(index):
        order = torch.randperm(len(index), generator=generator)[: config.hessian_max_samples].tolist()
        index = [index[i] for i in sorted(order)]
    chunks = []
    for start in range(0, len(index), config.hessian_batch_size):
        part = index[start : start + config.hessian_batch_size]
        items = [(retain if kind == "r" else forget)[i] for kind, i in part]
        batch = collate_fn(items)
        chunks.append((batch["pixel_values"].to(device, dtype), batch["labels"].to(device)))
    return chunks, len(index)


def _remove_batch(model, layers, forget, retain, batch_index: list[int], config: LCodecConfig, generator,
                  times: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Select the units of one forget batch and take the Newton step (and noise) on their parameters."""
    param = next(model.parameters())
    x, y = _stack(forget, batch_index, param.device)
    x = x.to(param.dtype)
    kept_forget = range(batch_index[-1] + 1, len(forget))
    tick = time.perf_counter()
    if config.selection == "all":
        mask, units = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}, None
    else:
        features, losses = activation_features(model, layers, x, y, num_perturbations=config.num_perturbations,
                                               std=config.perturbation_std, generator=generator)
        units, _ = foci(features, losses, max_features=config.max_units)
        mask = units_to_mask(model, layers, units)
    times["selection"] += time.perf_counter() - tick
    subset = ParameterSubset(model, mask)
    if subset.size == 0:  # the loss does not vary with any unit under the perturbations: nothing to update
        return mask, {"batch": len(batch_index), "units": units, "num_parameters": 0, "noise_std": 0.0,
                      "step_norm": 0.0, "reverted": False, "iterations": 0, "relative_residual": 0.0,
                      "negative_curvature": False}
    tick = time.perf_counter()
    chunks, num_chunk_samples = _chunks(forget, retain, kept_forget, config, generator, param.device, param.dtype)
    kept = len(retain) + len(kept_forget)
    if config.newton_gradient == "forget":
        rhs = subset_gradient(model, subset, [(x, y)]) / kept
    else:
        rhs = -subset_gradient(model, subset, chunks) / num_chunk_samples
    step, info = conjugate_gradient(lambda v: subset_hvp(model, subset, chunks, v) / num_chunk_samples, rhs,
                                    damping=config.damping, max_iter=config.cg_max_iter, tol=config.cg_tol)
    sigma = 0.0
    if config.epsilon is not None:
        sigma = sekhari_noise_std(len(batch_index), kept + len(batch_index), epsilon=config.epsilon,
                                  delta=config.delta, strong_convexity=config.damping)
        step = step + sigma * torch.randn(subset.size, generator=generator, dtype=torch.float64)
    before = accuracy(model, chunks) if config.max_accuracy_drop is not None else None
    saved = subset.snapshot()
    subset.add_(step)
    after = accuracy(model, chunks) if config.max_accuracy_drop is not None else None
    reverted = before is not None and before - after > config.max_accuracy_drop
    if reverted:
        subset.restore(saved)
        mask = {n: torch.zeros_like(m) for n, m in mask.items()}
    times["newton"] += time.perf_counter() - tick
    return mask, {"batch": len(batch_index), "units": units, "num_parameters": subset.size, "noise_std": sigma,
                  "step_norm": float(step.norm()), "kept_accuracy_before": before, "kept_accuracy_after": after,
                  "reverted": reverted, **info}


def run(model, splits, processor=None, config: LCodecConfig | None = None, *, seed: int = 0) -> MethodResult:
    require_splits(splits, "forget", "retain")
    config = config or LCodecConfig()
    forget, retain = model_inputs(splits["forget"], processor), model_inputs(splits["retain"], processor)
    generator = torch.Generator().manual_seed(seed)
    layers = unit_layers(model)
    if config.selection == "lfoci" and not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer for L-FOCI to choose units from.")
    union = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    steps, times = [], {"selection": 0.0, "newton": 0.0}
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with eager_attention(model):  # SDPA has no double backward on CPU
            for first in range(0, len(forget), config.forget_batch_size):
                batch_index = list(range(first, min(first + config.forget_batch_size, len(forget))))
                mask, step = _remove_batch(model, layers, forget, retain, batch_index, config, generator, times)
                for name, m in mask.items():
                    union[name] |= m.to(union[name].device)
                steps.append(step)
    finally:
        model.train(was_training)
    total = time.perf_counter() - start
    return MethodResult(model, total, {
        "time": {"fisher": None, "selection": times["selection"], "newton": times["newton"], "train": 0.0,
                 "total": total},
        "selection": mask_selection(union),
        "steps": steps,
    })

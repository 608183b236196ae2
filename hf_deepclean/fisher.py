"""Diagonal Fisher information of every trainable weight of an image classifier.

Three estimators, all returned as the mean over the data, one tensor per trainable
named parameter (same names and shapes as ``model.named_parameters()``):

- ``"empirical"`` (DeepClean): ``1/N sum_i (d log p(y_i|x_i) / dw)^2`` with the true
  labels, from exact per-sample gradients (``torch.func`` ``vmap(grad(...))`` in chunks,
  or a per-sample loop when the model cannot be vmapped).
- ``"expected"``: the true Fisher, ``1/N sum_i sum_c p(c|x_i) (d log p(c|x_i) / dw)^2``,
  an exact sum over all classes under the model's own predictive distribution (no label
  sampling): one forward and ``num_classes`` vector-Jacobian products per sample.
- ``"batch"``: ``1/B sum_b (d L_b / dw)^2`` where ``L_b`` is the mean cross-entropy of
  mini-batch ``b``, as Selective Synaptic Dampening computes it. Cheap (one backward per
  batch) but a different quantity: it depends on the batch size.

With an ``accelerate.Accelerator`` every process sums over its own shard (no padded
duplicates), and one all-reduce adds the float64 totals and the counts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap
from torch.utils.data import DataLoader, IterableDataset, Subset
from tqdm.auto import tqdm

from ._compat import eager_attention, is_prepared_by_accelerate, quiet_vmap_fallback_warnings
from .images import collate_fn as default_collate
from .selection import StableSelection

logger = logging.getLogger(__name__)

ESTIMATORS = ("empirical", "expected", "batch")
METHODS = ("auto", "vmap", "loop")

__all__ = ["ESTIMATORS", "compute_fishers", "fisher_diagonal", "per_sample_loop_fisher"]


def _as_logits(out) -> torch.Tensor:
    logits = out.logits if hasattr(out, "logits") else out[0]
    # log-softmax of half-precision logits loses the small probabilities
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return _as_logits(model(pixel_values=pixel_values))


@contextmanager
def _fisher_mode(model: torch.nn.Module):
    """eval() (BatchNorm running stats, no dropout) and eager attention, restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with eager_attention(model), quiet_vmap_fallback_warnings():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _batch_size_of(batch: Mapping[str, torch.Tensor]) -> int:
    return int(batch["labels"].shape[0])


def _make_loader(data, *, batch_size, collate_fn, max_samples, seed, num_workers=0,
                 seeded_order=False) -> tuple[Iterable, bool]:
    """A loader over at most ``max_samples`` seeded-random samples; second value: truncate while iterating."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(data, DataLoader):
        dataset = data.dataset
        if max_samples is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            return data, max_samples is not None
        if max_samples >= len(dataset):
            return data, False
        indices = torch.randperm(len(dataset), generator=generator)[:max_samples].sort().values.tolist()
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=data.batch_size or batch_size,
            collate_fn=data.collate_fn,
            num_workers=data.num_workers,
            pin_memory=data.pin_memory,
        )
        return loader, False
    collate_fn = collate_fn or default_collate
    if isinstance(data, IterableDataset) or not hasattr(data, "__getitem__"):
        return DataLoader(data, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers), \
            max_samples is not None
    if seeded_order:  # a pass that may stop early must see a random sample first, not the dataset's order
        data = Subset(data, torch.randperm(len(data), generator=generator).tolist())
    elif max_samples is not None and max_samples < len(data):
        indices = torch.randperm(len(data), generator=generator)[:max_samples].sort().values.tolist()
        data = Subset(data, indices)
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers), False


# ---------------------------------------------------------------------------------------
# per-chunk kernels: each returns {name: float64 sum over the chunk's samples} for its estimator


def _sum_of_squares(grads: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """``sum_i g_i^2`` over the leading (sample) dim, squaring in place where it is safe."""
    storages = Counter(grads[n].untyped_storage().data_ptr() for n in names)
    out = {}
    for n in names:
        g = grads[n]
        # expanded zeros (unused parameters) and gradients sharing memory (cls_token's is a view of
        # position_embeddings' in ViT) must not be squared in place
        alone = g.is_contiguous() and storages[g.untyped_storage().data_ptr()] == 1
        out[n] = (g.square_() if alone else g.square()).sum(0).to(torch.float64)
    return out


def _vmap_kernels(model, names, estimator):
    def log_probs(params, x):
        out = functional_call(model, params, args=(), kwargs={"pixel_values": x.unsqueeze(0)})
        return F.log_softmax(_as_logits(out), -1)[0]

    if estimator == "empirical":

        def sample_grad(params, x, y):
            return grad(lambda p: log_probs(p, x).gather(0, y.reshape(1)).squeeze(0))(params)

        per_sample = vmap(sample_grad, in_dims=(None, 0, 0))

        def kernel(params, x, y):
            grads = per_sample(params, x, y)
            # square in place and sum the chunk in the parameter dtype: a float64 upcast of every
            # per-sample gradient costs as much as the backward pass; running totals are float64
            return _sum_of_squares(grads, names)

        return kernel

    def sample_fisher(params, x):
        # jacobian of all class log-probs: [C, *shape] per parameter, one forward pass
        def with_aux(p):
            logp = log_probs(p, x)
            return logp, logp.detach()

        jac, logp = jacrev(with_aux, has_aux=True)(params)
        prob = logp.exp()
        return {n: torch.tensordot(prob.to(jac[n].dtype), jac[n].square(), dims=1) for n in names}

    per_sample_expected = vmap(sample_fisher, in_dims=(None, 0))

    def kernel(params, x, y):  # noqa: ARG001 - labels are not used by the expected Fisher
        fisher = per_sample_expected(params, x)
        return {n: fisher[n].sum(0, dtype=torch.float64) for n in names}

    return kernel


def _loop_kernel(model, names, params, estimator):
    tensors = [params[n] for n in names]

    def grads_of(output):
        gs = torch.autograd.grad(output, tensors, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, gs)]

    def kernel(_params, x, y):
        total = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in names}
        for i in range(x.shape[0]):
            logp = F.log_softmax(_logits(model, x[i : i + 1]), -1)[0]
            if estimator == "empirical":
                for n, g in zip(names, grads_of(logp[y[i]])):
                    total[n] += g.to(torch.float64).square()
            else:
                prob = logp.detach().exp()
                for c in range(logp.shape[0]):
                    for n, g in zip(names, grads_of(logp[c])):
                        total[n] += prob[c].double() * g.to(torch.float64).square()
        return total

    return kernel


class _PerSampleAccumulator:
    """Sums per-sample Fisher terms into ``totals`` in chunks of ``chunk_size`` samples, across batch borders."""

    def __init__(self, model, names, params, estimator, method, chunk_size, totals):
        self.model, self.names, self.params, self.estimator = model, names, params, estimator
        self.method, self.chunk_size, self.totals = method, chunk_size, totals
        self.use_vmap = method != "loop"
        self.detached = {n: p.detach() for n, p in params.items()}
        self.kernel = _vmap_kernels(model, names, estimator) if self.use_vmap else _loop_kernel(model, names, params, estimator)
        self.step = chunk_size
        num_classes = getattr(getattr(model, "config", None), "num_labels", None)
        if estimator == "expected" and self.use_vmap and num_classes:
            self.step = max(1, chunk_size // num_classes)  # the class Jacobian is num_classes x bigger
        self.count = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._num_pending = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._pending.append((x, y))
        self._num_pending += x.shape[0]
        if self._num_pending >= self.step:
            self._flush(final=False)

    def finish(self) -> None:
        if self._num_pending:
            self._flush(final=True)

    def _flush(self, final: bool) -> None:
        x = torch.cat([p[0] for p in self._pending])
        y = torch.cat([p[1] for p in self._pending])
        start = 0
        while x.shape[0] - start >= self.step or (final and start < x.shape[0]):
            step = self.step
            self._run(x[start : start + step], y[start : start + step])
            start = min(start + step, x.shape[0])  # a final partial chunk ends the pending samples exactly
        self._pending = [(x[start:], y[start:])] if start < x.shape[0] else []
        self._num_pending = x.shape[0] - start

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        try:
            chunk = self.kernel(self.detached if self.use_vmap else self.params, x, y)
        except Exception as err:  # noqa: BLE001 - any vmap failure means: use the loop
            if not self.use_vmap or self.method == "vmap":
                raise
            logger.warning(
                "fisher_diagonal: torch.func.vmap cannot handle %s (%s: %s); falling back to a "
                "per-sample loop, which is much slower",
                type(self.model).__name__,
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
            self.use_vmap, self.step = False, self.chunk_size
            self.kernel = _loop_kernel(self.model, self.names, self.params, self.estimator)
            chunk = self.kernel(self.params, x, y)
        for n in self.names:
            self.totals[n] += chunk[n]
        self.count += x.shape[0]


# ---------------------------------------------------------------------------------------


def fisher_diagonal(
    model: torch.nn.Module,
    data,
    *,
    estimator: str = "empirical",
    batch_size: int = 32,
    collate_fn: Callable | None = None,
    accelerator=None,
    max_samples: int | None = None,
    seed: int = 0,
    chunk_size: int = 32,
    dtype: torch.dtype = torch.float32,
    show_progress: bool = True,
    parameter_names: Iterable[str] | None = None,
    method: str = "auto",
    num_workers: int = 0,
    stop_when: Callable[[dict[str, torch.Tensor], int], bool] | None = None,
    snapshot_batches: int = 4,
) -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher information of each trainable weight, averaged over ``data``.

    Args:
        model: an image classifier called as ``model(pixel_values=...)`` returning ``.logits``
            (any ``AutoModelForImageClassification``), single-label classification.
        data: a ``DataLoader`` yielding dicts with ``pixel_values`` and ``labels`` (its own
            batch size is used), or a map-style or iterable dataset of such dict items
            (``torch`` or Hugging Face ``datasets``), batched with ``collate_fn``.
        estimator: ``"empirical"`` (mean squared per-sample gradient of ``log p(y|x)`` at the
            true label; DeepClean), ``"expected"`` (true Fisher: exact sum over every class
            ``c`` of ``p(c|x) * (d log p(c|x)/dw)^2``, no label sampling; costs ``num_classes``
            backward passes per sample, chunks shrink by ``num_classes`` to bound memory) or
            ``"batch"`` (squared gradient of each mini-batch's mean loss, averaged over batches,
            as Selective Synaptic Dampening does; its value depends on the batch size ``B``: in
            expectation it is ``m^2 + (F - m^2) / B`` with ``m`` the mean gradient and ``F`` the
            empirical Fisher, so it is not comparable across batch sizes).
        batch_size: batch size when ``data`` is a dataset.
        collate_fn: collate function for a dataset (default: :func:`hf_deepclean.images.collate_fn`).
        accelerator: an ``accelerate.Accelerator``; each process sums over its own shard
            without padded duplicates and one all-reduce combines the totals. Every process
            returns the same result.
        max_samples: use at most this many samples, drawn at random with ``seed`` (iterable
            data is truncated instead).
        seed: seed of the ``max_samples`` draw.
        chunk_size: samples per ``vmap`` call (chunks span batch borders); the per-sample
            gradients of a chunk take ``chunk_size * num_parameters * 4`` bytes (float32), plus
            the activations of ``chunk_size`` samples. Larger chunks are faster on small models
            (128 on the tiny digits ViT); lower it for large models.
        dtype: dtype of the returned tensors (sums are accumulated in float64).
        show_progress: tqdm progress bar (main process only).
        parameter_names: restrict to these trainable parameter names (default: all trainable).
        method: ``"vmap"`` (torch.func per-sample gradients), ``"loop"`` (one backward per
            sample, the reference) or ``"auto"`` (vmap, falling back to the loop with a warning
            when the model cannot be vmapped). Ignored by the ``"batch"`` estimator.
        num_workers: DataLoader worker processes for a dataset (as Trainer's ``dataloader_num_workers``).
        stop_when: called every ``snapshot_batches`` batches (counted over all processes) with the running
            mean Fisher (the same on every process) and the samples seen; True ends the pass there. The data is
            then read in a seeded random order (``seed``), so the first snapshots are a random sample of it.
            ``snapshot_batches`` is rounded up to a multiple of the process count, so the snapshots, and where the
            pass stops, are those of one process whenever the count divides it.

    Returns:
        ``{name: tensor}`` with the Fisher diagonal of each trainable parameter, in ``dtype``,
        on the parameter's device. The model's training modes and attention implementation are
        restored afterwards.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not one of {ESTIMATORS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size={chunk_size} and batch_size={batch_size} must be >= 1")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples={max_samples} must be >= 1 or None")

    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    named = dict(model.named_parameters())
    frozen = [n for n, p in named.items() if not p.requires_grad]
    if frozen:
        logger.info("fisher_diagonal skips %d parameters without requires_grad: %s", len(frozen), ", ".join(frozen))
    names = [n for n, p in named.items() if p.requires_grad]
    if parameter_names is not None:
        wanted = list(parameter_names)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"parameter_names {unknown} are not trainable parameters of {type(model).__name__}")
        names = [n for n in names if n in set(wanted)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to compute a Fisher diagonal for")
    device = named[names[0]].device
    # inputs follow the dtype holding most weights (a float64 or bfloat16 model gets matching pixels)
    largest = max(named.values(), key=lambda p: p.numel() if p.is_floating_point() else -1)
    input_dtype = largest.dtype if largest.is_floating_point() else None

    loader, truncate = _make_loader(data, batch_size=batch_size, collate_fn=collate_fn, max_samples=max_samples,
                                    seed=seed, num_workers=num_workers, seeded_order=stop_when is not None)
    restore_even_batches = None
    if accelerator is not None and not is_prepared_by_accelerate(loader):
        # default even_batches pads the last batches with repeated samples: wrong sums
        restore_even_batches = accelerator.even_batches
        accelerator.even_batches = False
        try:
            loader = accelerator.prepare_data_loader(loader)
        finally:
            accelerator.even_batches = restore_even_batches

    totals = {n: torch.zeros_like(named[n], dtype=torch.float64) for n in names}
    count = 0
    processes = accelerator.num_processes if accelerator is not None else 1
    local_snapshot = -(-snapshot_batches // processes)  # each process's batches between two snapshots

    def stop_here(batches: int, count_now: int) -> bool:
        if stop_when is None or batches % local_snapshot:
            return False
        summed, samples = _reduced(totals, count_now, names, accelerator, device)
        return bool(stop_when({n: (summed[n] / samples).to(dtype) for n in names}, samples))

    is_main = accelerator is None or accelerator.is_main_process
    progress = None
    if show_progress and is_main:
        total = len(loader) if hasattr(loader, "__len__") and not truncate else None
        progress = tqdm(total=total, desc=f"Fisher ({estimator})", unit="batch")

    with _fisher_mode(model), torch.enable_grad():
        params = {n: named[n] for n in names}
        if estimator == "batch":
            tensors = [params[n] for n in names]
            seen = 0
            for batch in loader:
                x, y = _to_device(batch, device, input_dtype, truncate, max_samples, seen)
                if x is None:
                    break
                seen += x.shape[0]
                loss = F.cross_entropy(_logits(model, x), y)
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        totals[n] += g.to(torch.float64).square()
                count += 1
                if progress is not None:
                    progress.update(1)
                if stop_here(count, count):
                    break
        else:
            accumulator = _PerSampleAccumulator(model, names, params, estimator, method, chunk_size, totals)
            seen = batches = 0
            for batch in loader:
                x, y = _to_device(batch, device, input_dtype, truncate, max_samples, seen)
                if x is None:
                    break
                accumulator.add(x, y)
                seen, batches = seen + x.shape[0], batches + 1
                if progress is not None:
                    progress.update(1)
                if stop_when is not None and batches % local_snapshot == 0:
                    accumulator.finish()  # every sample seen so far in the totals
                    if stop_here(batches, accumulator.count):
                        break
            accumulator.finish()
            count = accumulator.count
    if progress is not None:
        progress.close()

    totals, count = _reduced(totals, count, names, accelerator, device)
    if count == 0:
        raise ValueError("fisher_diagonal got no samples: the data is empty")
    return {n: (totals[n] / count).to(dtype) for n in names}


def _reduced(totals, count, names, accelerator, device):
    """The float64 totals and the count summed over every process (one all-reduce); as they are on one."""
    if accelerator is None or accelerator.num_processes == 1:
        return totals, count
    flat = torch.cat([totals[n].reshape(-1) for n in names]
                     + [torch.tensor([float(count)], dtype=torch.float64, device=device)])
    flat = accelerator.reduce(flat, reduction="sum")
    out, offset = {}, 0
    for n in names:
        size = totals[n].numel()
        out[n] = flat[offset : offset + size].view_as(totals[n])
        offset += size
    return out, int(round(flat[-1].item()))


def _to_device(batch, device, input_dtype, truncate, max_samples, seen):
    """``(pixel_values, labels)`` on ``device``; ``(None, None)`` once ``max_samples`` is reached."""
    if not isinstance(batch, Mapping) or "pixel_values" not in batch or "labels" not in batch:
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"fisher_diagonal needs batches with 'pixel_values' and 'labels', got {keys}")
    x = torch.as_tensor(batch["pixel_values"]).to(device)
    if input_dtype is not None and x.is_floating_point():
        x = x.to(input_dtype)
    y = torch.as_tensor(batch["labels"]).to(device=device, dtype=torch.long)
    if truncate:
        remaining = max_samples - seen
        if remaining <= 0:
            return None, None
        x, y = x[:remaining], y[:remaining]
    return x, y


def per_sample_loop_fisher(model: torch.nn.Module, data, **kwargs) -> dict[str, torch.Tensor]:
    """Reference implementation: ``fisher_diagonal(..., method="loop")``, one backward per sample."""
    kwargs.setdefault("method", "loop")
    return fisher_diagonal(model, data, **kwargs)


def compute_fishers(model: torch.nn.Module, forget, retain, config, *, accelerator=None,
                    collate_fn: Callable | None = None,
                    stats: dict | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The Fishers on D_f and D_r with a :class:`~hf_deepclean.config.DeepCleanConfig`'s settings.

    The one place the two Fishers are computed from a config, for every caller (the trainer, ``hf-deepclean
    sweep``, the benchmark): ``fisher_estimator``, ``fisher_batch_size``, ``fisher_max_samples``,
    ``fisher_chunk_size``, ``dataloader_num_workers``, ``seed`` and ``disable_tqdm`` (no progress bar).
    ``forget`` and ``retain`` yield ``pixel_values`` (:func:`hf_deepclean.images.model_inputs`).

    With ``fisher_max_samples="auto"`` D_f is read whole and the D_r pass stops once the selection it implies has
    stopped changing (:class:`~hf_deepclean.selection.StableSelection`: Jaccard index at least
    ``fisher_stability`` between successive snapshots, one every ``fisher_snapshot_samples`` samples, twice in a
    row); ``stats``, when given, receives ``retain_samples`` and the ``stability`` history.

    Returns ``(fisher_forget, fisher_retain)``.
    """
    if len(forget) == 0:
        raise ValueError("The forget set is empty: there is nothing to forget.")
    auto = config.fisher_max_samples == "auto"
    common = dict(
        estimator=config.fisher_estimator,
        batch_size=config.fisher_batch_size,
        collate_fn=collate_fn,
        accelerator=accelerator,
        max_samples=None if auto else config.fisher_max_samples,
        seed=config.seed,
        chunk_size=config.fisher_chunk_size,
        show_progress=not config.disable_tqdm,
        num_workers=config.dataloader_num_workers,
    )
    start = time.perf_counter()
    fisher_forget = fisher_diagonal(model, forget, **common)
    stop = None
    if auto:
        stop = StableSelection(fisher_forget, config, model, num_forget=len(forget), num_retain=len(retain),
                               tolerance=config.fisher_stability)
        common.update(stop_when=stop, snapshot_batches=max(1, -(-config.fisher_snapshot_samples
                                                                 // config.fisher_batch_size)))
    fisher_retain = fisher_diagonal(model, retain, **common)
    used = stop.history[-1][0] if stop is not None and stop.history else len(retain)
    if stats is not None:
        stats.update(retain_samples=used, stability=list(stop.history) if stop is not None else None)
    processes = accelerator.num_processes if accelerator is not None else 1
    logger.info("Fisher diagonals (%s) on %d forget and %d of %d retain samples, %d process%s%s: %.1f s.",
                config.fisher_estimator, len(forget), min(used, len(retain)), len(retain), processes,
                "" if processes == 1 else "es",
                " (stopped when the selection was stable)" if auto else
                f" (at most {config.fisher_max_samples} each)" if config.fisher_max_samples else "",
                time.perf_counter() - start)
    return fisher_forget, fisher_retain

"""Reset the selected weights, then keep every other weight bit-for-bit frozen while training.

The mechanisms, each for a reason:

- tensors with no selected entry get ``requires_grad=False``: they leave the optimizer and DDP;
- in partially selected tensors the frozen gradient entries are zeroed before unscaling and clipping (so clipping
  sees the selected entries only), never as ``g * mask``, because ``inf * 0`` is NaN;
- under FSDP2 the parameters become DTensor shards when the model is wrapped (after :meth:`GradientMask.attach`),
  so :meth:`GradientMask.bind_to_sharded_parameters` moves the masking there: FSDP2 writes each shard's reduced
  gradient into ``.grad`` outside autograd and then runs its post-accumulate-grad hooks, which mask the local
  shard before clipping and the step;
- after every optimizer step the frozen entries are restored, because AdamW's decoupled weight decay (and any
  momentum an optimizer keeps) moves weights whose gradient is zero.

Two kernel strategies for the plain (not sharded) tensors, chosen by ``kernels``:

- ``multi_tensor`` (default, :class:`BitMask`): after backward one multi-tensor kernel zeroes the frozen
  gradient entries of every tensor, and after the step two more put the frozen weights back. Measured per step
  on ViT-B/16 with every tensor partially selected: 1.1 ms against 5.5 ms for the per-tensor path on an H200,
  where a bf16 step is short enough (~30 ms) that ~200 hooks and ~200 ``where`` launches showed; 2.6x less on
  CPU too (benchmarks/mask_kernels.py). Without hooks, gradients are masked when
  :meth:`GradientMask.mask_gradients` is called: :class:`GradientMaskTrainerMixin` calls it after every backward
  (before clipping), and the optimizer masks again before its step for loops that do not.
- ``per_tensor``: one gradient hook and one ``where`` per partially selected tensor. Less memory: a snapshot
  and a bool mask per tensor (1.25x the tensor for float32) against two integer buffers (2x).

FSDP2 shards always take the per-tensor path.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from ._compat import (
    BATCH_NORM_TYPES,
    NORMALIZATION_TYPES,
    can_build_from_config,
    foreach_add_,
    foreach_mul_,
    model_from_config,
)

logger = logging.getLogger(__name__)

def normalization_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the affine weights of normalisation layers (LayerNorm, BatchNorm, GroupNorm, RMSNorm ...)."""
    names = []
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORMALIZATION_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d", "RMSNorm"))
        if not is_norm:
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            names.append(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def _norm_init_value(name: str) -> float:
    # Normalisation layers initialise scales to 1 and shifts to 0.
    return 0.0 if name.endswith("bias") else 1.0


@torch.no_grad()
def reset_selected_weights(
    model: torch.nn.Module,
    mask: Mapping[str, torch.Tensor],
    mode: str = "zero",
    *,
    norm_policy: str = "init",
    seed: int = 0,
) -> int:
    """Overwrite the selected entries: ``zero``, ``init`` (fresh initialisation) or ``none``.

    Normalisation weights follow ``norm_policy``: with ``init`` (default) their selected entries
    go back to 1 (scales) / 0 (shifts) whatever ``mode`` is, since a zero scale kills the layer.
    Returns the number of entries reset.
    """
    if mode not in ("zero", "init", "none"):
        raise ValueError(f"reset={mode!r} must be one of zero, init, none.")
    if mode == "none":
        return 0
    params = dict(model.named_parameters())
    norm_names = set(normalization_parameter_names(model)) if norm_policy == "init" else set()
    fresh = _fresh_parameters(model, seed) if mode == "init" else None
    count = 0
    for name, selected in mask.items():
        if name not in params:
            raise KeyError(f"Mask entry {name!r} is not a parameter of the model; was the mask made for another model?")
        if not bool(selected.any()):
            continue
        param = params[name]
        selected = selected.to(param.device)
        if name in norm_names:
            param.masked_fill_(selected, _norm_init_value(name))
        elif fresh is not None:
            param.copy_(torch.where(selected, fresh[name].to(param.device, param.dtype), param))
        else:
            param.masked_fill_(selected, 0.0)
        count += int(selected.sum())
    return count


def _fresh_parameters(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The parameters a freshly initialised model of the same config would have."""
    config = getattr(model, "config", None)
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        if config is not None and can_build_from_config(type(model)):
            fresh_model = model_from_config(type(model), copy.deepcopy(config))
        else:
            fresh_model = copy.deepcopy(model)
            for module in fresh_model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    finally:
        torch.random.set_rng_state(torch_state)
    return {n: p.detach() for n, p in fresh_model.named_parameters()}


MASK_KERNELS = ("multi_tensor", "per_tensor")

# The integer type of each element size: the multi-tensor path works on a tensor's bits, read as integers.
_BITS_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().view(_BITS_DTYPES[tensor.element_size()])


class BitMask:
    """Zero the frozen gradient entries and restore the frozen weights of many tensors with multi-tensor kernels.

    Works on bit patterns read as integers, grouped by (device, integer type): ``grad_bits *= keep`` (``keep`` is 1
    on selected, 0 on frozen entries) leaves exactly +0.0 on frozen entries, even where the gradient was inf or NaN;
    ``weight_bits = weight_bits * keep + frozen_bits`` (``frozen_bits``: the original bits on frozen entries, 0
    elsewhere) writes back the exact original pattern (-0.0, inf and NaN included), since one of the two terms is
    always 0 and integer arithmetic cannot round. Memory: two tensor-sized integer buffers per tensor.
    """

    def __init__(self, entries: Iterable[tuple[torch.nn.Parameter, torch.Tensor]]):
        """``entries``: (parameter the optimizer updates, its frozen entries as a bool mask on the same device)."""
        groups = defaultdict(lambda: ([], [], [], []))  # params, their bit views, keep, frozen bits
        for param, frozen in entries:
            bits = _bits(param)
            keep = (~frozen).to(bits.dtype)
            params, views, keeps, frozen_bits = groups[(bits.device, bits.dtype)]
            params.append(param)
            views.append(bits)
            keeps.append(keep)
            frozen_bits.append(bits * (1 - keep))
        self._groups = list(groups.values())

    @property
    def num_tensors(self) -> int:
        return sum(len(params) for params, *_ in self._groups)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        for params, _, keeps, _ in self._groups:
            # Gradients are new tensors after every zero_grad(set_to_none=True), so their views are taken each time.
            grads, grad_keeps = [], []
            for param, keep in zip(params, keeps):
                if param.grad is None:
                    continue
                if param.grad.dtype != param.dtype:  # allowed by a parameter's grad_dtype: the bits differ in size
                    param.grad.masked_fill_(keep == 0, 0)
                    continue
                grads.append(_bits(param.grad))  # same dtype as the parameter, so the group's integer type
                grad_keeps.append(keep)
            if grads:
                foreach_mul_(grads, grad_keeps)

    @torch.no_grad()
    def restore(self) -> None:
        for params, views, keeps, frozen_bits in self._groups:
            for i, param in enumerate(params):
                # Follow a storage swap (``param.data = ...``) instead of silently restoring the old storage.
                if param.data_ptr() != views[i].data_ptr():
                    views[i] = _bits(param)
            foreach_mul_(views, keeps)
            foreach_add_(views, frozen_bits)


class GradientMask:
    """Freeze every weight outside ``mask``; install with :meth:`attach`, undo with :meth:`detach`.

    ``kernels``: ``multi_tensor`` or ``per_tensor`` (module docstring); frozen weights stay bit-identical with
    each, and training gives the same weights.
    """

    def __init__(self, model: torch.nn.Module, mask: Mapping[str, torch.Tensor], kernels: str = "multi_tensor"):
        if kernels not in MASK_KERNELS:
            raise ValueError(f"kernels={kernels!r} must be one of {MASK_KERNELS}.")
        self.model = model
        self.kernels = kernels
        self.mask = {name: m.bool() for name, m in mask.items()}
        self._bit_mask: BitMask | None = None
        self._where_restores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # the per-tensor path's
        self._gradient_handles: list = []
        self._step_handles: list = []
        # name -> (the tensor the optimizer updates, its frozen entries, their values, or None where the BitMask keeps
        # them); local shards under FSDP2
        self._frozen_values: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._original_requires_grad: dict[str, bool] = {}
        self.num_frozen_tensors = 0
        self.num_partial_tensors = 0
        self.num_sharded_tensors = 0

    def attach(self) -> GradientMask:
        params = dict(self.model.named_parameters())
        missing = sorted(set(self.mask) - set(params))
        if missing:
            raise KeyError(f"Mask names {missing[:3]} are not parameters of the model; the mask belongs to another model.")
        for name, param in params.items():
            self._original_requires_grad[name] = param.requires_grad
            selected = self.mask.get(name)
            if selected is None or not bool(selected.any()):
                param.requires_grad_(False)
                self.num_frozen_tensors += 1
                continue
            if bool(selected.all()):
                continue
            self._bind(name, param)
            self.num_partial_tensors += 1
        self._build_restores()
        return self

    def _build_restores(self) -> None:
        """Split the bound tensors once, so each step's restore walks only its own path's tensors: those bound
        without a snapshot go into one :class:`BitMask`, the others get a ``where`` each."""
        batched = [(target, frozen) for target, frozen, values in self._frozen_values.values() if values is None]
        self._bit_mask = BitMask(batched) if batched else None
        self._where_restores = [entry for entry in self._frozen_values.values() if entry[2] is not None]

    @property
    def num_multi_tensor(self) -> int:
        """Partially selected tensors on the multi-tensor path."""
        return self._bit_mask.num_tensors if self._bit_mask is not None else 0

    def bind_to_sharded_parameters(self) -> int:
        """Move the masking of partially selected tensors onto the DTensor shards FSDP2 put in their place.

        Call after wrapping (fully_shard copies ``requires_grad``, so the fully frozen tensors stay out).
        Returns the number of partially selected tensors now bound to shards.
        """
        params = dict(self.model.named_parameters())
        for handle in self._gradient_handles:
            handle.remove()
        self._gradient_handles.clear()
        self.num_sharded_tensors = 0
        for name in list(self._frozen_values):
            param = params.get(name)
            if param is None:
                raise KeyError(f"{name!r} is no longer a parameter after wrapping; cannot keep its frozen entries exact.")
            self._bind(name, param)
            self.num_sharded_tensors += isinstance(param, DTensor)
        self._build_restores()
        return self.num_sharded_tensors

    def _bind(self, name: str, param: torch.nn.Parameter) -> None:
        if isinstance(param, DTensor):
            # The same split FSDP2 made (all ranks hold the same full mask, so no communication).
            local_selected = distribute_tensor(
                self.mask[name].to(param.device), param.device_mesh, param.placements, src_data_rank=None
            ).to_local()
            frozen = ~local_selected
            with torch.no_grad():  # the shard's own storage, which the optimizer updates in place
                target = param.to_local()
            self._gradient_handles.append(param.register_post_accumulate_grad_hook(
                lambda p, frozen=frozen: p.grad.to_local().masked_fill_(frozen, 0)))
        elif self.kernels == "multi_tensor":  # FSDP2 shards (above) always take the per-tensor hooks
            self._frozen_values[name] = (param, ~self.mask[name].to(param.device), None)  # values kept by the BitMask
            return
        else:
            frozen = ~self.mask[name].to(param.device)
            target = param
            self._gradient_handles.append(param.register_hook(lambda g, frozen=frozen: g.masked_fill(frozen, 0)))
        self._frozen_values[name] = (target, frozen, target.detach().clone())

    @torch.no_grad()
    def restore_frozen(self, *_args, **_kwargs) -> None:
        """Put the frozen entries of partially selected tensors back (after an optimizer step)."""
        if self._bit_mask is not None:
            self._bit_mask.restore()
        for target, frozen, values in self._where_restores:
            torch.where(frozen, values, target, out=target)  # in place: no temporary the size of the tensor

    def mask_gradients(self, *_args, **_kwargs) -> None:
        """Zero the frozen gradient entries of the multi-tensor path (the per-tensor path's hooks already did).

        Call after backward and before clipping; :class:`GradientMaskTrainerMixin` does.
        """
        if self._bit_mask is not None:
            self._bit_mask.mask_gradients()

    def register_with(self, optimizer: torch.optim.Optimizer, *, mask_gradients_before_step: bool = True) -> None:
        """Restore the frozen entries after every step of ``optimizer`` (unwraps accelerate's wrapper).

        With ``mask_gradients_before_step`` the optimizer also masks the multi-tensor path's gradients before each
        step, for training loops that do not call :meth:`mask_gradients` (their gradient clipping then sees frozen
        entries; the weights stay exact either way).
        """
        inner = getattr(optimizer, "optimizer", optimizer)
        if mask_gradients_before_step and self._bit_mask is not None:
            self._step_handles.append(inner.register_step_pre_hook(self.mask_gradients))
        self._step_handles.append(inner.register_step_post_hook(self.restore_frozen))

    def detach(self) -> None:
        for handle in self._gradient_handles + self._step_handles:
            handle.remove()
        self._gradient_handles.clear()
        self._step_handles.clear()
        params = dict(self.model.named_parameters())
        for name, flag in self._original_requires_grad.items():
            if name in params:
                params[name].requires_grad_(flag)
        self._frozen_values.clear()
        self._bit_mask = None
        self._where_restores = []


class GradientMaskTrainerMixin:
    """For ``transformers.Trainer`` subclasses: a ``gradient_mask`` attribute, masked after every backward.

    Put before ``Trainer`` in the bases. The optimizer restores frozen entries after each step, and each
    ``training_step`` masks the multi-tensor path's gradients right after backward, so gradient clipping and the
    logged gradient norm see the selected entries only (the per-tensor path's hooks already do that).
    """

    gradient_mask: GradientMask | None = None

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.gradient_mask is not None:
            self.gradient_mask.register_with(optimizer, mask_gradients_before_step=False)
        return optimizer

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if self.gradient_mask is not None:
            self.gradient_mask.mask_gradients()
        return loss


def freeze_batchnorm_statistics(model: torch.nn.Module, mask: Mapping[str, torch.Tensor]) -> list:
    """Keep the running statistics of BatchNorm layers with no selected weight fixed during training.

    Running mean/var are buffers, not weights, so the mask cannot freeze them; a forward pre-hook
    puts those layers in eval mode (normalise with the stored statistics, update nothing).
    Returns the hook handles.
    """
    handles = []
    for module_name, module in model.named_modules():
        if not isinstance(module, BATCH_NORM_TYPES):
            continue
        prefix = f"{module_name}." if module_name else ""
        selected = any(bool(mask[prefix + p].any()) for p, _ in module.named_parameters(recurse=False) if prefix + p in mask)
        if not selected:
            handles.append(module.register_forward_pre_hook(lambda m, _inputs: setattr(m, "training", False)))
    return handles

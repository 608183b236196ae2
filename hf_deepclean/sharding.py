"""Distributed DeepClean: the engines it refuses, and under FSDP2 the mask bound to the shards and the shards
gathered back (the wrapping workaround is in _compat).

FSDP2 replaces each parameter by a DTensor shard when Trainer wraps the model inside ``train()``,
after DeepClean has reset the selected weights and attached its :class:`~hf_deepclean.masking.GradientMask`;
these helpers cover the moments where that matters: the start of training, and getting one plain model back for saving and evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from ._compat import BATCH_NORM_TYPES, can_build_from_config, model_from_config
from .masking import GradientMask

logger = logging.getLogger(__name__)


def check_distributed_support(*, fsdp, fsdp_version=2, deepspeed) -> None:
    """Refuse the engines whose parameter handling defeats an element-wise mask, with what to use instead."""
    # Element-wise masks need per-parameter tensors; refuse set-ups that hide them.
    if deepspeed:
        raise ValueError(
            "DeepClean does not support DeepSpeed: its engine steps inside backward, past the frozen-weight "
            "restore. Use FSDP2 (recipes/accelerate/fsdp2.yaml) or DDP (accelerate multi-GPU) instead."
        )
    if fsdp and int(fsdp_version) != 2:
        raise ValueError(
            f"DeepClean does not support FSDP version {fsdp_version}: FSDP1 flattens the parameters the element-wise "
            "mask is bound to. Use FSDP2 (fsdp_config version 2, or fsdp_version: 2 in the accelerate config, as in "
            "recipes/accelerate/fsdp2.yaml) or DDP instead."
        )



def check_fsdp2_precision(model: torch.nn.Module, mixed_precision: str) -> None:
    """Refuse FSDP2 mixed precision on BatchNorm models before the Fisher pass, instead of failing after it."""
    # Seen on an H200 (torch 2.11, accelerate 1.15): FSDP2's bf16 policy casts BatchNorm weights to bf16 but
    # not their running statistics, and the backward pass stops with "Expected running_mean to have type
    # BFloat16 but got Float".
    if mixed_precision in ("bf16", "fp16") and any(isinstance(m, BATCH_NORM_TYPES) for m in model.modules()):
        raise ValueError(
            f"FSDP2 with {mixed_precision} mixed precision fails on models with BatchNorm layers "
            f"({type(model).__name__}): it casts their weights but not their running statistics. Launch with "
            "--mixed_precision no (or mixed_precision: no in the accelerate config), or use DDP "
            "(recipes/accelerate/multi_gpu_ddp.yaml), where bf16 autocast keeps BatchNorm in float32."
        )


def gather_unsharded(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself, or under FSDP2 its shards gathered into a fresh plain instance (a collective)."""
    if not isinstance(model, FSDPModule):
        return model
    # fully_shard swaps the class for FSDP<Class>(FSDPModule, Class): build the original class.
    model_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    if not can_build_from_config(model_class):
        raise TypeError(f"Cannot rebuild {model_class.__name__} without sharding: it is not a transformers model.")
    full_state = {name: value.full_tensor() if isinstance(value, DTensor) else value
                  for name, value in model.state_dict().items()}
    plain = model_from_config(model_class, model.config)
    plain.load_state_dict(full_state, strict=True, assign=True)
    return plain.eval()


class BindMaskToShards(TrainerCallback):
    """Under FSDP2, Trainer wraps the model inside ``train()``, replacing each parameter by a DTensor shard:
    once training begins (after wrapping, before the first step), move the masking onto the shards."""

    def __init__(self, gradient_mask: Callable[[], GradientMask]):
        self.gradient_mask = gradient_mask  # the trainer's current one: each fine-tune attaches a new mask

    def on_train_begin(self, args, state, control, **kwargs):
        gradient_mask = self.gradient_mask()
        bound = gradient_mask.bind_to_sharded_parameters()
        if bound != gradient_mask.num_partial_tensors:
            # Never train with an unmasked tensor: a silent wrong result is worse than no result.
            raise RuntimeError(
                f"FSDP2 is on but only {bound} of the {gradient_mask.num_partial_tensors} partially selected tensors "
                "became DTensor shards, so their frozen entries could not be protected. Wrap the whole model with "
                "fully_shard (accelerate's FSDP2 does), or train with DDP."
            )
        logger.info("Bound the DeepClean mask to %d sharded tensors (FSDP2).", bound)

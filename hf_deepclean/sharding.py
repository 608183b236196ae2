"""FSDP2 for DeepClean: let accelerate wrap image classifiers, bind the mask to the shards, gather them back.

FSDP2 replaces each parameter by a DTensor shard when Trainer wraps the model inside ``train()``,
after DeepClean has reset the selected weights and attached its :class:`~hf_deepclean.masking.GradientMask`;
these helpers cover the three moments where that matters: the wrapping itself, the start of training,
and getting one plain model back for saving and evaluation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from .masking import GradientMask

logger = logging.getLogger(__name__)


def gather_unsharded(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself, or under FSDP2 its shards gathered into a fresh plain instance (a collective)."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model
    # fully_shard swaps the class for FSDP<Class>(FSDPModule, Class): build the original class.
    model_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    if not hasattr(model_class, "_from_config"):
        raise TypeError(f"Cannot rebuild {model_class.__name__} without sharding: it is not a transformers model.")
    full_state = {name: value.full_tensor() if isinstance(value, DTensor) else value
                  for name, value in model.state_dict().items()}
    plain = model_class._from_config(model.config)
    plain.load_state_dict(full_state, strict=True, assign=True)
    return plain.eval()


@contextlib.contextmanager
def fsdp2_wrappable(model):
    """Let accelerate's FSDP2 wrapping run on image classifiers; a no-op for ``model=None``.

    accelerate shards ``model.get_input_embeddings()`` as a unit of its own. transformers raises
    NotImplementedError there for convolutional backbones (ResNet, ConvNeXt ...), and a ViT's patch
    embeddings sit inside ViTEmbeddings, a block accelerate has already sharded, which fully_shard then
    rejects. In both cases the module is sharded with its parent anyway, so while Trainer wraps the
    model this instance answers None.
    """
    if model is None or not _input_embeddings_break_fsdp2_wrapping(model):
        yield
        return
    model.get_input_embeddings = lambda: None
    try:
        yield
    finally:
        del model.get_input_embeddings


def _input_embeddings_break_fsdp2_wrapping(model) -> bool:
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:
        return True
    if embeddings is None:
        return False
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    return any(
        type(module).__name__ in blocks and module is not embeddings and any(m is embeddings for m in module.modules())
        for module in model.modules()
    )


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

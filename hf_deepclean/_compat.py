"""Workarounds that lean on private or version-dependent internals of transformers, accelerate and torch.

Gathered here so that a version bump is checked in one place. Each says what it works around and the versions
it was checked against (torch 2.13.0, transformers 5.25.0, accelerate 1.16.0 unless noted).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings

import torch
from transformers.core_model_loading import revert_weight_conversion

logger = logging.getLogger(__name__)

# transformers >= 5 splits image processors by backend; the PIL one needs no torchvision. Before 5, one class.
try:
    from transformers import ViTImageProcessorPil as PilViTImageProcessor
except ImportError:  # transformers < 5
    from transformers import ViTImageProcessor as PilViTImageProcessor
# With torchvision (the `fast` extra), transformers' ViTImageProcessor is its torchvision-backed, batched one;
# without it, the name is a stand-in that warns on import, so it is imported only when torchvision is there.
from transformers.utils import is_torchvision_available  # noqa: E402

if is_torchvision_available():
    from transformers import ViTImageProcessor as TorchvisionViTImageProcessor
else:
    TorchvisionViTImageProcessor = None

# torch keeps the common base classes of the BatchNorm / InstanceNorm layers private (torch.nn.modules.batchnorm).
BATCH_NORM_TYPES: tuple[type, ...] = (torch.nn.modules.batchnorm._BatchNorm,)
NORMALIZATION_TYPES: tuple[type, ...] = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase)

# The multi-tensor kernels the masking uses (torch._foreach_*: private, stable since torch 1.x, checked on 2.13).
foreach_mul_ = torch._foreach_mul_
foreach_add_ = torch._foreach_add_


def saved_names(model, names) -> dict[str, str]:
    """Parameter name -> the key ``save_pretrained`` writes it under in ``model.safetensors``.

    transformers 5 renames some weights when it saves them (a ViT's ``vit.layers.0.attention.k_proj`` is saved as
    ``vit.encoder.layer.0.attention.attention.key``), through ``core_model_loading.revert_weight_conversion``, a
    function of its internals. Pure renamings only: a conversion that merges or splits tensors keeps the name.
    Checked on transformers 5.25.
    """
    out = {}
    for name in names:
        probe = torch.zeros(1)
        try:
            reverted = revert_weight_conversion(model, {name: probe})
        except Exception:  # noqa: BLE001 - a converter that needs its sibling tensors: no renaming to report
            reverted = {}
        keys = [k for k, v in reverted.items() if v is probe]
        out[name] = keys[0] if len(keys) == 1 and len(reverted) == 1 else name
    return out


def model_from_config(model_class: type, config):
    """A freshly initialised ``model_class`` from ``config``: transformers' ``_from_config``, which (unlike
    ``from_config`` on the Auto classes) builds the exact class of an existing model, e.g. one unwrapped from FSDP2."""
    return model_class._from_config(config)


def can_build_from_config(model_class: type) -> bool:
    return hasattr(model_class, "_from_config")


def attention_implementation(model) -> str | None:
    """The attention kernel a transformers model runs (``config._attn_implementation``: private, no public getter)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


@contextlib.contextmanager
def eager_attention(model):
    """Switch a transformers model to eager attention while the body runs.

    SDPA has no vmap batching rule on CPU: vmap over per-sample gradients would silently loop over the samples.
    """
    previous = attention_implementation(model)
    switched = False
    if previous not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            switched = True
        except Exception as err:  # noqa: BLE001 - models that cannot switch keep their attention
            logger.debug("could not switch %s to eager attention: %s", type(model).__name__, err)
    try:
        yield
    finally:
        if switched:
            model.set_attn_implementation(previous)


def is_prepared_by_accelerate(loader) -> bool:
    """Whether ``loader`` came out of ``accelerator.prepare`` (accelerate marks it with a private attribute)."""
    return bool(getattr(loader, "_is_accelerate_prepared", False))


@contextlib.contextmanager
def live_objects_frozen():
    """Keep objects alive now out of the garbage collector's scans while the body runs.

    Trainer.train() starts with accelerate's free_memory(), a full gc.collect() over every object the
    process holds: 0.2 s on this machine, most of a short unlearning run. Objects alive before the run
    are not garbage, so leaving them out of that scan changes nothing but the time.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def fsdp2_wrappable(model):
    """Let accelerate's FSDP2 wrapping run on image classifiers; a no-op for ``model=None``.

    accelerate shards ``model.get_input_embeddings()`` as a unit of its own. transformers raises
    NotImplementedError there for convolutional backbones (ResNet, ConvNeXt ...), and a ViT's patch
    embeddings sit inside ViTEmbeddings, a block accelerate has already sharded, which fully_shard then
    rejects. In both cases the module is sharded with its parent anyway, so while Trainer wraps the
    model this instance answers None. Checked on accelerate 1.15 / transformers 5.24 (an H200) and 1.16 / 5.25.
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


@contextlib.contextmanager
def quiet_vmap_fallback_warnings():
    """Silence torch's "There is a performance drop because we have not yet implemented the batching rule" warning.

    It fires on every per-sample Fisher pass over ops without a vmap rule (Swin's roll, for one); the result is
    exact, only slower, and the message means nothing to a user of the CLI.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*performance drop because we have not yet implemented the batching rule.*")
        yield


__all__ = [
    "BATCH_NORM_TYPES",
    "NORMALIZATION_TYPES",
    "PilViTImageProcessor",
    "TorchvisionViTImageProcessor",
    "attention_implementation",
    "can_build_from_config",
    "eager_attention",
    "fsdp2_wrappable",
    "is_prepared_by_accelerate",
    "is_torchvision_available",
    "live_objects_frozen",
    "model_from_config",
    "quiet_vmap_fallback_warnings",
    "saved_names",
]

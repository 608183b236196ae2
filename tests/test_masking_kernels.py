"""The multi-tensor masking kernels (BitMask) against the per-tensor hooks: exact bits, identical training.

Both paths are chosen explicitly here; the multi-tensor one is the default (tests/test_gpu.py runs both on a GPU).
"""

import copy

import pytest
import torch

from _fisher_models import random_dataset
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.masking import BitMask, GradientMask
from hf_deepclean.trainer import DeepCleanTrainer
from hf_deepclean.training import load_classifier

SPECIAL = [-0.0, 0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -3.5, 7.0]


def _bits(t):
    return t.detach().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).clone()


def _random_frozen(tensors):
    return [torch.rand(t.shape, generator=torch.Generator().manual_seed(i)) < 0.5 for i, t in enumerate(tensors)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_restore_writes_back_the_exact_bits(dtype):
    special = torch.tensor(SPECIAL, dtype=torch.float64).to(dtype)
    params = [torch.nn.Parameter(special.repeat(3).reshape(4, 6)), torch.nn.Parameter(torch.randn(5).to(dtype))]
    frozen = _random_frozen(params)
    original = [_bits(p) for p in params]
    bit_mask = BitMask(zip(params, frozen))
    with torch.no_grad():  # what a step with weight decay and a blow-up might leave
        params[0].mul_(0.5).add_(-0.0)
        params[0][0, 0] = float("nan")
        params[1].fill_(float("-inf"))
    moved = [_bits(p) for p in params]
    bit_mask.restore()
    for p, f, before, after in zip(params, frozen, original, moved):
        assert torch.equal(_bits(p)[f], before[f])  # frozen: the original bit patterns, -0.0 and NaN included
        assert torch.equal(_bits(p)[~f], after[~f])  # selected: what the step left, untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_gradients_are_plus_zero_on_frozen_entries_even_inf_and_nan(dtype):
    params = [torch.nn.Parameter(torch.zeros(4, 6, dtype=dtype)), torch.nn.Parameter(torch.zeros(3, dtype=dtype))]
    unused = torch.nn.Parameter(torch.zeros(2, dtype=dtype))  # no gradient this step: skipped, not an error
    frozen = _random_frozen(params) + [torch.tensor([True, False])]
    bit_mask = BitMask(zip(params + [unused], frozen))
    params[0].grad = torch.tensor(SPECIAL, dtype=torch.float64).to(dtype).repeat(3).reshape(4, 6)
    params[1].grad_dtype = None  # PyTorch then accepts a gradient in another precision
    params[1].grad = torch.tensor([float("nan"), -2.0, float("inf")], dtype=torch.float64)
    incoming = [_bits(p.grad) for p in params]
    bit_mask.mask_gradients()
    for p, f, before in zip(params, frozen, incoming):
        assert (_bits(p.grad)[f] == 0).all()  # +0.0 exactly (inf * 0 would have been NaN)
        assert torch.equal(_bits(p.grad)[~f], before[~f])
    assert unused.grad is None


def _train_linear(kernels, clip, swap_storage=False):
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    mask = {"weight": torch.rand(4, 6) < 0.3, "bias": torch.tensor([True, False, False, True])}
    gradient_mask = GradientMask(layer, mask, kernels=kernels).attach()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.5)
    gradient_mask.register_with(optimizer)
    norms = []
    for step in range(4):
        if swap_storage and step == 1:  # the restore must follow the new storage, not write into the old one
            layer.weight.data = layer.weight.data.clone()
        optimizer.zero_grad()
        (layer(torch.randn(8, 6)).pow(2).sum() * 100).backward()
        gradient_mask.mask_gradients()
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)))
        optimizer.step()
    gradient_mask.detach()
    return layer, before, mask, norms


@pytest.mark.parametrize("swap_storage", [False, True])
def test_multi_tensor_path_trains_exactly_like_the_per_tensor_hooks(swap_storage):
    layer, before, mask, norms = _train_linear("multi_tensor", clip=True, swap_storage=swap_storage)
    reference, _, _, reference_norms = _train_linear("per_tensor", clip=True)
    assert norms == reference_norms  # clipping saw the same (masked) gradients
    for (name, param), expected in zip(layer.named_parameters(), reference.parameters()):
        assert torch.equal(param, expected), name
        assert torch.equal(param.detach()[~mask[name]], before[name][~mask[name]]), name
        assert (param.detach()[mask[name]] != before[name][mask[name]]).all(), name


def test_optimizer_masks_gradients_for_loops_that_do_not():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    mask = {"weight": torch.tensor([[True, False, False], [False, True, False]]), "bias": torch.tensor([True, False])}
    gradient_mask = GradientMask(layer, mask, kernels="multi_tensor").attach()
    assert gradient_mask.num_multi_tensor == 2
    seen = []
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    gradient_mask.register_with(optimizer)
    optimizer.register_step_pre_hook(lambda *_: seen.append([p.grad.clone() for p in layer.parameters()]))
    layer(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    for grad, name in zip(seen[0], ("weight", "bias")):
        assert (grad[~mask[name]] == 0).all() and (grad[mask[name]] != 0).all(), name
    gradient_mask.detach()


def test_unknown_kernels_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="per_tensor"):
        GradientMask(torch.nn.Linear(2, 2), {}, kernels="fused")
    with pytest.raises(ValueError, match="mask_kernels='fused' must be one of"):
        DeepCleanConfig(output_dir=str(tmp_path), top_fraction=0.1, mask_kernels="fused")


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_trainer_gives_the_same_model_with_either_kernels(tmp_path, arch):
    # Gradient accumulation and clipping on: the mixin must mask after every backward, before clipping.
    model = load_classifier(None, num_labels=4, architecture=arch, seed=0)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    train, forget = random_dataset(48, (3, 16, 16), 4, seed=0), random_dataset(12, (3, 16, 16), 4, seed=1)
    trained = {}
    for kernels in ("per_tensor", "multi_tensor"):
        config = DeepCleanConfig(
            output_dir=str(tmp_path / kernels), top_fraction=0.1, num_train_epochs=1, per_device_train_batch_size=8,
            gradient_accumulation_steps=2, max_grad_norm=0.01, weight_decay=0.1, learning_rate=1e-2, use_cpu=True,
            disable_tqdm=True, report_to="none", logging_strategy="steps", logging_steps=1, fisher_batch_size=16,
            mask_kernels=kernels)
        trainer = DeepCleanTrainer(copy.deepcopy(model), config, train_dataset=train, forget_dataset=forget)
        trainer.unlearn()
        trained[kernels] = (trainer.model, trainer.parameter_mask,
                            [log["grad_norm"] for log in trainer.state.log_history if "grad_norm" in log])
    (model_a, mask_a, norms_a), (model_b, _, norms_b) = trained["per_tensor"], trained["multi_tensor"]
    assert norms_a == norms_b and len(norms_a) == 3
    moved = 0
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), name
        frozen = ~mask_a[name].bool()
        assert torch.equal(a.detach()[frozen], original[name][frozen]), name
        moved += int((a.detach()[~frozen] != original[name][~frozen]).sum())
    assert moved > 0


def test_memory_of_each_path_is_what_the_docs_say():
    # config.mask_kernels: for float32 weights, multi_tensor keeps 2x the partially selected tensors, per_tensor 1.25x.
    layer = torch.nn.Linear(64, 32)
    mask = {"weight": torch.rand(32, 64) < 0.5, "bias": torch.rand(32) < 0.5}
    tensor_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    multi = GradientMask(layer, mask, kernels="multi_tensor").attach()
    buffers = [t for _, _, keeps, frozen_bits in multi._bit_mask._groups for t in keeps + frozen_bits]
    assert sum(t.numel() * t.element_size() for t in buffers) == 2 * tensor_bytes
    multi.detach()
    per = GradientMask(layer, mask, kernels="per_tensor").attach()
    kept = [t for _, frozen, values in per._frozen_values.values() for t in (frozen, values)]
    assert sum(t.numel() * t.element_size() for t in kept) == 1.25 * tensor_bytes
    per.detach()

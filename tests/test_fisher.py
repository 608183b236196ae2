import logging
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(__file__))
from _fisher_models import (  # noqa: E402
    DataDependentLogisticRegression,
    LogisticRegression,
    SharedGradientModel,
    random_dataset,
    tiny_vit,
)
from hf_deepclean.fisher import fisher_diagonal, per_sample_loop_fisher
from hf_deepclean.images import collate_fn as default_collate_fn  # noqa: E402

D, K, N = 6, 4, 23


@pytest.fixture(scope="module")
def logreg():
    torch.manual_seed(0)
    model = LogisticRegression(D, K)
    with torch.no_grad():
        model.linear.weight.mul_(3)  # spread the probabilities away from uniform
    return model


@pytest.fixture(scope="module")
def logreg_data():
    return random_dataset(N, (D,), K, seed=1, dtype=torch.float64)


def _stack(data):
    x = torch.stack([ex["pixel_values"] for ex in data])
    y = torch.tensor([ex["labels"] for ex in data])
    return x, y


def _analytic(model, data, estimator, batch_size=None):
    x, y = _stack(data)
    with torch.no_grad():
        p = model.linear(x).softmax(-1)
    onehot = F.one_hot(y, K).double()
    if estimator == "empirical":
        delta = onehot - p  # d log p_y / dz
        return {"linear.weight": ((delta**2).T @ x**2) / len(data), "linear.bias": (delta**2).mean(0)}
    if estimator == "expected":
        # sum_c p_c (e_c - p)^2 per sample and output unit
        eye = torch.eye(K, dtype=torch.float64)
        w = torch.einsum("nc,nck->nk", p, (eye[None] - p[:, None, :]) ** 2)
        return {"linear.weight": (w.T @ x**2) / len(data), "linear.bias": w.mean(0)}
    # batch: squared gradient of each batch's mean cross-entropy, averaged over batches
    weight, bias, batches = 0, 0, 0
    for start in range(0, len(data), batch_size):
        d = (p - onehot)[start : start + batch_size]
        xb = x[start : start + batch_size]
        weight = weight + (d.T @ xb / len(d)) ** 2
        bias = bias + d.mean(0) ** 2
        batches += 1
    return {"linear.weight": weight / batches, "linear.bias": bias / batches}


def assert_fisher_close(actual, expected, rtol=1e-6):
    assert list(actual) == list(expected)
    scale = max(v.abs().max().item() for v in expected.values())
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        # atol relative to the largest entry: mathematically-zero gradients are float noise
        torch.testing.assert_close(
            actual[name].double(), expected[name].double(), rtol=rtol, atol=rtol * scale, msg=name
        )


@pytest.mark.parametrize("estimator", ["empirical", "expected"])
@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_analytic_logistic_regression(logreg, logreg_data, estimator, method):
    fisher = fisher_diagonal(
        logreg, logreg_data, estimator=estimator, method=method, batch_size=5, chunk_size=3,
        dtype=torch.float64, show_progress=False,
    )
    assert_fisher_close(fisher, _analytic(logreg, logreg_data, estimator), rtol=1e-9)


@pytest.mark.parametrize("batch_size", [4, 8])
def test_batch_estimator_matches_definition(logreg, logreg_data, batch_size):
    fisher = fisher_diagonal(logreg, logreg_data, estimator="batch", batch_size=batch_size, dtype=torch.float64, show_progress=False)
    assert_fisher_close(fisher, _analytic(logreg, logreg_data, "batch", batch_size), rtol=1e-9)


def test_estimators_differ(logreg, logreg_data):
    kw = dict(dtype=torch.float64, show_progress=False, batch_size=8)
    emp = fisher_diagonal(logreg, logreg_data, estimator="empirical", **kw)["linear.weight"]
    exp = fisher_diagonal(logreg, logreg_data, estimator="expected", **kw)["linear.weight"]
    bat = fisher_diagonal(logreg, logreg_data, estimator="batch", **kw)["linear.weight"]
    assert (emp - exp).norm() / emp.norm() > 0.05
    assert (emp - bat).norm() / emp.norm() > 0.5  # the batch mean gradient is a much smaller quantity


def test_default_dtype_names_and_shapes(logreg, logreg_data):
    fisher = fisher_diagonal(logreg, logreg_data, show_progress=True)
    assert {n: p.shape for n, p in logreg.named_parameters()} == {n: t.shape for n, t in fisher.items()}
    assert all(t.dtype == torch.float32 for t in fisher.values())


def test_dataloader_dataset_and_hf_dataset_agree(logreg, logreg_data):
    kw = dict(dtype=torch.float64, show_progress=False)
    from_list = fisher_diagonal(logreg, logreg_data, batch_size=7, **kw)
    loader = DataLoader(logreg_data, batch_size=5, collate_fn=default_collate_fn)
    assert_fisher_close(fisher_diagonal(logreg, loader, **kw), from_list, rtol=1e-12)
    datasets = pytest.importorskip("datasets")
    x, y = _stack(logreg_data)
    hf = datasets.Dataset.from_dict({"pixel_values": x.numpy(), "labels": y.numpy()}).with_format("torch")
    # the datasets torch format yields float32 pixel values
    assert_fisher_close(fisher_diagonal(logreg, hf, batch_size=4, **kw), from_list, rtol=1e-6)


def test_max_samples_is_seeded(logreg, logreg_data):
    kw = dict(dtype=torch.float64, show_progress=False, max_samples=7)
    a = fisher_diagonal(logreg, logreg_data, seed=3, **kw)
    b = fisher_diagonal(logreg, logreg_data, seed=3, **kw)
    c = fisher_diagonal(logreg, logreg_data, seed=4, **kw)
    assert torch.equal(a["linear.weight"], b["linear.weight"])
    assert not torch.allclose(a["linear.weight"], c["linear.weight"])
    loader = DataLoader(logreg_data, batch_size=5, collate_fn=default_collate_fn)
    assert_fisher_close(fisher_diagonal(logreg, loader, seed=3, **kw), a, rtol=1e-12)
    full = fisher_diagonal(logreg, logreg_data, dtype=torch.float64, show_progress=False)
    assert_fisher_close(fisher_diagonal(logreg, logreg_data, dtype=torch.float64, show_progress=False, max_samples=100), full)


def test_vmap_failure_falls_back_to_loop(logreg, logreg_data, caplog):
    model = DataDependentLogisticRegression(D, K)
    model.load_state_dict(logreg.state_dict())
    with caplog.at_level(logging.WARNING, logger="hf_deepclean.fisher"):
        fisher = fisher_diagonal(model, logreg_data, dtype=torch.float64, show_progress=False)
    assert "falling back to a per-sample loop" in caplog.text
    assert_fisher_close(fisher, _analytic(logreg, logreg_data, "empirical"), rtol=1e-9)
    with pytest.raises(RuntimeError):
        fisher_diagonal(model, logreg_data, method="vmap", show_progress=False)


def test_frozen_parameters_skipped_and_subset(logreg, logreg_data, caplog):
    model = LogisticRegression(D, K)
    model.load_state_dict(logreg.state_dict())
    model.linear.bias.requires_grad_(False)
    with caplog.at_level(logging.INFO, logger="hf_deepclean.fisher"):
        fisher = fisher_diagonal(model, logreg_data, dtype=torch.float64, show_progress=False)
    assert list(fisher) == ["linear.weight"]
    assert "linear.bias" in caplog.text
    expected = _analytic(logreg, logreg_data, "empirical")["linear.weight"]
    torch.testing.assert_close(fisher["linear.weight"], expected, rtol=1e-9, atol=0)
    only = fisher_diagonal(logreg, logreg_data, parameter_names=["linear.bias"], show_progress=False)
    assert list(only) == ["linear.bias"]
    with pytest.raises(ValueError, match="nope"):
        fisher_diagonal(logreg, logreg_data, parameter_names=["nope"], show_progress=False)


def test_bad_arguments(logreg, logreg_data):
    with pytest.raises(ValueError, match="estimator"):
        fisher_diagonal(logreg, logreg_data, estimator="fancy")
    with pytest.raises(ValueError, match="pixel_values"):
        fisher_diagonal(logreg, [{"image": 1, "label": 0}], show_progress=False)
    with pytest.raises(ValueError, match="no samples"):
        fisher_diagonal(logreg, [], show_progress=False)


def test_restores_training_mode_and_attention():
    model = tiny_vit()
    model.train()
    model.vit.layers[0].eval()  # a deliberately mixed state must survive
    before = {name: m.training for name, m in model.named_modules()}
    attn = model.config._attn_implementation
    data = random_dataset(3, (3, 16, 16), 4)
    fisher_diagonal(model, data, show_progress=False)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.config._attn_implementation == attn


def _hf_model(kind):
    import transformers as tf

    torch.manual_seed(0)
    if kind == "vit":
        return tiny_vit(), (3, 16, 16)
    if kind == "deit":
        cfg = tf.DeiTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=4, intermediate_size=64, num_labels=4)
        return tf.DeiTForImageClassification(cfg), (3, 16, 16)
    if kind == "resnet":
        cfg = tf.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
        return tf.ResNetForImageClassification(cfg), (3, 32, 32)
    if kind == "convnext":
        cfg = tf.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4)
        return tf.ConvNextForImageClassification(cfg), (3, 32, 32)
    if kind == "swin":
        cfg = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                            window_size=4, num_labels=4)
        return tf.SwinForImageClassification(cfg), (3, 32, 32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["vit", "resnet", "convnext", "swin", "deit"])
def test_vmap_matches_loop_on_hf_models(kind, caplog):
    model, shape = _hf_model(kind)
    data = random_dataset(5, shape, 4, seed=2)
    kw = dict(batch_size=3, chunk_size=2, show_progress=False, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="hf_deepclean.fisher"):
        fast = fisher_diagonal(model, data, method="vmap", **kw)
    loop = per_sample_loop_fisher(model, data, **kw)
    assert "falling back" not in caplog.text
    assert_fisher_close(fast, loop, rtol=2e-5)
    assert sum(v.sum() for v in fast.values()) > 0


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_expected_vmap_matches_loop_on_hf_models(kind):
    model, shape = _hf_model(kind)
    data = random_dataset(3, shape, 4, seed=2)
    kw = dict(estimator="expected", batch_size=3, chunk_size=8, show_progress=False, dtype=torch.float64)
    assert_fisher_close(fisher_diagonal(model, data, method="vmap", **kw), per_sample_loop_fisher(model, data, **kw), rtol=2e-5)


def test_shared_and_unused_gradients(logreg_data):
    torch.manual_seed(0)
    model = SharedGradientModel(D, K)
    kw = dict(dtype=torch.float64, show_progress=False, chunk_size=4)
    fast = fisher_diagonal(model, logreg_data, method="vmap", **kw)
    assert_fisher_close(fast, per_sample_loop_fisher(model, logreg_data, **kw), rtol=1e-9)
    # the offsets act like the bias: the same per-sample gradient, so the same Fisher
    torch.testing.assert_close(fast["offset_a"], fast["linear.bias"])
    torch.testing.assert_close(fast["offset_b"], fast["linear.bias"])
    assert torch.equal(fast["unused"], torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------------ fisher_max_samples="auto" (a pass that stops)


@pytest.mark.parametrize("estimator", ["empirical", "batch"])
def test_a_pass_that_stops_is_the_fisher_of_the_seeded_prefix_it_read(logreg, logreg_data, estimator):
    """stop_when ends the pass at a snapshot; what it returns is exactly the Fisher of the samples it read: the
    first ones of the seeded random order."""
    calls = []

    def stop_at_second_snapshot(fisher, samples):
        calls.append(samples)
        return len(calls) == 2

    seed, batch = 3, 4
    early = fisher_diagonal(logreg, logreg_data, estimator=estimator, batch_size=batch, seed=seed,
                            show_progress=False, stop_when=stop_at_second_snapshot, snapshot_batches=2)
    assert calls == ([8, 16] if estimator == "empirical" else [2, 4])  # samples, or batches for the batch estimator
    order = torch.randperm(len(logreg_data), generator=torch.Generator().manual_seed(seed))[:16].tolist()
    prefix = torch.utils.data.Subset(logreg_data, order)
    reference = fisher_diagonal(logreg, prefix, estimator=estimator, batch_size=batch, show_progress=False)
    for name in reference:
        torch.testing.assert_close(early[name], reference[name], rtol=1e-6, atol=0)


def test_stable_selection_stops_when_successive_selections_agree():
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.selection import StableSelection

    model = torch.nn.Linear(10, 10)
    forget = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    config = DeepCleanConfig(output_dir="unused", top_fraction=0.1)
    settled = {n: torch.rand_like(p) + 0.5 for n, p in model.named_parameters()}
    stop = StableSelection(forget, config, model, num_forget=5, num_retain=50, tolerance=0.99, patience=2)
    assert not stop(settled, 64)          # the first snapshot has nothing to compare with
    assert not stop(settled, 128)         # identical selection once
    assert stop(settled, 192)             # and twice: stop
    assert [j for _, j in stop.history] == [1.0, 1.0]

    torch.manual_seed(0)
    moving = StableSelection(forget, config, model, num_forget=5, num_retain=50, tolerance=0.99, patience=2)
    for step in range(6):  # a retain Fisher that keeps reshuffling never stops the pass
        assert not moving({n: torch.rand_like(p) for n, p in model.named_parameters()}, 64 * (step + 1))
    assert all(j < 0.99 for _, j in moving.history)
    # top_fraction="auto": every candidate fraction must have settled; "assd": the fraction from the forget share
    auto = StableSelection(forget, DeepCleanConfig(output_dir="unused", top_fraction="auto"), model,
                           num_forget=5, num_retain=50)
    assert [c["top_fraction"] for c in auto.cuts] == [0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]
    assd = StableSelection(forget, DeepCleanConfig(output_dir="unused", top_fraction="assd"), model,
                           num_forget=5, num_retain=45)
    assert assd.cuts[0]["top_fraction"] == pytest.approx(math.log(11) / 100)


def test_fisher_max_samples_auto_through_compute_fishers(logreg, logreg_data):
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.fisher import compute_fishers

    config = DeepCleanConfig(output_dir="unused", top_fraction=0.5, fisher_max_samples="auto", fisher_batch_size=4,
                             fisher_snapshot_samples=4, fisher_stability=0.5, disable_tqdm=True, seed=0)
    stats = {}
    forget, retain = compute_fishers(logreg, torch.utils.data.Subset(logreg_data, range(6)), logreg_data, config,
                                     stats=stats)
    assert set(forget) == set(retain) and stats["stability"]
    assert stats["retain_samples"] == stats["stability"][-1][0] <= len(logreg_data)
    with pytest.raises(ValueError, match="fisher_max_samples='often'"):
        DeepCleanConfig(output_dir="unused", top_fraction=0.1, fisher_max_samples="often")

"""L-CODEC: CODEC/FOCI on constructed data, the Newton step against an exact Hessian, runs on tiny digits models."""

import copy
import math
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer

from hf_deepclean.benchmark.arguments import BenchmarkArguments
from hf_deepclean.forget import ForgetSpec, split_forget_retain
from hf_deepclean.images import TensorImageDataset
from hf_deepclean.methods import METHODS, MethodResult, run_method
from hf_deepclean.methods.base import UnlearningArguments, train, training_set
from hf_deepclean.methods.l_codec import (
    LCodecConfig,
    codec,
    conjugate_gradient,
    foci,
    run,
    sekhari_noise_std,
    unit_layers,
    units_to_mask,
)
from hf_deepclean.training import load_classifier

# ------------------------------------------------------------------ CODEC and FOCI


def test_codec_is_one_for_a_function_and_zero_for_independent_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, generator=g)
    assert codec(x.square(), x) > 0.95  # Y a function of Z
    assert abs(codec(torch.rand(400, generator=g), x)) < 0.1
    z = torch.rand(400, generator=g)
    y = x + z + 0.2 * torch.randn(400, generator=g)
    assert codec(y, z, x) > 0.3  # given x, y still depends on z
    assert abs(codec(y, torch.rand(400, generator=g), torch.stack([x, z], 1))) < 0.1  # an independent one adds nothing


def test_foci_selects_exactly_the_features_the_target_depends_on():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(300, 30, generator=g)
    target = features[:, 4] + 2 * features[:, 17] + 0.05 * torch.randn(300, generator=g)
    order, scores = foci(features, target)
    assert order == [17, 4]  # the stronger dependence first, then early stop: no third feature adds any
    assert scores[0] > 0.3 and scores[1] > 0.5
    assert foci(features, target, max_features=1)[0] == [17]
    constant = torch.cat([torch.ones(300, 1), features[:, 17:18]], 1)
    assert foci(constant, features[:, 17])[0] == [1]  # a constant unit is never chosen


def test_units_map_to_weight_rows_filters_and_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 4, bias=False))
    layers = unit_layers(model)
    assert [name for name, _ in layers] == ["0", "2"]
    mask = units_to_mask(model, layers, [1, 3 + 2])  # filter 1 of the conv, output 2 of the linear layer
    assert mask["0.weight"][1].all() and mask["0.weight"].sum() == 9 and mask["0.bias"].tolist() == [False, True, False]
    assert mask["2.weight"][2].all() and mask["2.weight"].sum() == 12


# ------------------------------------------------------------------ the Newton step


def test_conjugate_gradient_solves_a_damped_system_and_stops_at_negative_curvature():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    spd, b = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    x, info = conjugate_gradient(lambda v: spd @ v, b, damping=0.5, max_iter=50, tol=1e-13)
    torch.testing.assert_close(x, torch.linalg.solve(spd + 0.5 * torch.eye(6, dtype=torch.float64), b))
    assert not info["negative_curvature"] and info["relative_residual"] < 1e-12
    x, info = conjugate_gradient(lambda v: -v, b)
    assert info["negative_curvature"] and torch.equal(x, torch.zeros_like(b))


def test_noise_std_is_sekharis_and_the_codes_value_on_cifar():
    # the code's NoisyReturn defaults: m=1, n=50000, lambda=0.01, epsilon=0.1, delta=0.01, M=0.25, L=1
    sigma = sekhari_noise_std(1, 50_000, epsilon=0.1, delta=0.01, strong_convexity=0.01)
    assert sigma == pytest.approx(2e-4 / 0.1 * math.sqrt(2 * math.log(125)))
    assert sekhari_noise_std(2, 100_000, epsilon=0.1, delta=0.01, strong_convexity=0.01) == pytest.approx(sigma)


class LogisticRegression(torch.nn.Module):
    """Binary logistic regression as a two-logit classifier (the second logit fixed at 0): a Hessian that is
    positive definite, so the Newton step of its loss is unique."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1, dtype=torch.float64)

    def forward(self, pixel_values):
        z = self.linear(pixel_values.flatten(1))
        return types.SimpleNamespace(logits=torch.cat([z, torch.zeros_like(z)], 1))


@pytest.fixture
def logistic_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g, dtype=torch.float64)
    labels = (torch.rand(120, generator=g, dtype=torch.float64) > torch.sigmoid(x @ torch.tensor(
        [1.0, -0.5, 0.3, 0.0], dtype=torch.float64) + 0.2)).long()
    splits = {"forget": TensorImageDataset(x[:20], labels[:20]), "retain": TensorImageDataset(x[20:], labels[20:])}

    def loss(w, rows=slice(20, None)):  # the mean cross-entropy as a function of the flat weights [w, b]
        z = x[rows] @ w[:4] + w[4]
        return F.cross_entropy(torch.stack([z, torch.zeros_like(z)], 1), labels[rows])

    return splits, loss


def _flat(model):
    return torch.cat([model.linear.weight.reshape(-1), model.linear.bias]).detach().clone()


def _set(model, w):
    with torch.no_grad():
        model.linear.weight.copy_(w[:4].reshape(1, 4))
        model.linear.bias.copy_(w[4:])


EXACT = dict(selection="all", forget_batch_size=10_000, damping=0.0, epsilon=None, hessian_max_samples=None,
             cg_max_iter=50, cg_tol=1e-14)


def test_update_on_all_weights_is_the_exact_newton_step_of_the_retain_loss(logistic_problem):
    splits, retain_loss = logistic_problem
    model = LogisticRegression(4)
    w0 = torch.tensor([0.3, -0.2, 0.1, 0.4, -0.1], dtype=torch.float64)  # not a minimiser of anything
    _set(model, w0)
    hessian = torch.autograd.functional.hessian(retain_loss, w0)
    gradient = torch.autograd.functional.jacobian(retain_loss, w0)
    newton = w0 - torch.linalg.solve(hessian, gradient)
    result = run(model, splits, config=LCodecConfig(newton_gradient="retain", **EXACT))
    torch.testing.assert_close(_flat(model), newton, rtol=0, atol=1e-12)
    assert result.extra["steps"][0]["num_parameters"] == 5 and result.extra["selection"]["selected_fraction"] == 1.0


def test_influence_update_is_the_newton_step_from_the_full_data_optimum(logistic_problem):
    # the paper's step, w + (1/n_r) H_r^-1 sum_f grad loss, assumes the model minimises the loss on D_r + D_f;
    # there the gradient of the retain loss is minus that sum over n_r, so it is the exact Newton step
    splits, retain_loss = logistic_problem

    def full_loss(w):
        return retain_loss(w, slice(None))

    w = torch.zeros(5, dtype=torch.float64)
    for _ in range(30):  # Newton's method to the full-data optimum
        w = w - torch.linalg.solve(torch.autograd.functional.hessian(full_loss, w),
                                   torch.autograd.functional.jacobian(full_loss, w))
    assert torch.autograd.functional.jacobian(full_loss, w).abs().max() < 1e-13
    newton = w - torch.linalg.solve(torch.autograd.functional.hessian(retain_loss, w),
                                    torch.autograd.functional.jacobian(retain_loss, w))
    model = LogisticRegression(4)
    _set(model, w)
    run(model, splits, config=LCodecConfig(newton_gradient="forget", **EXACT))
    torch.testing.assert_close(_flat(model), newton, rtol=0, atol=1e-10)
    assert (newton - w).abs().max() > 0.01  # a real step, not a no-op


# ------------------------------------------------------------------ on tiny digits models

FAST = dict(num_perturbations=40, hessian_max_samples=64, cg_max_iter=5, max_units=4, forget_batch_size=16,
            max_accuracy_drop=None)


@pytest.fixture(scope="module")
def digits_splits(digits, image_processor):
    small = split_forget_retain(digits["train"].select(range(300)), ForgetSpec(labels=[3]))
    return {name: TensorImageDataset.from_dataset(data, image_processor) for name, data in small.items()}


@pytest.fixture(scope="module")
def trained_vit(digits_splits):
    model = load_classifier(None, num_labels=10, architecture="vit", seed=0)
    args = UnlearningArguments(output_dir="/tmp/hf_deepclean_test_l_codec", num_train_epochs=3, seed=0)
    return train(Trainer, model, args, training_set(digits_splits))[0].eval()


def _changed(before, after):
    b = dict(before.named_parameters())
    return {n: p.detach() != b[n].detach() for n, p in after.named_parameters()}


@pytest.mark.parametrize("architecture", ["vit", "resnet"])
def test_run_changes_only_the_selected_parameters(architecture, trained_vit, digits_splits):
    original = (trained_vit if architecture == "vit"
                else load_classifier(None, num_labels=10, architecture="resnet", seed=0))
    model = copy.deepcopy(original)
    result = run_method("l_codec", model, digits_splits, seed=0, **FAST)
    assert isinstance(result, MethodResult) and result.time_s > 0
    times = result.extra["time"]
    assert times["selection"] > 0 and times["newton"] > 0 and times["total"] >= times["selection"] + times["newton"]
    steps = result.extra["steps"]
    assert len(steps) == math.ceil(len(digits_splits["forget"]) / 16)
    assert 1 <= len(steps[0]["units"]) and steps[0]["noise_std"] > 0 and all(len(s["units"]) <= 4 for s in steps)
    layers = unit_layers(original)
    selected = units_to_mask(original, layers, sorted({u for s in steps for u in s["units"]}))
    assert result.extra["selection"]["num_selected"] == sum(int(m.sum()) for m in selected.values()) > 0
    moved = _changed(original, result.model)
    assert all(not (moved[n] & ~selected[n]).any() for n in moved), "a weight outside the selected units moved"
    assert sum(int(m.sum()) for m in moved.values()) > 0
    for name, buffer in original.named_buffers():  # BatchNorm statistics untouched (eval mode)
        assert torch.equal(buffer, dict(result.model.named_buffers())[name])
    assert result.model.training == original.training


def test_a_step_that_costs_kept_accuracy_is_undone_exactly(trained_vit, digits_splits):
    # with n = 300 samples the paper's noise (epsilon 0.1) has sigma ~ 4e4: every step wrecks the model, and the
    # code's rule (undo a step that costs more than 5 points) undoes each, bit for bit
    model = copy.deepcopy(trained_vit)
    result = run_method("l_codec", model, digits_splits, seed=0, **{**FAST, "max_accuracy_drop": 0.05})
    steps = [s for s in result.extra["steps"] if s["num_parameters"]]
    assert steps and all(s["reverted"] and s["kept_accuracy_before"] - s["kept_accuracy_after"] > 0.05 for s in steps)
    assert all(torch.equal(p, q) for p, q in zip(trained_vit.parameters(), model.parameters()))
    assert result.extra["selection"]["num_selected"] == 0
    kept = run_method("l_codec", copy.deepcopy(trained_vit), digits_splits, seed=0,
                      **{**FAST, "max_accuracy_drop": 0.05, "epsilon": None})
    assert not any(s["reverted"] for s in kept.extra["steps"])  # the Newton steps alone cost no accuracy here


def test_run_is_seeded(trained_vit, digits_splits):
    a = run_method("l_codec", copy.deepcopy(trained_vit), digits_splits, seed=1, **FAST)
    b = run_method("l_codec", copy.deepcopy(trained_vit), digits_splits, seed=1, **FAST)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_registered_and_selectable_in_the_benchmark():
    assert METHODS["l_codec"].make_config().selection == "lfoci" and METHODS["fisher_masking"].make_config().finetune
    bench = BenchmarkArguments(methods=["retrain", "l_codec", "fisher_masking"])
    assert bench.methods[1:] == ["l_codec", "fisher_masking"]
    with pytest.raises(ValueError, match="selection"):
        LCodecConfig(selection="random")

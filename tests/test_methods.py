"""The baselines: one interface, and each method does what its paper says (on tiny models, in seconds)."""

import copy

import numpy as np
import pytest
import torch

from hf_deepclean.forget import ForgetSpec, relabel_to_wrong_classes, split_forget_retain
from hf_deepclean.methods import METHODS, MethodResult, TensorImageDataset, get_method, run_method
from hf_deepclean.methods.base import training_set
from hf_deepclean.methods.fisher_forgetting import add_noise, noise_std
from hf_deepclean.methods.l1_sparse import L1SparseTrainer, l1_weight_at
from hf_deepclean.methods.salun import forget_gradient_saliency, saliency_mask
from hf_deepclean.methods.ssd import dampen, default_alpha
from hf_deepclean.training import load_classifier

FORGET_CLASS = 3


@pytest.fixture(scope="module")
def raw_splits(digits):
    small = digits["train"].select(range(400))
    splits = split_forget_retain(small, ForgetSpec(labels=[FORGET_CLASS]))
    return {"forget": splits["forget"], "retain": splits["retain"], "test": digits["test"].select(range(150))}


@pytest.fixture(scope="module")
def splits(raw_splits, image_processor):
    return {name: TensorImageDataset.from_dataset(data, image_processor) for name, data in raw_splits.items()}


@pytest.fixture(scope="module")
def trained(splits):
    """A tiny ViT trained a few epochs on the 400 samples (forget + retain)."""
    from transformers import Trainer

    from hf_deepclean.methods.base import UnlearningArguments, train
    from hf_deepclean.training import load_classifier

    model = load_classifier(None, num_labels=10, architecture="vit", seed=0)
    args = UnlearningArguments(output_dir="/tmp/hf_deepclean_test_methods", num_train_epochs=6, learning_rate=3e-3, seed=0)
    model, _ = train(Trainer, model, args, training_set(splits))
    return model.eval()


def fresh(model):
    return copy.deepcopy(model)


@torch.no_grad()
def accuracy_and_loss(model, data: TensorImageDataset) -> tuple[float, float]:
    model.eval()
    logits = model(pixel_values=data.pixel_values).logits
    loss = torch.nn.functional.cross_entropy(logits, data.labels).item()
    return (logits.argmax(-1) == data.labels).float().mean().item(), loss


def changed(before, after) -> dict[str, torch.Tensor]:
    b = dict(before.named_parameters())
    return {n: (p.detach() != b[n].detach()) for n, p in after.named_parameters()}


# ------------------------------------------------------------------ registry


def test_registry_lists_every_method_with_a_config():
    expected = {"original", "retrain", "finetune", "gradient_ascent", "random_labels", "ssd", "salun",
                "fisher_forgetting", "l1_sparse", "deepclean", "deepclean_init", "deepclean_none", "deepclean_batch"}
    assert expected <= set(METHODS)
    for name, method in METHODS.items():
        assert method.name == name and method.summary
        method.make_config()  # the registered defaults are valid
    assert METHODS["deepclean"].make_config().top_fraction == 0.15
    assert METHODS["deepclean_init"].make_config().reset == "init"
    assert METHODS["deepclean_batch"].make_config().fisher_estimator == "batch"
    assert METHODS["ssd"].make_config().alpha is None and METHODS["ssd"].make_config().dampening == 1.0
    assert METHODS["salun"].make_config().saliency_fraction == 0.5


def test_registry_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="no settings \\['gamma'\\]"):
        METHODS["ssd"].make_config(gamma=3)
    with pytest.raises(ValueError, match="saliency_fraction"):
        METHODS["salun"].make_config(saliency_fraction=1.5)


def test_relabel_to_wrong_classes_always_picks_another_class(raw_splits, splits):
    for data in (raw_splits["forget"], splits["forget"]):
        relabelled = relabel_to_wrong_classes(data, 10, 1)
        old, new = np.asarray(data["label"] if hasattr(data, "column_names") else data.labels), None
        new = np.asarray(relabelled["label"] if hasattr(relabelled, "column_names") else relabelled.labels)
        assert len(new) == len(old) and (new != old).all() and ((0 <= new) & (new < 10)).all()
        again = relabel_to_wrong_classes(data, 10, 1)
        assert np.array_equal(new, np.asarray(again["label"] if hasattr(again, "column_names") else again.labels))


# ------------------------------------------------------------------ SSD


def test_ssd_dampens_only_selected_weights_by_the_right_factor():
    model = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    i_f = {"weight": torch.tensor([[10.0, 1.0, 50.0], [0.0, 30.0, 2.0]])}
    i_d = {"weight": torch.tensor([[0.5, 1.0, 1.0], [1.0, 2.0, 0.0]])}
    mask = dampen(model, i_f, i_d, alpha=10.0, dampening=1.0)
    # selected: I_f > 10 * I_D -> (0,0): 10 > 5, (0,2): 50 > 10, (1,1): 30 > 20, (1,2): 2 > 0
    assert mask["weight"].tolist() == [[True, False, True], [False, True, True]]
    expected = torch.tensor([[1.0 * 0.5 / 10, 2.0, 3.0 * 1 / 50], [4.0, 5.0 * 2 / 30, 0.0]])
    torch.testing.assert_close(model.weight.detach(), expected)


def test_ssd_factor_is_capped_at_one_with_a_large_lambda():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    dampen(model, {"weight": torch.tensor([[100.0, 100.0]])}, {"weight": torch.tensor([[1.0, 5.0]])},
           alpha=10.0, dampening=50.0)
    # beta = min(50 * I_D / I_f, 1): 0.5 for the first weight, capped at 1 for the second
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, 2.0]]))


def test_ssd_default_alpha_is_the_authors_per_architecture_value(trained, splits):
    # if-loops/selective-synaptic-dampening, forget_full_class_main.py: 10 x 0.5 for their ViT, 10 x 1 otherwise
    assert default_alpha(trained) == 5.0
    for architecture in ("deit", "resnet", "convnext", "swin"):
        model = load_classifier(None, num_labels=10, architecture=architecture, seed=0)
        assert default_alpha(model) == (5.0 if architecture == "deit" else 10.0), architecture
    assert default_alpha(torch.nn.Linear(2, 2)) == 10.0  # no config: not a ViT
    by_default = METHODS["ssd"](fresh(trained), splits, seed=0)
    explicit = run_method("ssd", fresh(trained), splits, seed=0, alpha=5.0)
    assert by_default.extra["selection"] == explicit.extra["selection"]
    assert by_default.extra["selection"]["threshold"] == 5.0
    for p, q in zip(by_default.model.parameters(), explicit.model.parameters()):
        assert torch.equal(p, q)


def test_ssd_run_changes_only_what_it_selected(trained, splits):
    model = fresh(trained)
    result = METHODS["ssd"](model, splits, seed=0)
    moved = changed(trained, result.model)
    assert result.extra["selection"]["num_selected"] > 0
    assert result.extra["selection"]["num_selected"] >= sum(int(m.sum()) for m in moved.values()) > 0
    assert result.extra["time"]["train"] == 0.0


# ------------------------------------------------------------------ SalUn


def test_salun_saliency_is_the_forget_gradient_magnitude(trained, splits):
    saliency = forget_gradient_saliency(trained, splits["forget"], batch_size=7)
    model = fresh(trained).eval()
    loss = torch.nn.functional.cross_entropy(model(pixel_values=splits["forget"].pixel_values).logits, splits["forget"].labels)
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(saliency[name], p.grad.abs(), rtol=1e-3, atol=1e-7)
    mask = saliency_mask(saliency, 0.5)
    assert mask.num_selected == round(0.5 * mask.num_total)
    smallest_selected = min(float(saliency[n][mask[n]].min()) for n in mask if mask[n].any())
    largest_unselected = max(float(saliency[n][~mask[n]].max()) for n in mask if (~mask[n]).any())
    assert smallest_selected >= largest_unselected


def test_salun_moves_only_masked_weights_and_forgets(trained, splits):
    model = fresh(trained)
    result = run_method("salun", model, splits, seed=0, saliency_fraction=0.3, num_train_epochs=1)
    mask = saliency_mask(forget_gradient_saliency(trained, splits["forget"]), 0.3)
    moved = changed(trained, result.model)
    assert all(not (moved[n] & ~mask[n]).any() for n in mask), "a weight outside the saliency mask moved"
    assert sum(int(m.sum()) for m in moved.values()) > 0
    assert result.extra["selection"]["selected_fraction"] == pytest.approx(0.3, abs=1e-4)
    assert accuracy_and_loss(result.model, splits["forget"])[0] < accuracy_and_loss(trained, splits["forget"])[0]


# ------------------------------------------------------------------ Fisher forgetting


def test_fisher_forgetting_noise_scales_inversely_with_the_fisher():
    fisher = {"w": torch.tensor([1e-2, 1e-1, 1.0, 0.0])}
    std = noise_std(fisher, alpha=1e-2, eps=0.0, max_variance=1e3)["w"]
    torch.testing.assert_close(std[:3], torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64).sqrt())
    assert std[3] == pytest.approx((1e-2 * 1e3) ** 0.5)  # zero Fisher: clamped, not infinite

    model = torch.nn.Linear(20000, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    big = {"weight": torch.stack([torch.full((20000,), 1.0), torch.full((20000,), 100.0)])}
    add_noise(model, noise_std(big, alpha=1.0, eps=0.0, max_variance=1e3), seed=0)
    spread = model.weight.detach().std(dim=1)
    assert spread[0] == pytest.approx(1.0, rel=0.03) and spread[1] == pytest.approx(0.1, rel=0.03)


def test_fisher_forgetting_run_is_seeded(trained, splits):
    a = run_method("fisher_forgetting", fresh(trained), splits, seed=3, alpha=1e-4, fisher_max_samples=64)
    b = run_method("fisher_forgetting", fresh(trained), splits, seed=3, alpha=1e-4, fisher_max_samples=64)
    for (_, pa), (_, pb), _ in zip(a.model.named_parameters(), b.model.named_parameters(), trained.named_parameters()):
        assert torch.equal(pa, pb)
    assert any(changed(trained, a.model)[n].any() for n in dict(trained.named_parameters()))


# ------------------------------------------------------------------ l1-sparse


def test_l1_weight_decays_linearly_to_zero():
    assert l1_weight_at(0, 10, 5e-4) == 5e-4
    assert l1_weight_at(5, 10, 5e-4) == pytest.approx(2.5e-4)
    assert l1_weight_at(10, 10, 5e-4) == 0.0 and l1_weight_at(12, 10, 5e-4) == 0.0


def test_l1_sparse_trainer_adds_the_decaying_penalty(trained, splits):
    from transformers import TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(trainer.current_l1_weight)

    config = METHODS["l1_sparse"].make_config(num_train_epochs=1, l1_weight=1e-3)
    from hf_deepclean.images import collate_fn

    trainer = L1SparseTrainer(model=fresh(trained), args=config, train_dataset=splits["retain"], data_collator=collate_fn,
                              callbacks=[Record()])
    batch = collate_fn([splits["retain"][i] for i in range(8)])
    trainer.state.global_step, trainer.state.max_steps = 0, 10
    plain = trainer.model(**batch).loss
    norm = sum(p.abs().sum() for p in trainer.model.parameters())
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch), plain + 1e-3 * norm)
    trainer.train()
    assert seen[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(1e-3 / trainer.state.max_steps)


# ------------------------------------------------------------------ training baselines


def test_gradient_ascent_raises_the_forget_loss(trained, splits):
    before_acc, before_loss = accuracy_and_loss(trained, splits["forget"])
    result = run_method("gradient_ascent", fresh(trained), splits, seed=0, learning_rate=1e-3, num_train_epochs=1)
    after_acc, after_loss = accuracy_and_loss(result.model, splits["forget"])
    assert after_loss > before_loss and after_acc <= before_acc


def test_random_labels_lowers_forget_accuracy(trained, splits):
    before = accuracy_and_loss(trained, splits["forget"])[0]
    result = run_method("random_labels", fresh(trained), splits, seed=0, learning_rate=3e-3, num_train_epochs=2)
    assert accuracy_and_loss(result.model, splits["forget"])[0] < before


def test_deepclean_reports_selection_and_times(trained, splits):
    result = run_method("deepclean", fresh(trained), splits, seed=0, num_train_epochs=1)
    assert result.extra["selection"]["selected_fraction"] == pytest.approx(0.15, abs=1e-4)
    times = result.extra["time"]
    assert times["fisher"] > 0 and times["train"] > 0 and result.time_s >= times["fisher"] + times["train"]
    assert accuracy_and_loss(result.model, splits["forget"])[0] < accuracy_and_loss(trained, splits["forget"])[0]


def test_retrain_builds_a_new_model_and_leaves_the_original(trained, splits):
    original = fresh(trained)
    result = run_method("retrain", original, splits, seed=0, num_train_epochs=1)
    assert result.model is not original
    assert all(torch.equal(p, q) for p, q in zip(original.parameters(), trained.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(result.model.parameters(), trained.parameters()))


@pytest.mark.parametrize("name", ["original", "finetune", "l1_sparse", "ssd", "deepclean_batch"])
def test_every_method_accepts_raw_splits(name, trained, raw_splits, image_processor):
    overrides = {"num_train_epochs": 0.25} if "num_train_epochs" in {f for f in METHODS[name].config_class.__dataclass_fields__} else {}
    result = run_method(name, fresh(trained), raw_splits, image_processor, seed=0, **overrides)
    assert isinstance(result, MethodResult) and result.time_s >= 0
    logits = result.model(pixel_values=TensorImageDataset.from_dataset(raw_splits["test"].select(range(4)), image_processor).pixel_values).logits
    assert torch.isfinite(logits).all()

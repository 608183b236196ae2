"""Fisher Masking: the mask is the top fraction by the forget-set Fisher, masked weights are zero, the fine-tune
moves nothing else."""

import copy

import pytest
import torch
from transformers import Trainer

from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.forget import ForgetSpec, split_forget_retain
from hf_deepclean.images import TensorImageDataset, collate_fn
from hf_deepclean.masking import normalization_parameter_names
from hf_deepclean.methods import MethodResult, run_method
from hf_deepclean.methods.base import UnlearningArguments, train, training_set
from hf_deepclean.methods.fisher_masking import FisherMaskingConfig, fisher_mask
from hf_deepclean.training import load_classifier


def test_mask_is_the_top_fraction_by_forget_fisher():
    fisher_forget = {"a": torch.tensor([[5.0, 0.1], [3.0, 0.0]]), "b": torch.tensor([4.0, 1.0, 2.0, 0.5])}
    mask = fisher_mask(fisher_forget, 0.375)  # 3 of the 8 weights: 5, 4 and 3
    assert mask["a"].tolist() == [[True, False], [True, False]] and mask["b"].tolist() == [True, False, False, False]
    assert mask.num_selected == 3 and mask.threshold == 3.0
    # the ratio against a retain Fisher ranks differently: 4/1, 2/0.1 and 1/0.1 beat 5/10 and 3/10
    fisher_retain = {"a": torch.tensor([[10.0, 1.0], [10.0, 1.0]]), "b": torch.tensor([1.0, 0.1, 0.1, 1.0])}
    ratio = fisher_mask(fisher_forget, 0.375, fisher_retain=fisher_retain, eps=0.0)
    assert ratio["a"].sum() == 0 and ratio["b"].tolist() == [True, True, True, False]
    excluded = fisher_mask(fisher_forget, 0.375, exclude=["b"])
    assert excluded["b"].sum() == 0 and excluded.num_selected == round(0.375 * 4)


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="mask_fraction"):
        FisherMaskingConfig(mask_fraction=0.0)
    with pytest.raises(ValueError, match="score"):
        FisherMaskingConfig(score="retain")


@pytest.fixture(scope="module")
def splits(digits, image_processor):
    small = split_forget_retain(digits["train"].select(range(300)), ForgetSpec(labels=[3]))
    return {name: TensorImageDataset.from_dataset(data, image_processor) for name, data in small.items()}


@pytest.fixture(scope="module")
def trained(splits):
    model = load_classifier(None, num_labels=10, architecture="vit", seed=0)
    args = UnlearningArguments(output_dir="/tmp/hf_deepclean_test_fisher_masking", num_train_epochs=3, seed=0)
    return train(Trainer, model, args, training_set(splits))[0].eval()


def _expected_mask(model, splits, fraction):
    fisher = fisher_diagonal(model, splits["forget"], batch_size=64, collate_fn=collate_fn, show_progress=False)
    return fisher_mask(fisher, fraction)


def test_without_finetune_exactly_the_top_weights_are_zeroed(trained, splits):
    mask = _expected_mask(trained, splits, 0.05)
    result = run_method("fisher_masking", copy.deepcopy(trained), splits, seed=0, mask_fraction=0.05, finetune=False)
    assert isinstance(result, MethodResult) and result.extra["time"]["train"] == 0.0
    assert result.extra["selection"]["num_selected"] == mask.num_selected == round(0.05 * mask.num_total)
    norms = set(normalization_parameter_names(trained))
    before, after = dict(trained.named_parameters()), dict(result.model.named_parameters())
    for name, selected in mask.items():
        if name in norms:  # norm_policy="init": a selected scale goes back to 1, a shift to 0
            expected = 0.0 if name.endswith("bias") else 1.0
            assert (after[name][selected] == expected).all(), name
        else:
            assert (after[name][selected] == 0).all(), name
        assert torch.equal(after[name][~selected], before[name][~selected]), name
    assert any(bool(selected.any()) for name, selected in mask.items() if name not in norms)


def test_finetune_moves_only_the_masked_weights(trained, splits):
    mask = _expected_mask(trained, splits, 0.05)
    result = run_method("fisher_masking", copy.deepcopy(trained), splits, seed=0, mask_fraction=0.05,
                        num_train_epochs=1)
    assert result.extra["time"]["train"] > 0 and result.time_s >= result.extra["time"]["train"]
    before, after = dict(trained.named_parameters()), dict(result.model.named_parameters())
    moved = 0
    for name, selected in mask.items():
        assert torch.equal(after[name][~selected], before[name][~selected]), f"{name}: an unmasked weight moved"
        moved += int((after[name][selected] != 0).sum())
    assert moved > 0  # the fine-tune trained the zeroed weights
    assert all(p.requires_grad for p in result.model.parameters())  # the mask was detached


def test_ratio_score_and_excluded_norms(trained, splits):
    common = dict(batch_size=64, collate_fn=collate_fn, show_progress=False)
    fisher_forget = fisher_diagonal(trained, splits["forget"], **common)
    fisher_retain = fisher_diagonal(trained, splits["retain"], **common)
    norms = normalization_parameter_names(trained)
    expected = fisher_mask(fisher_forget, 0.05, fisher_retain=fisher_retain, exclude=norms)
    result = run_method("fisher_masking", copy.deepcopy(trained), splits, seed=0, mask_fraction=0.05, score="ratio",
                        norm_policy="exclude", finetune=False)
    assert result.extra["selection"]["num_selected"] == expected.num_selected
    after = dict(result.model.named_parameters())
    for name, selected in expected.items():
        assert (after[name][selected] == 0).all(), name
        assert name not in norms or not selected.any()

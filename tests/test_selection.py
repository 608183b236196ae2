import math
import re

import pytest
import torch

from hf_deepclean.plots import plot_threshold_sweep
from hf_deepclean.selection import (
    ParameterMask,
    fisher_ratio,
    select_parameters,
    threshold_sweep,
)


@pytest.fixture
def fishers():
    gen = torch.Generator().manual_seed(0)
    names = {
        "encoder.layers.0.attention.q_proj.weight": (8, 8),
        "encoder.layers.0.attention.k_proj.bias": (8,),
        "encoder.layers.1.mlp.weight": (16, 8),
        "classifier.weight": (4, 8),
        "classifier.bias": (4,),
    }
    forget = {n: torch.rand(s, generator=gen) for n, s in names.items()}
    retain = {n: torch.rand(s, generator=gen) for n, s in names.items()}
    # mathematically-zero gradients: float noise in both estimates
    forget["encoder.layers.0.attention.k_proj.bias"] = torch.full((8,), 1e-20)
    retain["encoder.layers.0.attention.k_proj.bias"] = torch.full((8,), 1e-21)
    return forget, retain


def test_ratio_uses_absolute_eps(fishers):
    forget, retain = fishers
    ratio = fisher_ratio(forget, retain, eps=1e-12)
    name = "classifier.weight"
    torch.testing.assert_close(ratio[name], forget[name] / (retain[name] + 1e-12))
    # noise over noise (1e-20 / 1e-21) would be 10 without eps: it must be ~0
    assert ratio["encoder.layers.0.attention.k_proj.bias"].max() < 1e-6
    zeros = fisher_ratio({"w": torch.zeros(3)}, {"w": torch.zeros(3)})["w"]
    assert torch.equal(zeros, torch.zeros(3))


def test_top_fraction_selects_exact_count(fishers):
    forget, retain = fishers
    total = sum(t.numel() for t in forget.values())
    ratios = torch.cat([r.reshape(-1) for r in fisher_ratio(forget, retain).values()])
    for k in (0.01, 0.1, 0.333, 0.5, 1.0):
        mask = select_parameters(forget, retain, top_fraction=k)
        assert mask.num_selected == round(k * total)
        assert mask.num_total == total
        selected = torch.cat([mask[n].reshape(-1) for n in mask])
        assert ratios[selected].min() >= ratios[~selected].max() if k < 1 else selected.all()
        assert mask.threshold == pytest.approx(ratios[selected].min().item())
        assert mask.top_fraction == k


def test_top_fraction_tie_break_is_deterministic():
    forget = {"a": torch.ones(5), "b": torch.ones(5)}
    retain = {"a": torch.ones(5), "b": torch.ones(5)}
    mask = select_parameters(forget, retain, top_fraction=0.3)
    assert mask.num_selected == 3
    assert mask["a"].tolist() == [True, True, True, False, False]
    assert not mask["b"].any()


def test_threshold_semantics(fishers):
    forget, retain = fishers
    ratio = fisher_ratio(forget, retain)
    gamma = 1.5
    mask = select_parameters(forget, retain, threshold=gamma)
    for name in ratio:
        assert torch.equal(mask[name], ratio[name] > gamma)
    assert mask.threshold == gamma and mask.top_fraction is None
    # strictly greater: a ratio equal to gamma is not selected
    exact = select_parameters({"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([1.0, 1.0])}, threshold=2.0, eps=0)
    assert exact["w"].tolist() == [False, False]
    more = select_parameters(forget, retain, threshold=0.5)
    assert more.num_selected > mask.num_selected


def test_exactly_one_criterion():
    f = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="threshold.*top_fraction"):
        select_parameters(f, f)
    with pytest.raises(ValueError, match="threshold.*top_fraction"):
        select_parameters(f, f, threshold=1.0, top_fraction=0.1)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_fraction"):
            select_parameters(f, f, top_fraction=bad)


def test_validation_names_parameter(fishers):
    forget, retain = fishers
    bad = dict(retain)
    bad["classifier.bias"] = torch.tensor([1.0, float("nan"), 0.0, 0.0])
    with pytest.raises(ValueError, match="classifier.bias"):
        select_parameters(forget, bad, threshold=1.0)
    bad["classifier.bias"] = torch.tensor([1.0, float("inf"), 0.0, 0.0])
    with pytest.raises(ValueError, match="classifier.bias"):
        fisher_ratio(bad, retain)
    bad["classifier.bias"] = torch.ones(5)
    with pytest.raises(ValueError, match="classifier.bias"):
        fisher_ratio(forget, bad)
    del bad["classifier.bias"]
    with pytest.raises(ValueError, match="classifier.bias"):
        fisher_ratio(forget, bad)


def test_include_exclude(fishers):
    forget, retain = fishers
    mask = select_parameters(forget, retain, top_fraction=1.0, exclude=["*.bias", "classifier"])
    assert set(mask.names) == set(forget)  # excluded parameters still appear
    assert not mask["classifier.weight"].any() and not mask["classifier.bias"].any()
    assert mask["encoder.layers.1.mlp.weight"].all()
    assert mask.num_selected == 8 * 8 + 16 * 8
    only = select_parameters(forget, retain, top_fraction=1.0, include=[r"re:layers\.1\."])
    assert only.num_selected == 16 * 8
    compiled = select_parameters(forget, retain, threshold=0.0, include=[re.compile("q_proj")])
    assert compiled.num_selected == (fisher_ratio(forget, retain)["encoder.layers.0.attention.q_proj.weight"] > 0).sum()
    # top_fraction counts eligible weights only
    half = select_parameters(forget, retain, top_fraction=0.5, include="classifier")
    assert half.num_selected == round(0.5 * 36)
    with pytest.raises(ValueError, match="no parameter eligible"):
        select_parameters(forget, retain, threshold=1.0, include=["nothing.*"])


def test_stats_summary_and_round_trip(fishers, tmp_path):
    forget, retain = fishers
    mask = select_parameters(forget, retain, top_fraction=0.25)
    per_param = mask.per_parameter()
    assert sum(s["selected"] for s in per_param.values()) == mask.num_selected
    assert per_param["classifier.bias"]["total"] == 4
    modules = mask.per_module(depth=1)
    assert set(modules) == {"encoder", "classifier"}
    assert sum(s["total"] for s in modules.values()) == mask.num_total
    assert "encoder.layers.0.attention.q_proj" in mask.per_module()
    assert mask.selected_fraction == pytest.approx(mask.num_selected / mask.num_total)
    text = mask.summary()
    assert "classifier.weight" in text and "total" in text
    stats = mask.to_dict()
    assert stats["num_selected"] == mask.num_selected and stats["top_fraction"] == 0.25
    assert "classifier.weight" in mask and "nope" not in mask
    assert list(mask) == list(forget) and len(mask) == len(forget)

    path = tmp_path / "mask.safetensors"
    mask.save(path)
    loaded = ParameterMask.load(path)
    assert loaded.names == mask.names
    for name in mask:
        assert loaded[name].dtype == torch.bool
        assert torch.equal(loaded[name], mask[name])
    assert loaded.threshold == pytest.approx(mask.threshold)
    assert loaded.top_fraction == 0.25 and loaded.eps == mask.eps
    assert loaded.to_dict() == stats


def test_load_rejects_other_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a ParameterMask"):
        ParameterMask.load(path)


def test_threshold_sweep_is_monotone(fishers, tmp_path):
    forget, retain = fishers
    sweep = threshold_sweep(forget, retain, num=20)
    assert len(sweep) == 20
    fractions = [s["selected_fraction"] for s in sweep]
    assert fractions == sorted(fractions, reverse=True)
    for s in sweep[::5]:
        assert s["num_selected"] == select_parameters(forget, retain, threshold=s["threshold"]).num_selected
    explicit = threshold_sweep(forget, retain, thresholds=[10.0, 0.0])
    assert [s["threshold"] for s in explicit] == [0.0, 10.0]
    pytest.importorskip("matplotlib")
    out = plot_threshold_sweep(sweep, tmp_path / "sweep.png")
    assert out.exists() and out.stat().st_size > 0


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'hf-deepclean\[plot\]'"):
        plot_threshold_sweep([{"threshold": 1.0, "selected_fraction": 0.5}], tmp_path / "x.png")


def test_top_fraction_inf_threshold_when_nothing_selected():
    f = {"w": torch.ones(3)}
    mask = select_parameters(f, f, top_fraction=0.1)
    assert mask.num_selected == 0 and math.isinf(mask.threshold)


def test_assd_fraction_is_the_papers_percentile():
    from hf_deepclean.selection import assd_fraction

    # the (100 - ln(1 + 100 |D_f|/|D|))-th percentile: the top ln(1 + 100 |D_f|/|D|) percent
    assert assd_fraction(10, 1000) == pytest.approx(math.log(2) / 100)
    assert assd_fraction(100, 1000) == pytest.approx(math.log(11) / 100)
    assert assd_fraction(1000, 1000) == pytest.approx(math.log(101) / 100)
    with pytest.raises(ValueError, match="assd_fraction"):
        assd_fraction(0, 10)


def test_trainer_resolves_top_fraction_assd_from_the_forget_share(tmp_path, digits, image_processor):
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.selection import assd_fraction
    from hf_deepclean.trainer import DeepCleanTrainer
    from hf_deepclean.training import load_classifier

    model = load_classifier(None, num_labels=10, seed=0)
    ones = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    args = DeepCleanConfig(output_dir=str(tmp_path / "out"), top_fraction="assd", use_cpu=True, disable_tqdm=True)
    trainer = DeepCleanTrainer(model, args, train_dataset=digits["train"].select(range(30)),
                               forget_dataset=digits["train"].select(range(30, 40)), processing_class=image_processor,
                               fisher_forget=ones, fisher_retain={n: torch.ones_like(p) for n, p in ones.items()})
    mask = trainer.select()
    expected = assd_fraction(10, 40)
    assert mask.top_fraction == pytest.approx(expected) and mask.num_selected == round(expected * mask.num_total)
    with pytest.raises(ValueError, match="'auto', or 'assd'|'auto' or 'assd'"):
        DeepCleanConfig(output_dir=str(tmp_path / "x"), top_fraction="sometimes")

"""Plots are written as non-empty PNGs; a missing matplotlib gives a clear message."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("matplotlib")

from hf_deepclean import plots  # noqa: E402
from hf_deepclean.evaluation import UnlearningReport  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fisher():
    gen = torch.Generator().manual_seed(0)
    forget = {"a.weight": torch.rand(40, 30, generator=gen) ** 3, "b.bias": torch.rand(30, generator=gen)}
    retain = {"a.weight": torch.rand(40, 30, generator=gen), "b.bias": torch.rand(30, generator=gen) + 1}
    forget["a.weight"][0, :5] = 0.0  # exact zero ratios are counted, not plotted
    return forget, retain


def _report():
    scores = dict(retain_accuracy=0.99, forget_accuracy=0.5, test_accuracy=0.95, mia_loss_lr=0.55, mia_efficacy=0.4)
    return UnlearningReport(
        method="deepclean", scenario="class", forget={"size": 10, "labels": [3]},
        metrics=scores, gold=dict(scores, forget_accuracy=0.0, time_s=12.0), original=dict(scores, forget_accuracy=1.0),
    )


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_ratio_histogram(tmp_path):
    forget, retain = _fisher()
    _assert_png(plots.plot_ratio_histogram(forget, retain, 2.0, tmp_path / "hist.png"))
    ratios = {name: forget[name] / (retain[name] + 1e-12) for name in forget}
    _assert_png(plots.plot_ratio_histogram(None, None, None, tmp_path / "sub" / "ratios.png", ratios=ratios))
    with pytest.raises(ValueError, match="ratios="):
        plots.plot_ratio_histogram(forget, None, 1.0, tmp_path / "x.png")


def test_fraction_vs_threshold_and_metric_bars(tmp_path):
    forget, retain = _fisher()
    _assert_png(plots.plot_fraction_vs_threshold(forget, retain, tmp_path / "sweep.png"))
    _assert_png(plots.plot_metric_bars(_report(), tmp_path / "bars.png"))
    only_unlearned = {"method": "ssd", "metrics": _report().metrics}
    _assert_png(plots.plot_metric_bars(only_unlearned, tmp_path / "bars_dict.png"))


def test_save_plots_writes_every_plot(tmp_path):
    forget, retain = _fisher()
    written = plots.save_plots(tmp_path, report=_report(), fisher_forget=forget, fisher_retain=retain, threshold=2.0)
    assert sorted(p.name for p in written) == [
        "fisher_ratio_histogram.png", "fraction_vs_threshold.png", "metrics_comparison.png"
    ]
    for path in written:
        _assert_png(path)


def test_plots_leave_pyplot_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    plots.plot_metric_bars(_report(), tmp_path / "bars.png")
    assert matplotlib.get_backend() == before


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'hf-deepclean\[plot\]'"):
        plots.plot_metric_bars(_report(), tmp_path / "bars.png")
    assert not (tmp_path / "bars.png").exists()

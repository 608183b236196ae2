"""Tiny models, in-memory datasets and the weight-change count shared by the Fisher, trainer and GPU tests and the workers."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """Multinomial logistic regression called like an HF image classifier: per-sample gradients in closed form."""

    def __init__(self, in_features: int, num_labels: int, dtype=torch.float64):
        super().__init__()
        self.linear = nn.Linear(in_features, num_labels, dtype=dtype)
        self.config = SimpleNamespace(num_labels=num_labels)

    def forward(self, pixel_values, labels=None):
        return SimpleNamespace(logits=self.linear(pixel_values.flatten(1)))


class DataDependentLogisticRegression(LogisticRegression):
    """Python control flow on a tensor value: torch.func.vmap cannot trace it."""

    def forward(self, pixel_values, labels=None):
        if pixel_values.abs().max() > 1e9:
            pixel_values = pixel_values / 1e9
        return super().forward(pixel_values)


class SharedGradientModel(LogisticRegression):
    """Two parameters added together (autograd may hand both the same gradient tensor) and one unused."""

    def __init__(self, in_features: int, num_labels: int, dtype=torch.float64):
        super().__init__(in_features, num_labels, dtype=dtype)
        self.offset_a = nn.Parameter(torch.full((num_labels,), 0.1, dtype=dtype))
        self.offset_b = nn.Parameter(torch.full((num_labels,), -0.2, dtype=dtype))
        self.unused = nn.Parameter(torch.ones(3, dtype=dtype))

    def forward(self, pixel_values, labels=None):
        logits = self.linear(pixel_values.flatten(1)) + (self.offset_a + self.offset_b)
        return SimpleNamespace(logits=logits)


def random_dataset(n: int, shape, num_labels: int, seed: int = 0, dtype=torch.float32) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.randn(*shape, generator=gen, dtype=dtype),
            "labels": int(torch.randint(num_labels, (), generator=gen)),
        }
        for _ in range(n)
    ]


def tiny_vit(num_labels: int = 4, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def count_weight_changes(weights, original: dict, mask) -> tuple[int, int]:
    """(frozen entries changed, selected entries changed) of ``weights`` (name -> tensor, any device) against
    ``original`` (on CPU); names missing from ``original`` (BatchNorm buffers of a checkpoint) are skipped."""
    frozen_changed = selected_changed = 0
    for name, value in weights.items():
        if name not in original:
            continue
        diff = value.detach().cpu() != original[name]
        selected = mask[name].cpu()
        frozen_changed += int((diff & ~selected).sum())
        selected_changed += int((diff & selected).sum())
    return frozen_changed, selected_changed

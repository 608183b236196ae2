"""The "did nothing" reference: the original model, unchanged (the other end of the scale from retrain)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import MethodResult


@dataclass
class OriginalConfig:
    """No settings: the model is returned as it is."""


def run(model, splits, processor=None, config: OriginalConfig | None = None, *, seed: int = 0) -> MethodResult:
    return MethodResult(model, 0.0, {"time": {"fisher": None, "train": 0.0, "total": 0.0}})

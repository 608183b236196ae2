"""What the speed benchmarks share: the models they time, random image data, the device and its clock."""

from __future__ import annotations

import time

import torch

# tiny-*: the embedded digits models (3x16x16 inputs). vit-b16: ViT-B/16 at 224x224 (transformers' ViTConfig
# defaults: 12 layers, hidden 768, 12 heads, patch 16; 85.8M weights), built from its config since the Hub is
# unreachable, fed CIFAR-sized data (10 classes) upsampled to 224 as CIFAR fine-tunes of it are.
MODELS = ("tiny-vit", "tiny-resnet", "vit-b16")


def build_model(name: str, num_labels: int = 10, seed: int = 0):
    """``(model, image_size)`` for one of MODELS, initialised from ``seed``."""
    if name == "vit-b16":
        from transformers import ViTConfig, ViTForImageClassification, set_seed

        set_seed(seed)
        return ViTForImageClassification(ViTConfig(num_labels=num_labels)), 224
    if name in ("tiny-vit", "tiny-resnet"):
        from hf_deepclean.training import load_classifier

        return load_classifier(None, num_labels=num_labels, architecture=name.removeprefix("tiny-"), seed=seed), 16
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


class RandomImages(torch.utils.data.Dataset):
    """``n`` seeded Gaussian images with uniform labels, as the dicts an image classifier's Trainer takes."""

    def __init__(self, n: int, image_size: int, num_labels: int = 10, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(n, 3, image_size, image_size, generator=gen)
        self.labels = torch.randint(num_labels, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.pixels[i], "labels": int(self.labels[i])}


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on CPU), so a wall clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_times(fn, repeats: int, device: torch.device, setup=lambda: None) -> list[float]:
    """The wall times of ``repeats`` calls of ``fn(setup())``, each with the GPU synchronised around it."""
    times = []
    for _ in range(repeats):
        arg = setup()
        synchronize(device)
        start = time.perf_counter()
        fn(arg)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def best_time(fn, repeats: int, device: torch.device, setup=lambda: None) -> float:
    """Best of ``repeats`` wall times of ``fn(setup())`` (the machine may be shared: the least disturbed run)."""
    return min(wall_times(fn, repeats, device, setup))

"""Cost per optimizer step of keeping frozen weights exact, in isolation: masking the gradients and the restore.

    HF_HUB_OFFLINE=1 python benchmarks/mask_kernels.py --model vit-b16 --device cuda

For each masking kernel choice, a GradientMask on the model (random mask, ``--fraction`` of every tensor:
every tensor partially selected) and gradients on every parameter; times, per step, the gradient masking the
trainer runs after backward (multi_tensor: one ``BitMask.mask_gradients``; per_tensor: what its hooks do,
one ``masked_fill`` per tensor) and the restore after the optimizer step. Median of ``--iterations``, with
the GPU synchronised around each call.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _common import MODELS, build_model, device_name, pick_device, wall_times
from hf_deepclean.masking import GradientMask


def _median_time(fn, iterations: int, device: torch.device) -> float:
    return statistics.median(wall_times(lambda _: fn(), iterations, device)[2:])  # the first calls warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny-vit")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when there is one)")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=30)
    cli = parser.parse_args()
    device = pick_device(cli.device)
    model = build_model(cli.model)[0].to(device)
    g = torch.Generator().manual_seed(1)
    mask = {n: (torch.rand(p.shape, generator=g) < cli.fraction).to(device) for n, p in model.named_parameters()}
    print(f"model: {cli.model} ({sum(p.numel() for p in model.parameters()):,} weights, {len(mask)} tensors), "
          f"mask {cli.fraction:.0%} of every tensor, device {device_name(device)}")
    for kernels in ("per_tensor", "multi_tensor"):
        gradient_mask = GradientMask(model, mask, kernels=kernels).attach()
        for param in model.parameters():
            param.grad = torch.randn_like(param)
        frozen = [~mask[n] for n, _ in model.named_parameters()]
        grads = [p.grad for p in model.parameters()]
        if kernels == "multi_tensor":
            mask_gradients = gradient_mask.mask_gradients
        else:  # the hooks' work, outside autograd
            def mask_gradients(grads=grads, frozen=frozen):
                for grad, f in zip(grads, frozen):
                    grad.masked_fill(f, 0)
        masking = _median_time(mask_gradients, cli.iterations, device)
        restore = _median_time(gradient_mask.restore_frozen, cli.iterations, device)
        print(f"{kernels + ':':<14} gradient masking {masking * 1e3:7.3f} ms   restore {restore * 1e3:7.3f} ms   "
              f"total {(masking + restore) * 1e3:7.3f} ms per step")
        gradient_mask.detach()
        model.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()

"""Speed of the Fisher diagonal against one training epoch and a per-sample loop, on one model and device.

    python benchmarks/fisher_speed.py [--num_samples 1400] [--chunk_size 128] [--loop_samples 128] [--threads 1]
    python benchmarks/fisher_speed.py --model vit-b16 --device cuda --num_samples 1024 --chunk_size 32 --loop_samples 64

Prints, all measured in this run on the same model and samples:
empirical Fisher time / one training epoch (AdamW, batch 32), empirical Fisher time vs the
per-sample loop (run on --loop_samples and extrapolated linearly), the batch estimator's time,
and peak memory (resident, and on a GPU the device's). The default model is the tiny digits ViT on 3x16x16
inputs; ``--model vit-b16`` is ViT-B/16 at 224x224 with CIFAR-sized random data (benchmarks/_common.py). Each phase is timed --repeats times and the best time is kept.
On a shared or small machine pass --threads 1: intra-op threads fighting other processes
make every phase several times slower and the ratios erratic.
"""

from __future__ import annotations

import argparse
import copy
import logging
import resource

import torch
from torch.utils.data import DataLoader

from _common import MODELS, RandomImages, best_time, build_model, device_name, pick_device
from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.images import collate_fn as default_collate_fn


def train_one_epoch(model, samples, batch_size: int) -> None:
    model.train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch in DataLoader(samples, batch_size=batch_size, shuffle=True, collate_fn=default_collate_fn):
        loss = model(pixel_values=batch["pixel_values"].to(device), labels=batch["labels"].to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=1400)
    parser.add_argument("--batch_size", type=int, default=32, help="training and Fisher batch size")
    parser.add_argument("--chunk_size", type=int, default=128, help="samples per vmap call (fisher_diagonal default: 32)")
    parser.add_argument("--loop_samples", type=int, default=128, help="samples for the per-sample loop (extrapolated)")
    parser.add_argument("--repeats", type=int, default=3, help="time each phase this many times, report the best")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--model", choices=MODELS, default="tiny-vit")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model, image_size = build_model(args.model)
    model.to(device)
    samples = RandomImages(args.num_samples, image_size)
    loop_samples = torch.utils.data.Subset(samples, range(min(args.loop_samples, args.num_samples)))
    fisher_kw = dict(batch_size=args.batch_size, chunk_size=args.chunk_size, show_progress=False)
    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.model}, {num_params:,} weights, {args.num_samples} samples 3x{image_size}x{image_size}, batch "
        f"{args.batch_size}, chunk {args.chunk_size}, device {device_name(device)}, {torch.get_num_threads()} threads, "
        f"best of {args.repeats}, torch {torch.__version__}"
    )

    # warm-up of every path on a few samples (first calls pay for lazy initialisation and kernel selection)
    warm = torch.utils.data.Subset(samples, range(2 * args.batch_size))
    for estimator in ("empirical", "batch"):
        fisher_diagonal(model, warm, estimator=estimator, **fisher_kw)
    fisher_diagonal(model, torch.utils.data.Subset(samples, range(4)), method="loop", **fisher_kw)
    train_one_epoch(copy.deepcopy(model), warm, args.batch_size)

    rss_before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    r = args.repeats

    def timed(fn, setup=lambda: None):
        return best_time(fn, r, device, setup)

    t_fisher = timed(lambda _: fisher_diagonal(model, samples, estimator="empirical", **fisher_kw))
    rss_fisher = peak_rss_mib()
    gpu_fisher = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    t_epoch = timed(lambda m: train_one_epoch(m, samples, args.batch_size), setup=lambda: copy.deepcopy(model))
    t_loop_part = timed(lambda _: fisher_diagonal(model, loop_samples, method="loop", **fisher_kw))
    t_loop = t_loop_part * args.num_samples / len(loop_samples)
    t_batch = timed(lambda _: fisher_diagonal(model, samples, estimator="batch", **fisher_kw))

    print(f"empirical Fisher (vmap):      {t_fisher:7.2f} s")
    print(f"one training epoch (AdamW):   {t_epoch:7.2f} s")
    print(
        f"per-sample loop:              {t_loop:7.2f} s  (measured {t_loop_part:.2f} s on {len(loop_samples)} samples, "
        "extrapolated linearly)"
    )
    print(f"batch estimator:              {t_batch:7.2f} s")
    print(f"Fisher / one epoch:           {t_fisher / t_epoch:7.2f} x   (target <= 1.5)")
    print(f"loop / Fisher (speed-up):     {t_loop / t_fisher:7.2f} x   (target >= 8)")
    print(
        f"peak RSS: {rss_before:.0f} MiB before the Fisher pass, {rss_fisher:.0f} MiB after it "
        f"(per-sample gradients of one chunk: {args.chunk_size * num_params * 4 / 2**20:.1f} MiB), "
        f"{peak_rss_mib():.0f} MiB at the end"
    )
    if gpu_fisher is not None:
        print(f"peak GPU memory of the Fisher pass: {gpu_fisher:.0f} MiB")


if __name__ == "__main__":
    main()

"""Masked DeepCleanTrainer step against a plain Trainer step: same model, same batches, one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/trainer_overhead.py [--threads 1] [--fraction 0.1]
    HF_HUB_OFFLINE=1 python benchmarks/trainer_overhead.py --model vit-b16 --device cuda [--bf16]

The plain trainer and the masked trainer with each masking kernel choice (``--kernels``, default both:
``per_tensor`` hooks and ``multi_tensor`` BitMask) run the same number of optimizer steps on the same
data, in rotating order ``--repeats`` times; the ratio of each masked median step time to the plain one
is printed (target <= 1.10x). The masked runs use a random mask with ``--fraction`` of the weights
selected in every tensor (the worst case: every tensor partially selected, so every tensor is masked).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from _common import MODELS, RandomImages, build_model, device_name, pick_device, synchronize
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.selection import ParameterMask
from hf_deepclean.trainer import DeepCleanTrainer


class _StepTimer(TrainerCallback):
    def __init__(self, device: torch.device):
        self.device, self.times, self._start = device, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)  # a GPU step has only been queued when the loop reaches here
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny-vit")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when there is one)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both trainers")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kernels", nargs="+", choices=("per_tensor", "multi_tensor"),
                        default=["per_tensor", "multi_tensor"], help="masking kernels to time against the plain step")
    cli = parser.parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    device = pick_device(cli.device)
    base, image_size = build_model(cli.model)
    data = RandomImages(cli.steps * cli.batch_size, image_size)
    g = torch.Generator().manual_seed(1)
    mask = ParameterMask({n: torch.rand(p.shape, generator=g) < cli.fraction for n, p in base.named_parameters()})
    common = dict(max_steps=cli.steps, per_device_train_batch_size=cli.batch_size, learning_rate=1e-3, weight_decay=0.1,
                  max_grad_norm=1.0, use_cpu=device.type == "cpu", bf16=cli.bf16, disable_tqdm=True, report_to="none", logging_strategy="no",
                  save_strategy="no", dataloader_pin_memory=False, remove_unused_columns=False)
    times = {name: [] for name in ["plain", *cli.kernels]}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name):
            timer = _StepTimer(device)
            if name == "plain":
                trainer = Trainer(copy.deepcopy(base), TrainingArguments(output_dir=tmp, **common), train_dataset=data,
                                  callbacks=[timer])
                trainer.train()
            else:
                config = DeepCleanConfig(output_dir=tmp, top_fraction=cli.fraction, reset="none", mask_kernels=name,
                                         overwrite_output_dir=True, **common)
                DeepCleanTrainer(copy.deepcopy(base), config, train_dataset=data, forget_dataset=data,
                                 parameter_mask=mask, callbacks=[timer]).unlearn()
            times[name].extend(timer.times[2:])  # the first steps warm up allocators

        names = list(times)
        for repeat in range(cli.repeats):  # rotate the order so no run always goes first
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                run(name)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"model: {cli.model} ({sum(p.numel() for p in base.parameters()):,} weights, 3x{image_size}x{image_size}), "
          f"batch {cli.batch_size}, {cli.steps} steps x {cli.repeats} repeats, mask {mask.selected_fraction:.1%} of every "
          f"tensor, device {device_name(device)}{', bf16 autocast' if cli.bf16 else ''}, threads {torch.get_num_threads()}")
    print(f"plain Trainer step:                    {medians['plain'] * 1e3:8.2f} ms (median)")
    for name in cli.kernels:
        print(f"masked DeepClean step, {name + ':':<16}{medians[name] * 1e3:8.2f} ms (median)   "
              f"masked / plain {medians[name] / medians['plain']:6.3f}x   (target <= 1.10x)")


if __name__ == "__main__":
    main()

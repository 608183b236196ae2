"""DeepClean at the paper's scale: a CIFAR-10-sized image dataset, ViT-B/16 at 224x224, unlearn's own code path.

No data can be downloaded here, so the data is synthetic and class-structured: 50,000 PNG-encoded 32x32 images
(each class a colour and stripe pattern plus noise) in a ``datasets.Dataset`` with an ``image`` column, decoded and
resized by the image processor exactly as a user's CIFAR-10 would be. One class is forgotten (5,000 images, D_f);
D_r holds the other 45,000. The run is what ``hf-deepclean unlearn`` does: ``DeepCleanConfig`` + ``DeepCleanTrainer``
(Fisher on D_f and D_r, the top 10 %% of weights by ratio, zero reset, one masked fine-tune epoch on D_r, bf16 on a
GPU), then a few steps of plain training for the retrain estimate (a measured epoch x ``--retrain_epochs``; the
slides report the gold ViT's time, 7,848-8,408 s, not its epochs, so the epoch count is an input).

Prints per-stage seconds, the accelerator's utilisation (where nvidia-smi answers) and peak memory, and the ratios.

    python benchmarks/paper_scale.py              # the paper-scale run (meant for one GPU: ~5 min on an H200)
    python benchmarks/paper_scale.py --small      # a CPU-sized check of the same code path (tests run it)
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import Trainer, ViTConfig, ViTForImageClassification, set_seed

from hf_deepclean._compat import PilViTImageProcessor
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.images import model_inputs
from hf_deepclean.trainer import DeepCleanTrainer
from hf_deepclean.training import TrainConfig

SETTINGS = {
    "paper": {"images": 50_000, "classes": 10, "image_size": 224, "vit": {}, "batch": 128, "retrain_steps": 40},
    "small": {"images": 240, "classes": 4, "image_size": 32,
              "vit": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8), "batch": 32, "retrain_steps": 3},
}


def synthetic_cifar(num_images: int, num_classes: int, seed: int = 0) -> datasets.Dataset:
    """PNG-encoded 32x32 RGB images, class-structured (a class colour and stripe frequency, plus noise)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % num_classes
    xs = np.arange(32)[None, :]
    pngs = []
    for label in labels:
        colour = np.array([(label * 53) % 256, (label * 97) % 256, (label * 151) % 256], dtype=np.float64)
        stripes = 40 * np.sin(xs * (1 + label) * np.pi / 16)[..., None]
        pixels = np.clip(colour + stripes + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"class{i}" for i in range(num_classes)])})
    return datasets.Dataset.from_dict({"image": pngs, "label": labels.tolist()}, features=features)


class UtilisationSampler:
    """nvidia-smi's GPU utilisation, sampled every second in a thread while the body runs: mean and max, in %."""

    def __enter__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5)
                self.samples.append(float(out.stdout.split()[0]))
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
                return  # no nvidia-smi: nothing to sample

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a (no nvidia-smi samples)"
        return f"mean {np.mean(self.samples):.0f} %, max {max(self.samples):.0f} % ({len(self.samples)} samples)"


def run(small: bool, retrain_epochs: float, output: Path | None) -> dict:
    s = SETTINGS["small" if small else "paper"]
    cuda = torch.cuda.is_available()
    set_seed(0)
    t0 = time.perf_counter()
    data = synthetic_cifar(s["images"], s["classes"])
    forget = data.filter(lambda label: label == 0, input_columns=["label"])
    retain = data.filter(lambda label: label != 0, input_columns=["label"])
    build_time = time.perf_counter() - t0
    processor = PilViTImageProcessor(size={"height": s["image_size"], "width": s["image_size"]},
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    model = ViTForImageClassification(ViTConfig(image_size=s["image_size"], num_labels=s["classes"], **s["vit"]))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as scratch:
        config = DeepCleanConfig(output_dir=scratch, top_fraction=0.1, reset="zero", num_train_epochs=1,
                                 per_device_train_batch_size=s["batch"], fisher_batch_size=s["batch"],
                                 fisher_chunk_size=16 if cuda else 8, bf16=cuda, use_cpu=not cuda,
                                 dataloader_num_workers=4 if cuda else 0, logging_strategy="no", report_to="none",
                                 disable_tqdm=True, seed=0)
        trainer = DeepCleanTrainer(model, config, train_dataset=retain, forget_dataset=forget,
                                   processing_class=processor)
        with UtilisationSampler() as sampler:
            trainer.unlearn()
        stats = trainer.unlearning_stats
        utilisation = sampler.summary() if cuda else "n/a (CPU)"
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        # the retrain estimate: a few steps of plain training of the whole model on D, timed, scaled to an epoch
        steps = s["retrain_steps"]
        fresh = ViTForImageClassification(ViTConfig(image_size=s["image_size"], num_labels=s["classes"], **s["vit"]))
        args = TrainConfig(output_dir=scratch, max_steps=steps + 1, per_device_train_batch_size=s["batch"], bf16=cuda,
                           use_cpu=not cuda, dataloader_num_workers=4 if cuda else 0, logging_strategy="no",
                           report_to="none", disable_tqdm=True, seed=0, remove_unused_columns=False)
        timer = _StepTimer()
        Trainer(model=fresh, args=args, train_dataset=model_inputs(data, processor), callbacks=[timer]).train()
    step_s = timer.seconds_per_step()  # the first step (compilation, allocation) left out
    epoch_s = step_s * len(data) / s["batch"]
    total = stats["total_time_s"]
    result = {
        "setting": "small" if small else "paper", "device": torch.cuda.get_device_name() if cuda else "cpu",
        "images": len(data), "forget": len(forget), "retain": len(retain), "image_size": s["image_size"],
        "parameters": sum(p.numel() for p in model.parameters()), "dataset_build_s": build_time,
        "fisher_s": stats["fisher_time_s"], "fine_tune_s": stats["train_time_s"], "deepclean_total_s": total,
        "selected_fraction": stats["selected_fraction"], "accelerator_utilisation": utilisation,
        "peak_memory_gib": peak, "train_step_s": step_s, "train_epoch_s": epoch_s, "retrain_epochs": retrain_epochs,
        "retrain_estimate_s": epoch_s * retrain_epochs, "speedup_vs_retrain": epoch_s * retrain_epochs / total,
    }
    if output is not None:
        output.write_text(json.dumps(result, indent=2))
    return result


class _StepTimer:
    """A Trainer callback timing each optimizer step."""

    def __init__(self):
        self.times: list[float] = []
        self._start = None

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)

    def seconds_per_step(self) -> float:
        timed = self.times[1:] or self.times
        return float(np.mean(timed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="A CPU-sized run of the same code path.")
    parser.add_argument("--retrain_epochs", type=float, default=20.0,
                        help="Epochs of the retrain the estimate stands for (the slides give times, not epochs).")
    parser.add_argument("--output", type=Path, default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    r = run(args.small, args.retrain_epochs, args.output)
    print(f"{r['setting']} scale on {r['device']}: {r['images']} images ({r['forget']} forgotten), "
          f"{r['image_size']}x{r['image_size']}, {r['parameters'] / 1e6:.1f}M weights")
    print(f"  dataset built           {r['dataset_build_s']:8.1f} s")
    print(f"  Fisher D_f + D_r        {r['fisher_s']:8.1f} s")
    print(f"  masked fine-tune 1 ep   {r['fine_tune_s']:8.1f} s")
    print(f"  DeepClean end to end    {r['deepclean_total_s']:8.1f} s  (selected {r['selected_fraction']:.2%})")
    print(f"  plain training epoch    {r['train_epoch_s']:8.1f} s  ({r['train_step_s']:.3f} s/step)")
    print(f"  retrain estimate        {r['retrain_estimate_s']:8.1f} s  ({r['retrain_epochs']:g} epochs)")
    print(f"  speed-up vs retrain     {r['speedup_vs_retrain']:8.1f} x  (the paper: 62x for a ViT on CIFAR-10)")
    peak = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "n/a (CPU)"
    print(f"  accelerator utilisation {r['accelerator_utilisation']}; peak memory {peak}")


if __name__ == "__main__":
    main()

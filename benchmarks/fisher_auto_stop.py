"""fisher_max_samples="auto": how much of D_r the retain Fisher needs before the selection stops changing.

For a trained model and a forgotten class: the full D_r pass against passes that stop once successive snapshots'
selections overlap at least ``--stability`` (Jaccard, twice in a row). Per tolerance: D_r samples read, the
Jaccard index of the resulting mask with the full pass's, the Fisher seconds, and, after the same masked fine-tune
from each mask, forget and test accuracy (forgetting must not change).

    python benchmarks/fisher_auto_stop.py --model_dir runs/demo/original            # digits (hf-deepclean demo's)
    python benchmarks/fisher_auto_stop.py --synthetic 6000                          # a CPU-sized synthetic set
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.data import load_builtin_dataset
from hf_deepclean.evaluation import collect_outputs
from hf_deepclean.fisher import compute_fishers
from hf_deepclean.forget import ForgetSpec, split_forget_retain
from hf_deepclean.images import TensorImageDataset, load_image_processor
from hf_deepclean.selection import jaccard, select_for_config
from hf_deepclean.trainer import DeepCleanTrainer
from hf_deepclean.training import TrainConfig, load_classifier, train_classifier
from paper_scale import synthetic_cifar


def flat(mask) -> torch.Tensor:
    return torch.cat([m.reshape(-1).cpu() for m in mask.values()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", help="A trained digits model (e.g. runs/demo/original).")
    parser.add_argument("--synthetic", type=int, help="Instead: train a tiny ViT on this many synthetic images.")
    parser.add_argument("--forget_label", type=int, default=3)
    parser.add_argument("--top_fraction", type=float, default=0.2)
    parser.add_argument("--stability", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--snapshot_samples", type=int, default=128)
    args = parser.parse_args()
    processor = load_image_processor(None, 16)
    scratch = tempfile.mkdtemp()
    if args.synthetic:
        data = synthetic_cifar(args.synthetic, 10)
        parts = data.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
        train, test = parts["train"], parts["test"]
        model = load_classifier(None, num_labels=10, seed=0)
        train_classifier(model, train, None, TrainConfig(output_dir=scratch, num_train_epochs=3, seed=0,
                                                         disable_tqdm=True, logging_strategy="no"), processor)
        where = f"synthetic ({args.synthetic} images, a tiny ViT trained 3 epochs)"
    else:
        digits = load_builtin_dataset("digits")
        train, test = digits["train"], digits["test"]
        model = load_classifier(args.model_dir, num_labels=10)
        where = f"digits ({args.model_dir})"
    splits = split_forget_retain(train, ForgetSpec(labels=[args.forget_label]))
    forget, retain = (TensorImageDataset.from_dataset(splits[k], processor) for k in ("forget", "retain"))
    test_set = TensorImageDataset.from_dataset(test, processor)
    keep = ~torch.isin(test_set.labels, torch.tensor([args.forget_label]))

    def config(**extra):
        return DeepCleanConfig(output_dir=scratch, top_fraction=args.top_fraction, disable_tqdm=True, seed=0,
                               logging_strategy="no", report_to="none", fisher_snapshot_samples=args.snapshot_samples,
                               **extra)

    def unlearned(mask) -> tuple[float, float]:
        trainer = DeepCleanTrainer(copy.deepcopy(model), config(), train_dataset=retain, forget_dataset=forget,
                                   parameter_mask=mask)
        trainer.unlearn()
        out = collect_outputs(trainer.model, test_set)
        return collect_outputs(trainer.model, forget).accuracy, out.subset(keep.numpy()).accuracy

    print(f"{where}: forget class {args.forget_label} ({len(forget)} images), D_r {len(retain)}, "
          f"top {args.top_fraction:g}, a snapshot every {args.snapshot_samples} samples")
    start = time.perf_counter()
    full = compute_fishers(model, forget, retain, config())
    full_s = time.perf_counter() - start
    full_mask = select_for_config(*full, config(), model)
    acc_f, acc_t = unlearned(full_mask)
    print("| stability | D_r read | Jaccard with full | Fisher s | Acc_Df after | Acc_test (kept classes) after |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| full pass | {len(retain)} | 1.000 | {full_s:.1f} | {acc_f:.3f} | {acc_t:.3f} |")
    for tolerance in args.stability:
        stats = {}
        start = time.perf_counter()
        fishers = compute_fishers(model, forget, retain, config(fisher_max_samples="auto", fisher_stability=tolerance),
                                  stats=stats)
        seconds = time.perf_counter() - start
        mask = select_for_config(*fishers, config(), model)
        acc_f, acc_t = unlearned(mask)
        read, overlap = min(stats["retain_samples"], len(retain)), jaccard(flat(mask), flat(full_mask))
        print(f"| {tolerance:g} | {read} | {overlap:.3f} | {seconds:.1f} | {acc_f:.3f} | {acc_t:.3f} |")


if __name__ == "__main__":
    main()

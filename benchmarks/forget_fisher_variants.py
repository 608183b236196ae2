"""Ablation: the forget set's Fisher taken under other labels than the (wrong) ones its samples carry.

A memorised wrong label is fitted (log p(y|x) near 0), so its per-sample gradient is small, and the empirical
Fisher of D_f may under-rate the weights that hold the memorised answer up. This runs the sensitivity benchmark
with the forget Fisher of every grid point replaced (the retain Fisher stays the configured one, the `auto` runs
keep their own Fisher):

- ``uniform``: the empirical Fisher of D_f with each sample repeated under every class (the Fisher expected under
  uniform labels);
- ``others``: the same with every class but the sample's own label.

    .venv/bin/python benchmarks/forget_fisher_variants.py uniform --sensitivity --architectures resnet \\
        --seeds 0 1 2 --scenarios noisy_labels --sensitivity_fractions 0.05 0.1 0.2 0.3 0.5 \\
        --sensitivity_epochs 2 8 --sensitivity_alphas 10 --sensitivity_timing_repeats 1 --no_plot --output_dir DIR

Use a fresh DIR (with the benchmark's cached models copied into DIR/models): the point cache does not know about
the variant. Measured results: BENCHMARKS.md, "An estimator aimed at memorised labels".
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from hf_deepclean.commands import benchmark as bench_mod
from hf_deepclean.commands import benchmark_sensitivity as sens
from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.methods.base import TensorImageDataset
from hf_deepclean.trainer import DeepCleanTrainer

VARIANTS = ("uniform", "others")


def relabeled(forget: TensorImageDataset, num_classes: int, variant: str) -> TensorImageDataset:
    """Each forget sample once per class (``uniform``) or per class other than its own label (``others``)."""
    classes = torch.arange(num_classes)
    images, labels = [], []
    for image, label in zip(forget.pixel_values, forget.labels):
        kept = classes if variant == "uniform" else classes[classes != label]
        images.append(image.expand(len(kept), *image.shape))
        labels.append(kept)
    return TensorImageDataset(torch.cat(images), torch.cat(labels))


def fishers_with(variant: str):
    def fishers(self):
        if self._fishers is None:
            model = self.original()
            trainer = DeepCleanTrainer(model, self.deepclean_config(top_fraction=0.1),
                                       train_dataset=self.scenario.ready["retain"],
                                       forget_dataset=self.scenario.ready["forget"])
            start = time.perf_counter()
            _, fisher_retain = trainer.compute_fishers()
            data = relabeled(self.scenario.ready["forget"], model.config.num_labels, variant)
            fisher_forget = fisher_diagonal(model, data, estimator="empirical", batch_size=trainer.args.fisher_batch_size,
                                            collate_fn=trainer.data_collator, seed=self.seed, show_progress=False)
            self._fishers = (fisher_forget, fisher_retain, time.perf_counter() - start)
        return self._fishers

    return fishers


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        sys.exit(f"usage: forget_fisher_variants.py {{{','.join(VARIANTS)}}} BENCHMARK_ARGS...\n\n{__doc__}")
    sens._Group.fishers = fishers_with(argv[0])
    return bench_mod.run(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

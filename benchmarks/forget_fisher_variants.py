"""Ablation: the forget set's Fisher taken under other labels than the (wrong) ones its samples carry.

A memorised wrong label is fitted (log p(y|x) near 0), so its per-sample gradient is small, and the empirical
Fisher of D_f may under-rate the weights that hold the memorised answer up. This runs the sensitivity benchmark
with the forget Fisher of every grid point replaced (the retain Fisher stays the configured one, the `auto` runs
keep their own Fisher):

- ``uniform``: the empirical Fisher of D_f with each sample repeated under every class (the Fisher expected under
  uniform labels);
- ``others``: the same with every class but the sample's own label;
- ``margin``: each sample's squared gradient of ``log p(y|x)`` divided by ``(1 - p(y|x))^2``, which is the squared
  gradient of the margin ``z_y - logsumexp_{c != y} z_c``: it undoes the saturation of a fitted label exactly;
- ``normalised``: each sample's squared gradient divided by its squared norm, so every sample weighs the same
  (a few poorly fitted samples cannot dominate the ranking).

``margin`` and ``normalised`` are estimators: they replace both Fishers, weighted alike (one scale for the ratio).

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
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from hf_deepclean.benchmark.sensitivity_points import SensitivityGroup
from hf_deepclean.commands import benchmark as bench_mod
from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.images import TensorImageDataset
from hf_deepclean.trainer import DeepCleanTrainer

RELABELLED = ("uniform", "others")
WEIGHTED = ("margin", "normalised")
VARIANTS = RELABELLED + WEIGHTED


def relabeled(forget: TensorImageDataset, num_classes: int, variant: str) -> TensorImageDataset:
    """Each forget sample once per class (``uniform``) or per class other than its own label (``others``)."""
    classes = torch.arange(num_classes)
    images, labels = [], []
    for image, label in zip(forget.pixel_values, forget.labels):
        kept = classes if variant == "uniform" else classes[classes != label]
        images.append(image.expand(len(kept), *image.shape))
        labels.append(kept)
    return TensorImageDataset(torch.cat(images), torch.cat(labels))


def weighted_fisher(model, data: TensorImageDataset, weighting: str, chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """Mean over ``data`` of per-sample squared gradients of ``log p(y|x)``, each sample weighted by ``weighting``."""
    model.eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def log_prob(p, x, y):
        logits = functional_call(model, p, args=(), kwargs={"pixel_values": x.unsqueeze(0)}).logits
        value = F.log_softmax(logits, -1)[0].gather(0, y.reshape(1))[0]
        return value, value.detach()  # the value comes back as aux: the margin weight needs p(y|x), no second pass

    per_sample = vmap(grad(log_prob, has_aux=True), in_dims=(None, 0, 0))
    totals = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in names}
    for start in range(0, len(data.labels), chunk_size):
        x, y = data.pixel_values[start:start + chunk_size], data.labels[start:start + chunk_size]
        grads, log_p = per_sample(params, x, y)
        squares = {n: g.double().square() for n, g in grads.items() if n in totals}
        if weighting == "margin":
            weights = 1.0 / (1.0 - log_p.double().exp()).clamp_min(1e-6).square()
        else:
            weights = 1.0 / sum(s.flatten(1).sum(1) for s in squares.values()).clamp_min(1e-30)
        for n, square in squares.items():
            totals[n] += (square * weights.view(-1, *[1] * (square.dim() - 1))).sum(0)
    return {n: (t / len(data.labels)).float() for n, t in totals.items()}


def relabelled_fishers(self, model, variant: str) -> tuple[dict, dict]:
    """The configured retain Fisher, and the empirical Fisher of D_f under the ``variant``'s labels."""
    splits = self.scenario.ready
    trainer = DeepCleanTrainer(model, self.deepclean_config(top_fraction=0.1), train_dataset=splits["retain"],
                               forget_dataset=splits["forget"])
    _, fisher_retain = trainer.compute_fishers()
    data = relabeled(self.scenario.ready["forget"], model.config.num_labels, variant)
    fisher_forget = fisher_diagonal(model, data, estimator="empirical", batch_size=trainer.args.fisher_batch_size,
                                    collate_fn=trainer.data_collator, seed=self.seed, show_progress=False)
    return fisher_forget, fisher_retain


def fishers_with(variant: str):
    """A ``SensitivityGroup.compute_fishers`` that computes ``variant``'s Fishers (and times them)."""
    def compute_fishers(self, model):
        start = time.perf_counter()
        if variant in WEIGHTED:
            pair = tuple(weighted_fisher(model, self.scenario.ready[split], variant) for split in ("forget", "retain"))
        else:
            pair = relabelled_fishers(self, model, variant)
        return (*pair, time.perf_counter() - start)

    return compute_fishers


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        sys.exit(f"usage: forget_fisher_variants.py {{{','.join(VARIANTS)}}} BENCHMARK_ARGS...\n\n{__doc__}")
    SensitivityGroup.compute_fishers = fishers_with(argv[0])
    return bench_mod.run(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Can the image pipeline feed the model? Images/s of the transform against the model's Fisher and training samples/s.

The transform is the package's own (``hf_deepclean.images.model_inputs`` over PNG-encoded images in a
``datasets.Dataset``, batched by ``collate_fn`` in a DataLoader with ``--workers`` processes), on the image processor
``load_image_processor`` picks (torchvision-backed when torchvision is installed, else PIL). The model side is measured
on pixels already in memory, so the two are independent; their ratio says whether the accelerator waits for images
(the target on a GPU: >= 2).

    python benchmarks/data_path.py                              # ViT-B/16 at 224, 2,048 images (a GPU run)
    python benchmarks/data_path.py --model tiny-vit --images 256  # CPU-sized
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import build_model
from hf_deepclean.fisher import fisher_diagonal
from hf_deepclean.images import TensorImageDataset, collate_fn, load_image_processor, model_inputs, processor_backend
from paper_scale import synthetic_cifar


def transform_rate(dataset, processor, batch_size: int, workers: int) -> float:
    """Images/s through the lazy transform and the DataLoader, every batch materialised."""
    loader = torch.utils.data.DataLoader(model_inputs(dataset, processor), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=collate_fn)
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += batch["pixel_values"].shape[0]
    return seen / (time.perf_counter() - start)


def model_rates(model, pixels: TensorImageDataset, batch_size: int, chunk_size: int, device) -> tuple[float, float]:
    """(Fisher samples/s: the empirical per-sample pass; training samples/s: forward, backward and an AdamW step)."""
    model.to(device)
    fisher_diagonal(model, pixels.select(range(min(len(pixels), chunk_size))), chunk_size=chunk_size,
                    show_progress=False)  # warm-up: functorch's first call
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fisher_diagonal(model, pixels, batch_size=batch_size, chunk_size=chunk_size, show_progress=False)
    sync()
    fisher = len(pixels) / (time.perf_counter() - start)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    batches = [pixels.pixel_values[i : i + batch_size].to(device) for i in range(0, len(pixels), batch_size)]
    labels = [pixels.labels[i : i + batch_size].to(device) for i in range(0, len(pixels), batch_size)]
    for step, (x, y) in enumerate(zip(batches, labels)):
        if step == 1:
            sync()
            start = time.perf_counter()  # the first step (allocation) left out
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    trained = sum(len(y) for y in labels[1:])
    train = trained / (time.perf_counter() - start) if trained else float("nan")
    return fisher, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-b16", help="vit-b16, tiny-vit or tiny-resnet (benchmarks/_common.py).")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--chunk_size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--backend", default="auto", help="Image processor backend: auto, pil or torchvision.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model, image_size = build_model(args.model)
    data = synthetic_cifar(args.images, 10)
    processor = load_image_processor(None, image_size, args.backend)
    print(f"{args.model} at {image_size}x{image_size} on {device}; {args.images} PNG images 32x32; "
          f"image processor backend {processor_backend(args.backend)} ({type(processor).__name__})")
    rates = {w: transform_rate(data, processor, args.batch_size, w) for w in args.workers}
    pixels = TensorImageDataset.from_dataset(data, processor)
    fisher, train = model_rates(model, pixels, args.batch_size, args.chunk_size, device)
    print(f"model: Fisher (empirical, per sample) {fisher:.1f} samples/s, training {train:.1f} samples/s")
    for workers, rate in rates.items():
        print(f"transform with {workers} worker(s): {rate:.1f} images/s = {rate / fisher:.2f}x the Fisher pass, "
              f"{rate / train:.2f}x training")


if __name__ == "__main__":
    main()

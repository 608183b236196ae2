"""Images to model inputs: the image processor, the one raw-image -> ``pixel_values`` transform, collation.

Every consumer (the Fisher pass, DeepClean's fine-tune, the baselines, the evaluation, the benchmark) turns the
canonical ``image``/``label`` splits of :mod:`hf_deepclean.data` into tensors through :func:`model_inputs` (lazily,
per batch) or :class:`TensorImageDataset` (once, in memory), both built on :func:`pixel_values`, and batches them
with :func:`collate_fn`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from transformers import AutoImageProcessor

from ._compat import PilViTImageProcessor, TorchvisionViTImageProcessor, is_torchvision_available
from .data import IMAGE_COLUMN, LABEL_COLUMN
from .errors import DataError

logger = logging.getLogger(__name__)


IMAGE_PROCESSOR_BACKENDS = ("auto", "pil", "torchvision")
# Splits whose pixel values would take more than this stay raw (transformed per batch) instead of held in memory.
IN_MEMORY_LIMIT_BYTES = 2 << 30


def processor_backend(backend: str = "auto") -> str:
    """``auto``: the torchvision-backed (batched, faster) image processors when torchvision is installed (the
    ``fast`` extra), else PIL's; or the one named (torchvision refused with a one-line hint when it is missing)."""
    if backend not in IMAGE_PROCESSOR_BACKENDS:
        raise DataError(f"image processor backend {backend!r} is not one of {', '.join(IMAGE_PROCESSOR_BACKENDS)}.")
    if backend == "auto":
        return "torchvision" if is_torchvision_available() else "pil"
    if backend == "torchvision" and not is_torchvision_available():
        raise DataError("--image_processor_backend torchvision needs torchvision: pip install 'hf-deepclean[fast]' "
                        "(matching your torch), or use --image_processor_backend pil.")
    return backend


def load_image_processor(model_name_or_path: str | None, image_size: int = 16, backend: str = "auto"):
    """The model's image processor, or a plain resize+normalise one for models built from a config, on the
    :func:`processor_backend`. Every command of a run loads it the same way, so training, unlearning and
    evaluation see the same pixels."""
    backend = processor_backend(backend)
    if model_name_or_path:
        try:
            return AutoImageProcessor.from_pretrained(model_name_or_path, backend=backend)
        except (OSError, ValueError):
            logger.warning("No image processor found at %s; using a %dx%d resize + normalise.", model_name_or_path,
                           image_size, image_size)
    processor_class = TorchvisionViTImageProcessor if backend == "torchvision" else PilViTImageProcessor
    return processor_class(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, do_rescale=True
    )


def open_image(image) -> Image.Image:
    """A PIL image from a decoded image or an undecoded ``datasets.Image`` value (``{"bytes", "path"}``).

    Decoding here rather than inside ``datasets`` lets a damaged file (a truncated PNG, say) stop the run with
    one line that names it, instead of a traceback from deep in the data loader that never does."""
    if isinstance(image, Image.Image):
        return image
    path, data = image.get("path"), image.get("bytes")
    try:
        opened = Image.open(io.BytesIO(data) if data is not None else path)
        opened.load()
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for damaged or unknown files
        where = path or "an image stored in the dataset"
        raise DataError(f"Cannot read image {where} ({' '.join(str(exc).split())}): remove or replace it, then "
                        "run again.") from None
    if opened.getexif().get(ExifTags.Base.Orientation) is not None:  # as datasets' own decoding does
        opened = ImageOps.exif_transpose(opened)
    return opened


def pixel_values(images: Sequence, image_processor) -> torch.Tensor:
    """Raw images (PIL, any mode, or undecoded ``datasets`` values) -> the processor's ``pixel_values`` tensor:
    the package's one image transform."""
    rgb = [open_image(img).convert("RGB") for img in images]
    return torch.as_tensor(image_processor(rgb, return_tensors="pt")["pixel_values"])


def undecoded(dataset):
    """``dataset`` with its ``image`` column left undecoded (:func:`open_image` decodes it), when it is an Image
    feature; a metadata change, the data is not copied."""
    feature = getattr(dataset, "features", {}).get(IMAGE_COLUMN)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
    return dataset


def with_image_transform(dataset, image_processor):
    """Lazily turn ``image`` into ``pixel_values`` (keeps ``label``; needs ``remove_unused_columns=False``)."""

    def transform(batch: dict) -> dict:
        return {"pixel_values": pixel_values(batch[IMAGE_COLUMN], image_processor), LABEL_COLUMN: batch[LABEL_COLUMN]}

    return undecoded(dataset).with_transform(transform)


def model_inputs(dataset, image_processor=None):
    """``dataset`` as one that yields ``pixel_values``: raw ``image`` splits get the lazy transform, others pass."""
    if dataset is None or isinstance(dataset, (TensorImageDataset, Mapping, torch.utils.data.DataLoader)):
        return dataset
    columns = getattr(dataset, "column_names", None) or []
    if IMAGE_COLUMN in columns and "pixel_values" not in columns:
        if image_processor is None:
            raise ValueError("The split holds raw images: pass an image processor (processing_class= for the trainer, "
                             "image_processor= elsewhere, e.g. AutoImageProcessor.from_pretrained(model_path)) or a "
                             "dataset already transformed to pixel_values.")
        return with_image_transform(dataset, image_processor)
    return dataset


def collate_fn(examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    """Stack transformed examples (``pixel_values`` and ``label`` or ``labels``) into a ``pixel_values``/``labels``
    batch: the one collation of the Trainer runs, the Fisher pass and the evaluation."""
    try:
        pixels = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
        labels = torch.tensor([int(e[LABEL_COLUMN] if LABEL_COLUMN in e else e["labels"]) for e in examples],
                              dtype=torch.long)
    except KeyError:
        raise ValueError(f"Examples need 'pixel_values' and 'label' (or 'labels'), got keys {sorted(examples[0])}; "
                         "apply the image transform first (model_inputs) or pass a collate_fn.") from None
    return {"pixel_values": pixels, "labels": labels}


class TensorImageDataset(torch.utils.data.Dataset):
    """Transformed images held in memory: ``{"pixel_values", "label"}`` items, no per-epoch image work.

    On small data (digits) the per-sample image transform costs as much as a tiny model's
    forward-backward pass; transforming once makes every method and evaluation pass cheaper.
    """

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor | Sequence[int]):
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(pixel_values) != len(labels):
            raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels.")
        self.pixel_values, self.labels = pixel_values, labels

    @classmethod
    def from_dataset(cls, dataset, image_processor, batch_size: int = 256) -> TensorImageDataset:
        """Transform a raw ``image``/``label`` split once."""
        if isinstance(dataset, cls):
            return dataset
        chunks, labels = [], []
        dataset = undecoded(dataset)
        for start in range(0, len(dataset), batch_size):
            batch = dataset[start : start + batch_size]
            chunks.append(pixel_values(batch[IMAGE_COLUMN], image_processor))
            labels.extend(int(v) for v in batch[LABEL_COLUMN])
        return cls(torch.cat(chunks), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], LABEL_COLUMN: int(self.labels[index])}

    def __getitems__(self, indices):
        return [self[i] for i in indices]

    def select(self, indices) -> TensorImageDataset:
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorImageDataset(self.pixel_values[index], self.labels[index])

    def with_labels(self, labels) -> TensorImageDataset:
        return TensorImageDataset(self.pixel_values, labels)

    def __repr__(self) -> str:
        return f"TensorImageDataset({len(self)} samples, pixel_values {tuple(self.pixel_values.shape[1:])})"


__all__ = ["IMAGE_PROCESSOR_BACKENDS", "IN_MEMORY_LIMIT_BYTES", "TensorImageDataset", "collate_fn", "in_memory",
           "load_image_processor", "model_inputs", "pixel_values", "processor_backend", "with_image_transform"]


def in_memory(dataset, image_processor, limit_bytes: int = IN_MEMORY_LIMIT_BYTES):
    """``dataset`` transformed once into a :class:`TensorImageDataset`, unless its float32 pixel values would take
    more than ``limit_bytes``: then the raw split itself (transformed per batch by whoever reads it)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset
    first = TensorImageDataset.from_dataset(dataset.select(range(1)), image_processor)
    if first.pixel_values[0].numel() * 4 * len(dataset) > limit_bytes:
        return dataset
    return TensorImageDataset.from_dataset(dataset, image_processor)

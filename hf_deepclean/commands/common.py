"""Steps every command shares: load data, split it, load the model."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ..arguments import DataArguments, ForgetArguments, ModelArguments
from ..data import class_names, label_maps
from ..errors import DataError
from ..forget import ForgetSpec, apply_label_noise, forget_indices, split_forget_retain
from ..hub import forget_fingerprint
from ..images import load_image_processor
from ..training import check_model_folder, load_classifier, num_classes, read_train_summary

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """The data of one run: D (``train``, noisy labels applied), ``forget``, ``retain``, ``test``."""

    train: object
    test: object
    forget: object | None
    retain: object | None
    spec: ForgetSpec | None


def forgets_mislabeled_samples(data: RunData) -> bool:
    """True for a --noisy_fraction run: the labels alone cannot tell mislabeled samples from a privacy request;
    the forget spec can."""
    return data.spec is not None and data.spec.kind == "noisy_labels"


def declared_auto_kind(auto_kind: str, data: RunData) -> str:
    """``--auto_kind``, with ``infer`` made ``noisy_labels`` for a --noisy_fraction run."""
    if auto_kind == "infer" and forgets_mislabeled_samples(data):
        return "noisy_labels"
    return auto_kind


def load_run_data(data_args: DataArguments, forget_args: ForgetArguments | None, seed: int | None = None) -> RunData:
    """Load and split the data. ``seed`` is ignored: the split depends only on ``data_args.split_seed``."""
    del seed  # the training seed must never change which images are train and which are test
    dataset = data_args.load()
    spec = forget_args.to_spec() if forget_args is not None and forget_args.is_given() else None
    train = dataset["train"]
    if spec is None:
        return RunData(train=train, test=dataset["test"], forget=None, retain=None, spec=None)
    splits = split_forget_retain(train, spec)
    return RunData(
        train=apply_label_noise(train, spec), test=dataset["test"], forget=splits["forget"], retain=splits["retain"], spec=spec
    )


def load_model_for(data: RunData, model_args: ModelArguments, path: str | None = None, seed: int = 0):
    path = path if path is not None else model_args.model_name_or_path
    id2label, label2id = label_maps(data.train)
    return load_classifier(
        path,
        num_labels=num_classes(data.train),
        id2label=id2label,
        label2id=label2id,
        architecture=model_args.architecture,
        image_size=model_args.image_size,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        allow_pickle=model_args.allow_pickle,
        trust_remote_code=model_args.trust_remote_code,
        seed=seed,
    )


def check_inputs(model_args: ModelArguments, forget_args: ForgetArguments | None = None, *, command: str,
                 **model_folders: str | None) -> None:
    """The checks that need nothing loaded, run before the data and the models are: a model to start from,
    something to forget (when ``forget_args`` is given), and every named model folder (``gold_model=...``)."""
    if not model_args.model_name_or_path:
        raise ValueError(f"{command} needs --model_name_or_path: the trained model (train one with `hf-deepclean "
                         "train`).")
    if forget_args is not None and not forget_args.is_given():
        raise DataError(f"{command} needs to know what to forget: pass one of --forget_labels, --forget_fraction, "
                        "--forget_indices, --forget_ids_file (with --id_column) or --noisy_fraction.")
    check_model_folder(model_args.model_name_or_path)
    for name, folder in model_folders.items():
        check_model_folder(folder, flag=f"--{name}")


def forget_record(data: RunData, salt: str) -> dict:
    """What the report and card say about the forget set: counts, classes, kind, a salted fingerprint."""
    spec = data.spec
    values = [str(v) for v in spec.ids] if spec.ids is not None else forget_indices(data.train, spec).tolist()
    labels = sorted({int(v) for v in data.forget["label"]}) if spec.kind == "labels" else None
    record = {"size": len(data.forget), "kind": spec.kind, "labels": labels,
              "fingerprint": forget_fingerprint(values, salt)}
    if labels is not None:
        names = class_names(data.train)
        record["label_names"] = [names[i] for i in labels]
    if spec.ids is not None:  # counts only: the ids are what the request wants gone
        present = {str(v) for v in data.train[spec.id_column]}
        requested = {str(v) for v in spec.ids}
        record.update(ids_requested=len(requested), ids_missing=len(requested - present))
    return record


def describe_forget_set(data: RunData) -> dict:
    """What a gold model records it was trained without (``train_summary.json``'s ``forgotten``): the kind, the size,
    the classes, and a SHA-256 of the forgotten row indices of the training split (never the ids themselves)."""
    rows = np.sort(forget_indices(data.train, data.spec)).astype(np.int64)
    return {"kind": data.spec.kind, "size": int(len(rows)),
            "labels": sorted({int(v) for v in data.forget["label"]}) if data.spec.kind == "labels" else None,
            "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}


def check_gold_model(folder: str | None, data: RunData) -> None:
    """Refuse a gold model trained without another forget set; warn when it does not say (an older one)."""
    if not folder:
        return
    forgotten = read_train_summary(folder).get("forgotten")
    if forgotten is None:
        logger.warning("%s does not record what it was trained without (train_summary.json from an older version or "
                       "another tool): make sure it was retrained without exactly this forget set.", folder)
        return
    current = describe_forget_set(data)
    if forgotten != current:
        what = ", ".join(f"{k} {forgotten.get(k)} here {current[k]}" for k in current if forgotten.get(k) != current[k])
        raise DataError(f"--gold_model {folder} was trained without another forget set ({what}): retrain it with "
                        "`hf-deepclean train --gold` and the same --forget_* flags as this run.")


def load_processor_for(model_args: ModelArguments, path: str | None = None):
    return load_image_processor(path if path is not None else model_args.model_name_or_path, model_args.image_size,
                                model_args.image_processor_backend)


def carve_validation(data: RunData, fraction: float = 0.5, seed: int = 0) -> tuple[object, str]:
    """A validation split for choices made without a gold model: a seeded, stratified part of the test split.

    The carved part is removed from ``data.test`` so the report's test metrics never include it.
    Returns the validation set and a sentence saying where it came from.
    """
    parts = data.test.train_test_split(test_size=fraction, seed=seed, stratify_by_column="label")
    data.test = parts["train"]
    source = (f"{len(parts['test'])} images carved (seeded, stratified) off the test split; the report's test "
              f"metrics use the other {len(parts['train'])}")
    return parts["test"], source

"""The model card of an unlearned model: what was forgotten, how, and the evidence against the gold model.

:func:`record_from_report` turns an unlearning report into the card record, :func:`render_model_card`
renders it (``templates/modelcard_template.md``) into a :class:`huggingface_hub.ModelCard` with a
model-index, and :func:`write_model_card` writes ``README.md`` atomically. Only whitelisted fields of the
forget set reach the card (size, classes, kind, salted fingerprint), never ids, paths or secrets.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evaluation.report import class_list

TEMPLATE_PATH = Path(__file__).parent / "templates" / "modelcard_template.md"
MODEL_CARD_NAME = "README.md"

METRICS = [  # report key, card row name, EvalResult split, EvalResult metric type
    ("retain_accuracy", "Retain accuracy", "retain", "accuracy"),
    ("forget_accuracy", "Forget accuracy", "forget", "accuracy"),
    ("test_accuracy", "Test accuracy", "test", "accuracy"),
    ("mia_loss_lr", "MIA (loss, logistic regression)", "forget", "mia_loss_lr"),
    ("mia_efficacy", "MIA efficacy", "forget", "mia_efficacy"),
]
# Hyperparameter names that could carry forget ids, local paths or credentials never reach the card.
_SECRET_KEY = re.compile(r"(^|_)(ids?|indices|index|token|salt|secret|password|dir|file|path|paths)($|_)", re.I)


def record_from_report(
    report: Mapping[str, Any],
    *,
    base_model: str | None = None,
    dataset: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict:
    """The card record: the report dict (``UnlearningReport.to_dict()``) plus what the report does not know."""
    given = dict(base_model=base_model, dataset=dataset, hyperparameters=hyperparameters, **extra)
    return {**dict(report), **{key: value for key, value in given.items() if value is not None}}


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):{'+d' if spec.startswith('+') else 'd'}}"
    return f"{float(value):{spec}}"


def _safe_value(value: Any) -> str | None:
    """Scalars and short lists only: long lists could be the forget indices themselves."""
    if value is None or isinstance(value, (str, numbers.Number)):
        text = str(value)
        return text if len(text) <= 120 else None
    short_list = isinstance(value, (list, tuple)) and len(value) <= 10
    if short_list and all(isinstance(v, (str, numbers.Number)) for v in value):
        return ", ".join(str(v) for v in value)
    return None


def _versions() -> list[tuple[str, str]]:
    found = []
    for name in ("hf-deepclean", "torch", "transformers", "huggingface_hub", "accelerate", "datasets"):
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, "not installed"))
    return found


def _is_hub_id(name: Any) -> bool:
    # Local paths are shown by folder name only and never listed as Hub datasets/models.
    name = str(name or "")
    return bool(name) and not os.path.exists(name) and not name.startswith((".", "/", "~")) and name.count("/") <= 1


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _metrics(record: Mapping[str, Any], dataset_type: str, dataset_name: str) -> tuple[list[dict], list[EvalResult]]:
    """Table rows (unlearned, gold, delta, original) and model-index results (unlearned model only)."""
    metrics, gold, original = (dict(record.get(k) or {}) for k in ("metrics", "gold", "original"))
    deltas, intervals = dict(record.get("deltas") or {}), dict(record.get("delta_intervals") or {})
    rows, results = [], []
    for key, name, split, metric_type in METRICS:
        value, gold_value, delta = metrics.get(key), gold.get(key), deltas.get(key)
        if delta is None and _real(value) and _real(gold_value):
            delta = value - gold_value
        interval = intervals.get(key)
        bracket = ""
        if _real(delta) and isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_real, interval)):
            bracket = f" [{interval[0]:+.4f}, {interval[1]:+.4f}]"
        rows.append(
            {
                "name": name,
                "unlearned": _fmt(value),
                "gold": _fmt(gold_value),
                "delta": _fmt(delta, "+.4f") + bracket,
                "original": _fmt(original.get(key)),
            }
        )
        if _real(value):
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image Classification (after unlearning)",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=name,
                    metric_value=round(float(value), 6),
                )
            )
    return rows, results


def _selection_rows(selection: Mapping[str, Any], requested: Any = None) -> list[tuple[str, str]]:
    """``requested``: the top_fraction asked for (``auto`` when the run searched for the one it used)."""
    count, fraction = _fmt(selection.get("num_selected")), selection.get("selected_fraction")
    used = _fmt(selection.get("top_fraction"), ".4g")
    return [
        ("Threshold gamma", _fmt(selection.get("threshold"), ".4g")),
        ("Top fraction", f"{used} (chosen by top_fraction={requested})" if requested in ("auto", "assd") else used),
        ("Weights updated", f"{count} ({fraction:.4%} of all weights)" if _real(fraction) else count),
    ]


def _hyperparameter_rows(hyperparameters: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in sorted(hyperparameters.items()):
        shown = None if _SECRET_KEY.search(str(key)) else _safe_value(value)
        if shown is not None:
            rows.append((str(key), shown))
    return rows


def _timing_rows(time_s: Mapping[str, Any], gold_time: Any) -> list[tuple[str, str]]:
    auto = time_s.get("auto_search") is not None
    steps = [("fisher", "Fisher pass"),
             ("train", "masked fine-tunes (every top_fraction=auto attempt)" if auto else "masked fine-tune")]
    if auto:
        steps.append(("auto_search", "top_fraction=auto's reset-only sweep and verifications"))
    rows = [(f"Unlearning: {label}", _fmt(time_s.get(step), ".1f")) for step, label in steps + [("total", "total")]]
    rows.append(("Gold retrain from scratch", _fmt(gold_time, ".1f")))
    total = time_s.get("total")
    if _real(total) and _real(gold_time) and total > 0:
        rows.append(("Speed-up vs retraining", f"{gold_time / total:.1f}x"))
    return rows


def _accuracy_cell(accuracy: Mapping[str, Any], split: str) -> str:
    cells = []
    for pop in ("unlearned", "retrained"):
        stats = dict(dict(accuracy.get(pop) or {}).get(split) or {})
        if not all(_real(stats.get(k)) for k in ("mean", "min", "max")):
            return "—"
        cells.append(f"{stats['mean']:.4f} [{stats['min']:.4f}, {stats['max']:.4f}]")
    return " / ".join(cells)


def _audit_view(audit: Mapping[str, Any] | None) -> dict | None:
    """The card's view of an audit (the report's ``audit``): its sentence and a few rows, or ``None``."""
    if not audit:
        return None
    n, reference = audit.get("num_models"), dict(audit.get("reference") or {})
    half = reference.get("num_models")
    rows = [("F, unlearned vs retrained", f"{_fmt(audit.get('forget_score'), '.4f')} (N = {n} vs {n})")]
    if _real(reference.get("retrained_vs_retrained")):
        rows += [("F, retrains among themselves (reference)",
                  f"{_fmt(reference['retrained_vs_retrained'], '.4f')} (N = {half} vs {half})"),
                 ("F, unlearned vs the same retrains",
                  f"{_fmt(reference.get('unlearned_vs_retrained'), '.4f')} (N = {half} vs {half})")]
    rows.append(("Final score F x (RA_U/RA_R) x (TA_U/TA_R)", _fmt(audit.get("final_score"), ".4f")))
    accuracy = dict(audit.get("accuracy") or {})
    rows += [(f"{split.capitalize()} accuracy, unlearned / retrained: mean [min, max]", _accuracy_cell(accuracy, split))
             for split in ("retain", "forget", "test")]
    rows += [(f"Audited setting: {name}", value)
             for name, value in _hyperparameter_rows(dict(audit.get("method_overrides") or {}))]
    return {"statement": str(audit.get("statement") or ""), "rows": rows}


def render_model_card(record: Mapping[str, Any]) -> ModelCard:
    """Render the unlearning record into a :class:`~huggingface_hub.ModelCard` (metadata + markdown).

    ``record`` holds the report keys (``method``, ``scenario``, ``forget``, ``metrics``, ``gold``,
    ``original``, ``deltas``, ``selection``, ``time_s``) plus ``base_model``, ``dataset``,
    ``hyperparameters`` and optionally ``repo_id``, ``model_name``, ``license``, ``versions``. Only the
    forget set's size, classes, kind and fingerprint are read: ids or indices in the record never reach
    the card, nor do hyperparameters named like ids, paths, tokens or salts, nor long lists.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a dict (the unlearning report plus base_model/dataset), got {type(record)}")
    method = str(record.get("method") or "deepclean")
    base_model, dataset, repo_id = record.get("base_model"), record.get("dataset"), record.get("repo_id")
    base_name = str(base_model or "model").rstrip("/").split("/")[-1]
    default_name = repo_id.split("/")[-1] if repo_id else f"{base_name}-{method}-unlearned"
    model_name = str(record.get("model_name") or default_name)
    dataset_name = str(dataset).rstrip("/").split("/")[-1] if dataset else "unknown"
    forget_in = dict(record.get("forget") or {})
    labels = forget_in.get("labels")
    labels = labels.tolist() if hasattr(labels, "tolist") else labels  # numpy array / tensor of class ids
    if isinstance(labels, (list, tuple, set)):  # class names or ids are not secret: show them all
        labels = class_list(list(labels), forget_in.get("label_names")) or None
    forget = {  # whitelisted fields only
        "size": _fmt(forget_in.get("size")),
        "kind": forget_in.get("kind") or ("labels" if labels else "unknown"),
        "labels": None if labels is None else str(labels),
        "fingerprint": str(forget_in.get("fingerprint") or "not recorded"),
    }
    metric_rows, eval_results = _metrics(record, str(dataset) if _is_hub_id(dataset) else dataset_name, dataset_name)
    gold = dict(record.get("gold") or {})

    card_data = ModelCardData(
        base_model=str(base_model) if _is_hub_id(base_model) else None,
        datasets=[str(dataset)] if _is_hub_id(dataset) and dataset != "digits" else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=record.get("license"),
        tags=["machine-unlearning", "deepclean", method, "image-classification"],
        metrics=["accuracy"],
        model_name=model_name if eval_results else None,  # only the model-index uses it
        eval_results=eval_results or None,
    )
    view = {
        "model_name": model_name,
        "method": method,
        "scenario": record.get("scenario"),
        "base_model": str(base_model) if _is_hub_id(base_model) else None,
        "repo_id": repo_id or f"<your-namespace>/{model_name}",
        "dataset_display": f"{dataset_name} (built-in, scikit-learn digits)" if dataset == "digits" else dataset_name,
        "forget": forget,
        "selection_rows": _selection_rows(dict(record.get("selection") or {}),
                                          dict(record.get("hyperparameters") or {}).get("top_fraction")),
        "hyperparameter_rows": _hyperparameter_rows(dict(record.get("hyperparameters") or {})),
        "metric_rows": metric_rows,
        "has_gold": bool(gold),
        "has_intervals": bool(gold) and bool(record.get("delta_intervals")),
        "has_original": bool(record.get("original")),
        "audit": _audit_view(record.get("audit")),  # its sentence is text this package writes
        "timing_rows": _timing_rows(dict(record.get("time_s") or {}), gold.get("time_s")),
        "versions": list(dict(record.get("versions") or {}).items()) or _versions(),
        # The report's own notes (how auto chose, where the validation came from, caveats): text this
        # package writes, never user data.
        "notes": [str(note) for note in record.get("notes") or [] if isinstance(note, str)],
    }
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), u=view)


def write_model_card(output_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Render the card and write ``output_dir/README.md`` atomically (no half-written file on failure)."""
    path = Path(output_dir) / MODEL_CARD_NAME
    card = render_model_card(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MODEL_CARD_NAME}.tmp")
    try:
        card.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

"""Model card and Hub push for unlearned models.

- :func:`forget_fingerprint` / :func:`verify_fingerprint`: a salted hash that identifies the forget set
  without revealing it. The salt (from :func:`generate_salt`) stays with the user, never in the card.
- :func:`render_model_card` / :func:`write_model_card`: a :class:`huggingface_hub.ModelCard` built from
  an unlearning record (the report dict plus ``base_model``, ``dataset``, ``hyperparameters``).
- :func:`push_unlearned_model`: create a (private) repo and upload an output folder, leaving Fisher and
  mask files (``_*``), checkpoints and logs local; every failure is a :class:`HubPushError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import numbers
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects, get_token, validate_repo_id

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "modelcard_template.md"
MODEL_CARD_NAME = "README.md"
# Never uploaded: Trainer checkpoints (optimizer states) and TensorBoard logs.
ALWAYS_IGNORED = ["checkpoint-*", "runs/*", ".git/*"]
# Fisher diagonals and parameter masks are saved under `_` names: they describe the forget set.
PRIVATE_FILE_PATTERNS = ["_*", "**/_*"]
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

METRICS = [  # report key, card row name, EvalResult split, EvalResult metric type
    ("retain_accuracy", "Retain accuracy", "retain", "accuracy"),
    ("forget_accuracy", "Forget accuracy", "forget", "accuracy"),
    ("test_accuracy", "Test accuracy", "test", "accuracy"),
    ("mia_loss_lr", "MIA (loss, logistic regression)", "forget", "mia_loss_lr"),
    ("mia_efficacy", "MIA efficacy", "forget", "mia_efficacy"),
]
# Hyperparameter names that could carry forget ids, local paths or credentials never reach the card.
_SECRET_KEY = re.compile(r"(^|_)(ids?|indices|index|token|salt|secret|password|dir|file|path|paths)($|_)", re.I)


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says what went wrong and what to do. Nothing local is touched."""


# --------------------------------------------------------------------------------------------- fingerprint
def generate_salt() -> str:
    """A random 32-byte salt (hex). Keep it private, next to the forget list; never put it in the card."""
    return secrets.token_hex(32)


def _canonical(value: Any) -> str:
    if isinstance(value, bool):  # bool is an Integral; keep it from hashing like 0/1
        return str(value)
    if isinstance(value, numbers.Integral):  # numpy/torch integers hash like Python ints
        return str(int(value))
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _canonical(value.item())
    return str(value)


def forget_fingerprint(values: Iterable[Any], salt: str) -> str:
    """Salted fingerprint of a forget set: ``"sha256:" + HMAC-SHA256(salt, json(sorted(set(str(v)))))``.

    ``values`` are the forget-set ids or row indices (any order, duplicates ignored; numpy or torch
    integers count as ints). The salt is the HMAC key: without it the fingerprint cannot be matched
    against guessed ids or small index ranges. Store the salt privately with the forget list; a later
    audit recomputes the fingerprint with :func:`verify_fingerprint`.
    """
    if not isinstance(salt, str) or not salt:
        raise ValueError("salt must be a non-empty string: create one with hf_deepclean.hub.generate_salt()")
    if isinstance(values, (str, bytes)):
        raise TypeError("values must be a collection of ids or indices, not a single string")
    if hasattr(values, "tolist"):  # numpy arrays and tensors
        values = values.tolist()
    items = sorted({_canonical(v) for v in values})
    if not items:
        raise ValueError("values is empty: a fingerprint needs the ids or indices of a non-empty forget set")
    payload = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return "sha256:" + hmac.new(salt.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def verify_fingerprint(values: Iterable[Any], salt: str, fingerprint: str) -> bool:
    """True when ``values`` with ``salt`` give ``fingerprint`` (constant-time comparison)."""
    return hmac.compare_digest(forget_fingerprint(values, salt), str(fingerprint))


# --------------------------------------------------------------------------------------------- model card
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
    deltas = dict(record.get("deltas") or {})
    rows, results = [], []
    for key, name, split, metric_type in METRICS:
        value, gold_value, delta = metrics.get(key), gold.get(key), deltas.get(key)
        if delta is None and _real(value) and _real(gold_value):
            delta = value - gold_value
        rows.append(
            {
                "name": name,
                "unlearned": _fmt(value),
                "gold": _fmt(gold_value),
                "delta": _fmt(delta, "+.4f"),
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


def _selection_rows(selection: Mapping[str, Any]) -> list[tuple[str, str]]:
    count, fraction = _fmt(selection.get("num_selected")), selection.get("selected_fraction")
    return [
        ("Threshold gamma", _fmt(selection.get("threshold"), ".4g")),
        ("Top fraction requested", _fmt(selection.get("top_fraction"), ".4g")),
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
    rows = [(f"Unlearning: {step}", _fmt(time_s.get(step), ".1f")) for step in ("fisher", "train", "total")]
    rows.append(("Gold retrain from scratch", _fmt(gold_time, ".1f")))
    total = time_s.get("total")
    if _real(total) and _real(gold_time) and total > 0:
        rows.append(("Speed-up vs retraining", f"{gold_time / total:.1f}x"))
    return rows


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
        labels = ", ".join(str(label) for label in labels) or None
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
        "selection_rows": _selection_rows(dict(record.get("selection") or {})),
        "hyperparameter_rows": _hyperparameter_rows(dict(record.get("hyperparameters") or {})),
        "metric_rows": metric_rows,
        "has_gold": bool(gold),
        "has_original": bool(record.get("original")),
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


# --------------------------------------------------------------------------------------------- push
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            client = __import__(module)
        except ImportError:
            continue
        errors.append(getattr(client, "TransportError", None) or getattr(client, "ConnectionError"))
    return tuple(errors)


def _files_to_upload(folder: Path, ignore_patterns: list[str]) -> list[str]:
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=ignore_patterns))


def _server_message(err: BaseException, token: str | None) -> str:
    text = (getattr(err, "server_message", None) or str(err) or type(err).__name__).strip()
    text = text.splitlines()[-1] if text else type(err).__name__
    return text.replace(token, "***") if token else text


def _push_error(err: BaseException, stage: str, repo_id: str, where: str, secret: str | None) -> HubPushError:
    """One clear message per failure; `secret` (the token) is scrubbed from anything the server said."""
    action = {"create": "create", "upload": "upload to"}[stage]
    detail = _server_message(err, secret)
    resume = ""
    if stage == "upload":
        resume = " The repo exists but may be incomplete: rerun with overwrite=True (--overwrite)."
    if isinstance(err, OfflineModeIsEnabled):
        return HubPushError(
            f"Cannot push to {where}: HF_HUB_OFFLINE is set. Unset it (or set HF_HUB_OFFLINE=0) and retry. "
            "Local files are unchanged."
        )
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        if status == 401:
            return HubPushError(
                f"The Hub at {where} rejected the token (401 Unauthorized) while trying to {action} {repo_id!r}: "
                "log in with `hf auth login`, set HF_TOKEN or pass a valid write token (--token). "
                f"Local files are unchanged.{resume}"
            )
        if status == 403:
            return HubPushError(
                f"The token may not write to {repo_id!r} on {where} (403 Forbidden: {detail}); "
                f"use a token with write access to that namespace.{resume}"
            )
        if status == 409 and stage == "create":
            return HubPushError(
                f"Repo {repo_id!r} already exists on {where}. Pass overwrite=True (--overwrite) to replace its "
                "files, or choose another --repo_id. Nothing was uploaded."
            )
        return HubPushError(
            f"The Hub at {where} answered {status} while trying to {action} {repo_id!r}: {detail}.{resume}"
        )
    if isinstance(err, _transport_errors()):
        return HubPushError(
            f"Cannot reach the Hub at {where} ({type(err).__name__}: {detail}). Check the network, proxy or "
            f"HF_ENDPOINT and retry; local files are unchanged.{resume}"
        )
    return HubPushError(
        f"Pushing to {repo_id!r} on {where} failed during {stage}: {type(err).__name__}: {detail}.{resume}"
    )


def push_unlearned_model(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    overwrite: bool = False,
    include_fisher: bool = False,
    commit_message: str = "Upload unlearned model (hf_deepclean)",
    endpoint: str | None = None,
    require_card: bool = True,
) -> str:
    """Create ``repo_id`` on the Hub and upload ``output_dir``; return the repo URL.

    Args:
        output_dir: folder written by ``save_pretrained`` / ``hf-deepclean unlearn`` (config, weights, README.md).
        repo_id: ``namespace/name`` (or ``name``, under the token's user).
        token: a write token; defaults to ``HF_TOKEN`` or the token saved by ``hf auth login``.
        private: create the repo private (default: an unlearned model can still be sensitive).
        overwrite: allow pushing to an existing repo; its files are then replaced by this folder's
            (remote files absent locally are deleted, ``.gitattributes`` excepted). The visibility of an
            existing repo is not changed.
        include_fisher: also upload ``_*`` files (Fisher diagonals, parameter masks). Checkpoints
            (``checkpoint-*``) and logs (``runs/``) are never uploaded.
        commit_message: the commit summary.
        endpoint: Hub URL; defaults to ``HF_ENDPOINT`` / https://huggingface.co.
        require_card: refuse to push a folder without README.md (``write_model_card`` writes it).

    Raises:
        HubPushError: bad folder or repo id, repo exists without ``overwrite``, token rejected,
            Hub unreachable or offline mode, any other Hub error. The token is never part of a message.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise HubPushError(
            f"output_dir {str(folder)!r} is not a folder: pass the folder written by save_pretrained "
            "or `hf-deepclean unlearn`."
        )
    missing = [name for name in ("config.json",) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:3]))
    if require_card and not (folder / MODEL_CARD_NAME).is_file():
        missing.append(f"{MODEL_CARD_NAME} (write it with hf_deepclean.hub.write_model_card(output_dir, record))")
    if missing:
        raise HubPushError(f"output_dir {str(folder)!r} is missing {', '.join(missing)}; nothing was pushed.")
    card_path = folder / MODEL_CARD_NAME
    if card_path.is_file():
        try:  # the Hub rejects a commit whose README metadata does not parse; fail before any request
            ModelCard.load(card_path)
        except Exception as err:  # noqa: BLE001 - yaml and model-index errors have many types
            raise HubPushError(
                f"{card_path} has invalid metadata ({type(err).__name__}: {err}); fix its YAML header or "
                "regenerate it with hf_deepclean.hub.write_model_card(output_dir, record). Nothing was pushed."
            ) from None
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubPushError(f"repo_id {repo_id!r} is not a valid Hub repo id ({err}); use 'namespace/name'.") from None

    ignore_patterns = list(ALWAYS_IGNORED) + ([] if include_fisher else list(PRIVATE_FILE_PATTERNS))
    files = _files_to_upload(folder, ignore_patterns)
    secret = token or get_token()  # only to scrub it from server messages
    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint

    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=overwrite)
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear HubPushError
        raise _push_error(err, "create", repo_id, where, secret) from err
    try:
        if overwrite and private and api.model_info(repo_url.repo_id).private is False:
            logger.warning("Repo %s already exists and is public; pushing keeps it public.", repo_id)
        logger.info("Pushing %d files from %s to %s (private=%s)", len(files), folder, repo_url, private)
        api.upload_folder(
            repo_id=repo_url.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns),  # upload_folder extends the list in place
            delete_patterns=["*"] if overwrite else None,
        )
    except Exception as err:  # noqa: BLE001
        raise _push_error(err, "upload", repo_id, where, secret) from err
    return str(repo_url)

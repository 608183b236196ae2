"""Hub side of an unlearned model: forget-set fingerprint and push (the card itself is modelcard.py).

- :func:`forget_fingerprint` / :func:`verify_fingerprint`: a salted hash that identifies the forget set
  without revealing it. The salt (from :func:`generate_salt`) stays with the user, never in the card.
- :func:`render_model_card` / :func:`write_model_card` / :func:`record_from_report` (re-exported from
  :mod:`hf_deepclean.modelcard`): a :class:`huggingface_hub.ModelCard` built from an unlearning record.
- :func:`push_unlearned_model`: create a (private) repo and upload an output folder, leaving Fisher and
  mask files (``_*``), checkpoints and logs local; every failure is a :class:`HubPushError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import numbers
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects, get_token, validate_repo_id

from .errors import HubPushError
from .modelcard import MODEL_CARD_NAME, record_from_report, render_model_card, write_model_card

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------- push
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            client = __import__(module)
        except ImportError:
            continue
        errors.append(getattr(client, "TransportError", None) or client.ConnectionError)
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


_USAGE_PLACEHOLDER = re.compile(r'from_pretrained\("<your-namespace>/[^"]*"\)')


def card_for_repo(card_path: Path, repo_id: str) -> str | None:
    """The card's text with its usage line naming ``repo_id`` (a card written before the push says
    ``<your-namespace>/...``); None when it names no placeholder (a card of the user's own, left as it is)."""
    text = card_path.read_text(encoding="utf-8")
    if not _USAGE_PLACEHOLDER.search(text):
        return None
    return _USAGE_PLACEHOLDER.sub(f'from_pretrained("{repo_id}")', text)


@contextlib.contextmanager
def _with_card(folder: Path, files: list[str], card: str | None):
    """``folder`` itself, or (when the card must name its repo) a staging folder of links to ``files`` with the
    rewritten card, so that the push stays one commit and the user's folder is left as it is."""
    if card is None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="hf_deepclean_push_") as staging:
        for name in files:
            target = Path(staging) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name == MODEL_CARD_NAME:
                target.write_text(card, encoding="utf-8")
            else:
                target.symlink_to((folder / name).resolve())
        yield Path(staging)


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
        missing.append(f"{MODEL_CARD_NAME}, the model card (`hf-deepclean unlearn` and `hf-deepclean evaluate` write "
                       "it; for a folder of your own, hf_deepclean.modelcard.write_model_card(output_dir, record))")
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
        card = card_for_repo(card_path, repo_url.repo_id) if card_path.is_file() else None
        with _with_card(folder, files, card) as upload_from:
            api.upload_folder(
                repo_id=repo_url.repo_id,
                folder_path=upload_from,
                commit_message=commit_message,
                ignore_patterns=list(ignore_patterns),  # upload_folder extends the list in place
                delete_patterns=["*"] if overwrite else None,
            )
    except Exception as err:  # noqa: BLE001
        raise _push_error(err, "upload", repo_id, where, secret) from err
    return str(repo_url)


__all__ = [
    "HubPushError", "MODEL_CARD_NAME", "forget_fingerprint", "generate_salt", "push_unlearned_model",
    "record_from_report", "render_model_card", "verify_fingerprint", "write_model_card",
]

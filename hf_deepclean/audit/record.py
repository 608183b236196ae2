"""An audit's summary for the unlearning report and the model card (``--audit_dir`` of unlearn and evaluate).

:func:`audit_record` reads ``audit.json``, checks that it audited the same original and forget set (and the same
method) as the report it goes into, and returns the short summary the report keeps under ``audit``: the scores,
the accuracies' means and spreads, and the audit's own sentence. No path and no per-example value leaves the folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import DataError
from .settings import AUDIT_JSON, weights_sha256

logger = logging.getLogger(__name__)

__all__ = ["audit_record"]


def _scores(reference: dict) -> dict:
    return {"num_models": reference["num_models"],
            **{k: (reference[k] or {}).get("score") for k in ("retrained_vs_retrained", "unlearned_vs_retrained")}}


def audit_record(folder, *, forget: dict, method: str | None, original=None) -> dict:
    """The report's ``audit`` entry from the audit in ``folder``; one-line errors when it audited another forget
    set (``forget``: what :func:`~hf_deepclean.commands.common.describe_forget_set` says of this run), another
    method, or another original (``original``: its folder; ``None``: not checked, with a warning)."""
    path = Path(folder) / AUDIT_JSON
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
        settings = audit["settings"]
    except FileNotFoundError:
        raise DataError(f"--audit_dir {folder} holds no {AUDIT_JSON}: run `hf-deepclean audit --output_dir {folder}` "
                        "(with this run's original and --forget_* flags) to completion first.") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"--audit_dir {folder}: {AUDIT_JSON} cannot be read ({type(exc).__name__}); rerun the "
                        "audit.") from None
    if settings.get("forget") != forget:
        theirs = settings.get("forget") or {}
        what = ", ".join(f"{k} {theirs.get(k)} there, {v} here" for k, v in forget.items() if theirs.get(k) != v)
        raise DataError(f"--audit_dir {folder} audited another forget set ({what}): audit this run's forget set with "
                        "`hf-deepclean audit` and the same --forget_* flags.")
    audited = settings.get("method", {}).get("name")
    if method is not None and audited != method:
        raise DataError(f"--audit_dir {folder} audited the method {audited}, not {method}: audit {method} "
                        f"(`hf-deepclean audit --method {method}`) to carry its evidence.")
    if original is None:
        logger.warning("The original model is not known here (pass --original_model): the audit in %s is taken to "
                       "be of this model's original.", folder)
    elif weights_sha256(original) != settings.get("original_weights_sha256"):
        raise DataError(f"--audit_dir {folder} audited another original model than {original} (its weights differ): "
                        "audit this original with `hf-deepclean audit`.")
    accuracy = {pop: {split: {k: v for k, v in stats.items() if k != "values"} for split, stats in splits.items()}
                for pop, splits in audit["accuracy"].items()}
    return {"method": audited, "method_overrides": settings["method"].get("overrides") or {},
            "num_models": audit["num_models"], "num_forget_examples": audit["num_forget_examples"],
            "forget_score": audit["forget_score"], "final_score": audit["final_score"],
            "reference": _scores(audit["reference"]), "accuracy": accuracy, "retain_sample": audit["retain_sample"],
            "statement": audit["statement"]}

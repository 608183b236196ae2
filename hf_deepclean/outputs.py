"""Output folders that are never half-written and never overwrite the original model.

A run writes ``_INCOMPLETE`` first and removes it last, so a killed run never leaves a folder
that looks finished; the leading underscore keeps the marker out of Hub uploads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from .errors import OutputDirError

INCOMPLETE_MARKER = "_INCOMPLETE"


def check_output_dir(output_dir: str | os.PathLike | None, *, overwrite: bool = False, inputs=(), resume=False) -> Path:
    """Validate ``output_dir`` before any work starts (so a bad one leaves nothing behind)."""
    if not output_dir:
        raise OutputDirError("No output folder given: pass --output_dir PATH.")
    out = Path(output_dir).resolve()
    for source in inputs:
        if source and Path(source).exists() and Path(source).resolve() == out:
            raise OutputDirError(
                f"--output_dir {output_dir} is the input model folder: the original model is never overwritten. "
                "Choose a new folder."
            )
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output_dir {output_dir} exists and is a file; choose a folder.")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise OutputDirError(
            f"--output_dir {output_dir} is not empty. Choose a new folder, pass --overwrite_output_dir to replace its "
            "contents, or --resume_from_checkpoint to continue a run."
        )
    return out


@contextlib.contextmanager
def run_folder(output_dir: str | os.PathLike):
    """Mark ``output_dir`` incomplete while the body runs; unmark only when it succeeds.

    A body that fails before writing anything (e.g. a threshold that selects no weight) leaves the
    folder as it was; once something is written, the marker stays so the folder never looks finished.
    """
    out = Path(output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    marker = out / INCOMPLETE_MARKER
    marker.write_text("This run did not finish; its files are not a usable result.\n", encoding="utf-8")
    try:
        yield out
    except BaseException:
        if not _holds_files(out, besides=marker):
            marker.unlink(missing_ok=True)
            if created:
                shutil.rmtree(out, ignore_errors=True)
        raise
    marker.unlink(missing_ok=True)


def _holds_files(folder: Path, besides: Path) -> bool:
    return any(p.is_file() and p != besides for p in folder.rglob("*"))


def is_complete(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and not (Path(path) / INCOMPLETE_MARKER).exists()


def require_complete(path: str | os.PathLike | None) -> None:
    if path and Path(path).is_dir() and not is_complete(path):
        raise OutputDirError(
            f"{path} is the output of a run that did not finish ({INCOMPLETE_MARKER} is present). "
            "Resume or rerun it before using it."
        )

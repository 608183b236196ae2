"""``hf-deepclean``: a thin dispatcher over the commands in :mod:`hf_deepclean.commands`.

Errors the user can fix print one line (``error: ...``) and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from .errors import USER_ERRORS

COMMANDS = {
    "train": "Train the original model (or the gold model on D_r with --gold).",
    "unlearn": "Forget part of the training data with DeepClean.",
    "evaluate": "Evaluate an unlearned model against the gold and original models.",
    "audit": "Judge an unlearning method against a population of retrains (the NeurIPS 2023 forget score).",
    "sweep": "Reset-only sensitivity sweep over fractions or thresholds from one Fisher pass.",
    "benchmark": "Compare unlearning methods across scenarios, models and seeds.",
    "push": "Push an unlearned model folder and its model card to the Hub.",
    "demo": "Train, retrain gold, unlearn one digit class and print the comparison table.",
}


def _usage() -> str:
    lines = ["usage: hf-deepclean COMMAND [options]   (hf-deepclean COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _pop_debug_flag(args: list[str]) -> bool:
    """Remove a bare ``--debug`` (ours); ``--debug VALUE`` is TrainingArguments' own option."""
    for i, token in enumerate(args):
        if token == "--debug" and (i + 1 == len(args) or args[i + 1].startswith("--")):
            del args[i]
            return True
    return False


def end_distributed_run() -> None:
    """Destroy the process group that ``accelerate launch`` opened, if any, before the interpreter exits.

    Without it each rank's gloo (or NCCL) threads are torn down by the interpreter's exit, which can abort a rank
    that has finished its work ("terminate called without an active exception", seen once in CI on the rank that
    returned while rank 0 still wrote the model). No collective: ranks leave at different times by design.
    """
    dist = sys.modules.get("torch.distributed")  # never imported: no process group to end (and no torch start-up)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# Libraries that log every HTTP request at INFO (a push would print one line per request).
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "huggingface_hub.utils._http", "filelock", "fsspec")


def configure_output() -> None:
    """Logging and progress bars for a command line run: INFO and warnings from the main process only
    (``accelerate launch`` sets ``RANK``; every rank printing the same lines is noise, and the others still print
    errors), no per-request HTTP logs, and progress bars only on a terminal (tqdm's carriage returns make one
    endless line in a log file; the INFO lines say what ran)."""
    main_process = os.environ.get("RANK", "0") in ("", "0")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if main_process else logging.ERROR)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    configure_output()
    debug = _pop_debug_flag(rest)
    try:  # imported on demand: a command's libraries (transformers' Trainer) take ~6 s to import, --help 0.03 s
        module = importlib.import_module(f"hf_deepclean.commands.{command}")
    except ModuleNotFoundError as exc:
        if exc.name != f"hf_deepclean.commands.{command}":
            raise
        print(f"error: the {command!r} command is not available in this version.", file=sys.stderr)
        return 2
    try:
        return int(module.run(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        end_distributed_run()


if __name__ == "__main__":
    sys.exit(main())

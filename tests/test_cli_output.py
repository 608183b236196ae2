"""What the CLI prints besides results (issue 23: INFO on every rank, HTTP request logs, tqdm in log files)."""

import logging

import pytest

from hf_deepclean import cli


@pytest.fixture
def fresh_logging(monkeypatch):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    yield root
    root.handlers, root.level = handlers, level
    for name in cli.QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize("rank, level", [(None, logging.INFO), ("0", logging.INFO), ("1", logging.ERROR)])
def test_only_the_main_process_logs_info(fresh_logging, monkeypatch, rank, level):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    cli.configure_output()
    assert fresh_logging.level == level


def test_no_http_request_logs_and_no_progress_bars_in_a_log_file(fresh_logging, monkeypatch):
    import os
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    cli.configure_output()
    assert all(logging.getLogger(name).getEffectiveLevel() >= logging.WARNING for name in ("httpx", "httpcore"))
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert os.environ["TQDM_DISABLE"] == "1"
    monkeypatch.delenv("TQDM_DISABLE")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cli.configure_output()
    assert "TQDM_DISABLE" not in os.environ  # a terminal keeps its progress bars

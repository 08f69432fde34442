"""The log set-up: JSON lines in the run log, secrets redacted, tracebacks kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from importer import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.close("json")
    structlog.reset_defaults()


def test_an_exception_logged_keeps_its_traceback_and_no_secret(tmp_path: Path) -> None:
    """log.exception writes the traceback as text into the JSON line (a cron night has no
    --debug to show it), and a secret passed by mistake is redacted."""
    logs.configure("json", tmp_path / "run.log")
    log = structlog.get_logger()
    try:
        {}["missing"]
    except KeyError:
        log.exception("inbox.file_error", file="a.csv", token="s3cret")
    logs.close("json")
    [event] = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
    assert event["event"] == "inbox.file_error" and event["level"] == "error"
    assert "Traceback" in event["exception"] and "KeyError: 'missing'" in event["exception"]
    assert event["token"] == "[redacted]" and "s3cret" not in json.dumps(event)

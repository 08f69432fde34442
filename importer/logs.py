"""Structured logging: JSON lines for machines (and the per-run log file), console for people.

Every event of a run carries ``run_id``; row events also carry ``file``, ``sheet`` and ``row``.
The per-run log (``run.log`` beside the report) is always JSON lines, so the morning after a
cron run the whole story of a row can be found with ``grep``.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset({"token", "access_token", "api_code", "private_key", "jwt", "x-api-key"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Never let a secret reach a log line, whatever a caller passed."""
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
    return event


class _Tee:
    """A file-like that writes each rendered line to several streams, thread-safely."""

    def __init__(self, streams: list[TextIO]) -> None:
        self.streams = streams
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        with self.lock:
            for stream in self.streams:
                stream.write(text)
                stream.flush()

    def flush(self) -> None:
        pass


class _Logger:
    """Routes JSON lines to the run log and, by format, JSON or console text to stderr."""

    def __init__(self, json_out: _Tee, console: TextIO | None) -> None:
        self.json_out = json_out
        self.console = console

    def msg(self, message: str) -> None:
        self.json_out.write(message + "\n")

    log = debug = info = warning = warn = error = critical = exception = msg


_run_log: TextIO | None = None


def wants_json(log_format: str) -> bool:
    """JSON lines on stderr when asked, or when stderr is not a terminal (cron, CI)."""
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())


def configure(log_format: str = "auto", run_log: Path | None = None,
              level: int = logging.INFO) -> None:
    """Set structlog up for one process run.

    Args:
        log_format: ``auto`` | ``json`` | ``console``.
        run_log: a file to receive every event as a JSON line (created, appended).
        level: the lowest level written to stderr in console mode is WARNING; JSON gets ``level``.
    """
    global _run_log
    if _run_log is not None:
        _run_log.close()
        _run_log = None
    streams: list[TextIO] = []
    if run_log is not None:
        run_log.parent.mkdir(parents=True, exist_ok=True)
        _run_log = run_log.open("a", encoding="utf-8")
        streams.append(_run_log)
    as_json = wants_json(log_format)
    if as_json:
        streams.append(sys.stderr)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        # log.exception(...): the traceback as text in "exception" (the morning after a
        # cron night there is no --debug to show it)
        structlog.processors.format_exc_info,
    ]
    if not as_json:
        processors.append(_console_tee(run_log is not None))
    processors.append(structlog.processors.JSONRenderer(sort_keys=False))
    # One logger for every caller, so that its lock keeps the posting threads' lines whole.
    logger = _Logger(_Tee(streams), None)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: logger,
        cache_logger_on_first_use=False,
    )


def _console_tee(keep_json: bool) -> Any:
    """In console mode, print warnings and errors for a person; JSON still goes to the run log."""
    renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    def processor(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("level") in {"warning", "error", "critical"}:
            sys.stderr.write(renderer(logger, name, dict(event)) + "\n")
        if not keep_json:
            raise structlog.DropEvent
        return event

    return processor


def close(log_format: str = "auto") -> None:
    """Close the per-run log file; later events go to stderr only (by ``log_format``)."""
    configure(log_format, None)

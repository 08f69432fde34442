"""Drive one run: open the files, validate every chunk, (post), and write the report.

Modes: ``validate`` (nothing posted, streaming, any size), ``dry-run`` (validate and plan against
the journal, nothing posted) and ``run`` (post the valid rows exactly once).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from importer import logs
from importer.config import Config
from importer.errors import ExitCode, FileRejected, ImporterError
from importer.kinds import kind_by_name

if TYPE_CHECKING:
    import pandas as pd

    from importer.read import FileInfo, Table
    from importer.report import Summary


class Mode(StrEnum):
    """What a run does with valid rows."""

    VALIDATE = "validate"
    DRY_RUN = "dry-run"
    RUN = "run"


@dataclass(frozen=True)
class RunOptions:
    """Per-invocation choices that are not configuration."""

    kind: str | None = None
    report_dir: Path | None = None
    run_id: str | None = None
    retry_of: str | None = None
    quiet: bool = False  # no human summary on stderr (the inbox prints its own)


@dataclass
class RunResult:
    """What a finished run produced."""

    run_id: str
    mode: Mode
    report_dir: Path
    exit_code: ExitCode
    files: list[FileInfo]
    summary: Summary
    extra: dict[str, Any] = field(default_factory=dict)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as ``20261122T010203Z-3f9a1c``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_files(paths: list[Path], config: Config, mode: Mode, options: RunOptions) -> ExitCode:
    """Run, print the human summary on stderr and the report folder on stdout.

    Returns:
        The run's exit code.
    """
    result = execute(paths, config, mode, options)
    if not options.quiet:
        for line in result.summary.summary_lines():
            print(line, file=sys.stderr)
        print(f"report: {result.report_dir}", file=sys.stderr)
    print(result.report_dir)
    return result.exit_code


def execute(paths: list[Path], config: Config, mode: Mode, options: RunOptions) -> RunResult:
    """Validate (and in ``run`` mode post) the rows of ``paths`` and write the report.

    Raises:
        ImporterError: the run could not start (report folder not writable, login refused).
    """
    started = datetime.now(UTC)
    run_id = options.run_id or new_run_id(started)
    report_dir = options.report_dir or config.state_dir / "runs" / run_id
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImporterError(f"cannot create the report folder {report_dir}: {exc.strerror}") from None
    logs.configure(config.log_format, report_dir / "run.log")
    structlog.contextvars.bind_contextvars(run_id=run_id)
    log = structlog.get_logger()
    log.info("run.start", mode=mode.value, files=[str(p) for p in paths],
             report_dir=str(report_dir))
    try:
        return _execute(paths, config, mode, options, run_id, started, report_dir)
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
        logs.close()


def _execute(paths: list[Path], config: Config, mode: Mode, options: RunOptions, run_id: str,
             started: datetime, report_dir: Path) -> RunResult:
    from importer.report import ReportWriter

    log = structlog.get_logger()
    files, tables = open_files(paths, config, options)
    input_columns = list(dict.fromkeys(c for t in tables for c in t.columns))
    writer = ReportWriter(report_dir, run_id, mode.value, started, input_columns)
    now = datetime.now(UTC)
    extra: dict[str, Any] = {}
    if mode is Mode.VALIDATE:
        for frame in _checked_frames(tables, config, now):
            writer.add(frame)
    else:
        from importer.posting import post_frames

        frames = list(_checked_frames(tables, config, now))
        extra = post_frames(frames, files, config, mode, run_id, options)
        for frame in frames:
            writer.add(frame)
    summary = writer.close(files, datetime.now(UTC), extra)
    code = exit_code(files, summary.totals)
    log.info("run.finish", mode=mode.value, exit_code=int(code), totals=summary.totals,
             rejected=[f.name for f in files if f.rejected])
    return RunResult(run_id, mode, report_dir, code, files, summary, extra)


def open_files(paths: list[Path], config: Config,
               options: RunOptions) -> tuple[list[FileInfo], list[Table]]:
    """Open every file; a rejected file is recorded, never fatal to the others."""
    from importer.read import FileInfo, ReadOptions, open_file

    log = structlog.get_logger()
    read_options = ReadOptions(
        kind=kind_by_name(options.kind) if options.kind else None,
        encoding=config.encoding,
        delimiter=config.delimiter,
        default_creditor=config.default_creditor is not None,
    )
    files: list[FileInfo] = []
    tables: list[Table] = []
    for path in paths:
        try:
            info, found = open_file(path, read_options)
        except FileRejected as exc:
            info = _rejected_info(FileInfo, path, exc.reason)
            found = []
        for note in info.notes:
            log.info("file.note", file=info.name, note=note)
        if info.rejected:
            log.error("file.rejected", file=info.name, reason=info.rejected)
        files.append(info)
        tables.extend(found)
    return files, tables


def _rejected_info(file_info: type[FileInfo], path: Path, reason: str) -> FileInfo:
    """A FileInfo for a file rejected whole (its hash too, when it can be read)."""
    import hashlib

    digest, size = "", 0
    try:
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = path.stat().st_size
    except OSError:
        pass
    return file_info(path=path, name=path.name, sha256=digest, size=size, kinds=[], rows=0,
                     rejected=reason, notes=[])


def _checked_frames(tables: list[Table], config: Config, now: datetime) -> Iterator[pd.DataFrame]:
    """Validate every chunk of every table; a file rejected mid-read stops its own tables only."""
    from importer.validate import Checker

    log = structlog.get_logger()
    for table in tables:
        if table.file.rejected:
            continue
        checker = Checker(table, config, now)
        try:
            for chunk in table.chunks():
                frame = checker.check(chunk)
                table.file.rows += len(frame)
                yield frame
        except FileRejected as exc:
            table.file.rejected = exc.reason
            log.error("file.rejected", file=table.file.name, reason=exc.reason)


def exit_code(files: list[FileInfo], totals: dict[str, int]) -> ExitCode:
    """The worst thing that happened: a file rejected whole, then rows in error."""
    if any(f.rejected for f in files):
        return ExitCode.CANNOT_RUN
    if totals.get("error", 0):
        return ExitCode.ROWS_IN_ERROR
    return ExitCode.OK

"""Drive one run: open the files, validate every chunk, (post), and write the report.

Modes: ``validate`` (nothing posted, streaming, any size), ``dry-run`` (validate and plan against
the journal, nothing posted) and ``run`` (post the valid rows exactly once).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from importer import logs
from importer.config import Config
from importer.errors import (
    ApiError,
    ExitCode,
    FileRejected,
    ImporterError,
    stop_if_interrupted,
)
from importer.journal import new_run_id
from importer.kinds import kind_by_name

if TYPE_CHECKING:
    import pandas as pd

    from importer.client import ApiClient
    from importer.journal import Journal, RowRecord
    from importer.plan import Checked, Plan
    from importer.post import Learned, Outcome, PlannedRow
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


def run_files(paths: list[Path], config: Config, mode: Mode, options: RunOptions) -> ExitCode:
    """Run, print the human summary on stderr and the report folder on stdout.

    Returns:
        The run's exit code.
    """
    return _announce(execute(paths, config, mode, options), options)


def _announce(result: RunResult, options: RunOptions) -> ExitCode:
    if not options.quiet:
        result.summary.report_dir = result.report_dir
        for line in result.summary.summary_lines():
            print(line, file=sys.stderr)
        if result.extra.get("could_not_run"):
            print(f"could not post: {result.extra['could_not_run']}", file=sys.stderr)
        elif result.extra.get("not_reached"):
            print(f"stopped: {result.extra['not_reached']} row(s) not reached are 'not_posted'; "
                  "run the same command again to post them", file=sys.stderr)
        elif result.extra.get("stopped"):
            print("stopped after every row was posted: the report is complete", file=sys.stderr)
        if result.extra.get("already_posted"):
            print(f"known to have reached Amili in this run: {result.extra.get('posted', 0)} "
                  "row(s); "
                  f"{result.extra['already_posted']} row(s) already posted earlier were not "
                  "sent again (reason already_posted)", file=sys.stderr)
        for line in earlier_lines(result.extra.get("earlier_rows", [])):
            print(line, file=sys.stderr)
    print(result.report_dir)
    return max(result.exit_code, earlier_exit_code(result.extra))


def execute(paths: list[Path], config: Config, mode: Mode, options: RunOptions) -> RunResult:
    """Validate (and in ``run`` mode post) the rows of ``paths`` and write the report.

    Raises:
        ImporterError: the run could not start (report folder not writable, another run holds
            the state directory, api_url missing).
    """
    with _Run(config, mode, options) as run:
        files, tables = open_files(paths, config, options)
        return run.finish(files, tables, run.post)


def retry_run(reference: str, config: Config, options: RunOptions) -> ExitCode:
    """Re-post the rows of an earlier run that ended in error for transient reasons.

    Args:
        reference: the run id, or the run's report folder.
        config: the merged configuration.
        options: report folder and output choices.

    Returns:
        The new run's exit code.
    """
    from importer.history import find_run
    from importer.journal import FAILED, IN_FLIGHT, UNKNOWN, Journal

    with Journal(config.state_dir) as journal:
        record = find_run(journal, reference, config)
        run_id = record.run_id
        if record.finished is None:
            # Killed (or still going): the rows it never reached are not in the journal, so
            # a retry would report success and leave them out.
            state = ("is still running" if record.alive() else
                     "never finished (it was killed or crashed)")
            raise ImporterError(
                f"run {run_id} {state}: `retry` sees only the rows it recorded, not the ones "
                "it never reached. Run its file(s) again instead (rows already done are "
                "skipped, rows left in flight are read back first): "
                + " ".join(record.argv or ["amili-import", "run", "FILE..."]))
        rows = [r for r in journal.rows(run_id)
                if r.state in (FAILED, UNKNOWN, IN_FLIGHT) or (r.retryable and not r.done)]
    if record.allow_duplicates:
        # The original run let identical rows of other files through: so does its retry.
        config = config.with_overrides(allow_duplicates=True)
    earlier_reports = Path(record.report_dir).parent if record.report_dir else None
    if options.report_dir is None and earlier_reports is not None and earlier_reports.is_dir():
        # Beside the report it follows up (a drop folder's reports/, or the state directory).
        new_id = options.run_id or new_run_id(datetime.now(UTC))
        options = replace(options, run_id=new_id, report_dir=earlier_reports / new_id)
    with _Run(config, Mode.RUN, replace(options, retry_of=run_id)) as run:
        return _announce(run.finish_retry(rows), options)


def process_inbox_file(path: Path, report_dir: Path, config: Config,
                       options: RunOptions | None) -> Any:
    """Run one drop-folder file (``inbox`` calls this once per ready file).

    A file whose content was already processed by a finished run is not posted again: it gets
    a report that says so and is marked as a duplicate.

    Returns:
        An ``inbox.InboxFileResult``.
    """
    from importer.inbox import InboxFileResult
    from importer.journal import Journal
    from importer.read import FileInfo, hash_file

    options = options or RunOptions(report_dir=report_dir, run_id=report_dir.name, quiet=True)
    digest, size = hash_file(path)
    with Journal(config.state_dir) as journal:
        earlier = journal.file_seen(digest)
        unsure = earlier is not None and journal.has_status_unknown(earlier.run_id)
    # Only content processed completely (exit 0, every status known) is skipped whole: after an
    # outage, with rows in error, or with a status Amili has not told yet, it runs again (the
    # journal skips every row already done, and reads the unknown statuses again).
    if earlier is not None and earlier.exit_code == ExitCode.OK and not unsure:
        message = (f"{path.name}: the same content (sha256 {digest[:12]}…) was already "
                   f"processed in run {earlier.run_id}; nothing posted")
        info = FileInfo(path=path, name=path.name, sha256=digest, size=size, notes=[message])
        with _Run(config, Mode.RUN, options) as run:
            result = run.finish([info], [], lambda chunks: {"duplicate_of": earlier.run_id})
        return InboxFileResult(ExitCode.OK, result.run_id, result.summary.totals, message,
                               duplicate=True, sha256=digest)
    result = execute([path], config, Mode.RUN, options)
    stop_before = None
    if result.extra.get("could_not_run"):
        # The API cannot be used (login or token refused): every later file would fail the same
        # way, so the drain stops and the files stay in the folder for the next run.
        stop_before = (f"could not post ({result.extra['could_not_run']}); report "
                       f"in {result.report_dir}")
    elif result.extra.get("not_reached"):
        # Stopped by SIGINT/SIGTERM (systemctl stop, Ctrl-C) before every row was posted: stop
        # the drain too, and leave this file in place; the next run posts what was not
        # reached (the journal skips every row already done).
        stop_before = f"stopped by a signal; report in {result.report_dir}"
    rejected = "; ".join(f.rejected for f in result.files if f.rejected)
    # The file's own code decides where it goes; rows of earlier runs found in error count
    # in the drain's exit code only (the file has nothing to do with them).
    return InboxFileResult(result.exit_code, result.run_id, result.summary.totals, rejected,
                           sha256=digest, stop_after="stopped by a signal"
                           if result.extra.get("stopped") else None, stop_before=stop_before,
                           earlier_exit_code=earlier_exit_code(result.extra),
                           posted=result.extra.get("posted", 0),
                           already_posted=result.extra.get("already_posted", 0))


class _Run:
    """One run's lifetime: report folder, run log, state lock, journal, API client."""

    def __init__(self, config: Config, mode: Mode, options: RunOptions) -> None:
        self.config, self.mode, self.options = config, mode, options
        self.started = datetime.now(UTC)
        self.run_id = options.run_id or new_run_id(self.started)
        # Absolute: the journal keeps it for `show` and `retry`, run from anywhere.
        self.report_dir = (options.report_dir or config.state_dir / "runs" / self.run_id).absolute()
        self.log: Any = structlog.get_logger()
        self._stack = ExitStack()
        self.journal: Journal | None = None
        self.client: ApiClient | None = None
        self.learned: list[Learned] = []  # journaled once the report listing them is written

    def __enter__(self) -> _Run:
        try:
            self.report_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImporterError(f"cannot create the report folder {self.report_dir}: "
                                f"{exc.strerror}") from None
        logs.configure(self.config.log_format, self.report_dir / "run.log")
        structlog.contextvars.bind_contextvars(run_id=self.run_id)
        self._stack.callback(logs.close, self.config.log_format)
        self._stack.callback(structlog.contextvars.unbind_contextvars, "run_id")
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        self.log.info("run.start", mode=self.mode.value, report_dir=str(self.report_dir),
                      retry_of=self.options.retry_of, argv=_argv())
        return self

    def _open(self) -> None:
        if self.mode is Mode.VALIDATE:
            return  # validation touches no state: no journal, no lock, no API
        from importer.journal import Journal
        from importer.lock import RunLock

        if self.mode is Mode.RUN:
            from importer.client import ApiClient, check_api_url

            check_api_url(self.config)  # a config error stops the run before any reading
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            self._stack.enter_context(RunLock(self.config.state_dir / "run.lock",
                                              label=f"the state directory {self.config.state_dir}"))
            self.client = ApiClient(self.config, self.log)
            self._stack.callback(self.client.close)
        self.journal = self._stack.enter_context(Journal(self.config.state_dir))
        if self.mode is Mode.RUN:
            self.journal.verify()
        self.journal.start_run(self.run_id, self.mode.value, _argv(), self.report_dir,
                               self.options.retry_of, self.started.isoformat(),
                               self.config.allow_duplicates)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def finish(self, files: list[FileInfo], tables: list[Table],
               post: Callable[[list[Checked]], dict[str, Any]]) -> RunResult:
        """Validate every table, post (by mode), write the report, record the run."""
        from importer.report import ReportWriter

        if self.journal is not None:  # so that `runs`/`show` name them even if the run is killed
            for info in files:
                self.journal.record_file(self.run_id, info)
        input_columns = list(dict.fromkeys(c for t in tables for c in t.columns))
        # As a context: an error or Ctrl-C before the report is complete removes its temp files.
        with ReportWriter(self.report_dir, self.run_id, self.mode.value, self.started,
                          input_columns) as writer:
            checked = _checked(tables, self.config, datetime.now(UTC))
            extra: dict[str, Any] = {}
            if self.mode is Mode.VALIDATE:  # streaming: any size in flat memory
                for chunk in checked:
                    writer.add(chunk.frame)
            else:
                chunks = list(checked)
                extra = post(chunks)
                for chunk in chunks:
                    writer.add(chunk.frame)
                self._write_failed_rows(chunks)
            return self._close(writer, files, extra)

    def finish_retry(self, rows: list[RowRecord]) -> RunResult:
        """Post the retryable rows of an earlier run and report them."""
        from importer.post import PlannedRow
        from importer.report import ReportWriter

        planned = [PlannedRow.from_record(r, i) for i, r in enumerate(rows)]
        with ReportWriter(self.report_dir, self.run_id, "retry", self.started, []) as writer:
            outcomes, extra = self._post_planned(planned)
            writer.add(_retry_frame(rows, outcomes))
            extra["retry_of"] = self.options.retry_of
            return self._close(writer, [], extra, self._retried_files(rows))

    def _retried_files(self, rows: list[RowRecord]) -> list[FileInfo]:
        """The files the retried rows come from, for the report only: they were not read
        again (and are not journaled as this run's, so their content still counts as not
        processed completely)."""
        from importer.read import FileInfo

        assert self.journal is not None
        per_file = Counter((r.run_id, r.ref.file_sha256, r.ref.file_name) for r in rows)
        known = {(f.run_id, f.sha256, f.name): f for run in {r.run_id for r in rows}
                 for f in self.journal.files(run)}
        out = []
        for (run_id, sha256, name), count in per_file.items():
            record = known.get((run_id, sha256, name))
            out.append(FileInfo(
                path=Path(record.path if record else name), name=name, sha256=sha256,
                size=(record.size or 0) if record else 0,
                kinds=list(record.kinds) if record else [], rows=count,
                notes=[f"{count} row(s) of run {run_id} posted again; the file itself was not "
                       "read again"]))
        return out

    def _close(self, writer: Any, files: list[FileInfo], extra: dict[str, Any],
               report_files: list[FileInfo] | None = None) -> RunResult:
        summary = writer.close(files if report_files is None else report_files,
                               datetime.now(UTC), extra)
        # The run's own code (the journal keeps it: it says whether its files need running
        # again); rows of earlier runs found in error count in the process exit code only.
        code = exit_code(files, summary.totals, bool(extra.get("could_not_run")))
        if self.journal is not None:
            for item in self.learned:  # the report listing them is written: now journal them
                item.commit(self.journal)
            for info in files:
                self.journal.record_file(self.run_id, info)
            self.journal.finish_run(self.run_id, int(code), summary.totals)
        self.log.info("run.finish", mode=self.mode.value, exit_code=int(code),
                      process_exit_code=int(max(code, earlier_exit_code(extra))),
                      totals=summary.totals, rows=summary.rows,
                      rejected=[f.name for f in files if f.rejected])
        return RunResult(self.run_id, self.mode, self.report_dir, code, files, summary, extra)

    def post(self, chunks: list[Checked]) -> dict[str, Any]:
        """Plan the chunks' valid rows; post them (run) or check them against the journal."""
        from importer.plan import (
            apply_outcomes,
            make_plan,
            mark_validated,
            repeated_duplicates,
            write_updates,
        )

        assert self.journal is not None
        journal = self.journal
        plan = make_plan(chunks, self.config.send_account)
        # Decided on the journal as it is before this run posts anything; not with
        # --allow-duplicates, which posts such a copy's twin anew.
        repeated = [] if self.config.allow_duplicates else repeated_duplicates(
            chunks, lambda fp: [r for r in journal.prior(fp) if r.done])
        if self.mode is Mode.DRY_RUN:
            extra = self._dry_run(chunks, plan)
        else:
            outcomes, extra = self._post_planned(plan.rows)
            apply_outcomes(chunks, plan, outcomes)
            mark_validated(chunks, plan)
        write_updates(chunks, repeated)
        if repeated and self.mode is Mode.RUN:
            extra["already_posted"] = extra.get("already_posted", 0) + len(repeated)
        return extra

    def _post_planned(self, rows: list[PlannedRow]) -> tuple[list[Outcome], dict[str, Any]]:
        from importer.post import post_rows

        assert self.client is not None and self.journal is not None
        if not rows:
            return [], {}
        try:
            self.client.login()
        except ApiError as exc:
            self.log.error("api.login_failed", error=str(exc))
            return self._not_posted(rows, str(exc)), {"could_not_run": str(exc)}
        from importer.plan import unify_case_keys

        rows = unify_case_keys(rows, self._cases_of_invoices)
        stop = threading.Event()  # set by SIGINT/SIGTERM, or when the API became unusable
        with _progress(len(rows), self.config) as advance:
            outcomes = post_rows(rows, self.client, self.journal, self.run_id, self.config,
                                 self.log, advance, stop=stop, earlier=self.learned)
        extra: dict[str, Any] = {"posted": sum(o.posted for o in outcomes)}
        repeated = sum(o.reason == "already_posted" for o in outcomes)
        if repeated:
            extra["already_posted"] = repeated
        if self.learned:
            extra["earlier_rows"] = [_earlier_row(item.record) for item in self.learned]
            for row in extra["earlier_rows"]:
                if _in_error_in_amili(row):
                    self.log.error("earlier.row_in_error", **{
                        ("earlier_run" if k == "run_id" else k): v for k, v in row.items()})
        unusable = [o.message for o in outcomes if o.reason == "api_unusable"]
        if unusable:
            extra["could_not_run"] = unusable[0]
        elif stop.is_set():  # a signal
            extra["stopped"] = True
            extra["not_reached"] = sum(o.reason == "not_posted" for o in outcomes)
        return outcomes, extra

    def _not_posted(self, rows: list[PlannedRow], why: str) -> list[Outcome]:
        """Journal rows that could not be sent at all (retryable), and their outcomes."""
        from importer.post import not_sent

        assert self.journal is not None
        return not_sent(rows, self.journal, self.run_id, self.config, "api_unusable",
                        f"not posted: {why}")

    def _cases_of_invoices(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Case ids of (creditor, invoice number) pairs, looked up in parallel: ``""`` for a
        pair Amili has no case for; a pair left out could not be told (the lookup failed, or
        found several cases)."""
        from concurrent.futures import ThreadPoolExecutor

        def lookup(pair: tuple[str, str]) -> str | None:
            assert self.client is not None
            try:
                ids = self.client.case_ids_of_invoice(*pair)
            except ApiError as exc:
                self.log.warning("plan.case_lookup_failed", invoice_number=pair[1],
                                 error=str(exc))
                return None
            return ids[0] if len(ids) == 1 else ("" if not ids else None)

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            found = dict(zip(wanted, pool.map(lookup, wanted), strict=True))
        return {pair: case for pair, case in found.items() if case is not None}

    def _dry_run(self, chunks: list[Checked], plan: Plan) -> dict[str, Any]:
        """Mark the rows a real run would not post (already done, or awaiting read-back)."""
        from importer.plan import annotate
        from importer.post import preview

        assert self.journal is not None
        notes = [(row.index, outcome.status, outcome.reason or "not_posted",
                  f"would not be posted: {outcome.message}")
                 for row, outcome in zip(plan.rows, preview(plan.rows, self.journal, self.config),
                                         strict=True) if outcome is not None]
        annotate(chunks, plan, notes)
        return {"planned": len(plan.rows) - len(notes), "would_not_post": len(notes)}

    def _write_failed_rows(self, chunks: list[Checked]) -> None:
        from importer.plan import failed_rows
        from importer.report import failed_rows_name, write_failed_rows

        for (name, sheet, kind), failed in failed_rows(chunks).items():
            path = write_failed_rows(self.report_dir / failed_rows_name(name, sheet, kind),
                                     failed.rows, failed.headers, failed.delimiter)
            self.log.info("report.failed_rows", file=name, sheet=sheet, rows=len(failed.rows),
                          path=str(path))


@contextmanager
def _progress(total: int, config: Config) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr when it is a terminal (and logs are not JSON there)."""
    if not sys.stderr.isatty() or logs.wants_json(config.log_format):
        yield lambda _outcome: None
        return
    import click

    with click.progressbar(length=total, label="posting", file=sys.stderr) as bar:
        yield lambda _outcome: bar.update(1)


def _argv() -> list[str]:
    """The command line for the journal: flags only carry names and paths, never secrets
    (tokens and keys come from the environment or the config file)."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def _retry_frame(rows: list[RowRecord], outcomes: list[Outcome]) -> pd.DataFrame:
    """Report rows for a retry: the journal holds the values that were sent."""
    import pandas as pd

    from importer.validate import FRAME_COLUMNS

    records = []
    for row, outcome in zip(rows, outcomes, strict=True):
        values = {k: (f"{v:.2f}" if k == "amount" else v) for k, v in row.payload.items()}
        records.append({
            **values, "file": row.ref.file_name, "sheet": row.ref.sheet, "row": row.ref.row,
            "kind": row.kind, "status": outcome.status, "reason": outcome.reason,
            "message": outcome.message, "amili_id": outcome.amili_id,
            "settled_amount": outcome.settled_amount,
            "case_reference_number": outcome.case_reference_number,
            "http_status": outcome.http_status, "attempts": outcome.attempts,
        })
    return pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS)).astype(object)


def open_files(paths: list[Path], config: Config,
               options: RunOptions) -> tuple[list[FileInfo], list[Table]]:
    """Open every file; a rejected file is recorded, never fatal to the others."""
    from importer.read import ReadOptions, open_file

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
            info = _rejected_info(path, exc.reason)
            found = []
        for note in info.notes:
            log.info("file.note", file=info.name, note=note)
        if info.rejected:
            log.error("file.rejected", file=info.name, reason=info.rejected)
        files.append(info)
        tables.extend(found)
    return files, tables


def _rejected_info(path: Path, reason: str) -> FileInfo:
    """A FileInfo for a file rejected whole (its hash too, when it can be read)."""
    from importer.read import FileInfo, hash_file

    try:
        digest, size = hash_file(path)
    except OSError:
        digest, size = "", 0
    return FileInfo(path=path, name=path.name, sha256=digest, size=size, rejected=reason)


def _checked(tables: list[Table], config: Config, now: datetime) -> Iterator[Checked]:
    """Validate every chunk of every table; a file rejected mid-read stops its own tables only."""
    from importer.plan import Checked
    from importer.validate import Checker, Duplicates

    log = structlog.get_logger()
    _lean_arrow_memory()
    # One duplicate index per file and kind: a row repeated on another sheet is found too.
    duplicates: dict[tuple[str, str], Duplicates] = {}
    for table in tables:
        if table.file.rejected:
            continue
        shared = duplicates.setdefault((str(table.file.path), table.kind.name), Duplicates())
        checker = Checker(table, config, now, shared)
        try:
            for chunk in table.chunks():
                stop_if_interrupted()
                frame = checker.check(chunk)
                yield Checked(table, frame)
        except FileRejected as exc:
            table.file.rejected = exc.reason
            log.error("file.rejected", file=table.file.name, reason=exc.reason)
    stop_if_interrupted()  # before any posting or report: a stop asked for is a stop


def _lean_arrow_memory() -> None:
    """Arrow allocates through jemalloc where pyarrow has it (its Linux wheels do): its default,
    mimalloc, keeps more of what the CSV reader's threads freed, ~70 MB more at the peak of a
    million-row file, for the same speed."""
    import contextlib

    import pyarrow as pa

    # A pyarrow built without jemalloc (Windows) keeps its default.
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def earlier_exit_code(extra: dict[str, Any]) -> ExitCode:
    """1 when a row of an earlier run turned out to be stored in error in Amili (its status
    could not be read then, so that run ended without saying so): only this run can tell."""
    return (ExitCode.ROWS_IN_ERROR if any(map(_in_error_in_amili, extra.get("earlier_rows", ())))
            else ExitCode.OK)


def _in_error_in_amili(row: dict[str, Any]) -> bool:
    return row["reason"] == "api_error" and bool(row["amili_id"])


EARLIER_LINES = 20  # rows in error named on stderr; report.json lists them all


def earlier_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Human lines about the rows of earlier runs whose fate a run learned."""
    if not rows:
        return []
    kinds = Counter(f"{r['status']}" + (f" ({r['reason']})" if r["reason"] else "")
                    for r in rows)
    lines = [f"earlier runs: {len(rows)} of their row(s) looked up again: "
             + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
             + "; listed under earlier_rows in report.json"]
    in_error = [r for r in rows if _in_error_in_amili(r)]
    for r in in_error[:EARLIER_LINES]:
        lines.append(f"  in error in Amili: run {r['run_id']}, file {r['file']}"
                     + (f", sheet {r['sheet']}" if r["sheet"] else "")
                     + f", row {r['row']}: {r['message'] or r['reason']}")
    if len(in_error) > EARLIER_LINES:
        lines.append(f"  ... and {len(in_error) - EARLIER_LINES} more in error (report.json)")
    return lines


def _earlier_row(rec: RowRecord) -> dict[str, Any]:
    """A row of an earlier run whose fate this run learned, for report.json and the log:
    ``status`` as a report gives it (``error`` also for a row found not stored, or still of
    unknown outcome: ``reason`` tells which)."""
    from importer.post import report_status

    return {"run_id": rec.run_id, "file": rec.ref.file_name, "sheet": rec.ref.sheet,
            "row": rec.ref.row, "kind": rec.kind, "status": report_status(rec.state),
            "reason": rec.reason, "message": rec.message, "amili_id": rec.amili_id}


def exit_code(files: list[FileInfo], totals: dict[str, int], could_not_run: bool = False
              ) -> ExitCode:
    """The worst thing that happened: a file rejected whole or no API, then rows in error."""
    if could_not_run or any(f.rejected for f in files):
        return ExitCode.CANNOT_RUN
    if totals.get("error", 0):
        return ExitCode.ROWS_IN_ERROR
    return ExitCode.OK

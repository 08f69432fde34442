"""Past runs from the journal, for `amili-import runs` and `amili-import show`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from importer.config import Config
from importer.errors import UsageError

if TYPE_CHECKING:
    from importer.journal import Journal, RunRecord


def resolve_run_id(reference: str) -> str:
    """A run id, or a report folder holding report.json (whose run id is taken)."""
    import json

    report = Path(reference) / "report.json"
    if report.is_file():
        with report.open(encoding="utf-8") as handle:
            return str(json.load(handle)["run_id"])
    return reference


def find_run(journal: Journal, reference: str, config: Config) -> RunRecord:
    """The journal's record of a run given by id or report folder.

    Raises:
        UsageError: no such run.
    """
    run_id = resolve_run_id(reference)
    record = journal.run(run_id)
    if record is None:
        raise UsageError(f"no run {run_id!r} in the journal at {config.state_dir} "
                         "(see `amili-import runs`)")
    return record


def _has_journal(config: Config) -> bool:
    from importer.journal import JOURNAL_NAME

    return (config.state_dir / JOURNAL_NAME).exists()


def _totals(totals: dict[str, object]) -> str:
    return ", ".join(f"{n} {s}" for s, n in totals.items()) or "no rows"


def run_lines(config: Config, limit: int = 20) -> list[str]:
    """One line per recent run, newest first.

    Args:
        config: where the journal is (``state_dir``).
        limit: how many runs.

    Returns:
        Lines ready to print (a header first).
    """
    from importer.journal import Journal

    if not _has_journal(config):
        return [f"no runs yet (no journal in {config.state_dir})"]
    with Journal(config.state_dir, read_only=True) as journal:
        records = journal.runs(limit)
    lines = [f"{'run id':<24} {'started':<20} {'mode':<8} {'files':>5} {'exit':>4}  rows"]
    retried: dict[str, RunRecord] = {}
    for r in records:  # newest first: the latest retry of a run is kept
        if r.retry_of:
            retried.setdefault(r.retry_of, r)
    for r in records:
        code = _code(r)
        mode = "retry" if r.retry_of else r.mode
        # A retry reads no file (its rows' files are its original run's, named by its report).
        files = "-" if r.retry_of else str(r.files)
        link = f"  (retry of {r.retry_of})" if r.retry_of else ""
        if r.run_id in retried:  # a failed night settled the morning after says so here
            later = retried[r.run_id]
            link = f"  (retried by {later.run_id}: exit {_code(later)})"
        lines.append(f"{r.run_id:<24} {r.started[:19]:<20} {mode:<8} {files:>5} {code:>4}  "
                     f"{_totals(r.totals)}{link}")
    return lines


def _code(record: RunRecord) -> str:
    """A run's exit code for the listing: ``run`` while it runs, ``kill`` if it never ended."""
    if record.finished is None:
        return "run" if record.alive() else "kill"
    return "-" if record.exit_code is None else str(record.exit_code)


def show_lines(config: Config, reference: str) -> list[str]:
    """One run's summary: mode, times, exit code, files, totals, report folder.

    Raises:
        UsageError: no such run in the journal.
    """
    from importer.journal import Journal

    if not _has_journal(config):
        raise UsageError(f"no run {resolve_run_id(reference)!r}: there is no journal in "
                         f"{config.state_dir} yet (see `amili-import runs`)")
    with Journal(config.state_dir, read_only=True) as journal:
        record = find_run(journal, reference, config)
        run_id = record.run_id
        files = journal.files(run_id)
        counts = journal.counts(run_id)
        retries = journal.retries_of(run_id)
    if record.finished:
        finished = record.finished
    elif record.alive():
        finished = f"not yet: still running (pid {record.pid})"
    else:
        finished = ("never: the process is gone (killed or crashed). The next run reads back "
                    "its rows left in flight; rows it never reached are not in the journal: "
                    "run its files again")
    lines = [
        f"run {record.run_id} ({record.mode})" + (f", retry of {record.retry_of}"
                                                  if record.retry_of else ""),
        f"  started  {record.started}",
        f"  finished {finished}",
        f"  exit     {'-' if record.exit_code is None else record.exit_code}",
        f"  rows     {_totals(record.totals)} (the report: every row of its files)",
    ]
    if counts:
        lines.append(f"  posting  {_totals(dict(counts))} (journal states of the rows that went "
                     "to posting; rows refused by validation are in the report only)")
    for f in files:
        state = f"REJECTED: {f.rejected}" if f.rejected else f"{f.rows} rows"
        lines.append(f"  file     {f.name} ({', '.join(f.kinds) or '-'}; {state}; "
                     f"sha256 {f.sha256[:12]})")
    lines.append(f"  report   {record.report_dir or '-'}")
    for retry in retries:  # the rows above are this run's; what became of them since:
        code = "-" if retry.exit_code is None else retry.exit_code
        lines.append(f"  retried  by {retry.run_id} (exit {code}; {_totals(retry.totals)}; "
                     f"`amili-import show {retry.run_id}`)")
    return lines

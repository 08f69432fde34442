"""Drop-folder mode on real folders: ready-file rules, archiving, duplicates, lock, exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from test_lock import holder

from importer.config import Config
from importer.errors import ApiError, ExitCode, RunLocked
from importer.inbox import (
    FileOutcome,
    InboxFileResult,
    InboxOptions,
    InboxSummary,
    LocalFolder,
    archive_name,
    drain,
    inbox_main,
    process_inbox,
    ready_files,
    summary_lines,
)

OLD = time.time() - 3600
FAST = InboxOptions(min_age=60, settle=0.05)
STAMPED = re.compile(r"^\d{8}T\d{6}Z(-\d+)?--")


def drop(folder: Path, name: str, content: str = "amount\n1\n", mtime: float = OLD) -> Path:
    """Write a file into the folder and age it."""
    path = folder / name
    path.write_text(content)
    os.utime(path, (mtime, mtime))
    return path


class FakeRun:
    """A process_one that records its calls, writes a report and decides by the file's content.

    Content "bad" gives rows in error, "reject" a file rejected whole, "boom" an IO error;
    content seen before (by sha256, like the journal) is a duplicate.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []
        self.seen: set[str] = set()

    def __call__(self, path: Path, report_dir: Path) -> InboxFileResult:
        data = path.read_bytes()
        self.calls.append((path.name, report_dir))
        if data.startswith(b"boom"):
            raise PermissionError(13, "Permission denied", str(path))
        digest = hashlib.sha256(data).hexdigest()
        duplicate = digest in self.seen
        self.seen.add(digest)
        (report_dir / "report.json").write_text(json.dumps({"duplicate": duplicate}))
        if duplicate:
            return InboxFileResult(ExitCode.OK, report_dir.name, {}, "already processed", True)
        if data.startswith(b"bad"):
            return InboxFileResult(ExitCode.ROWS_IN_ERROR, report_dir.name,
                                   {"completed": 1, "error": 2})
        if data.startswith(b"reject"):
            return InboxFileResult(ExitCode.CANNOT_RUN, report_dir.name, {}, "no header found")
        return InboxFileResult(ExitCode.OK, report_dir.name, {"completed": 3})


def listing(folder: Path) -> list[str]:
    """Names in a folder, sorted (without the lock file)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".amili-import.lock")


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Leave structlog as we found it (inbox_main configures it for the process)."""
    yield
    structlog.reset_defaults()


def test_patterns_and_non_files_are_never_ready(tmp_path: Path) -> None:
    """Dotfiles, Excel lock files, partial/temporary uploads, sidecars, folders and symlinks
    are never taken; only top-level regular files are."""
    for name in [".hidden.csv", "~$payments.xlsx", "a.csv.part", "b.TMP", "c.csv.filepart",
                 "d.csv.done", "e.ok", "payments.csv", "Credits.XLSX"]:
        drop(tmp_path, name)
    for sub in ["done", "failed", "reports", "other"]:
        (tmp_path / sub).mkdir()
        drop(tmp_path / sub, "x.csv")
    (tmp_path / "link.csv").symlink_to(tmp_path / "payments.csv")
    with capture_logs() as logs:
        ready = ready_files(tmp_path, settle=0.05)
    assert sorted(p.name for p in ready) == ["Credits.XLSX", "payments.csv"]
    assert all(p.parent == tmp_path for p in ready)
    # The symlink is not left in silence: named once, though the folder is listed twice.
    assert [e["file"] for e in logs if e["event"] == "inbox.symlink_skipped"] == ["link.csv"]


def test_a_file_name_with_a_line_break_keeps_the_summary_one_line_a_file() -> None:
    """A control character in a file name is escaped in the human summary (cron mail),
    also where the archive name and a message repeat it."""
    summary = InboxSummary("drop")
    summary.files.append(FileOutcome("pay\nments.csv", "r1", ExitCode.CANNOT_RUN,
                                     moved_to="failed/20261122T010203Z--pay\nments.csv",
                                     error="pay\nments.csv: cannot tell the kind"))
    lines = summary_lines(summary)
    assert len(lines) == 2 and lines[0].startswith("pay\\nments.csv: ")
    assert "--pay\\nments.csv" in lines[0] and "error: pay\\nments.csv" in lines[0]


def test_the_retry_hint_is_for_files_moved_to_failed_only() -> None:
    """helper-46: a file left in place (the API could not be used) runs again at the next
    drain: its line says so, instead of sending the reader to `retry` and a failed-rows file
    for rows the next night posts anyway."""
    left = InboxSummary("drop")
    left.files.append(FileOutcome("payments-1.csv", "r1", ExitCode.CANNOT_RUN,
                                  totals={"error": 2}, error="could not post; left in place"))
    lines = summary_lines(left)
    assert not any("amili-import retry" in line for line in lines)
    assert any(line.startswith("a file left in place runs again at the next drain")
               for line in lines)
    failed = InboxSummary("drop")
    failed.files.append(FileOutcome("payments-2.csv", "r2", ExitCode.ROWS_IN_ERROR,
                                    totals={"error": 1, "completed": 3},
                                    moved_to="failed/20261122T010203Z--payments-2.csv"))
    lines = summary_lines(failed)
    assert any("`amili-import retry RUN_ID`" in line for line in lines)
    assert not any("left in place runs again" in line for line in lines)


def test_young_files_wait(tmp_path: Path) -> None:
    """A file younger than min_age (by mtime) is not ready; an older one is."""
    now = time.time()
    drop(tmp_path, "young.csv", mtime=now - 10)
    drop(tmp_path, "old.csv", mtime=now - 61)
    assert [p.name for p in ready_files(tmp_path, min_age=60, now=now, settle=0.05)] == [
        "old.csv"]
    assert [p.name for p in ready_files(tmp_path, min_age=5, now=now, settle=0.05)] == [
        "old.csv", "young.csv"]


def test_growing_file_waits(tmp_path: Path) -> None:
    """A file whose size changes between the two looks is not ready, even when old enough."""
    drop(tmp_path, "stable.csv")
    growing = drop(tmp_path, "growing.csv")
    stop = threading.Event()
    wrote = threading.Event()

    def writer() -> None:
        with growing.open("a") as handle:
            while not stop.is_set():
                handle.write("1,2,3\n")
                handle.flush()
                wrote.set()
                time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert wrote.wait(5)
        # "now" far ahead so that age cannot be the reason: only the size changing is.
        ready = ready_files(tmp_path, min_age=60, now=time.time() + 3600, settle=0.3)
    finally:
        stop.set()
        thread.join()
    assert [p.name for p in ready] == ["stable.csv"]


def test_a_file_dated_in_the_future_waits_with_a_warning(tmp_path: Path) -> None:
    """An mtime days ahead (a skewed clock, kept by the upload) cannot tell the file's age: it
    waits, and a warning names it and why, instead of an info line every night."""
    drop(tmp_path, "payments.csv", "good", mtime=time.time() + 3 * 86400)
    with capture_logs() as logs:
        summary = process_inbox(tmp_path, FAST, FakeRun())
    assert summary.files == [] and summary.waiting == ["payments.csv"]
    [warning] = [e for e in logs if e["event"] == "inbox.future_mtime"]
    assert warning["log_level"] == "warning"
    assert "in the future" in warning["files"]["payments.csv"]


def test_sidecar_mode(tmp_path: Path) -> None:
    """With require_sidecar only files with <name>.done, <name>.ok or <stem>.done are ready."""
    for name in ["a.csv", "a.csv.done", "b.xlsx", "b.xlsx.OK", "c.csv", "c.done", "d.csv"]:
        drop(tmp_path, name)
    names = [p.name for p in ready_files(tmp_path, require_sidecar=True, settle=0.05)]
    assert sorted(names) == ["a.csv", "b.xlsx", "c.csv"]
    assert "d.csv" in [p.name for p in ready_files(tmp_path, settle=0.05)]


def test_order_is_oldest_first_then_name(tmp_path: Path) -> None:
    """Ready files come oldest first (mtime), ties broken by name."""
    drop(tmp_path, "z.csv", mtime=OLD - 300)
    drop(tmp_path, "b.csv", mtime=OLD)
    drop(tmp_path, "a.csv", mtime=OLD)
    drop(tmp_path, "m.csv", mtime=OLD - 100)
    assert [p.name for p in ready_files(tmp_path, settle=0.05)] == [
        "z.csv", "m.csv", "a.csv", "b.csv"]


def test_drain_moves_files_to_done_and_failed(tmp_path: Path) -> None:
    """Each ready file gets a run and a report folder, then moves (with its sidecar) to done/
    on exit 0 or failed/ otherwise, under a timestamped name; young files stay."""
    drop(tmp_path, "good.csv", "good", mtime=OLD - 20)
    drop(tmp_path, "good.csv.ok", "")
    drop(tmp_path, "bad.csv", "bad", mtime=OLD - 10)
    drop(tmp_path, "rejected.csv", "reject", mtime=OLD)
    drop(tmp_path, "young.csv", "good2", mtime=time.time())
    run = FakeRun()
    summary = process_inbox(tmp_path, FAST, run)

    assert [name for name, _ in run.calls] == ["good.csv", "bad.csv", "rejected.csv"]
    for _, report_dir in run.calls:
        assert report_dir.parent == tmp_path / "reports"
        assert (report_dir / "report.json").is_file()
    assert listing(tmp_path) == ["done", "failed", "reports", "young.csv"]
    done, failed = listing(tmp_path / "done"), listing(tmp_path / "failed")
    assert [STAMPED.sub("", n) for n in done] == ["good.csv", "good.csv.ok"]
    assert sorted(STAMPED.sub("", n) for n in failed) == ["bad.csv", "rejected.csv"]
    assert all(STAMPED.match(n) for n in done + failed)
    assert (tmp_path / "done" / done[0]).read_text() == "good"  # moved, not rewritten
    assert summary.exit_code == ExitCode.CANNOT_RUN  # the worst of 0, 1, 3
    assert summary.totals == {"completed": 4, "error": 2}
    assert summary.waiting == ["young.csv"]
    assert [f.moved_to.split("/")[0] for f in summary.files if f.moved_to] == [
        "done", "failed", "failed"]


def test_stopped_between_the_moves_no_sidecar_is_left_behind(tmp_path: Path) -> None:
    """Killed after archiving the sidecar but before the file (here: the file's move fails
    once): the file stays without its sidecar, so a new upload of that name is not ready
    before its own sidecar comes, and the file left is run again as a duplicate."""
    drop(tmp_path, "payments.csv", "good")
    drop(tmp_path, "payments.csv.done", "")
    run = FakeRun()

    class KilledBetweenMoves(LocalFolder):
        def move(self, name: str, sub: str, new_name: str) -> None:
            if name == "payments.csv":
                raise SystemExit("killed")
            super().move(name, sub, new_name)

    with pytest.raises(SystemExit):
        drain(KilledBetweenMoves(tmp_path), FAST, run)
    assert listing(tmp_path) == ["done", "failed", "payments.csv", "reports"]
    assert [STAMPED.sub("", n) for n in listing(tmp_path / "done")] == ["payments.csv.done"]
    sidecar_rule = InboxOptions(min_age=60, settle=0.05, require_sidecar=True)
    assert process_inbox(tmp_path, sidecar_rule, run).files == []
    again = process_inbox(tmp_path, FAST, run)
    assert again.files[0].duplicate and again.exit_code == ExitCode.OK
    assert listing(tmp_path) == ["done", "failed", "reports"]


def test_exit_code_is_the_worst_and_zero_without_files(tmp_path: Path) -> None:
    """No files → exit 0 (and the folders exist); rows in error → 1; all good → 0."""
    assert process_inbox(tmp_path, FAST, FakeRun()).exit_code == ExitCode.OK
    assert listing(tmp_path) == ["done", "failed", "reports"]
    drop(tmp_path, "a.csv", "good")
    drop(tmp_path, "b.csv", "bad")
    assert process_inbox(tmp_path, FAST, FakeRun()).exit_code == ExitCode.ROWS_IN_ERROR
    drop(tmp_path, "c.csv", "good")
    assert process_inbox(tmp_path, FAST, FakeRun()).exit_code == ExitCode.OK


def test_redropped_identical_file_goes_to_done_without_overwriting(tmp_path: Path) -> None:
    """The same content dropped again is flagged duplicate, goes to done/, and both archived
    copies are kept under distinct names."""
    run = FakeRun()
    drop(tmp_path, "payments.csv", "good")
    first = process_inbox(tmp_path, FAST, run)
    drop(tmp_path, "payments.csv", "good")
    second = process_inbox(tmp_path, FAST, run)
    assert not first.files[0].duplicate
    assert second.files[0].duplicate
    assert second.exit_code == ExitCode.OK
    done = listing(tmp_path / "done")
    assert len(done) == 2
    assert all(n.endswith("--payments.csv") for n in done)
    assert all((tmp_path / "done" / n).read_text() == "good" for n in done)
    report = second.files[0].report_dir
    assert report is not None
    assert json.loads((report / "report.json").read_text()) == {"duplicate": True}


def test_a_name_near_the_limit_is_archived_shortened(tmp_path: Path) -> None:
    """A legal name too long for the timestamp in front is shortened (its extension kept),
    so the file and its sidecar move instead of staying to run again every night."""
    name = "payments-" + "ö" * 115 + ".csv"  # 240 bytes
    drop(tmp_path, name, "good")
    drop(tmp_path, name + ".ok", "")
    summary = process_inbox(tmp_path, FAST, FakeRun())
    [outcome] = summary.files
    assert outcome.error is None and summary.exit_code == ExitCode.OK
    done = listing(tmp_path / "done")
    assert len(done) == 2 and all(len(n.encode()) <= 255 and STAMPED.match(n) for n in done)
    assert sorted(n.rsplit(".", 1)[1] for n in done) == ["csv", "ok"]
    assert outcome.moved_to == f"done/{[n for n in done if n.endswith('~.csv')][0]}"
    assert listing(tmp_path) == ["done", "failed", "reports"]


def test_archive_name_never_reuses_a_name(tmp_path: Path) -> None:
    """A taken timestamped name (for the file or its sidecar) gets a counter instead."""
    folder = LocalFolder(tmp_path)
    folder.prepare()
    when = datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC)
    assert archive_name(folder, "done", "p.csv", [], when) == "20261122T010203Z--"
    drop(tmp_path / "done", "20261122T010203Z--p.csv")
    assert archive_name(folder, "done", "p.csv", [], when) == "20261122T010203Z-2--"
    drop(tmp_path / "done", "20261122T010203Z-2--p.csv.done")
    assert archive_name(folder, "done", "p.csv", ["p.csv.done"], when) == "20261122T010203Z-3--"
    with pytest.raises(FileExistsError):
        folder.move("missing-does-not-matter", "done", "20261122T010203Z--p.csv")


def test_one_file_error_does_not_stop_the_others(tmp_path: Path) -> None:
    """A file that cannot be read stays in place (it was never processed), with its error in
    the summary and no report folder left behind; the next file still runs; exit 3 until
    it can be read, and then it is processed."""
    drop(tmp_path, "a.csv", "boom", mtime=OLD - 10)
    drop(tmp_path, "b.csv", "good", mtime=OLD)
    with capture_logs() as logs:
        summary = process_inbox(tmp_path, FAST, FakeRun())
    a, b = summary.files
    assert a.error is not None and "Permission denied" in a.error and "left in place" in a.error
    assert a.moved_to is None and a.report_dir is None and (tmp_path / "a.csv").exists()
    assert b.error is None and b.moved_to is not None and b.moved_to.startswith("done/")
    assert listing(tmp_path / "reports") == [b.run_id]
    assert summary.exit_code == ExitCode.CANNOT_RUN
    [line] = [e for e in logs if e["event"] == "inbox.summary"]
    assert line["errors"] == {"a.csv": a.error}
    assert process_inbox(tmp_path, FAST, FakeRun()).exit_code == ExitCode.CANNOT_RUN
    drop(tmp_path, "a.csv", "good-now", mtime=OLD)
    again = process_inbox(tmp_path, FAST, FakeRun())
    assert again.exit_code == ExitCode.OK and again.files[0].moved_to.startswith("done/")


def test_a_report_folder_that_cannot_be_made_stops_the_drain(tmp_path: Path) -> None:
    """reports/ cannot be written: no file can be reported, so none is run or moved."""
    drop(tmp_path, "a.csv", "good")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    folder = LocalFolder(tmp_path)
    folder.reports = tmp_path / "blocker" / "reports"  # cannot be made, even by root
    folder.prepare = lambda: None  # type: ignore[method-assign]
    run = FakeRun()
    summary = drain(folder, FAST, run)
    assert run.calls == [] and summary.stopped and "report folder" in summary.stopped
    assert summary.exit_code == ExitCode.CANNOT_RUN and (tmp_path / "a.csv").exists()


def test_run_level_error_stops_and_leaves_files_in_place(tmp_path: Path) -> None:
    """When the run itself cannot go on (API login refused), the file and the rest stay in the
    inbox for the next run and the exit code is 3."""
    drop(tmp_path, "a.csv", mtime=OLD - 10)
    drop(tmp_path, "b.csv", mtime=OLD)
    calls: list[str] = []

    def refuse(path: Path, report_dir: Path) -> InboxFileResult:
        calls.append(path.name)
        raise ApiError("login refused: 401")

    summary = process_inbox(tmp_path, FAST, refuse)
    assert calls == ["a.csv"]
    assert listing(tmp_path) == ["a.csv", "b.csv", "done", "failed", "reports"]
    assert summary.stopped is not None and "login refused" in summary.stopped
    assert listing(tmp_path / "reports") == []  # no empty report folder left behind
    assert summary.exit_code == ExitCode.CANNOT_RUN


def test_a_signal_after_a_file_is_posted_archives_it_then_stops(tmp_path: Path) -> None:
    """A signal that arrives once every row of a file is posted: that file is archived as
    usual, the drain stops before the next one (exit 3), which stays for the next run."""
    drop(tmp_path, "a.csv", mtime=OLD - 10)
    drop(tmp_path, "b.csv", mtime=OLD)

    def posted_then_signalled(path: Path, report_dir: Path) -> InboxFileResult:
        return InboxFileResult(ExitCode.OK, report_dir.name, {"completed": 3},
                               stop_after="stopped by a signal")

    summary = process_inbox(tmp_path, FAST, posted_then_signalled)
    assert [f.moved_to.split("--")[-1] for f in summary.files if f.moved_to] == ["a.csv"]
    assert listing(tmp_path)[:1] == ["b.csv"] and summary.waiting == ["b.csv"]
    assert summary.exit_code == ExitCode.CANNOT_RUN and "after it was archived" in summary.stopped


def test_an_interrupt_outside_the_posting_leaves_the_files(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM while a file is read or reported (outside the posting, where it
    lands as KeyboardInterrupt): the drain ends with its summary, the files stay, exit 3."""
    drop(tmp_path, "a.csv", mtime=OLD - 10)
    drop(tmp_path, "b.csv", mtime=OLD)

    def interrupted(path: Path, report_dir: Path) -> InboxFileResult:
        raise KeyboardInterrupt

    summary = process_inbox(tmp_path, FAST, interrupted)
    assert listing(tmp_path)[:2] == ["a.csv", "b.csv"]
    assert summary.exit_code == ExitCode.CANNOT_RUN and "interrupted" in summary.stopped


def test_a_stop_turned_into_another_error_ends_the_drain_at_that_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-52: after a stop, the RuntimeError Python wraps it in (a class made while
    pandera is imported) is the stop, not a file error after which the next file starts."""
    from importer import errors

    monkeypatch.setattr(errors, "_interrupt_seen", False)  # put back after the test
    drop(tmp_path, "a.csv", mtime=OLD - 10)
    drop(tmp_path, "b.csv", mtime=OLD)
    calls: list[str] = []

    def process(path: Path, report_dir: Path) -> InboxFileResult:
        calls.append(path.name)
        errors.stop_if_interrupted()
        errors.note_interrupt()
        raise RuntimeError("Error calling __set_name__ on 'Field' instance 'type'")

    summary = process_inbox(tmp_path, FAST, process)
    assert calls == ["a.csv"]
    assert summary.stopped.startswith("a.csv: interrupted")
    assert listing(tmp_path)[:2] == ["a.csv", "b.csv"]
    assert summary.exit_code == ExitCode.CANNOT_RUN


def test_summary_log_line(tmp_path: Path) -> None:
    """One inbox.summary event per drain carries files, rows per status and duration."""
    drop(tmp_path, "a.csv", "good")
    drop(tmp_path, "b.csv", "bad")
    with capture_logs() as logs:
        process_inbox(tmp_path, FAST, FakeRun())
    [line] = [e for e in logs if e["event"] == "inbox.summary"]
    assert line["files"] == 2
    assert line["done"] == 1 and line["failed"] == 1
    assert line["rows"] == {"completed": 4, "error": 2}
    assert line["exit_code"] == 1
    assert line["duration"] >= 0


def test_second_process_is_refused_at_once(tmp_path: Path) -> None:
    """While another process holds the folder's lock, a drain raises RunLocked naming its pid
    and touches no file."""
    drop(tmp_path, "a.csv")
    run = FakeRun()
    with holder(tmp_path / ".amili-import.lock") as proc, \
            pytest.raises(RunLocked, match=f"pid {proc.pid}"):
        process_inbox(tmp_path, FAST, run)
    assert run.calls == []
    assert (tmp_path / "a.csv").exists()


def test_stale_lock_does_not_block_a_drain(tmp_path: Path) -> None:
    """After the holder is killed with SIGKILL the next drain runs normally."""
    drop(tmp_path, "a.csv", "good")
    with holder(tmp_path / ".amili-import.lock") as proc:
        proc.kill()
        proc.wait()
    summary = process_inbox(tmp_path, FAST, FakeRun())
    assert summary.exit_code == ExitCode.OK
    assert len(summary.files) == 1
    assert (tmp_path / ".amili-import.lock").exists()  # the lock file is never deleted


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    """A folder that does not exist (an unmounted share) fails with one line, exit 3."""
    from importer.errors import ImporterError

    with pytest.raises(ImporterError, match="does not exist") as info:
        process_inbox(tmp_path / "nope", FAST, FakeRun())
    assert info.value.exit_code == ExitCode.CANNOT_RUN


@dataclass(frozen=True)
class RunOpts:
    """Stands in for pipeline.RunOptions (the fields inbox_main sets)."""

    kind: str | None = None
    report_dir: Path | None = None
    run_id: str | None = None
    quiet: bool = False


def test_inbox_main_wires_a_local_folder(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """inbox_main runs each file with run options naming its report folder and run id, prints
    a summary on stderr and the report folders on stdout, and returns the worst exit code."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    drop(inbox, "a.csv", "good", mtime=OLD - 1)
    drop(inbox, "b.csv", "bad")
    seen: list[RunOpts] = []
    run = FakeRun()

    def process_file(path: Path, report_dir: Path, config: Config,
                     options: RunOpts) -> InboxFileResult:
        seen.append(options)
        return run(path, report_dir)

    config = Config(state_dir=tmp_path / "state", log_format="json")
    code = inbox_main(str(inbox), config, InboxOptions(settle=0.05, run=RunOpts(kind="payments")),
                      process_file)
    assert code == ExitCode.ROWS_IN_ERROR
    assert [o.kind for o in seen] == ["payments", "payments"]
    assert all(o.quiet and o.report_dir is not None and o.run_id == o.report_dir.name
               for o in seen)
    out, err = capsys.readouterr()
    assert out.split() == [str(o.report_dir) for o in seen]
    assert "a.csv: completed 3 -> done/" in err
    assert "b.csv: completed 1, error 2 -> failed/" in err
    assert "2 file(s), completed 4, error 2, 0 waiting; exit 1" in err
    assert '"event": "inbox.summary"' in err


def test_rejected_file_raised_goes_to_failed(tmp_path: Path) -> None:
    """A FileRejected raised by the run is a per-file outcome: failed/, exit 3, drain goes on."""
    from importer.errors import FileRejected

    drop(tmp_path, "a.csv", mtime=OLD - 10)
    drop(tmp_path, "b.csv", "good", mtime=OLD)
    run = FakeRun()

    def reject_first(path: Path, report_dir: Path) -> InboxFileResult:
        if path.name == "a.csv":
            raise FileRejected("a.csv", "not CSV or XLSX")
        return run(path, report_dir)

    summary = process_inbox(tmp_path, FAST, reject_first)
    a, b = summary.files
    assert a.error == "a.csv: not CSV or XLSX" and a.moved_to is not None
    assert a.moved_to.startswith("failed/") and b.moved_to is not None
    assert b.moved_to.startswith("done/")
    assert summary.exit_code == ExitCode.CANNOT_RUN


def test_file_that_cannot_be_moved_is_an_error(tmp_path: Path) -> None:
    """A file that vanished before it could be archived is reported with exit 3, not as done."""
    drop(tmp_path, "a.csv", "good")
    run = FakeRun()

    def vanish(path: Path, report_dir: Path) -> InboxFileResult:
        result = run(path, report_dir)
        (tmp_path / path.name).unlink()  # the file in the folder (the run reads a copy)
        return result

    summary = process_inbox(tmp_path, FAST, vanish)
    [a] = summary.files
    assert a.moved_to is None
    assert a.error is not None and a.error.startswith("cannot move to done/: No such file")
    assert summary.exit_code == ExitCode.CANNOT_RUN


def test_file_changed_while_processed_stays_in_place(tmp_path: Path) -> None:
    """A file rewritten while its run was going on is not archived: what is in it now was
    never read, and the next run takes it (the journal skips rows already done)."""
    drop(tmp_path, "a.csv", "good")
    run = FakeRun()

    def rewrite(path: Path, report_dir: Path) -> InboxFileResult:
        result = run(path, report_dir)
        # The file in the folder: the run reads a copy, taken as listed.
        (tmp_path / path.name).write_text("good, and three new rows", encoding="utf-8")
        return result

    summary = process_inbox(tmp_path, FAST, rewrite)
    [a] = summary.files
    assert a.moved_to is None and (tmp_path / "a.csv").exists()
    assert a.error is not None and "changed while it was being processed" in a.error
    assert summary.exit_code == ExitCode.ROWS_IN_ERROR
    assert list((tmp_path / "done").iterdir()) == []


def test_a_legal_name_of_255_bytes_is_still_run_and_archived(tmp_path: Path) -> None:
    """The copy of a file with a 255-byte name (the limit) is written under a short name
    first, so the file runs and is archived as before the copy existed. (helper-44)"""
    name = "p" * 251 + ".csv"
    drop(tmp_path, name, "good")
    run = FakeRun()
    summary = process_inbox(tmp_path, FAST, run)
    [outcome] = summary.files
    assert outcome.error is None and summary.exit_code == ExitCode.OK
    assert len(run.calls) == 1 and len(listing(tmp_path / "done")) == 1


def test_the_copy_read_is_this_users_own_and_outside_the_drop_folder(tmp_path: Path) -> None:
    """Whoever uploads can write into the drop folder, so the copies are not made there: a
    symlink planted where a staging folder could be (pointing at the state dir) is left
    alone, and nothing it points to is touched. The copy is readable by this user only,
    whatever the umask, and it is gone after the drain. (helper-44)"""
    import os
    import stat

    inbox, state, work = tmp_path / "drop", tmp_path / "state", tmp_path / "work"
    inbox.mkdir()
    state.mkdir()
    (state / "journal.sqlite3").write_text("the exactly-once record", encoding="utf-8")
    (inbox / ".amili-import.staging").symlink_to(state)
    path = drop(inbox, "payments.csv", "good")
    path.chmod(0o600)
    seen: list[tuple[Path, int]] = []
    run = FakeRun()

    def spy(copy: Path, report_dir: Path) -> InboxFileResult:
        seen.append((copy.parent, stat.S_IMODE(copy.stat().st_mode)))
        return run(copy, report_dir)

    old = os.umask(0o022)
    try:
        summary = process_inbox(inbox, replace(FAST, work_dir=work), spy)
    finally:
        os.umask(old)
    assert summary.exit_code == ExitCode.OK
    assert seen == [(work / "staging", 0o600)]
    assert (state / "journal.sqlite3").read_text(encoding="utf-8") == "the exactly-once record"
    assert not (work / "staging").exists()
    # Without a work folder (as here in the other tests): a private temporary one.
    drop(inbox, "payments-2.csv", "good")
    summary = process_inbox(inbox, FAST, spy)
    assert seen[-1][0] != inbox and not seen[-1][0].exists()


def test_no_staging_folder_outlives_its_drain(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """drain() removes the staging folder prepare() made, also the private temporary one
    (it holds copies of payment files), however the drain is called. (helper-45)"""
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    inbox = tmp_path / "drop"
    inbox.mkdir()
    drop(inbox, "payments.csv", "good")
    assert drain(LocalFolder(inbox), FAST, FakeRun()).exit_code == ExitCode.OK
    assert list(temp.iterdir()) == []


def test_a_work_folder_is_used_by_one_drain_at_a_time(tmp_path: Path) -> None:
    """Two drop folders drained at once with the same work folder: the second drain is
    refused (the work folder's lock) instead of emptying the staging folder the first is
    reading its copy from. (helper-45)"""
    from importer.errors import RunLocked

    work, a, b = tmp_path / "work", tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    drop(a, "pay-a.csv", "good")
    drop(b, "pay-b.csv", "good")
    options = replace(FAST, work_dir=work)
    copied, go = threading.Event(), threading.Event()
    seen: list[bool] = []
    run = FakeRun()

    def slow(copy: Path, report_dir: Path) -> InboxFileResult:
        copied.set()
        go.wait(10)
        seen.append(copy.exists())
        return run(copy, report_dir)

    first = threading.Thread(target=process_inbox, args=(a, options, slow))
    first.start()
    try:
        assert copied.wait(10)
        with pytest.raises(RunLocked, match="the work folder"):
            process_inbox(b, options, FakeRun())
    finally:
        go.set()
        first.join(10)
    assert seen == [True]
    assert (b / "pay-b.csv").exists()  # left for the next night

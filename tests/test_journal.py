"""The SQLite write-ahead journal, on a real file in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from importer import journal as journal_module
from importer.journal import (
    COMPLETED,
    ERROR,
    FAILED,
    IN_FLIGHT,
    SKIPPED,
    UNKNOWN,
    WARNING,
    Journal,
    JournalError,
    RowRef,
    Settlement,
    process_start,
)

PAYLOAD = {"creditor": "a" * 24, "case": "b" * 24, "currency": "SEK", "amount": 100.5,
           "bank_transaction_date": "Fri, 04 Jul 2025 16:20:41 GMT", "origin": "creditor_system"}


def sql(path: Path, statement: str) -> None:
    """Run one statement on a SQLite file, as another program would."""
    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


def ref(row: int = 2, sha: str = "f" * 64, name: str = "payments.csv") -> RowRef:
    return RowRef(file_name=name, file_sha256=sha, sheet=None, row=row)


@dataclass
class Info:
    path: Path
    name: str
    sha256: str
    size: int = 10
    kinds: list[str] = field(default_factory=lambda: ["payments"])
    rows: int = 3
    rejected: str | None = None


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state")
    j.start_run("r1", "run", argv=["run", "payments.csv"], report_dir=tmp_path / "rep")
    yield j
    j.close()


def test_file_is_wal_with_schema_version(tmp_path: Path) -> None:
    """The journal lives at <state_dir>/journal.sqlite3 in WAL mode with a schema version."""
    Journal(tmp_path / "s").close()
    db = sqlite3.connect(tmp_path / "s" / "journal.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "files", "rows"} <= tables
    db.close()
    Journal(tmp_path / "s").close()  # opening again keeps one version row
    db = sqlite3.connect(tmp_path / "s" / "journal.sqlite3")
    assert db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal written by a newer version is refused with a clear message, not corrupted."""
    Journal(tmp_path).close()
    sql(tmp_path / "journal.sqlite3", "INSERT INTO schema_version VALUES (99)")
    with pytest.raises(JournalError, match="newer amili-import"):
        Journal(tmp_path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a JournalError naming the path."""
    (tmp_path / "journal.sqlite3").write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(JournalError, match="journal.sqlite3"):
        Journal(tmp_path)


def test_begin_is_committed_before_finish(journal: Journal) -> None:
    """begin() commits in_flight so a second connection sees it before finish()."""
    rid = journal.begin("r1", ref(), "payments", "fp1", "case:b", PAYLOAD)
    other = sqlite3.connect(journal.path)
    assert other.execute("SELECT state, posts FROM rows WHERE id=?", (rid,)).fetchone() == (
        IN_FLIGHT, 1)
    journal.finish(rid, Settlement(state=COMPLETED, http_status=201, attempts=2,
                                   amili_id="c" * 24, settled_amount="100.5"))
    assert other.execute("SELECT state, amili_id, attempts FROM rows WHERE id=?",
                         (rid,)).fetchone() == (COMPLETED, "c" * 24, 2)
    other.close()
    rec = journal.row(rid)
    assert rec is not None and rec.payload == PAYLOAD and rec.done
    assert rec.ref.describe() == "file payments.csv row 2"


def test_rows_whose_status_was_never_read_are_found(journal: Journal) -> None:
    """A stored row left status_unknown is found by its run (the inbox then runs re-dropped
    content again) and by every later run (which reads its status again); once read, or
    without an Amili id, or of the run asking, it is not."""
    unread = journal.begin("r1", ref(2), "payments", "fp-a", "case:b", PAYLOAD)
    journal.finish(unread, Settlement(state=WARNING, reason="status_unknown", amili_id="c" * 24))
    no_id = journal.begin("r1", ref(3), "payments", "fp-b", "case:b", PAYLOAD)
    journal.finish(no_id, Settlement(state=WARNING, reason="status_unknown"))
    assert journal.has_status_unknown("r1")
    assert [r.id for r in journal.status_unread(exclude_run="r2")] == [unread]
    assert journal.status_unread(exclude_run="r1") == []
    journal.finish(unread, Settlement(state=COMPLETED, amili_id="c" * 24))
    assert not journal.has_status_unknown("r1") and journal.status_unread("r2") == []


def test_known_ids_compare_case_insensitively(journal: Journal) -> None:
    """An id the API writes in upper case in a list is the one its 201 gave in lower case
    (ObjectIds are hex): the journal knows it, so a read-back never claims it again."""
    rid = journal.begin("r1", ref(2), "payments", "fp-a", "case:b", PAYLOAD)
    journal.finish(rid, Settlement(state=COMPLETED, amili_id="68b82422d6fd1d378f18d2e9"))
    assert journal.known_ids(["68B82422D6FD1D378F18D2E9", "ffffffffffffffffffffffff"]) == {
        "68b82422d6fd1d378f18d2e9"}
    assert journal.known_ids(["68b82422d6fd1d378f18d2e9"]) == {"68b82422d6fd1d378f18d2e9"}


def test_rows_whose_status_was_never_read_are_found_among_many(journal: Journal) -> None:
    """Among many rows, each unread row is found once, in the order recorded, through the
    partial index that holds only them (the query names it: were it unusable, SQLite would
    refuse the query rather than scan every row ever posted)."""
    unread = []
    for i in range(1300):
        rid = journal.begin("r1", ref(i + 2), "payments", f"fp{i:04}", "case:b", PAYLOAD)
        status_unknown = i in (7, 650, 1299)
        journal.finish(rid, Settlement(state=WARNING if status_unknown else COMPLETED,
                                       reason="status_unknown" if status_unknown else None,
                                       amili_id=f"{i:024x}"))
        if status_unknown:
            unread.append(rid)
    assert [r.id for r in journal.status_unread(exclude_run="r9")] == unread


def test_in_flight_survives_sigkill(tmp_path: Path) -> None:
    """A process SIGKILLed right after begin() leaves the row in_flight for the next run."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from importer.journal import Journal, RowRef\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "j.start_run('dead', 'run')\n"
        "j.begin('dead', RowRef('p.csv', 'f'*64, None, 5), 'payments', 'fpk', 'case:x', {})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == -9
    with Journal(tmp_path) as j:
        j.start_run("next", "run")
        pending = j.pending(exclude_run="next")
        assert [(p.run_id, p.state, p.ref.row) for p in pending] == [("dead", IN_FLIGHT, 5)]


def test_prior_and_latest(journal: Journal) -> None:
    """prior() holds done and pending rows of a fingerprint; rejected and failed rows do not."""
    a = journal.begin("r1", ref(2), "payments", "fp", "case:b", PAYLOAD)
    journal.finish(a, Settlement(state=ERROR, http_status=422, message="bad"))  # rejected
    b = journal.begin("r1", ref(3), "payments", "fp", "case:b", PAYLOAD)
    journal.finish(b, Settlement(state=FAILED, retryable=True, reason="retry_exhausted"))
    assert journal.prior("fp") == []
    c = journal.begin("r1", ref(4), "payments", "fp", "case:b", PAYLOAD)
    assert [r.id for r in journal.prior("fp")] == [c]
    assert journal.latest("fp") is None  # in flight is not done
    journal.finish(c, Settlement(state=ERROR, amili_id="d" * 24, message="api error"))
    d = journal.begin("r1", ref(5), "payments", "fp", "case:b", PAYLOAD)
    journal.finish(d, Settlement(state=WARNING, amili_id="e" * 24))
    latest = journal.latest("fp")
    assert latest is not None and latest.id == d
    assert [r.id for r in journal.prior("fp")] == [c, d]


def test_pending_skips_live_runs_and_own_run(tmp_path: Path) -> None:
    """Rows in flight of a run whose process is alive are not offered for reconciliation."""
    with Journal(tmp_path) as j:
        j.start_run("old", "run")
        j.begin("old", ref(2), "payments", "fp", "case:b", PAYLOAD)
        j.start_run("cur", "run")
        j.begin("cur", ref(3), "payments", "fp2", "case:b", PAYLOAD)
        # A run owned by a live process (our parent) must be left alone.
        j.start_run("live", "run")
        with j.transaction() as db:
            db.execute("UPDATE runs SET pid=?, pid_start=? WHERE run_id='live'",
                       (os.getppid(), process_start(os.getppid())))
        j.begin("live", ref(4), "payments", "fp3", "case:b", PAYLOAD)
        # The same pid, but a process that started at another time: the pid was reused.
        j.start_run("reused", "run")
        with j.transaction() as db:
            db.execute("UPDATE runs SET pid=?, pid_start='1' WHERE run_id='reused'",
                       (os.getppid(),))
        j.begin("reused", ref(5), "payments", "fp5", "case:b", PAYLOAD)
        u = j.begin("old", ref(6), "payments", "fp4", "case:b", PAYLOAD)
        j.finish(u, Settlement(state=UNKNOWN, retryable=True, reason="outcome_unknown"))
        assert [(r.run_id, r.ref.row) for r in j.pending(exclude_run="cur")] == [
            ("old", 2), ("reused", 5), ("old", 6)]


def test_runs_files_and_file_seen(journal: Journal, tmp_path: Path) -> None:
    """Runs are listed newest first with file counts; file_seen names only finished runs."""
    journal.record_file("r1", Info(tmp_path / "p.csv", "p.csv", "1" * 64))
    journal.record_file("r1", Info(tmp_path / "p.csv", "p.csv", "1" * 64, rows=7))  # update
    assert journal.file_seen("1" * 64) is None  # r1 not finished yet
    journal.finish_run("r1", 0, {"completed": 7})
    journal.start_run("r2", "validate")
    journal.record_file("r2", Info(tmp_path / "q.csv", "q.csv", "2" * 64))
    journal.finish_run("r2", 0, {})
    seen = journal.file_seen("1" * 64, exclude_run="r3")
    assert seen is not None and seen.run_id == "r1" and seen.totals == {"completed": 7}
    assert journal.file_seen("2" * 64) is None  # validation runs post nothing
    assert journal.file_seen("1" * 64, exclude_run="r1") is None
    assert [r.run_id for r in journal.runs(10)] == ["r2", "r1"]
    assert [f.rows for f in journal.files("r1")] == [7]
    r1 = journal.run("r1")
    assert r1 is not None and r1.files == 1 and r1.argv == ["run", "payments.csv"]
    assert r1.exit_code == 0 and r1.pid == os.getpid()
    assert journal.run("nope") is None


def test_rows_by_state_record_repost_and_known_ids(journal: Journal) -> None:
    """rows() filters by state; record() stores unposted rows; repost() goes back in flight."""
    a = journal.begin("r1", ref(2), "payments", "fa", "case:b", PAYLOAD)
    journal.finish(a, Settlement(state=COMPLETED, amili_id="1" * 24))
    s = journal.record("r1", ref(3), "payments", "fa", "case:b", PAYLOAD,
                       Settlement(state=SKIPPED, ref_row=a, message="already posted"))
    b = journal.begin("r1", ref(4), "payments", "fb", "case:c", PAYLOAD)
    journal.repost(b)
    rec = journal.row(b)
    assert rec is not None and rec.posts == 2 and rec.state == IN_FLIGHT
    assert [r.id for r in journal.rows("r1")] == [a, s, b]
    assert [r.id for r in journal.rows("r1", [SKIPPED, IN_FLIGHT])] == [s, b]
    assert journal.row(s).ref_row == a  # type: ignore[union-attr]
    assert journal.known_ids(["1" * 24, "2" * 24]) == {"1" * 24}
    assert journal.counts("r1") == {COMPLETED: 1, SKIPPED: 1, IN_FLIGHT: 1}
    with pytest.raises(ValueError):
        journal.record("r1", ref(9), "payments", "fz", "case:z", {}, Settlement(IN_FLIGHT))


def test_threads_share_one_journal(journal: Journal) -> None:
    """Many posting threads can begin/finish at once without losing a row."""

    def work(base: int) -> None:
        for i in range(50):
            rid = journal.begin("r1", ref(base + i), "payments", f"fp{base + i}", "case:x", {})
            journal.finish(rid, Settlement(state=COMPLETED, amili_id=f"{base + i:024d}"))

    threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.counts("r1") == {COMPLETED: 400}


def test_transaction_rolls_back_on_error(journal: Journal) -> None:
    """A failure inside transaction() leaves nothing half-written."""
    with pytest.raises(RuntimeError), journal.transaction():
        journal.begin("r1", ref(2), "payments", "fx", "case:b", PAYLOAD)
        raise RuntimeError("boom")
    assert journal.rows("r1") == []


def test_claim_commits_in_flight_only_when_nothing_prior(journal: Journal) -> None:
    """claim() commits in_flight when no row of the fingerprint is done or pending, and
    writes nothing (None) when prior() would not be empty."""
    other = sqlite3.connect(journal.path)
    first = journal.claim("r1", ref(2), "payments", "fpc", "case:b", PAYLOAD)
    assert first is not None
    assert other.execute("SELECT state, posts, payload FROM rows WHERE id=?",
                         (first,)).fetchone()[:2] == (IN_FLIGHT, 1)
    assert journal.claim("r1", ref(3), "payments", "fpc", "case:b", PAYLOAD) is None
    for state, amili_id, blocks in ((UNKNOWN, None, True), (COMPLETED, "c" * 24, True),
                                    (WARNING, "c" * 24, True), (ERROR, "c" * 24, True),
                                    (ERROR, None, False), (FAILED, None, False)):
        journal.finish(first, Settlement(state=state, amili_id=amili_id))
        claimed = journal.claim("r1", ref(4), "payments", "fpc", "case:b", PAYLOAD)
        assert (claimed is None) is blocks, (state, amili_id)
        if claimed is not None:  # leave only the first row behind for the next state
            other.execute("DELETE FROM rows WHERE id=?", (claimed,))
            other.commit()
    rows = other.execute("SELECT id FROM rows WHERE fingerprint='fpc'").fetchall()
    assert rows == [(first,)]
    rec = journal.row(first)
    assert rec is not None and rec.payload == PAYLOAD and rec.ref.row == 2
    other.close()


def test_claim_is_atomic_across_processes(tmp_path: Path) -> None:
    """Processes claiming the same fingerprints at once: each fingerprint is claimed once."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from importer.journal import Journal, RowRef\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "run = 'p' + sys.argv[2]\n"
        "j.start_run(run, 'run')\n"
        "for n in range(150):\n"
        "    j.claim(run, RowRef('p.csv', 'f'*64, None, n), 'payments', f'fp{n}', 'c', {})\n"
    )
    with Journal(tmp_path):  # the schema exists before the racers start
        pass
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(i)])
             for i in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    counts = db.execute("SELECT fingerprint, count(*) FROM rows GROUP BY fingerprint").fetchall()
    db.close()
    assert len(counts) == 150 and {c for _, c in counts} == {1}


def test_finish_outside_a_transaction_is_committed(journal: Journal) -> None:
    """finish() alone is committed when it returns; inside transaction() it rolls back with it."""
    rid = journal.begin("r1", ref(), "payments", "fpf", "case:b", PAYLOAD)
    journal.finish(rid, Settlement(state=COMPLETED, amili_id="d" * 24))
    other = sqlite3.connect(journal.path)
    assert other.execute("SELECT state FROM rows WHERE id=?", (rid,)).fetchone() == (COMPLETED,)
    with pytest.raises(RuntimeError), journal.transaction():
        journal.finish(rid, Settlement(state=FAILED))
        raise RuntimeError("boom")
    assert other.execute("SELECT state FROM rows WHERE id=?", (rid,)).fetchone() == (COMPLETED,)
    other.close()


def test_read_only_journal_reads_and_never_writes(tmp_path: Path) -> None:
    """runs/show open the journal read-only: it reads what is there, writes nothing (a
    read-only state directory or snapshot works), and does not upgrade an older journal."""
    with Journal(tmp_path) as journal:
        journal.start_run("r1", "run", ["amili-import", "run", "p.csv"])
    with Journal(tmp_path, read_only=True) as reader:
        [run] = reader.runs()
        assert run.run_id == "r1" and run.finished is None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("DELETE FROM runs")
    missing = tmp_path / "elsewhere"
    with pytest.raises(JournalError, match="cannot read the journal"):
        Journal(missing, read_only=True)
    assert not missing.exists()


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A journal.sqlite3 that is some other program's database is not taken over."""
    sql(tmp_path / "journal.sqlite3", "CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(JournalError, match="is not an amili-import journal.*invoices"):
        Journal(tmp_path)
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert tables == {"invoices"} and mode == "delete"  # not touched at all


def test_a_reused_pid_is_not_a_running_run(tmp_path: Path) -> None:
    """A run's pid alive again in another process (after a reboot), or a run of another
    machine: the run is not "still running"."""
    with Journal(tmp_path) as journal:
        journal.start_run("old", "run")
        journal._db.execute("UPDATE runs SET pid = 1, pid_start = 'long ago' WHERE run_id = 'old'")
        journal.start_run("there", "run")
        journal._db.execute("UPDATE runs SET pid = 1, host = 'another-host' WHERE run_id = 'there'")
        journal.start_run("mine", "run")
        journal._db.execute("UPDATE runs SET pid = 1, pid_start = ? WHERE run_id = 'mine'",
                            (process_start(1),))
        runs = {r.run_id: r for r in journal.runs()}
    assert not runs["old"].alive() and not runs["there"].alive()
    assert runs["mine"].alive() == (process_start(1) is not None)


def _checkpointer(journal: Journal) -> threading.Thread:
    """The journal's checkpoint thread (the last argument its finaliser stops)."""
    thread: threading.Thread = journal._stop_checkpoints.peek()[2][1]  # type: ignore[attr-defined]
    return thread


def _write_rows(journal: Journal, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        rid = journal.claim("r1", ref(row=i + 2), "payments", f"fp{i}", "case:b", PAYLOAD)
        assert rid is not None
        journal.finish(rid, Settlement(COMPLETED, http_status=201, attempts=1,
                                       amili_id=f"{i:024x}"))


def test_checkpoints_run_in_the_background(journal: Journal) -> None:
    """SQLite's automatic checkpoint (inside a commit, under the lock the posting threads
    share) is only a safety net far above a run's WAL; the background thread copies the WAL
    into the database file while the journal stays open, so a reader of the file alone (the
    WAL ignored) sees every row."""
    pages = journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert pages == journal_module.AUTOCHECKPOINT_PAGES
    _write_rows(journal, 50)
    deadline = time.monotonic() + 10
    file_only = f"{journal.path.resolve().as_uri()}?immutable=1"
    while True:
        db = sqlite3.connect(file_only, uri=True)
        try:
            seen = db.execute("SELECT count(*) FROM rows").fetchone()[0]
        except sqlite3.DatabaseError:  # not copied yet (no table), or read mid-copy
            seen = None
        finally:
            db.close()
        if seen == 50 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == 50


def test_checkpoints_keep_the_wal_small(tmp_path: Path) -> None:
    """Sixteen threads committing a row every 30 ms for two seconds (posting threads at a
    20-30 ms round trip): each round copies what the WAL holds, then the last frames under the
    lock, so commits start the WAL over and it stays at a few MB, well below SQLite's own
    checkpoint (the safety net); closing stops the thread and removes the WAL."""
    j = Journal(tmp_path / "state")
    j.start_run("r1", "run")
    wal = Path(f"{j.path}-wal")
    stop = threading.Event()
    counts = [0] * 16

    def writer(number: int) -> None:
        while not stop.is_set():
            _write_rows(j, 1, start=number * 10**6 + counts[number])
            counts[number] += 1
            time.sleep(0.03)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    largest = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    checkpointer = _checkpointer(j)
    assert checkpointer.is_alive()
    j.close()
    assert not checkpointer.is_alive()
    assert not wal.exists()
    assert largest < 24 * 1024 * 1024, largest
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT count(*) FROM rows WHERE state = 'completed'").fetchone()[0] \
        == sum(counts)
    db.close()


def test_close_inside_a_transaction_does_not_hang(journal: Journal) -> None:
    """close() by the thread that holds the journal's lock (inside a transaction) returns: the
    checkpoint thread gives up waiting for the lock when it is told to stop."""
    done = threading.Event()
    failed: list[BaseException] = []

    _write_rows(journal, 20)  # frames in the WAL: the thread's next round wants the lock

    def body() -> None:
        try:
            with journal.transaction():
                time.sleep(3 * journal_module.CHECKPOINT_SECONDS)  # it waits for the lock now
                journal.close()
        except sqlite3.ProgrammingError:
            pass  # the transaction cannot commit on a closed connection
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)
        done.set()

    threading.Thread(target=body, daemon=True).start()
    assert done.wait(10), "close() inside a transaction hung"
    assert not failed


def test_a_journal_dropped_unclosed_stops_its_thread(tmp_path: Path) -> None:
    """The checkpoint thread holds no reference to its journal: one dropped without close()
    is collected, and collecting it stops the thread."""
    import gc
    import weakref

    j = Journal(tmp_path / "state")
    checkpointer = _checkpointer(j)
    gone = weakref.ref(j)
    del j
    gc.collect()
    assert gone() is None
    checkpointer.join(5)
    assert not checkpointer.is_alive()

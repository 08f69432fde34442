"""SQLite write-ahead journal: runs, files, rows and their outcomes.

The journal is what makes "exactly once" possible against an API without idempotency keys:
a row's fingerprint is committed as ``in_flight`` *before* its POST is sent, and its outcome
and Amili ``_id`` are committed after the answer. A process that dies in between leaves the
row ``in_flight``; the next run reads it back from the API before anything is sent again.

Row states:

``in_flight``  the POST may be under way (or the process died while it was)
``completed``, ``warning``, ``error``
               the outcome is known; ``error`` with an ``amili_id`` was stored by Amili with
               status error, ``error`` without one was rejected (422/404) and nothing stored
``unknown``    the answer was lost and the read-back could not tell: maybe stored
``failed``     nothing was stored (retries exhausted, not posted, or read back as absent):
               safe to post again
``skipped``    not posted in this run because an earlier row (``ref_row``) already covers it

One connection serves all posting threads, guarded by a re-entrant lock; SQLite itself
serialises writers of different processes (``BEGIN IMMEDIATE`` + ``busy_timeout``).

Checkpoints (copying the WAL into the database file, with an fsync of each) are not left to
SQLite's automatic checkpoint, which runs inside a commit: there the committing posting thread
would hold the lock through two fsyncs while every other thread waits for it. A background
thread does them instead, on a connection of its own (see :func:`_checkpoints`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importer.errors import ImporterError

if TYPE_CHECKING:
    from importer.read import FileInfo

SCHEMA_VERSION = 1
JOURNAL_NAME = "journal.sqlite3"
CHECKPOINT_SECONDS = 0.25  # how often the background thread checkpoints the WAL
BUSY_WAL_FRAMES = 2000  # a round that found more frames than this starts the next one at once
AUTOCHECKPOINT_PAGES = 8000  # SQLite's own checkpoint, in a commit, only past this (~32 MB)
WAL_SIZE_LIMIT = 32 * 1024 * 1024  # the WAL file is cut back to this when it starts over

IN_FLIGHT = "in_flight"
COMPLETED = "completed"
WARNING = "warning"
ERROR = "error"
UNKNOWN = "unknown"
FAILED = "failed"
SKIPPED = "skipped"
STATES = (IN_FLIGHT, COMPLETED, WARNING, ERROR, UNKNOWN, FAILED, SKIPPED)
# States whose row may exist in Amili without the journal knowing its id.
PENDING_STATES = (IN_FLIGHT, UNKNOWN)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    started     TEXT NOT NULL,
    finished    TEXT,
    argv        TEXT NOT NULL DEFAULT '[]',
    report_dir  TEXT,
    exit_code   INTEGER,
    totals      TEXT,
    retry_of    TEXT,
    pid         INTEGER,
    pid_start   TEXT,
    host        TEXT,
    allow_duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER,
    kinds       TEXT NOT NULL DEFAULT '[]',
    rows        INTEGER NOT NULL DEFAULT 0,
    rejected    TEXT,
    UNIQUE (run_id, path)
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS rows (
    id                     INTEGER PRIMARY KEY,
    run_id                 TEXT NOT NULL REFERENCES runs(run_id),
    file_sha256            TEXT NOT NULL,
    file_name              TEXT NOT NULL,
    sheet                  TEXT,
    row                    INTEGER NOT NULL,
    kind                   TEXT NOT NULL,
    fingerprint            TEXT NOT NULL,
    case_key               TEXT NOT NULL,
    payload                TEXT NOT NULL,
    state                  TEXT NOT NULL,
    retryable              INTEGER NOT NULL DEFAULT 0,
    reason                 TEXT,
    http_status            INTEGER,
    attempts               INTEGER NOT NULL DEFAULT 0,
    posts                  INTEGER NOT NULL DEFAULT 0,
    amili_id               TEXT,
    settled_amount         TEXT,
    case_reference_number  TEXT,
    status_reason_locale   TEXT,
    message                TEXT,
    ref_row                INTEGER REFERENCES rows(id),
    created                TEXT NOT NULL,
    updated                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_fingerprint ON rows(fingerprint);
CREATE INDEX IF NOT EXISTS rows_run_state ON rows(run_id, state);
CREATE INDEX IF NOT EXISTS rows_state ON rows(state);
CREATE INDEX IF NOT EXISTS rows_amili_id ON rows(amili_id);
CREATE INDEX IF NOT EXISTS rows_source ON rows(file_sha256, row);
CREATE INDEX IF NOT EXISTS rows_status_unread ON rows(id)
    WHERE reason = 'status_unknown' AND amili_id IS NOT NULL;
"""


_VERIFIED: set[tuple[int, int]] = set()  # journal files this process found undamaged


def integrity_problems(db: sqlite3.Connection) -> list[str]:
    """What SQLite's integrity check finds wrong (tables and their indexes); [] when none."""
    try:
        found = [str(r[0]) for r in db.execute("PRAGMA integrity_check(5)")]
    except sqlite3.Error as exc:
        return [str(exc)]
    return [] if found == ["ok"] else found


def damaged_message(path: Path, problems: list[str]) -> str:
    """What to do about a damaged journal."""
    return (f"the journal {path} is damaged ({'; '.join(problems)}): restore it from a "
            "backup before anything is posted; never start from an empty state directory, or "
            "every row of a file run again would be posted twice")


def _identity(path: Path) -> tuple[int, int]:
    """The file's identity (device, inode): another file at the same path has another."""
    found = path.stat()
    return found.st_dev, found.st_ino


class JournalError(ImporterError):
    """The journal cannot be opened or written (state directory, permissions, corruption)."""


@dataclass(frozen=True)
class RowRef:
    """Where a row comes from, as the user sees it."""

    file_name: str
    file_sha256: str
    sheet: str | None
    row: int

    def describe(self) -> str:
        """``file X row N`` or ``file X sheet S row N``, for messages."""
        sheet = f" sheet {self.sheet}" if self.sheet else ""
        return f"file {self.file_name}{sheet} row {self.row}"


@dataclass(frozen=True)
class RunRecord:
    """One run as the journal holds it."""

    run_id: str
    mode: str
    started: str
    finished: str | None
    argv: list[str]
    report_dir: str | None
    exit_code: int | None
    totals: dict[str, Any]
    retry_of: str | None
    pid: int | None
    files: int = 0
    allow_duplicates: bool = False
    pid_start: str | None = None  # with pid: tells a reused pid apart
    host: str | None = None

    def alive(self) -> bool:
        """Whether the process of this run is still running (on this machine)."""
        if self.host and self.host != os.uname().nodename:
            return False  # another machine's run (a copied state dir): not running here
        return pid_alive(self.pid, self.pid_start)


@dataclass(frozen=True)
class FileRecord:
    """One input file of one run."""

    run_id: str
    name: str
    path: str
    sha256: str
    size: int | None
    kinds: list[str]
    rows: int
    rejected: str | None


@dataclass(frozen=True)
class RowRecord:
    """One row's journal entry: its source, what was sent, and its fate."""

    id: int
    run_id: str
    ref: RowRef
    kind: str
    fingerprint: str
    case_key: str
    payload: dict[str, Any]
    state: str
    retryable: bool
    reason: str | None
    http_status: int | None
    attempts: int
    posts: int
    amili_id: str | None
    settled_amount: str | None
    case_reference_number: str | None
    status_reason_locale: str | None
    message: str | None
    ref_row: int | None
    created: str
    updated: str

    @property
    def done(self) -> bool:
        """Stored by Amili with a known outcome: must never be posted again."""
        return is_done(self.state, self.amili_id, self.http_status)


def is_done(state: str, amili_id: str | None, http_status: int | None = None) -> bool:
    """Whether a row in this state is known to exist in Amili (posting it again would double it).

    Args:
        state: the journal state.
        amili_id: the record's ``_id`` if known.
        http_status: the POST's last HTTP status.

    Returns:
        True for completed/warning, and for error with an Amili id or a 2xx answer (stored
        with status error; a 2xx whose answer named no record still means stored).
    """
    return state in (COMPLETED, WARNING) or (state == ERROR and (
        amili_id is not None or (http_status is not None and 200 <= http_status < 300)))


@dataclass
class Settlement:
    """What :meth:`Journal.finish` records about a row's outcome."""

    state: str
    retryable: bool = False
    reason: str | None = None
    http_status: int | None = None
    attempts: int = 0
    amili_id: str | None = None
    settled_amount: str | None = None
    case_reference_number: str | None = None
    status_reason_locale: str | None = None
    message: str | None = None
    ref_row: int | None = None


def now() -> str:
    """The current UTC time as stored in the journal (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def process_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``, clock ticks since boot), or None.

    With the pid it tells a process apart from a later one that got the same pid
    (pids are reused quickly, e.g. in a fresh container every night).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int | None, started: str | None = None) -> bool:
    """Whether the process that ran a run is still running on this machine.

    Our own pid counts as dead: a run of ours that is not the current one is over.

    Args:
        pid: the run's process id.
        started: its :func:`process_start`, when known; a different value means the pid
            now belongs to another process.
    """
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        pass
    except OSError:
        return False
    if started is not None:
        now = process_start(pid)
        return now is None or now == started
    return True


def _checkpoints(own: sqlite3.Connection, db: sqlite3.Connection, lock: threading.RLock,
                 halt: threading.Event) -> None:
    """The journal's checkpoint thread (see the module's docstring).

    Every :data:`CHECKPOINT_SECONDS` (at once after a round that found many frames): a
    checkpoint on ``own`` without the lock, which copies what the WAL holds while the posting
    threads go on committing; then one on ``db`` under the lock, which copies the few frames
    committed meanwhile, so that with every frame copied the next commit starts the WAL over.
    Durability does not change: a commit is in the WAL before it returns, checkpointed or not.
    The lock is only waited for a while: a thread holding it may be the one stopping us.
    """
    wait = CHECKPOINT_SECONDS
    try:
        while not halt.wait(wait):
            wait = CHECKPOINT_SECONDS
            try:
                _, frames, _ = own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames <= 0 or not lock.acquire(timeout=CHECKPOINT_SECONDS):
                    continue
                try:
                    if not halt.is_set():
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                finally:
                    lock.release()
                if frames > BUSY_WAL_FRAMES:
                    wait = 0.0
            except sqlite3.Error:
                continue  # busy, or closing: the next round (or the close) checkpoints
    finally:
        own.close()


def _stop_checkpoints(halt: threading.Event, thread: threading.Thread) -> None:
    halt.set()
    if thread is not threading.current_thread():
        thread.join()


class Journal:
    """The SQLite journal in ``<state_dir>/journal.sqlite3``; safe to share between threads.

    Args:
        state_dir: the state directory (created with mode 0700 if missing).
        path: an explicit database file instead (tests, tools).
        read_only: only read (``runs``, ``show``): works on a read-only state directory or
            snapshot, and never creates or upgrades anything.
    """

    def __init__(self, state_dir: Path, path: Path | None = None,
                 read_only: bool = False) -> None:
        self.path = path or Path(state_dir) / JOURNAL_NAME
        self._lock = threading.RLock()
        self._depth = 0
        self._stop_checkpoints: Callable[[], object] = lambda: None
        # The journal file's identity once opened for writing (see _check_file); None: read
        # only, nothing to guard.
        self._identity: tuple[int, int] | None = None
        if read_only:
            self._db = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a claim (check, then
            # insert) can be one IMMEDIATE transaction across processes.
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        try:
            self._setup()
            self._start_checkpoints()
            self._identity = _identity(self.path)
        except JournalError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(
                f"cannot use the journal {self.path}: {exc} (is the state directory writable, "
                "and is this an amili-import journal?)"
            ) from None

    def _open_read_only(self) -> sqlite3.Connection:
        """A read-only connection; ``immutable`` when even WAL's shared memory cannot be made
        (a read-only filesystem: then nobody can be writing to it either)."""
        base = self.path.resolve().as_uri()
        last: sqlite3.Error | None = None
        wal = self.path.with_name(self.path.name + "-wal")
        # immutable ignores the WAL: only safe when there is none holding commits.
        modes = ["mode=ro"] + ([] if wal.exists() and wal.stat().st_size else
                               ["mode=ro&immutable=1"])
        for mode in modes:
            try:
                db = sqlite3.connect(f"{base}?{mode}", uri=True, timeout=30.0,
                                     isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                last = exc
                continue
            db.row_factory = sqlite3.Row
            try:
                db.execute("SELECT max(version) FROM schema_version").fetchone()
            except sqlite3.Error as exc:
                db.close()
                last = exc
                continue
            return db
        hint = (f"its latest commits are in {wal.name}, which cannot be read without write "
                "access to the folder" if len(modes) == 1 else
                "is this an amili-import journal?")
        raise JournalError(f"cannot read the journal {self.path}: {last} ({hint})")

    def _setup(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 30000")
        # Before anything changes the file (WAL mode is written into it).
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            raise JournalError(
                f"{self.path} is not an amili-import journal (it holds the tables "
                f"{', '.join(sorted(tables)[:5])}); point --state-dir elsewhere")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"WAL mode refused (got {mode})")
        # In WAL mode, synchronous=NORMAL makes every COMMIT durable against a crash of the
        # *process*, SIGKILL included: the commit is in the WAL file (the OS page cache) before
        # execute() returns, and the OS writes it out even if we die. Only a power loss or an
        # OS crash can lose the last commits. FULL would add an fsync per commit (two per row),
        # which costs more than the HTTP round trip on many disks.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {c[1] for c in db.execute("PRAGMA table_info(runs)")}
            if "pid_start" not in columns:  # journals from before it was recorded
                db.execute("ALTER TABLE runs ADD COLUMN pid_start TEXT")
            if "allow_duplicates" not in columns:  # likewise
                db.execute("ALTER TABLE runs ADD COLUMN allow_duplicates INTEGER NOT NULL "
                           "DEFAULT 0")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {self.path} was written by a newer amili-import "
                    f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade amili-import"
                )

    def _start_checkpoints(self) -> None:
        """Hand the WAL's checkpoints to a background thread with its own connection (SQLite's
        automatic checkpoint stays as it was when that cannot be set up).

        The thread is given the lock, the connection and the stop flag, not the journal: a
        journal dropped without :meth:`close` is still collected (its finaliser stops it).
        """
        try:
            own = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                  check_same_thread=False)
        except sqlite3.Error:
            return
        # SQLite's own checkpoint only as a safety net: the thread keeps the WAL well below it.
        self._db.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        halt = threading.Event()
        thread = threading.Thread(target=_checkpoints, args=(own, self._db, self._lock, halt),
                                  name="journal-checkpoint", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: SQLite's own checkpoint as before
            self._db.execute("PRAGMA wal_autocheckpoint = 1000")
            own.close()
            return
        self._stop_checkpoints = weakref.finalize(self, _stop_checkpoints, halt, thread)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite). A journal file removed
        or replaced while it was open is first written back from this connection (see
        :meth:`_check_file`)."""
        self._stop_checkpoints()
        with self._lock:
            if self._identity is not None and self._moved():
                with suppress(OSError, sqlite3.Error):
                    self._rescue()
            self._db.close()

    def _moved(self) -> bool:
        try:
            return _identity(self.path) != self._identity
        except OSError:
            return True

    def _rescue_path(self) -> Path:
        """Where the journal this connection holds is written back: its own place when
        nothing is there, else beside the file that took it."""
        if not self.path.exists():
            return self.path
        return self.path.with_name(f"{self.path.name}.rescued-{os.getpid()}")

    def _rescue(self) -> None:
        target = self._rescue_path()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy = sqlite3.connect(target)
        try:
            self._db.backup(copy)
        finally:
            copy.close()

    def verify(self) -> None:
        """SQLite's full integrity check, once per journal file and process (a drain runs
        many files): a damaged index would hide rows already posted from :meth:`claim`, and
        every one of them would be posted again. Seconds for a million rows.

        Raises:
            JournalError: the journal is damaged.
        """
        identity = self._identity
        if identity in _VERIFIED:
            return
        with self._lock:
            problems = integrity_problems(self._db)
        if problems:
            raise JournalError(damaged_message(self.path, problems))
        if identity is not None:
            _VERIFIED.add(identity)

    def _check_file(self) -> None:
        """Refuse to go on when the journal file was removed or replaced under this run (a
        cleanup job, an ``rm -rf`` of the state directory): the rows it posts would be
        recorded nowhere, and the next run would post them again.

        Raises:
            JournalError: saying where the journal is written back when this run ends.
        """
        if self._identity is None or not self._moved():
            return
        raise JournalError(
            f"the journal {self.path} was removed or replaced while this run was using it; "
            "nothing more was posted. What it knew, with every row this run posted, is "
            f"written back to {self._rescue_path()} when this run ends: keep it there (or "
            "put it back in place) before any file is run again, or its rows would be "
            "posted twice")

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), re-entrant within a thread.

        Hold it around a check and the write that depends on it, so that no other thread
        or process can slip in between.
        """
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _query_in(self, sql: str, values: Sequence[Any]) -> list[sqlite3.Row]:
        """``sql`` with its ``IN ({})`` filled with ``values``, run in batches of
        :data:`_LOOKUP_BATCH` (older SQLite builds allow 999 parameters)."""
        found: list[sqlite3.Row] = []
        for start in range(0, len(values), _LOOKUP_BATCH):
            batch = values[start:start + _LOOKUP_BATCH]
            found += self._query(sql.format(",".join("?" * len(batch))), batch)
        return found

    # --- runs and files -------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        mode: str,
        argv: Sequence[str] = (),
        report_dir: Path | str | None = None,
        retry_of: str | None = None,
        started: str | None = None,
        allow_duplicates: bool = False,
    ) -> None:
        """Record the start of a run (with this process's id, to tell crashed runs apart).

        Args:
            run_id: the run's id (unique).
            mode: ``validate`` | ``dry-run`` | ``run`` | ``retry`` | ``inbox``.
            argv: the command line, already without secrets (the journal stores it as given).
            report_dir: where the run's report goes.
            retry_of: the run this one retries.
            started: ISO time; now if None.
            allow_duplicates: the run lets identical rows of other files through (its
                retry does the same).
        """
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, mode, started, argv, report_dir, retry_of, pid,"
                " pid_start, host, allow_duplicates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, mode, started or now(), json.dumps(list(argv)),
                 str(report_dir) if report_dir is not None else None, retry_of, os.getpid(),
                 process_start(os.getpid()), os.uname().nodename, int(allow_duplicates)),
            )

    def finish_run(
        self, run_id: str, exit_code: int, totals: dict[str, Any], finished: str | None = None
    ) -> None:
        """Record the end of a run: exit code and totals (JSON-able, e.g. rows per status)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, exit_code = ?, totals = ? WHERE run_id = ?",
                (finished or now(), int(exit_code), json.dumps(totals, default=str), run_id),
            )

    def record_file(self, run_id: str, info: FileInfo) -> None:
        """Record (or update) one input file of a run: name, path, sha256, kinds, rows."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO files (run_id, name, path, sha256, size, kinds, rows, rejected)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, path) DO UPDATE SET sha256 = excluded.sha256,"
                " size = excluded.size, kinds = excluded.kinds, rows = excluded.rows,"
                " rejected = excluded.rejected",
                (run_id, info.name, str(info.path), info.sha256, info.size,
                 json.dumps(list(info.kinds)), int(info.rows), info.rejected),
            )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recent runs, newest first."""
        rows = self._query(
            "SELECT runs.*, (SELECT count(*) FROM files WHERE files.run_id = runs.run_id)"
            " AS nfiles FROM runs ORDER BY started DESC, rowid DESC LIMIT ?", (int(limit),))
        return [_run(r) for r in rows]

    def run(self, run_id: str) -> RunRecord | None:
        """One run by id, or None."""
        rows = self._query(
            "SELECT runs.*, (SELECT count(*) FROM files WHERE files.run_id = runs.run_id)"
            " AS nfiles FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def retries_of(self, run_id: str) -> list[RunRecord]:
        """The runs that retried this one, oldest first."""
        rows = self._query(
            "SELECT runs.*, 0 AS nfiles FROM runs WHERE retry_of = ? ORDER BY started, rowid",
            (run_id,))
        return [_run(r) for r in rows]

    def files(self, run_id: str) -> list[FileRecord]:
        """The input files of a run, in the order recorded."""
        return [_file(r) for r in self._query(
            "SELECT * FROM files WHERE run_id = ? ORDER BY id", (run_id,))]

    def file_seen(
        self, sha256: str, modes: Iterable[str] = ("run", "retry", "inbox"),
        exclude_run: str | None = None,
    ) -> RunRecord | None:
        """The latest *finished* run that processed a file with this content, or None.

        A run that crashed does not count: its file was not fully processed (rows already
        done are skipped by fingerprint when it is processed again).

        Args:
            sha256: the file's content hash.
            modes: run modes that count as "processed" (validation runs post nothing).
            exclude_run: the current run.
        """
        modes = list(modes)
        marks = ",".join("?" * len(modes))
        rows = self._query(
            "SELECT runs.*, (SELECT count(*) FROM files f WHERE f.run_id = runs.run_id) AS nfiles"
            f" FROM runs JOIN files ON files.run_id = runs.run_id WHERE files.sha256 = ?"
            f" AND runs.finished IS NOT NULL AND runs.mode IN ({marks}) AND runs.run_id IS NOT ?"
            " ORDER BY runs.started DESC LIMIT 1",
            (sha256, *modes, exclude_run),
        )
        return _run(rows[0]) if rows else None

    # --- rows ----------------------------------------------------------------------

    def begin(
        self, run_id: str, ref: RowRef, kind: str, fingerprint: str, case_key: str,
        payload: dict[str, Any],
    ) -> int:
        """Commit a row as ``in_flight`` BEFORE its POST is sent; returns the journal row id.

        Args:
            run_id: the current run.
            ref: where the row comes from.
            kind: the kind's name.
            fingerprint: the row's identity (kind, creditor, case/invoice, amount, dates, ref).
            case_key: ``case:<id>`` or ``invoice:<creditor>:<number>``.
            payload: the JSON body that will be sent (never holds the token).
        """
        return self._insert(run_id, ref, kind, fingerprint, case_key, payload,
                            Settlement(state=IN_FLIGHT), posts=1)

    def record(
        self, run_id: str, ref: RowRef, kind: str, fingerprint: str, case_key: str,
        payload: dict[str, Any], outcome: Settlement,
    ) -> int:
        """Commit a row that is not posted in this run (skipped, refused, not reached)."""
        if outcome.state == IN_FLIGHT:
            raise ValueError("use begin() for a row about to be posted")
        return self._insert(run_id, ref, kind, fingerprint, case_key, payload, outcome, posts=0)

    def _insert(
        self, run_id: str, ref: RowRef, kind: str, fingerprint: str, case_key: str,
        payload: dict[str, Any], outcome: Settlement, posts: int,
    ) -> int:
        if posts:
            self._check_file()
        with self.transaction() as db:
            cur = db.execute(_INSERT_ROW + " VALUES (" + ", ".join("?" * 23) + ")",
                             _row_values(run_id, ref, kind, fingerprint, case_key, payload,
                                         outcome, posts))
            return int(cur.lastrowid or 0)

    def claim(
        self, run_id: str, ref: RowRef, kind: str, fingerprint: str, case_key: str,
        payload: dict[str, Any],
    ) -> int | None:
        """Commit a row as ``in_flight`` if no row with its fingerprint, and no row from the
        same row of the same file (:meth:`prior_source`), is done or pending.

        The check and the insert are one SQL statement, hence one write transaction (SQLite
        takes the write lock before the statement reads), so no other thread or process can
        begin the same fingerprint in between: the same guarantee as a ``BEGIN IMMEDIATE``
        around :meth:`prior` and :meth:`begin`, in one round trip to SQLite instead of four.

        Args:
            run_id: the current run.
            ref: where the row comes from.
            kind: the kind's name.
            fingerprint: the row's identity.
            case_key: ``case:<id>`` or ``invoice:<creditor>:<number>``.
            payload: the JSON body that will be sent.

        Returns:
            The journal row id, committed ``in_flight`` (send the POST now); None when
            :meth:`prior` would not be empty (nothing was written: decide with it).
        """
        self._check_file()
        values = _row_values(run_id, ref, kind, fingerprint, case_key, payload,
                             Settlement(state=IN_FLIGHT), posts=1)
        with self._lock:
            # Outside a transaction() the statement commits on its own (autocommit).
            cur = self._db.execute(_CLAIM_ROW, (*values, *_prior_args(fingerprint),
                                                *_prior_source_args(ref, kind)))
            return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    def touch(self, row_id: int) -> None:
        """Note that a row's POST is going out now (``updated``): a later reconcile counts
        the settle time from the last send, not from when the row was begun."""
        with self._lock:
            self._db.execute("UPDATE rows SET updated = ? WHERE id = ?", (now(), row_id))

    def repost(self, row_id: int) -> None:
        """Commit ``in_flight`` again before a row is POSTed once more (after a read-back
        showed the earlier POST stored nothing)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE rows SET state = ?, posts = posts + 1, updated = ? WHERE id = ?",
                (IN_FLIGHT, now(), row_id),
            )

    def finish(self, row_id: int, outcome: Settlement) -> None:
        """Commit a row's outcome after the answer (or the read-back) is known.

        One UPDATE statement is its own transaction (SQLite's autocommit), committed when
        this returns; inside a caller's :meth:`transaction` it is part of that one.
        """
        with self._lock:
            self._db.execute(
                "UPDATE rows SET state = ?, retryable = ?, reason = ?, http_status = ?,"
                " attempts = ?, amili_id = ?, settled_amount = ?, case_reference_number = ?,"
                " status_reason_locale = ?, message = ?, ref_row = coalesce(?, ref_row),"
                " updated = ? WHERE id = ?",
                (outcome.state, int(outcome.retryable), outcome.reason, outcome.http_status,
                 outcome.attempts, outcome.amili_id, outcome.settled_amount,
                 outcome.case_reference_number, outcome.status_reason_locale, outcome.message,
                 outcome.ref_row, now(), row_id),
            )

    def row(self, row_id: int) -> RowRecord | None:
        """One journal row by id."""
        rows = self._query("SELECT * FROM rows WHERE id = ?", (row_id,))
        return _row(rows[0]) if rows else None

    def prior(self, fingerprint: str) -> list[RowRecord]:
        """Rows with this fingerprint that were stored or may have been (done or pending),
        and those not sent because another done row stands for them (``skipped`` with
        ``ref_row``: the judgement a run made on a row of its file, which a later run of that
        file keeps), oldest first: what decides whether a row may be posted."""
        rows = self._query(f"SELECT * FROM rows WHERE {_PRIOR_OR_SKIPPED} ORDER BY id",
                           _prior_args(fingerprint))
        return [_row(r) for r in rows]

    def prior_source(self, ref: RowRef, kind: str) -> list[RowRecord]:
        """Rows from this very row of this very file (same content, sheet, row number and
        kind) that were stored or may have been, or were skipped as covered by another row
        (``ref_row``), oldest first, whatever their fingerprint.

        A fingerprint is made from the values as read; another version of amili-import may
        read the same cells differently (a column it now recognises, a value it now trims),
        and a file run again after an upgrade must still not post its rows a second time.
        """
        rows = self._query(f"SELECT * FROM rows WHERE {_PRIOR_SOURCE} ORDER BY id",
                           _prior_source_args(ref, kind))
        return [_row(r) for r in rows]

    def referenced(self, run_id: str) -> set[int]:
        """The rows a run's rows point to (``ref_row``: the earlier row reported instead)."""
        return {r[0] for r in self._query(
            "SELECT DISTINCT ref_row FROM rows WHERE run_id = ? AND ref_row IS NOT NULL",
            (run_id,))}

    def latest(self, fingerprint: str) -> RowRecord | None:
        """The latest row with this fingerprint that is done (stored in Amili), or None."""
        done = [r for r in self.prior(fingerprint) if r.done]
        return done[-1] if done else None

    def has_status_unknown(self, run_id: str) -> bool:
        """Whether a run left a stored row whose status was never read."""
        return bool(self._query(f"SELECT 1 FROM rows WHERE run_id = ? AND {_STATUS_UNREAD}"
                                " LIMIT 1", (run_id,)))

    def status_unread(self, exclude_run: str | None = None) -> list[RowRecord]:
        """Rows stored in Amili (an id is known) whose status was never read: the 201 carried
        none and the read-back failed. Every run reads them again, whichever file they came
        from, so that a status left unread one night is settled by the next night's run.

        Args:
            exclude_run: a run whose rows are left out (the current one).
        """
        # By a partial index that holds only these rows: the cost follows how many are
        # unread, not the journal, which keeps every row ever posted.
        return [_row(r) for r in self._query(
            f"SELECT * FROM rows INDEXED BY rows_status_unread WHERE {_STATUS_UNREAD}"
            " AND run_id IS NOT ? ORDER BY id", (exclude_run,))]

    def pending(self, exclude_run: str | None = None) -> list[RowRecord]:
        """Rows left ``in_flight``/``unknown`` by runs that are over (finished, or whose
        process is gone): these must be read back before anything is posted.

        Rows of a run whose process is still alive are left alone: it may still be posting.
        """
        rows = self._query(
            "SELECT rows.*, runs.finished AS run_finished, runs.pid AS run_pid,"
            " runs.pid_start AS run_pid_start FROM rows"
            " JOIN runs ON runs.run_id = rows.run_id WHERE rows.state IN (?, ?)"
            " AND rows.run_id IS NOT ? ORDER BY rows.id",
            (IN_FLIGHT, UNKNOWN, exclude_run),
        )
        return [_row(r) for r in rows
                if r["run_finished"] is not None
                or not pid_alive(r["run_pid"], r["run_pid_start"])]

    def rows(self, run_id: str, states: Iterable[str] | None = None) -> list[RowRecord]:
        """A run's rows (optionally only those in the given states), in the order recorded."""
        if states is None:
            return [_row(r) for r in self._query(
                "SELECT * FROM rows WHERE run_id = ? ORDER BY id", (run_id,))]
        states = list(states)
        marks = ",".join("?" * len(states))
        return [_row(r) for r in self._query(
            f"SELECT * FROM rows WHERE run_id = ? AND state IN ({marks}) ORDER BY id",
            (run_id, *states))]

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these Amili ids the journal already holds for some row, in lower case.

        Ids compare case-insensitively (ObjectIds are hex; an API may write them in either
        case): each is looked up as given, in lower and in upper case, through the index.
        """
        ids = list(dict.fromkeys(v for i in ids if i for v in (i, i.lower(), i.upper())))
        return {r[0].lower() for r in self._query_in(
            "SELECT DISTINCT amili_id FROM rows WHERE amili_id IN ({})", ids)}

    def counts(self, run_id: str) -> dict[str, int]:
        """Rows of a run per state."""
        return {r[0]: r[1] for r in self._query(
            "SELECT state, count(*) FROM rows WHERE run_id = ? GROUP BY state", (run_id,))}


_ROW_COLUMNS = (
    "run_id, file_sha256, file_name, sheet, row, kind, fingerprint, case_key, payload, state,"
    " retryable, reason, http_status, attempts, posts, amili_id, settled_amount,"
    " case_reference_number, status_reason_locale, message, ref_row, created, updated")
_INSERT_ROW = f"INSERT INTO rows ({_ROW_COLUMNS})"
# Stored rows (an Amili id is known) whose status was never read.
_STATUS_UNREAD = "reason = 'status_unknown' AND amili_id IS NOT NULL"
_LOOKUP_BATCH = 500  # values per IN (...) query (SQLite allows 999 parameters in older builds)
# A row that stands in the way of posting it again: done or pending, or an error that Amili
# stored (its parameters: _STATES_ARGS).
_STORED_OR_PENDING = ("state IN (?, ?, ?, ?) OR (state = ? AND"
                      " (amili_id IS NOT NULL OR http_status BETWEEN 200 AND 299))")
# The rows that decide whether a fingerprint may be posted (see Journal.prior).
_PRIOR = f"fingerprint = ? AND ({_STORED_OR_PENDING})"
# A row not sent because another done row stands for it (its ref_row).
_SKIPPED_FOR_ANOTHER = "(state = 'skipped' AND ref_row IS NOT NULL)"
_PRIOR_OR_SKIPPED = f"fingerprint = ? AND ({_STORED_OR_PENDING} OR {_SKIPPED_FOR_ANOTHER})"
# The same, for the rows that came from one row of one file (its bytes, sheet and row number):
# that row, however a version of amili-import reads it (see Journal.prior_source); also the
# rows skipped there as covered by another row.
_PRIOR_SOURCE = ("file_sha256 = ? AND row = ? AND sheet IS ? AND kind = ? AND"
                 f" ({_STORED_OR_PENDING} OR {_SKIPPED_FOR_ANOTHER})")
_CLAIM_ROW = (f"{_INSERT_ROW} SELECT " + ", ".join("?" * 23)
              + f" WHERE NOT EXISTS (SELECT 1 FROM rows WHERE {_PRIOR})"
              + f" AND NOT EXISTS (SELECT 1 FROM rows WHERE {_PRIOR_SOURCE})")


def _prior_args(fingerprint: str) -> tuple[str, ...]:
    return (fingerprint, *_STATES_ARGS)


def _prior_source_args(ref: RowRef, kind: str) -> tuple[Any, ...]:
    return (ref.file_sha256, ref.row, ref.sheet, kind, *_STATES_ARGS)


_STATES_ARGS = (COMPLETED, WARNING, IN_FLIGHT, UNKNOWN, ERROR)


def _row_values(run_id: str, ref: RowRef, kind: str, fingerprint: str, case_key: str,
                payload: dict[str, Any], outcome: Settlement, posts: int) -> tuple[Any, ...]:
    stamp = now()
    return (run_id, ref.file_sha256, ref.file_name, ref.sheet, int(ref.row), kind, fingerprint,
            case_key, json.dumps(payload, default=_json_default), outcome.state,
            int(outcome.retryable), outcome.reason, outcome.http_status, outcome.attempts,
            posts, outcome.amili_id, outcome.settled_amount, outcome.case_reference_number,
            outcome.status_reason_locale, outcome.message, outcome.ref_row, stamp, stamp)


def _json_default(value: Any) -> Any:
    # Amounts are JSON numbers in the body sent (the client does the same with Decimal).
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _run(r: sqlite3.Row) -> RunRecord:
    # A journal opened read-only is not upgraded, and may predate the later columns.
    later = dict(r)
    return RunRecord(
        run_id=r["run_id"], mode=r["mode"], started=r["started"], finished=r["finished"],
        argv=json.loads(r["argv"] or "[]"), report_dir=r["report_dir"],
        exit_code=r["exit_code"], totals=json.loads(r["totals"] or "{}"),
        retry_of=r["retry_of"], pid=r["pid"], files=int(r["nfiles"] or 0),
        allow_duplicates=bool(later.get("allow_duplicates", 0)),
        pid_start=later.get("pid_start"), host=later.get("host"),
    )


def _file(r: sqlite3.Row) -> FileRecord:
    return FileRecord(
        run_id=r["run_id"], name=r["name"], path=r["path"], sha256=r["sha256"], size=r["size"],
        kinds=json.loads(r["kinds"] or "[]"), rows=int(r["rows"]), rejected=r["rejected"],
    )


def _row(r: sqlite3.Row) -> RowRecord:
    return RowRecord(
        id=int(r["id"]), run_id=r["run_id"],
        ref=RowRef(file_name=r["file_name"], file_sha256=r["file_sha256"], sheet=r["sheet"],
                   row=int(r["row"])),
        kind=r["kind"], fingerprint=r["fingerprint"], case_key=r["case_key"],
        payload=json.loads(r["payload"]), state=r["state"], retryable=bool(r["retryable"]),
        reason=r["reason"], http_status=r["http_status"], attempts=int(r["attempts"]),
        posts=int(r["posts"]), amili_id=r["amili_id"], settled_amount=r["settled_amount"],
        case_reference_number=r["case_reference_number"],
        status_reason_locale=r["status_reason_locale"], message=r["message"],
        ref_row=r["ref_row"], created=r["created"], updated=r["updated"],
    )


def new_run_id(moment: datetime | None = None) -> str:
    """A sortable, unique run id such as ``20261122T010203Z-3f9a1c``."""
    import secrets

    moment = moment or datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"

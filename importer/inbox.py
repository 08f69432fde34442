"""Drop-folder mode: pick the ready files of a folder, run each one, archive it. Nothing is deleted.

One loop (:func:`drain`) serves two backends behind the small :class:`Folder` interface:
a local directory (:class:`LocalFolder`, here) and a remote SFTP folder
(:class:`importer.sftp.RemoteInbox`). Posting is not done here: each file is handed to an
injected ``process_one(path, report_dir) -> InboxFileResult`` (in production
``importer.pipeline.process_inbox_file``), so the folder mechanics are testable on their own.

Rules for a ready file (the same for both backends):
- a regular file at the top level; never a dotfile, ``~$*`` (Excel lock file), ``*.part``,
  ``*.tmp``, ``*.filepart``, nor a sidecar (``*.done``, ``*.ok``) itself;
- at least ``min_age`` seconds old (mtime), and the same size and mtime in two listings taken
  ``settle`` seconds apart (an upload still in progress is left for the next run);
- with ``require_sidecar``, only when ``<name>.done``/``<name>.ok`` (or ``<stem>.done``/
  ``<stem>.ok``) exists; sidecars always move along with their file.
Each ready file is read from a copy: downloaded (SFTP) or copied (local) to a staging folder
of this host's own (under the state dir, never in the drop folder), and taken only when it is
still the size and mtime it was listed with, so a file rewritten in place after the listing is
never read half-written. Files run oldest first (mtime, then
name). After its run a file moves to ``done/`` (exit code 0, or content already processed)
or ``failed/`` under a timestamped name such as
``20261122T010203Z--payments.csv``; an existing name is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import structlog

from importer.errors import ExitCode, FileRejected, ImporterError, interrupt_seen
from importer.journal import new_run_id
from importer.lock import RunLock

if TYPE_CHECKING:
    from importer.config import Config

LOCK_NAME = ".amili-import.lock"
SUBFOLDERS = ("done", "failed", "reports")
SIDECAR_SUFFIXES = (".done", ".ok")
FUTURE_SLACK = 5.0  # seconds an mtime may lie ahead of this host's clock without a word
# Names a producer uses while a file is still being written, and files that are not input.
IGNORED_PREFIXES = (".", "~$")
IGNORED_SUFFIXES = (".part", ".tmp", ".filepart", *SIDECAR_SUFFIXES)
COPY_CHUNK = 1 << 20  # bytes read at a time when a file is copied or downloaded to staging


@dataclass(frozen=True)
class Entry:
    """One regular file as listed by a folder backend."""

    name: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Fetched:
    """A file made available locally for processing (the file itself, or a downloaded copy)."""

    path: Path
    sha256: str | None = None  # computed while copying or downloading


@dataclass
class InboxFileResult:
    """What processing one file produced (returned by ``process_one``).

    Attributes:
        exit_code: the file's run exit code; 0 sends the file to ``done/``.
        run_id: the run id the pipeline used (the inbox names the report folder after it).
        totals: rows per status (``completed``, ``warning``, ``error``, ...).
        message: one human line about the outcome (e.g. why the file was rejected).
        duplicate: the same content (sha256) was already processed; nothing was posted and the
            file goes to ``done/`` whatever ``exit_code`` says.
        sha256: the content's digest, as the run computed it.
        stop_after: why the drain stops once this file is archived (a signal arrived after
            every row of it was posted).
        stop_before: why the drain stops with this file left in place (a signal came before
            every row was posted, or the API became unusable); its rows so far are counted.
        earlier_exit_code: 1 when the run found rows of earlier runs in error in Amili (their
            statuses were unread): the drain's exit code says so, the file's place does not.
        posted: rows known to have reached Amili in this run.
        already_posted: rows not sent because they were posted earlier.
    """

    exit_code: ExitCode
    run_id: str
    totals: dict[str, int] = field(default_factory=dict)
    message: str = ""
    duplicate: bool = False
    sha256: str | None = None
    stop_after: str | None = None
    stop_before: str | None = None
    earlier_exit_code: ExitCode = ExitCode.OK
    posted: int = 0
    already_posted: int = 0


ProcessOne = Callable[[Path, Path], InboxFileResult]


@dataclass
class FileOutcome:
    """What happened to one ready file in a drain."""

    name: str
    run_id: str
    exit_code: ExitCode
    report_dir: Path | None = None
    moved_to: str | None = None  # e.g. "done/20261122T010203Z--payments.csv"
    duplicate: bool = False
    totals: dict[str, int] = field(default_factory=dict)
    message: str = ""
    error: str | None = None  # an IO or processing error, in one line
    sha256: str | None = None
    stop_after: str | None = None  # see InboxFileResult.stop_after
    earlier_exit_code: ExitCode = ExitCode.OK  # see InboxFileResult.earlier_exit_code
    posted: int = 0  # see InboxFileResult.posted
    already_posted: int = 0


@dataclass
class InboxSummary:
    """The outcome of one drain of a folder."""

    folder: str
    files: list[FileOutcome] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # candidates not ready yet
    stopped: str | None = None  # why the drain stopped early (the run could not go on)
    duration: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        """The worst exit code of the files and of what their runs found about earlier runs
        (0 with no files; 3 when stopped early)."""
        codes = [max(f.exit_code, f.earlier_exit_code) for f in self.files]
        if self.stopped:
            codes.append(ExitCode.CANNOT_RUN)
        return max(codes, default=ExitCode.OK)

    @property
    def totals(self) -> dict[str, int]:
        """Rows per status over all files."""
        total: Counter[str] = Counter()
        for outcome in self.files:
            total.update(outcome.totals)
        return dict(total)


@dataclass(frozen=True)
class InboxOptions:
    """How to drain a folder (typed at the CLI edge; the core never sees click).

    Attributes:
        min_age: a file younger than this many seconds (mtime) waits for the next run
            (for sftp:// the server's mtime is compared with this host's clock, so keep it
            above any clock skew; the two-listing size check does not depend on clocks).
        require_sidecar: only files with a ``.done``/``.ok`` sidecar are ready.
        settle: seconds between the two listings that tell a growing file.
        identity: SSH private key file (sftp:// only; None: ssh-agent and ~/.ssh keys).
        known_hosts: known_hosts file (sftp:// only; None: ~/.ssh/known_hosts).
        accept_new_host_key: trust and record an unknown host key (never a changed one).
        pickup: remote folder receiving each run's report files (sftp:// only).
        work_dir: this host's folder for the copies read (and for sftp://, the reports);
            None: under the state dir (``inbox`` in the CLI; a private temporary folder
            where ``process_inbox`` is called without one).
        timeout: seconds to wait for the SFTP server.
        run: the ``importer.pipeline.RunOptions`` each file's run starts from.
    """

    min_age: float = 60.0
    require_sidecar: bool = False
    settle: float = 1.0
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    pickup: str | None = None
    work_dir: Path | None = None
    timeout: float = 15.0
    run: Any = None


class ChangedWhileFetching(Exception):
    """The file changed between listing and download: leave it for the next run."""


class _StopDrain(Exception):
    """The run itself cannot go on (e.g. the API refused the login): leave the rest in place.

    ``outcome``: the file it stopped on, when its run counted rows (left in place too).
    """

    def __init__(self, message: str, outcome: FileOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class Folder(Protocol):
    """A drop folder: one mechanism, two backends (local directory, SFTP)."""

    label: str  # for messages and logs; never holds credentials
    reports: Path  # local folder receiving ``<run-id>/`` report folders

    def scan(self) -> list[Entry]:
        """Every regular file at the top level (ready or not, sidecars included)."""
        ...

    def current(self, name: str) -> Entry | None:
        """One top-level file as it is now (size, mtime); None when it is gone."""
        ...

    def prepare(self) -> None:
        """Create ``done/`` and ``failed/`` (and the local report folder) if missing, and an
        empty staging folder for the copies read."""
        ...

    def clear_staging(self) -> None:
        """Remove the copies of the staging folder (after a drain, and before one: what a
        killed run left)."""
        ...

    def fetch(self, entry: Entry) -> Fetched:
        """Make ``entry`` available as a local file (raise ChangedWhileFetching if it moved)."""
        ...

    def discard(self, fetched: Fetched) -> None:
        """Drop a local copy made by :meth:`fetch` (no-op when nothing was copied)."""
        ...

    def exists(self, sub: str, name: str) -> bool:
        """Whether ``sub/name`` exists in the folder."""
        ...

    def move(self, name: str, sub: str, new_name: str) -> None:
        """Rename top-level ``name`` to ``sub/new_name`` atomically, never overwriting."""
        ...

    def upload(self, report_dir: Path, run_id: str) -> None:
        """Publish a run's report files (to the pickup folder, where there is one)."""
        ...


class Readable(Protocol):
    """A file open for reading: a local one, or an SFTP download."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; empty at the end."""
        ...


@dataclass(frozen=True)
class StagedCopy:
    """A file's bytes copied into a staging folder under a short temporary name (NAME +
    ".part" may pass the 255-byte limit), readable by this user only, hashed on the way:
    checked by the caller against the listing, then kept under the file's name or dropped."""

    part: Path
    size: int
    sha256: str

    @classmethod
    def of(cls, source: Readable, staging: Path) -> StagedCopy:
        """Copy ``source`` to its end (nothing is left behind when that fails)."""
        part = staging / f".part-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(part, "xb",
                      opener=lambda path, flags: os.open(path, flags, 0o600)) as target:
                while chunk := source.read(COPY_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
                    size += len(chunk)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return cls(part, size, digest.hexdigest())

    def keep(self, name: str) -> Fetched:
        """The copy under the file's own name, for its run."""
        local = self.part.with_name(name)
        os.replace(self.part, local)
        return Fetched(local, self.sha256)

    def drop(self) -> None:
        """Remove the copy (it is not the file that was listed)."""
        self.part.unlink(missing_ok=True)


def remove_staging(staging: Path) -> None:
    """Remove a staging folder and the copies in it (a symlink in its place is not followed)."""
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)


def renew_staging(staging: Path) -> None:
    """An empty staging folder, readable by this user only (what a killed run left goes)."""
    remove_staging(staging)
    staging.mkdir(mode=0o700, parents=True)


class LocalFolder:
    """A drop folder on a local (or mounted) filesystem."""

    def __init__(self, directory: Path, work_dir: Path | None = None) -> None:
        """Args:
            directory: the drop folder.
            work_dir: a folder of this host's own (under the state dir) for the copies read;
                None: a private temporary folder for each drain.
        """
        # Absolute: report paths go into the journal, read later from another directory.
        self.directory = Path(directory).absolute()
        self.label = str(self.directory)
        self.reports = self.directory / "reports"
        self.work_dir = work_dir
        self._staging: Path | None = None
        self._links_told: set[str] = set()

    def current(self, name: str) -> Entry | None:
        """The file as it is now (None when it is gone)."""
        try:
            info = os.stat(self.directory / name, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return Entry(name, info.st_size, info.st_mtime)

    def scan(self) -> list[Entry]:
        """Every regular file at the top level; symlinks and folders are not input (a symlink
        that looks like input is named in the log once, so that it is not left in silence)."""
        entries = []
        with os.scandir(self.directory) as listing:
            for item in listing:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:  # gone between listing and stat
                    continue
                if stat.S_ISREG(info.st_mode):
                    entries.append(Entry(item.name, info.st_size, info.st_mtime))
                elif stat.S_ISLNK(info.st_mode) and is_candidate(item.name) \
                        and item.name not in self._links_told:
                    self._links_told.add(item.name)
                    structlog.get_logger().warning(
                        "inbox.symlink_skipped", folder=self.label, file=item.name,
                        detail="a symbolic link is never taken: put the file itself here")
        return entries

    def prepare(self) -> None:
        """Create ``done/``, ``failed/`` and ``reports/``, and the staging folder: a new
        private one, or ``WORK_DIR/staging`` emptied of what a killed run left (this run
        holds the drop folder's lock). Never inside the drop folder, where whoever uploads
        could put a symlink in its place."""
        if self.work_dir is None:
            if self._staging is None or not self._staging.is_dir():
                self._staging = Path(tempfile.mkdtemp(prefix="amili-import-staging-"))
        else:
            self._staging = self.work_dir / "staging"
            renew_staging(self._staging)
        for sub in SUBFOLDERS:
            try:
                (self.directory / sub).mkdir(exist_ok=True)
            except OSError as exc:
                raise ImporterError(
                    f"cannot create {self.directory / sub}: {exc.strerror}"
                ) from None

    def fetch(self, entry: Entry) -> Fetched:
        """Copy ``entry`` to the staging folder and check that it is still the file listed.

        The run reads the copy: an exporter that rewrites the file in place after the listing
        cannot hand the run half a file (a cut last row would be posted, then its whole
        version the next night). The copy is taken only when the file's size and mtime,
        before and after the copy, are those of the listing. It is readable by this user only.

        Raises:
            ChangedWhileFetching: the file is not the one that was listed any more.
        """
        assert self._staging is not None, "prepare() first"
        try:
            # O_NOFOLLOW: a symlink put in the file's place is not followed elsewhere.
            with open(self.directory / entry.name, "rb",
                      opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW)
                      ) as source:
                before = os.fstat(source.fileno())
                copy = StagedCopy.of(source, self._staging)
                after = os.fstat(source.fileno())
        except FileNotFoundError:
            raise ChangedWhileFetching("it is gone since it was listed") from None
        listed = (entry.size, entry.mtime)
        if copy.size != entry.size or (before.st_size, before.st_mtime) != listed \
                or (after.st_size, after.st_mtime) != listed:
            copy.drop()
            raise ChangedWhileFetching(
                f"listed with {entry.size} bytes, read {copy.size}, now {after.st_size} "
                "(rewritten since it was listed)")
        return copy.keep(entry.name)

    def discard(self, fetched: Fetched) -> None:
        """Remove the copy (the original stays in the folder, done/ or failed/)."""
        fetched.path.unlink(missing_ok=True)

    def clear_staging(self) -> None:
        """Remove the staging folder and what is in it (copies only: this host's own)."""
        if self._staging is not None:
            remove_staging(self._staging)

    def exists(self, sub: str, name: str) -> bool:
        """Whether ``sub/name`` exists (a dangling symlink counts)."""
        return os.path.lexists(self.directory / sub / name)

    def move(self, name: str, sub: str, new_name: str) -> None:
        """``os.rename`` within the folder's filesystem, refusing to overwrite."""
        target = self.directory / sub / new_name
        # Only this process writes into done/ and failed/ (it holds the lock), so checking
        # first is enough to never overwrite; rename itself is atomic.
        if os.path.lexists(target):
            raise FileExistsError(f"{target} already exists")
        os.rename(self.directory / name, target)

    def upload(self, report_dir: Path, run_id: str) -> None:
        """Nothing to publish: the reports already live in ``DIR/reports/``."""


def is_candidate(name: str) -> bool:
    """Whether a top-level file name can be input at all (before age/size/sidecar checks)."""
    lower = name.lower()
    return not (lower.startswith(IGNORED_PREFIXES) or lower.endswith(IGNORED_SUFFIXES))


def sidecars_of(name: str, names: set[str]) -> list[str]:
    """The sidecar files of ``name`` among ``names`` (case-insensitive), in a stable order."""
    by_lower = {n.lower(): n for n in names}
    stem = PurePosixPath(name).stem
    wanted = [name + s for s in SIDECAR_SUFFIXES] + [stem + s for s in SIDECAR_SUFFIXES]
    found = [by_lower[w.lower()] for w in wanted if w.lower() in by_lower]
    return list(dict.fromkeys(found))


class Wait(NamedTuple):
    """Why a candidate is not taken yet: a stable code and the text the log shows."""

    code: str  # changing | future_mtime | young | no_sidecar
    text: str


def select_ready(
    first: list[Entry],
    second: list[Entry],
    now: float,
    min_age: float,
    require_sidecar: bool,
) -> tuple[list[Entry], dict[str, Wait]]:
    """Apply the ready-file rules to two listings taken a moment apart.

    Args:
        first: the first listing.
        second: the second listing (its sizes are the ones used).
        now: the current time (epoch seconds) to age files against.
        min_age: minimum age in seconds.
        require_sidecar: only files with a sidecar are ready.

    Returns:
        The ready entries oldest first (mtime, then name), and the candidates that must
        wait, each with the reason.
    """
    before = {e.name: e for e in first}
    names = {e.name for e in second}
    ready: list[Entry] = []
    waiting: dict[str, Wait] = {}
    for entry in second:
        if not is_candidate(entry.name):
            continue
        earlier = before.get(entry.name)
        if earlier is None or (earlier.size, earlier.mtime) != (entry.size, entry.mtime):
            waiting[entry.name] = Wait("changing", "still being written (changed between two "
                                                   "looks)")
        elif entry.mtime - now > FUTURE_SLACK:
            waiting[entry.name] = Wait("future_mtime", (
                f"modified {entry.mtime - now:.0f} s in the future (this host's clock and the "
                f"uploader's differ?): waits until it is {min_age:g} s old by this clock"))
        elif now - entry.mtime < min_age:
            waiting[entry.name] = Wait("young", f"younger than {min_age:g} s")
        elif require_sidecar and not sidecars_of(entry.name, names):
            waiting[entry.name] = Wait("no_sidecar", "no .done/.ok sidecar yet")
        else:
            ready.append(entry)
    ready.sort(key=lambda e: (e.mtime, e.name))
    return ready, waiting


def scan_ready(
    folder: Folder,
    min_age: float,
    require_sidecar: bool,
    settle: float,
    now: float | None = None,
) -> tuple[list[Entry], dict[str, Wait], set[str]]:
    """List ``folder`` twice, ``settle`` seconds apart, and select the ready files.

    Returns:
        The ready entries (oldest first), the waiting candidates with reasons, and every
        name of the second listing (for the sidecar lookup).
    """
    first = folder.scan()
    if any(is_candidate(e.name) for e in first):
        time.sleep(settle)
        second = folder.scan()
    else:
        second = first  # nothing to wait for
    ready, waiting = select_ready(
        first, second, time.time() if now is None else now, min_age, require_sidecar
    )
    return ready, waiting, {e.name for e in second}


def ready_files(
    directory: Path,
    min_age: float = 60,
    require_sidecar: bool = False,
    now: float | None = None,
    settle: float = 1.0,
) -> list[Path]:
    """The files of ``directory`` that are ready to be processed, oldest first.

    Args:
        directory: the drop folder (only its top level is looked at).
        min_age: a file younger than this many seconds (mtime) is not ready.
        require_sidecar: only files with a ``.done``/``.ok`` sidecar are ready.
        now: the time to age files against (default: now).
        settle: seconds between the two looks that tell a growing file.

    Returns:
        Paths of the ready files.
    """
    ready, _, _ = scan_ready(LocalFolder(directory), min_age, require_sidecar, settle, now)
    return [Path(directory) / e.name for e in ready]


def archive_name(folder: Folder, sub: str, name: str, sidecars: list[str],
                 now: datetime | None = None) -> str:
    """A timestamped name free in ``sub/`` for ``name`` and its sidecars.

    Returns:
        The prefix such as ``20261122T010203Z--`` (``20261122T010203Z-2--`` on a clash).
    """
    stamp = f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"
    for n in range(1, 10_000):
        prefix = f"{stamp}--" if n == 1 else f"{stamp}-{n}--"
        if not any(folder.exists(sub, archived(prefix, x)) for x in [name, *sidecars]):
            return prefix
    raise FileExistsError(f"no free name for {name} in {sub}/")


NAME_MAX = 255  # bytes in one file name (Linux, most SFTP servers)


def archived(prefix: str, name: str) -> str:
    """``prefix + name``, its stem shortened to fit in one file name (a name near the limit
    would otherwise never move, and be run again every night)."""
    whole = prefix + name
    if len(whole.encode()) <= NAME_MAX:
        return whole
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    tail = f"~.{ext}" if ext else "~"
    room = NAME_MAX - len((prefix + tail).encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return prefix + stem + tail


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ImporterError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.filename and exc.filename2:  # a rename: both ends
            where = f" ({exc.filename} -> {exc.filename2})"
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def drain(folder: Folder, options: InboxOptions, process_one: ProcessOne) -> InboxSummary:
    """Run every ready file of ``folder`` once and archive it (the caller holds the lock).

    Errors stay per file: a file that cannot be read or processed goes to ``failed/`` (when it
    can be moved) and the others go on. Only an error that says the run itself cannot go on
    (an :class:`ImporterError` other than :class:`FileRejected`, e.g. the API refused the
    login) stops the drain, leaving that file and the rest in place for the next run.

    Args:
        folder: the backend.
        options: ready-file rules.
        process_one: runs one local file, writing its report into the given folder.

    Returns:
        The summary; its ``exit_code`` is the worst of the files.
    """
    log = structlog.get_logger()
    started = time.monotonic()
    summary = InboxSummary(folder.label)
    folder.prepare()
    try:
        _drain_ready(folder, options, process_one, summary, log)
    finally:
        folder.clear_staging()
    summary.duration = round(time.monotonic() - started, 3)
    log.info(
        "inbox.summary",
        folder=folder.label,
        files=len(summary.files),
        done=sum(1 for f in summary.files if f.moved_to and f.moved_to.startswith("done/")),
        failed=sum(1 for f in summary.files if f.moved_to and f.moved_to.startswith("failed/")),
        duplicates=sum(1 for f in summary.files if f.duplicate),
        waiting=len(summary.waiting),
        rows=summary.totals,
        errors={f.name: f.error for f in summary.files if f.error},
        stopped=summary.stopped,
        earlier_in_error=[f.run_id for f in summary.files if f.earlier_exit_code] or None,
        exit_code=int(summary.exit_code),
        duration=summary.duration,
    )
    return summary


def _drain_ready(folder: Folder, options: InboxOptions, process_one: ProcessOne,
                 summary: InboxSummary, log: Any) -> None:
    """:func:`drain`'s loop over the ready files, filling ``summary``."""
    ready, waiting, names = scan_ready(
        folder, options.min_age, options.require_sidecar, options.settle
    )
    summary.waiting = sorted(waiting)
    if waiting:
        log.info("inbox.waiting", folder=folder.label,
                 files={name: wait.text for name, wait in waiting.items()})
    future = {name: wait.text for name, wait in waiting.items() if wait.code == "future_mtime"}
    if future:  # it may wait for days: say so where the morning reader looks
        log.warning("inbox.future_mtime", folder=folder.label, files=future)
    for position, entry in enumerate(ready):
        try:
            outcome = _drain_one(folder, entry, sidecars_of(entry.name, names), process_one, log)
        except _StopDrain as exc:
            summary.stopped = str(exc)
            if exc.outcome is not None:  # its rows so far count; the file stays
                summary.files.append(exc.outcome)
                position += 1
            summary.waiting += [e.name for e in ready[position:]]  # left for the next run
            break
        except KeyboardInterrupt:  # SIGTERM/Ctrl-C outside the posting: this file stays too
            summary.stopped = f"{entry.name}: interrupted by a signal"
            summary.waiting += [e.name for e in ready[position:]]
            break
        if outcome is None:
            summary.waiting.append(entry.name)
        else:
            summary.files.append(outcome)
            if outcome.stop_after:
                summary.stopped = f"{entry.name}: {outcome.stop_after}, after it was archived"
                summary.waiting += [e.name for e in ready[position + 1:]]
                break


def _drain_one(folder: Folder, entry: Entry, sidecars: list[str], process_one: ProcessOne,
               log: Any) -> FileOutcome | None:
    """One file: fetch, process, archive, publish. None: left for the next run. (A stop
    that ends the drain leaves no copy behind: :func:`drain` clears the staging folder.)"""
    run_id = new_run_id()
    outcome = FileOutcome(entry.name, run_id, ExitCode.CANNOT_RUN)
    fetched: Fetched | None = None
    report_dir = folder.reports / run_id
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # no file could be reported: the night cannot go on
        log.error("inbox.stopped", folder=folder.label, file=entry.name, error=_one_line(exc))
        raise _StopDrain(f"cannot create the report folder {report_dir}: "
                         f"{_one_line(exc)}") from None
    outcome.report_dir = report_dir
    try:
        fetched = folder.fetch(entry)
        outcome.sha256 = fetched.sha256
        result = process_one(fetched.path, report_dir)
    except ChangedWhileFetching as exc:
        log.warning("inbox.changed", folder=folder.label, file=entry.name, reason=str(exc))
        return None
    except ImporterError as exc:
        if not isinstance(exc, FileRejected):
            log.error("inbox.stopped", folder=folder.label, file=entry.name, error=str(exc))
            _discard(folder, fetched)
            _drop_if_empty(report_dir)
            raise _StopDrain(f"{entry.name}: {exc}") from None
        outcome.error = str(exc)
    except Exception as exc:  # one file's IO error or bug must not stop the others
        if interrupt_seen():  # the stop, turned into another error (see cli.handle_errors)
            raise KeyboardInterrupt from None
        # It was not (fully) processed: it stays in place, and the next run takes it again
        # (the journal skips any row already done); exit 3 says so every night until fixed.
        outcome.error = f"{_one_line(exc)}; left in place for the next run"
        log.exception("inbox.file_error", folder=folder.label, file=entry.name,
                      error=outcome.error)
        _discard(folder, fetched)
        if _drop_if_empty(report_dir):
            outcome.report_dir, outcome.run_id = None, ""
        return outcome
    else:
        outcome.exit_code = ExitCode(result.exit_code)
        outcome.run_id = result.run_id or run_id
        outcome.totals = dict(result.totals)
        outcome.posted, outcome.already_posted = result.posted, result.already_posted
        outcome.message = result.message
        outcome.duplicate = result.duplicate
        outcome.sha256 = outcome.sha256 or result.sha256
        outcome.stop_after = result.stop_after
        outcome.earlier_exit_code = result.earlier_exit_code
        if result.stop_before:
            outcome.exit_code = ExitCode.CANNOT_RUN
            outcome.error = f"{result.stop_before}; left in place for the next run"
            log.error("inbox.stopped", folder=folder.label, file=entry.name,
                      run_id=outcome.run_id, error=result.stop_before)
            _publish_report(folder, outcome)
            _discard(folder, fetched)
            raise _StopDrain(f"{entry.name}: {result.stop_before}", outcome)
    try:
        now = folder.current(entry.name)  # gone: the move below says so
    except Exception as exc:  # cannot tell: the move below meets the same trouble and says so
        log.warning("inbox.stat_failed", folder=folder.label, file=entry.name,
                    error=_one_line(exc))
        now = None
    if now is not None and (now.size, now.mtime) != (entry.size, entry.mtime):
        # Rewritten (or replaced) while it ran: what is in the folder now was never read.
        # Archived, its new rows would never be posted; left in place, the next run reads
        # it, and the journal skips every row already done.
        changed = ("the file changed while it was being processed; left in place for the "
                   "next run (rows already posted are not posted again)")
        outcome.error = f"{outcome.error}; {changed}" if outcome.error else changed
        outcome.exit_code = max(outcome.exit_code, ExitCode.ROWS_IN_ERROR)
        log.warning("inbox.changed_during_run", folder=folder.label, file=entry.name,
                    run_id=outcome.run_id)
        _publish_report(folder, outcome)
        _discard(folder, fetched)
        return outcome
    sub = "done" if outcome.error is None and (
        outcome.duplicate or outcome.exit_code == ExitCode.OK) else "failed"
    try:
        prefix = archive_name(folder, sub, entry.name, sidecars)
        # Sidecars first: stopped between the moves, the file is left without its sidecar (it
        # is run again, a duplicate, or waits for a sidecar where one is required), never a
        # stale sidecar that would mark the next upload of that name ready before it is whole.
        for sidecar in sidecars:
            # A shared <stem>.done may already have moved with a sibling file.
            with contextlib.suppress(FileNotFoundError):
                folder.move(sidecar, sub, archived(prefix, sidecar))
        target = archived(prefix, entry.name)
        folder.move(entry.name, sub, target)
        outcome.moved_to = f"{sub}/{target}"
    except Exception as exc:
        error = f"cannot move to {sub}/: {_one_line(exc)}"
        outcome.error = f"{outcome.error}; {error}" if outcome.error else error
        outcome.exit_code = ExitCode.CANNOT_RUN  # it would run again next time: say so
    _publish_report(folder, outcome)
    _discard(folder, fetched)
    log.info("inbox.file", folder=folder.label, file=entry.name, run_id=outcome.run_id,
             exit_code=int(outcome.exit_code), moved_to=outcome.moved_to,
             duplicate=outcome.duplicate, totals=outcome.totals, posted=outcome.posted,
             already_posted=outcome.already_posted, sha256=outcome.sha256, error=outcome.error)
    return outcome


def _drop_if_empty(report_dir: Path) -> bool:
    """Remove a file's report folder when its run wrote nothing into it (a run that could not
    start leaves at most an empty run.log); True when it is gone."""
    with contextlib.suppress(OSError):
        log_file = report_dir / "run.log"
        if log_file.is_file() and log_file.stat().st_size == 0:
            log_file.unlink()
    try:
        report_dir.rmdir()
    except OSError:  # it holds what the run said: kept
        return False
    return True


def _publish_report(folder: Folder, outcome: FileOutcome) -> None:
    if outcome.report_dir is None:
        return
    try:
        folder.upload(outcome.report_dir, outcome.run_id)
    except Exception as exc:
        error = f"cannot upload the report: {_one_line(exc)}"
        outcome.error = f"{outcome.error}; {error}" if outcome.error else error
        outcome.exit_code = ExitCode.CANNOT_RUN


def _discard(folder: Folder, fetched: Fetched | None) -> None:
    if fetched is None:
        return
    try:
        folder.discard(fetched)
    except OSError:
        structlog.get_logger().warning("inbox.discard_failed", file=str(fetched.path))


def process_inbox(directory: Path, options: InboxOptions, process_one: ProcessOne) -> InboxSummary:
    """Drain a local drop folder under its lock (``DIR/.amili-import.lock``).

    Args:
        directory: the drop folder; ``done/``, ``failed/`` and ``reports/`` are made in it.
        options: ready-file rules.
        process_one: runs one file, writing its report into the given folder.

    Returns:
        The summary (``exit_code``: the worst of the files, 0 with none).

    Raises:
        RunLocked: another run holds the folder.
        ImporterError: the folder does not exist or cannot be written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImporterError(f"inbox folder {directory} does not exist or is not a folder")
    with contextlib.ExitStack() as held:
        held.enter_context(RunLock(directory / LOCK_NAME))
        if options.work_dir is not None:
            # Its staging folder is emptied at each drain: one drain at a time uses it.
            options.work_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(RunLock(options.work_dir / LOCK_NAME,
                                       label=f"{options.work_dir} (the work folder)"))
        return drain(LocalFolder(directory, options.work_dir), options, process_one)


def local_work_dir(directory: Path, state_dir: Path) -> Path:
    """This host's own folder for a local drop folder's staging copies (under the state dir,
    one per drop folder: its lock keeps two drains of one folder apart)."""
    absolute = str(Path(directory).resolve())  # one folder, however it is named
    tag = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return state_dir / "inbox" / f"local-{tag}"


def inbox_main(
    target: str,
    config: Config,
    options: InboxOptions,
    process_file: Callable[[Path, Path, Config, Any], InboxFileResult] | None = None,
) -> ExitCode:
    """Drain a local folder or an ``sftp://`` folder, print a summary, return the exit code.

    Args:
        target: a local folder, or ``sftp://user@host[:port]/path``.
        config: the merged configuration (state dir, log format, API settings).
        options: inbox options; ``options.run`` is the pipeline's RunOptions.
        process_file: ``(path, report_dir, config, run_options) -> InboxFileResult``;
            default ``importer.pipeline.process_inbox_file`` (imported only when needed).

    Returns:
        The worst exit code of the files (0 with no files).
    """
    import importlib

    from importer import logs

    # Looked up at call time: the pipeline (and pandas behind it) loads only when needed.
    process = process_file or importlib.import_module("importer.pipeline").process_inbox_file
    logs.configure(config.log_format)
    run_options = options.run

    def process_one(path: Path, report_dir: Path) -> InboxFileResult:
        opts = run_options
        if opts is not None:
            opts = replace(opts, run_id=report_dir.name, report_dir=report_dir, quiet=True)
        try:
            result: InboxFileResult = process(path, report_dir, config, opts)
            return result
        finally:
            # A run points the logs at its own run.log and closes it at the end: come back
            # to plain stderr logging for the inbox's own events.
            logs.configure(config.log_format)

    if target.startswith("sftp://"):
        from importer.sftp import process_remote

        summary = process_remote(target, options, process_one, config.state_dir)
    else:
        work_dir = options.work_dir or local_work_dir(Path(target), config.state_dir)
        summary = process_inbox(Path(target), replace(options, work_dir=work_dir), process_one)
    for line in summary_lines(summary):
        print(line, file=sys.stderr)
    for outcome in summary.files:
        if outcome.report_dir is not None:
            print(outcome.report_dir)
    return summary.exit_code


def summary_lines(summary: InboxSummary) -> list[str]:
    """Human lines for stderr: one per file, then the totals."""
    lines = []
    for f in summary.files:
        rows = ", ".join(f"{k} {v}" for k, v in sorted(f.totals.items())) or "no rows"
        what = "already processed (duplicate content)" if f.duplicate else rows
        if f.already_posted:  # "completed 6" is not six payments sent tonight
            what += f" ({f.posted} reached Amili now, {f.already_posted} already posted before)"
        where = f" -> {f.moved_to}" if f.moved_to else " (left in place)"
        run = f" [run {f.run_id}]" if f.run_id else ""
        lines.append(f"{f.name}: {what}{where}{run}" + (f"; {f.message}" if f.message else "")
                     + (f"; error: {f.error}" if f.error else ""))
    if any(f.totals.get("error") and f.run_id and f.moved_to for f in summary.files):
        lines.append("rows in error: `amili-import show RUN_ID` (the run in brackets) says "
                     "which and why; transient failures go again with `amili-import retry "
                     "RUN_ID`, data errors are fixed in the failed-*.csv of the run's report "
                     "folder (see README, 'The morning after')")
    if any(f.totals.get("error") and f.run_id and not f.moved_to for f in summary.files):
        lines.append("a file left in place runs again at the next drain, rows already posted "
                     "never twice: nothing to do for rows that failed for lack of the API; "
                     "`amili-import show RUN_ID` says which rows failed and why")
    for f in summary.files:
        if f.earlier_exit_code:
            lines.append(f"run {f.run_id} found rows of earlier runs stored in error in Amili "
                         "(that no report had said so): see earlier_rows in its report.json")
    if summary.stopped:
        lines.append(f"stopped: {summary.stopped}; the remaining files were left in place")
    rows = ", ".join(f"{k} {v}" for k, v in sorted(summary.totals.items())) or "no rows"
    lines.append(f"{summary.folder}: {len(summary.files)} file(s), {rows}, "
                 f"{len(summary.waiting)} waiting; exit {int(summary.exit_code)}")
    # A line break in a file name (which messages and archive names repeat) must not cut a
    # file's line in two in the cron mail: control characters are written escaped.
    return ["".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                    for c in line) for line in lines]

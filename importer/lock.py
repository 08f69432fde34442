"""An exclusive, crash-safe lock held for a whole run over one folder.

``fcntl.flock`` is tied to the open file description, so the kernel releases it the moment the
holder dies, even after ``kill -9``: a stale lock *file* never blocks the next night. The file
is never deleted (deleting a lock file opens a race where two processes lock two different
inodes); its contents only say who holds it, for the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from importer.errors import ImporterError, RunLocked


class RunLock:
    """Context manager: ``with RunLock(path):`` holds an exclusive lock on ``path``.

    Args:
        path: the lock file; created if missing, never deleted.
        label: what is locked, for the message (default: the lock file's folder).
    """

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or str(self.path.parent)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting.

        Returns:
            self, now holding the lock.

        Raises:
            RunLocked: another live process holds it (the message names its pid, host and
                start time).
            ImporterError: the lock file cannot be created or opened.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ImporterError(
                f"cannot create the lock file {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise RunLocked(f"another run ({holder}) holds the lock on {self.label}") from None
        except OSError as exc:
            os.close(fd)
            raise ImporterError(f"cannot lock {self.path}: {exc.strerror}") from None
        # The previous holder's record (if it died) is simply overwritten.
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays, emptied)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    # The holder may be between flock() and writing its record: say what is known.
    if not holder.get("pid"):
        return "holder not yet recorded"
    text = f"pid {holder['pid']}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("host"):
        text += f" on {holder['host']}"
    return text

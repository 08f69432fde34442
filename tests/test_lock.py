"""RunLock: one run per folder, named holder, and no stale lock after a crash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from importer.errors import ExitCode, RunLocked
from importer.lock import RunLock

HOLD = """
import sys, time
from pathlib import Path
from importer.lock import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A second real process that takes the lock and sleeps; killed at the end."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_lock_records_holder_and_releases(tmp_path: Path) -> None:
    """The lock file names our pid, host and start time while held; it is emptied after."""
    path = tmp_path / ".amili-import.lock"
    with RunLock(path):
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid()
        assert record["host"] == socket.gethostname()
        assert record["started"].endswith("Z")
    assert path.exists()
    assert path.read_text() == ""
    with RunLock(path):  # and it can be taken again
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """While another live process holds the lock, taking it fails at once naming its pid."""
    path = tmp_path / ".amili-import.lock"
    with holder(path) as proc:
        with pytest.raises(RunLocked) as info:
            RunLock(path).acquire()
        message = str(info.value)
        assert f"pid {proc.pid}" in message
        assert "started 20" in message
        assert f"on {socket.gethostname()}" in message
        assert str(tmp_path) in message
        assert info.value.exit_code == ExitCode.CANNOT_RUN


def test_stale_lock_after_kill_9_does_not_block(tmp_path: Path) -> None:
    """A holder killed with SIGKILL leaves its record behind, but the next run takes the lock."""
    path = tmp_path / ".amili-import.lock"
    with holder(path) as proc:
        dead_pid = proc.pid
        proc.kill()
        proc.wait()
    assert json.loads(path.read_text())["pid"] == dead_pid  # the stale record is still there
    with RunLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_label_names_what_is_locked(tmp_path: Path) -> None:
    """The message names the given label (e.g. an sftp:// URL) rather than the lock's folder."""
    path = tmp_path / "x.lock"
    with RunLock(path), pytest.raises(RunLocked, match="holds the lock on sftp://u@h/in"):
        RunLock(path, label="sftp://u@h/in").acquire()


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    """A lock file that cannot be created gives one line naming it, not a traceback."""
    from importer.errors import ImporterError

    with pytest.raises(ImporterError, match="cannot create the lock file .*missing"):
        RunLock(tmp_path / "missing" / "x.lock").acquire()

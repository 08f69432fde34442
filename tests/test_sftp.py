"""Remote drop folders against a real SFTP server (asyncssh) on loopback."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
import structlog
from sftp_server import RunningSftp, sftp_server, write_client_key
from test_inbox import FakeRun

from importer.config import Config
from importer.errors import ConfigError, ExitCode, RunLocked
from importer.inbox import ChangedWhileFetching, Entry, InboxFileResult, InboxOptions, inbox_main
from importer.lock import RunLock
from importer.sftp import (
    AuthError,
    HostKeyError,
    RemoteError,
    RemoteInbox,
    SftpTarget,
    default_work_dir,
    process_remote,
)

OLD = time.time() - 3600
STAMPED = re.compile(r"^\d{8}T\d{6}Z(-\d+)?--")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningSftp]:
    """A real SFTP server on 127.0.0.1 with an empty /inbox; stopped at the end."""
    with sftp_server(tmp_path / "server") as running:
        (running.root / "inbox").mkdir()
        yield running
    structlog.reset_defaults()


def put(server: RunningSftp, name: str, content: str = "good", mtime: float = OLD) -> Path:
    """Drop a file into the server's /inbox (directly on its disk) and age it."""
    path = server.root / "inbox" / name
    path.write_text(content)
    os.utime(path, (mtime, mtime))
    return path


def remote(server: RunningSftp, tmp_path: Path, **kwargs: object) -> RemoteInbox:
    """A RemoteInbox on the server's /inbox with the authorised key and its known_hosts."""
    values: dict[str, object] = {"identity": server.identity, "known_hosts": server.known_hosts,
                                 "work_dir": tmp_path / "work"}
    values.update(kwargs)
    return RemoteInbox(server.url(), **values)  # type: ignore[arg-type]


def options(server: RunningSftp, tmp_path: Path, **kwargs: object) -> InboxOptions:
    """Inbox options reaching the test server quickly."""
    values: dict[str, object] = {
        "settle": 0.05, "identity": server.identity, "known_hosts": server.known_hosts,
        "work_dir": tmp_path / "work", "timeout": 5.0,
    }
    values.update(kwargs)
    return InboxOptions(**values)  # type: ignore[arg-type]


def names(folder: Path) -> list[str]:
    """Sorted names in a folder."""
    return sorted(p.name for p in folder.iterdir())


def test_url_parsing() -> None:
    """sftp:// URLs give user, host, port (22 by default) and path; ~/ means the login folder;
    passwords in the URL are refused."""
    t = SftpTarget("sftp://bank@files.example:2222/drop/in/")
    assert (t.user, t.host, t.port, t.path) == ("bank", "files.example", 2222, "/drop/in")
    assert SftpTarget("sftp://bank@files.example/~/in").path == "in"
    assert SftpTarget("sftp://bank@files.example").port == 22
    with pytest.raises(ConfigError, match="use --identity"):
        SftpTarget("sftp://bank:secret@files.example/in")
    with pytest.raises(ConfigError, match="not an sftp://"):
        SftpTarget("ftp://files.example/in")


def test_remote_listing_applies_the_ready_rules(server: RunningSftp, tmp_path: Path) -> None:
    """The remote folder is listed with the local rules: patterns, age, sidecars, order."""
    put(server, "b.csv", mtime=OLD)
    put(server, "a.csv", mtime=OLD - 60)
    put(server, "young.csv", mtime=time.time())
    for skipped in [".hidden.csv", "~$a.xlsx", "c.csv.part", "d.filepart", "e.tmp"]:
        put(server, skipped)
    put(server, "b.csv.done", "")
    (server.root / "inbox" / "sub").mkdir()
    from importer.inbox import scan_ready

    with remote(server, tmp_path) as inbox:
        ready, waiting, _ = scan_ready(inbox, 60, False, 0.05)
        assert [e.name for e in ready] == ["a.csv", "b.csv"]
        assert list(waiting) == ["young.csv"]
        ready, waiting, _ = scan_ready(inbox, 60, True, 0.05)
        assert [e.name for e in ready] == ["b.csv"]
        assert "a.csv" in waiting


def test_remote_drain_downloads_processes_and_archives(server: RunningSftp,
                                                       tmp_path: Path) -> None:
    """Each ready file is downloaded (same bytes, sha256 computed), processed locally, renamed
    on the server into done/ or failed/ with its sidecar, and the staged copy is removed."""
    put(server, "good.csv", "good", mtime=OLD - 10)
    put(server, "good.csv.ok", "")
    put(server, "bad.csv", "bad", mtime=OLD)
    run = FakeRun()
    seen: dict[str, bytes] = {}

    def process_one(path: Path, report_dir: Path) -> InboxFileResult:
        seen[path.name] = path.read_bytes()
        assert report_dir.parent == tmp_path / "work" / "reports"
        return run(path, report_dir)

    summary = process_remote(server.url(), options(server, tmp_path), process_one, tmp_path)
    inbox = server.root / "inbox"
    assert seen == {"good.csv": b"good", "bad.csv": b"bad"}
    assert names(inbox) == ["done", "failed"]
    done, failed = names(inbox / "done"), names(inbox / "failed")
    assert [STAMPED.sub("", n) for n in done] == ["good.csv", "good.csv.ok"]
    assert [STAMPED.sub("", n) for n in failed] == ["bad.csv"]
    assert (inbox / "failed" / failed[0]).read_text() == "bad"
    assert summary.files[0].sha256 == hashlib.sha256(b"good").hexdigest()
    assert summary.exit_code == ExitCode.ROWS_IN_ERROR
    assert not (tmp_path / "work" / "staging").exists()  # the downloads are removed
    assert (tmp_path / "work" / ".amili-import.lock").exists()


def test_pickup_receives_each_runs_report(server: RunningSftp, tmp_path: Path) -> None:
    """With a pickup folder, each run's report files are uploaded to PICKUP/<run-id>/."""
    put(server, "a.csv", "good")
    summary = process_remote(server.url(), options(server, tmp_path, pickup="/outbox/amili"),
                             FakeRun(), tmp_path)
    [outcome] = summary.files
    uploaded = server.root / "outbox" / "amili" / outcome.run_id
    assert names(uploaded) == ["report.json"]
    assert outcome.report_dir is not None
    assert (uploaded / "report.json").read_bytes() == (
        outcome.report_dir / "report.json").read_bytes()


def test_a_killed_runs_downloads_are_removed_and_new_ones_are_private(
        server: RunningSftp, tmp_path: Path) -> None:
    """What a killed drain left in staging/ is removed by the next one; a download is
    readable by this user only, whatever the umask. (helper-45)"""
    import os
    import stat

    put(server, "a.csv", "12345")
    stale = tmp_path / "work" / "staging" / ".download-deadbeef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a payment file")
    old = os.umask(0o022)
    try:
        with remote(server, tmp_path) as inbox:
            inbox.prepare()
            assert names(tmp_path / "work" / "staging") == []
            [entry] = inbox.scan()
            copy = inbox.fetch(entry).path
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600
            assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_download_size_is_checked(server: RunningSftp, tmp_path: Path) -> None:
    """A file whose size differs from the listing is not handed on (left for the next run)."""
    put(server, "a.csv", "12345")
    with remote(server, tmp_path) as inbox:
        inbox.prepare()
        [entry] = inbox.scan()
        with pytest.raises(ChangedWhileFetching, match="listed with 6 bytes, downloaded 5"):
            inbox.fetch(Entry(entry.name, 6, entry.mtime))
        assert names(tmp_path / "work" / "staging") == []
        assert inbox.fetch(entry).path.read_text() == "12345"


def test_unknown_host_key_is_refused(server: RunningSftp, tmp_path: Path) -> None:
    """A server missing from known_hosts is refused with its fingerprint and what to do."""
    empty = tmp_path / "known_hosts"
    empty.write_text("# nothing yet\n")
    with pytest.raises(HostKeyError, match=r"SHA256:\S+\) is not in .*--accept-new-host-key"):
        remote(server, tmp_path, known_hosts=empty).connect()
    assert empty.read_text() == "# nothing yet\n"
    with pytest.raises(HostKeyError):
        remote(server, tmp_path, known_hosts=tmp_path / "absent").connect()
    assert not (tmp_path / "absent").exists()


def test_new_host_key_accepted_with_the_option(server: RunningSftp, tmp_path: Path) -> None:
    """With accept_new_host_key the key is appended to known_hosts (keeping what was there),
    and later connections without the option succeed."""
    known = tmp_path / "ssh" / "known_hosts"
    with remote(server, tmp_path, known_hosts=known, accept_new_host_key=True) as inbox:
        assert inbox.scan() == []
    assert known.read_text() == server.known_hosts_line()
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    with remote(server, tmp_path, known_hosts=known) as inbox:
        assert inbox.scan() == []
    other = tmp_path / "other_hosts"
    other.write_text("# keep me\n")
    with remote(server, tmp_path, known_hosts=other, accept_new_host_key=True):
        pass
    assert other.read_text() == "# keep me\n" + server.known_hosts_line()


def test_changed_host_key_is_always_refused(server: RunningSftp, tmp_path: Path) -> None:
    """A host key different from the recorded one is refused even with accept_new_host_key."""
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519")))
    with pytest.raises(HostKeyError, match="does not match"):
        remote(server, tmp_path, known_hosts=known, accept_new_host_key=True).connect()


def test_refused_key_is_one_clear_line_without_key_material(server: RunningSftp,
                                                            tmp_path: Path) -> None:
    """A key the server does not accept gives AuthError naming the key file, never its bytes."""
    stranger = tmp_path / "stranger"
    write_client_key(stranger)
    with pytest.raises(AuthError) as info:
        remote(server, tmp_path, identity=stranger).connect()
    message = str(info.value)
    assert f"refused key {stranger}" in message and "'tester'" in message
    assert "PRIVATE KEY" not in message and "\n" not in message
    assert info.value.exit_code == ExitCode.CANNOT_RUN


def test_connection_and_folder_errors(server: RunningSftp, tmp_path: Path) -> None:
    """A missing remote folder, a missing key file and a closed port each give one line."""
    with pytest.raises(RemoteError, match="/nope: no such file or folder"):
        RemoteInbox(server.url("/nope"), server.identity, server.known_hosts,
                    work_dir=tmp_path / "w").connect()
    with pytest.raises(ConfigError, match="identity file .*missing-key does not exist"):
        RemoteInbox(server.url(), tmp_path / "missing-key", server.known_hosts,
                    work_dir=tmp_path / "w").connect()
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RemoteError, match=f"cannot connect to 127.0.0.1:{port}"):
        RemoteInbox(f"sftp://tester@127.0.0.1:{port}/inbox", server.identity,
                    server.known_hosts, work_dir=tmp_path / "w", timeout=5).connect()


def test_remote_lock_is_held_locally(server: RunningSftp, tmp_path: Path) -> None:
    """A second run on this host over the same remote folder is refused naming the URL."""
    opts = options(server, tmp_path)
    assert opts.work_dir is not None
    opts.work_dir.mkdir(parents=True)
    with RunLock(opts.work_dir / ".amili-import.lock"), \
            pytest.raises(RunLocked, match=r"holds the lock on sftp://tester@127\.0\.0\.1"):
        process_remote(server.url(), opts, FakeRun(), tmp_path)


def test_inbox_main_wires_sftp(server: RunningSftp, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """inbox_main takes an sftp:// target, keeps its local state under the state dir by
    default, and returns the worst exit code."""
    put(server, "a.csv", "good")
    put(server, "b.csv", "reject", mtime=OLD + 1)
    run = FakeRun()

    def process_file(path: Path, report_dir: Path, config: Config,
                     run_options: object) -> InboxFileResult:
        return run(path, report_dir)

    config = Config(state_dir=tmp_path / "state", log_format="json")
    opts = options(server, tmp_path, work_dir=None)
    code = inbox_main(server.url(), config, opts, process_file)
    assert code == ExitCode.CANNOT_RUN
    work = default_work_dir(server.url(), config.state_dir)
    assert work.parent == config.state_dir / "inbox"
    assert len(names(work / "reports")) == 2
    err = capsys.readouterr().err
    assert "a.csv: completed 3 -> done/" in err
    assert "b.csv: no rows -> failed/" in err and "no header found" in err

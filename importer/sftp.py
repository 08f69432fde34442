"""Remote drop folders over SFTP (paramiko): the :class:`importer.inbox.Folder` backend for
``sftp://user@host[:port]/path``.

Each ready file is downloaded to a local staging folder (its size checked against the listing,
its sha256 computed on the way), processed locally by the same loop as a local folder, then
renamed on the server into ``done/`` or ``failed/``; the run's report files can be uploaded to
a pickup folder. Host keys are checked against a known_hosts file; an unknown key is refused
unless explicitly accepted (then appended to the file), a changed key is always refused.
Key material never reaches a message or a log line: only file names and public fingerprints.
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import os
import posixpath
import re
import stat
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import paramiko
import structlog

from importer.errors import ConfigError, ImporterError
from importer.inbox import (
    LOCK_NAME,
    ChangedWhileFetching,
    Entry,
    Fetched,
    InboxOptions,
    InboxSummary,
    ProcessOne,
    StagedCopy,
    drain,
    remove_staging,
    renew_staging,
)
from importer.lock import RunLock

if TYPE_CHECKING:
    from paramiko import PKey



class RemoteError(ImporterError):
    """The SFTP server cannot be used (unreachable, folder missing, SSH failure)."""


class HostKeyError(RemoteError):
    """The server's host key is unknown or does not match known_hosts."""


class AuthError(RemoteError):
    """The server refused our key, or the key cannot be used."""


def fingerprint(key: PKey) -> str:
    """OpenSSH-style public fingerprint ``SHA256:...`` (safe to show)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SftpTarget:
    """A parsed ``sftp://user@host[:port]/path`` URL (never with a password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "sftp" or not parts.hostname:
            raise ConfigError(f"{url!r} is not an sftp://user@host[:port]/path URL")
        if parts.password:
            raise ConfigError("passwords in sftp:// URLs are not supported; use --identity KEYFILE")
        try:
            self.port = parts.port or 22
        except ValueError:
            raise ConfigError(f"{url!r}: the port is not a number") from None
        self.host = parts.hostname
        self.user = unquote(parts.username) if parts.username else getpass.getuser()
        path = unquote(parts.path) or "/"
        # sftp://host/~/in means "in" under the login folder, as curl reads it.
        if path == "/~" or path.startswith("/~/"):
            self.path = path[3:].rstrip("/") or "."
        else:
            self.path = path.rstrip("/") or "/"
        self.label = f"sftp://{self.user}@{self.host}:{self.port}{path}"

    def slug(self) -> str:
        """A file-name-safe name for local state about this folder."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.host}_{self.port}_{self.path}").strip("_")


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: PKey) -> None:
        raise HostKeyError(
            f"the host key of {hostname} ({key.get_name()} {fingerprint(key)}) is not in "
            f"{self.known_hosts}; check that fingerprint with the server's owner, then run again "
            "with --accept-new-host-key (or add it with ssh-keyscan)"
        )


class _AppendNew(paramiko.MissingHostKeyPolicy):
    """Trust an unknown key and *append* it (paramiko's own save rewrites the whole file,
    dropping comments and entries it cannot parse)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        structlog.get_logger().warning(
            "sftp.host_key_accepted", host=hostname, key_type=key.get_name(),
            fingerprint=fingerprint(key), known_hosts=str(self.known_hosts),
        )


class RemoteInbox:
    """An SFTP drop folder, usable as ``with RemoteInbox(...) as folder: drain(folder, ...)``.

    Args:
        url: ``sftp://user@host[:port]/path``.
        identity: private key file (None: ssh-agent and the default ~/.ssh keys).
        known_hosts: known_hosts file (None: ~/.ssh/known_hosts).
        accept_new_host_key: trust an unknown host key and append it to known_hosts.
        work_dir: local folder for ``staging/`` and ``reports/`` (None: default_work_dir
            under the default state folder).
        pickup: remote folder receiving ``<run-id>/`` with each run's report files.
        timeout: seconds for connecting and for each SFTP request.
    """

    def __init__(
        self,
        url: str,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        accept_new_host_key: bool = False,
        *,
        work_dir: Path | None = None,
        pickup: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.target = SftpTarget(url)
        self.label = self.target.label
        self.identity = Path(identity).expanduser() if identity else None
        self.known_hosts = (Path(known_hosts) if known_hosts
                            else Path("~/.ssh/known_hosts")).expanduser()
        self.accept_new_host_key = accept_new_host_key
        if work_dir is None:
            from importer.config import default_state_dir

            work_dir = default_work_dir(url, default_state_dir())
        self.work_dir = Path(work_dir)
        self.reports = self.work_dir / "reports"
        self.staging = self.work_dir / "staging"
        self.pickup = pickup
        self.timeout = timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection -----------------------------------------------------------------------

    def connect(self) -> RemoteInbox:
        """Connect, check the host key, authenticate and open the folder.

        Returns:
            self, connected.

        Raises:
            HostKeyError, AuthError, RemoteError, ConfigError: one clear line each.
        """
        t = self.target
        where = f"{t.host}:{t.port}"
        if self.identity is not None and not self.identity.is_file():
            raise ConfigError(f"identity file {self.identity} does not exist")
        client = paramiko.SSHClient()
        try:
            if self.known_hosts.is_file():
                client.get_host_keys().load(str(self.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise ConfigError(f"cannot read known_hosts file {self.known_hosts}: {exc}") from None
        policy: paramiko.MissingHostKeyPolicy = (
            _AppendNew(self.known_hosts) if self.accept_new_host_key
            else _RejectUnknown(self.known_hosts)
        )
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(
                t.host, t.port, username=t.user,
                key_filename=str(self.identity) if self.identity else None,
                look_for_keys=self.identity is None, allow_agent=self.identity is None,
                timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout)
        except ImporterError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"the host key of {where} ({fingerprint(exc.key)}) does not match the one in "
                f"{self.known_hosts} ({fingerprint(exc.expected_key)}): someone may be "
                "intercepting the connection; if the server's key really changed, remove its "
                "old line from known_hosts"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthError(
                f"the key {self.identity} is protected by a passphrase; use an unencrypted "
                "deploy key readable only by this user, or load it into ssh-agent"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            key = f"key {self.identity}" if self.identity else "the agent's and ~/.ssh keys"
            raise AuthError(f"{where} refused {key} for user {t.user!r}") from None
        except (paramiko.SSHException, ValueError) as exc:
            client.close()
            raise RemoteError(f"SSH to {where} failed: {exc}") from None
        except OSError as exc:  # refused, unreachable, DNS, timeout
            client.close()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise RemoteError(f"cannot connect to {where}: {reason}") from None
        self._client, self._sftp = client, sftp
        try:
            mode = sftp.stat(t.path).st_mode or 0
        except OSError as exc:
            self.close()
            raise RemoteError(f"{self.label}: {_reason(exc)}") from None
        if not stat.S_ISDIR(mode):
            self.close()
            raise RemoteError(f"{self.label} is not a folder")
        return self

    def close(self) -> None:
        """Close the SFTP session and the SSH connection."""
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RemoteInbox:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The open SFTP session."""
        if self._sftp is None:
            raise RemoteError(f"{self.label}: not connected")
        return self._sftp

    def _remote(self, *parts: str) -> str:
        return posixpath.join(self.target.path, *parts)

    # -- the Folder interface -------------------------------------------------------------

    def current(self, name: str) -> Entry | None:
        """One remote file as it is now (size, mtime); None when it is gone."""
        try:
            a = self.sftp.stat(self._remote(name))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(f"cannot stat {name} in {self.label}: {_reason(exc)}") from None
        return Entry(name, a.st_size or 0, float(a.st_mtime or 0))

    def scan(self) -> list[Entry]:
        """Every regular file at the top level of the remote folder."""
        try:
            attrs = self.sftp.listdir_attr(self.target.path)
        except OSError as exc:
            raise RemoteError(f"cannot list {self.label}: {_reason(exc)}") from None
        return [
            Entry(a.filename, a.st_size or 0, float(a.st_mtime or 0))
            for a in attrs
            if a.st_mode is not None and stat.S_ISREG(a.st_mode)
        ]

    def prepare(self) -> None:
        """Create ``done/`` and ``failed/`` on the server, ``reports/`` here, and an empty
        ``staging/`` (this user's only) for the downloads."""
        for sub in ("done", "failed"):
            self._mkdirs(self._remote(sub))
        self.reports.mkdir(parents=True, exist_ok=True)
        renew_staging(self.staging)

    def clear_staging(self) -> None:
        """Remove ``staging/`` and the downloads in it (a killed run's too)."""
        remove_staging(self.staging)

    def fetch(self, entry: Entry) -> Fetched:
        """Download ``entry`` to ``staging/``, checking its size and hashing it on the way.

        Raises:
            ChangedWhileFetching: the file is not the one that was listed any more.
        """
        remote = self._remote(entry.name)
        with self.sftp.open(remote, "rb") as source:
            source.prefetch(entry.size)
            copy = StagedCopy.of(source, self.staging)
        try:
            after = self.sftp.stat(remote)
        except BaseException:
            copy.drop()
            raise
        if copy.size != entry.size or (after.st_size, float(after.st_mtime or 0)) != (
            entry.size, entry.mtime
        ):
            copy.drop()
            raise ChangedWhileFetching(
                f"listed with {entry.size} bytes, downloaded {copy.size}, now {after.st_size}"
            )
        return copy.keep(entry.name)

    def discard(self, fetched: Fetched) -> None:
        """Remove the staged copy (the original stays on the server, in done/ or failed/)."""
        fetched.path.unlink(missing_ok=True)

    def exists(self, sub: str, name: str) -> bool:
        """Whether ``sub/name`` exists on the server."""
        try:
            self.sftp.lstat(self._remote(sub, name))
        except FileNotFoundError:
            return False
        return True

    def move(self, name: str, sub: str, new_name: str) -> None:
        """SFTP rename (the protocol's plain rename never overwrites an existing file)."""
        self.sftp.rename(self._remote(name), self._remote(sub, new_name))

    def upload(self, report_dir: Path, run_id: str) -> None:
        """Upload the report files to ``PICKUP/<run-id>/``, each under ``.part`` then renamed,
        so whoever collects them never reads half a file."""
        if self.pickup is None:
            return
        target = posixpath.join(self.pickup, run_id)
        self._mkdirs(target)
        for path in sorted(p for p in report_dir.iterdir() if p.is_file()):
            final = posixpath.join(target, path.name)
            self.sftp.put(str(path), final + ".part", confirm=True)
            self.sftp.rename(final + ".part", final)

    def _mkdirs(self, path: str) -> None:
        """``mkdir -p`` on the server."""
        parts = [p for p in path.split("/") if p]
        current = "/" if path.startswith("/") else ""
        for part in parts:
            current = posixpath.join(current, part) if current else part
            try:
                mode = self.sftp.stat(current).st_mode or 0
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(current)
                except OSError as exc:
                    raise RemoteError(f"cannot create {current} on {self.target.host}: "
                                      f"{_reason(exc)}") from None
                continue
            if not stat.S_ISDIR(mode):
                raise RemoteError(f"{current} on {self.target.host} is not a folder")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or folder"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return exc.strerror or str(exc) or type(exc).__name__


def default_work_dir(url: str, state_dir: Path) -> Path:
    """Where staging copies and reports of a remote folder live locally."""
    return state_dir / "inbox" / SftpTarget(url).slug()


def process_remote(
    url: str,
    options: InboxOptions,
    process_one: ProcessOne,
    state_dir: Path,
) -> InboxSummary:
    """Drain an SFTP drop folder under a local lock (one run per remote folder on this host).

    Args:
        url: ``sftp://user@host[:port]/path``.
        options: ready-file rules and the SSH settings (identity, known_hosts, pickup).
        process_one: runs one (downloaded) file, writing its report into the given folder.
        state_dir: the importer's state folder (default parent of the work folder).

    Returns:
        The summary (``exit_code``: the worst of the files, 0 with none).
    """
    work_dir = options.work_dir or default_work_dir(url, state_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    inbox = RemoteInbox(
        url, options.identity, options.known_hosts, options.accept_new_host_key,
        work_dir=work_dir, pickup=options.pickup, timeout=options.timeout,
    )
    # The lock is local: it keeps two runs on this host apart; runs on two hosts draining
    # one remote folder must be kept apart by scheduling them on one host.
    with RunLock(work_dir / LOCK_NAME, label=inbox.label), inbox:
        return drain(inbox, options, process_one)


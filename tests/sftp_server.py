"""A real SFTP server for tests: asyncssh in a thread, on 127.0.0.1, port 0, chrooted in a folder.

The server has a generated ed25519 host key and accepts one generated client key; the client's
private key file and a matching known_hosts file are written for paramiko to use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh


@dataclass
class RunningSftp:
    """A started server and the client-side files that reach it."""

    root: Path  # the folder the server shows as "/"
    port: int
    host_key: asyncssh.SSHKey
    identity: Path  # the authorised client's private key (OpenSSH format, mode 600)
    known_hosts: Path  # one line for [127.0.0.1]:port with the host key
    connections: set[Any] = field(default_factory=set)

    def url(self, path: str = "/inbox", user: str = "tester") -> str:
        """``sftp://user@127.0.0.1:port/path``."""
        return f"sftp://{user}@127.0.0.1:{self.port}{path}"

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        """A known_hosts line for this server with ``key`` (default: its real host key)."""
        public = (key or self.host_key).export_public_key().decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"


def write_client_key(path: Path) -> asyncssh.SSHKey:
    """Generate an ed25519 client key and write its private part to ``path`` (mode 600)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    path.chmod(0o600)
    return key


@contextmanager
def sftp_server(workdir: Path) -> Iterator[RunningSftp]:
    """Start the server rooted at ``workdir/root``; always stopped when the block ends."""
    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = write_client_key(workdir / "id_ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    connections: set[Any] = set()

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            connections.add(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()

    async def listen() -> Any:
        return await asyncssh.listen(
            "127.0.0.1", 0,
            server_factory=Server,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()),
            allow_scp=False,
        )

    async def shutdown(acceptor: Any) -> None:
        acceptor.close()
        for conn in list(connections):
            conn.close()
            await conn.wait_closed()
        await acceptor.wait_closed()

    acceptor = None
    try:
        acceptor = asyncio.run_coroutine_threadsafe(listen(), loop).result(timeout=10)
        port = acceptor.get_port()
        known_hosts = workdir / "known_hosts"
        running = RunningSftp(root, port, host_key, workdir / "id_ed25519", known_hosts,
                              connections)
        known_hosts.write_text(running.known_hosts_line())
        yield running
    finally:
        if acceptor is not None:
            asyncio.run_coroutine_threadsafe(shutdown(acceptor), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

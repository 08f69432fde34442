"""Start the sandbox: in a background thread for tests and benchmarks, or in the foreground.

    from importer.sandbox.server import SandboxOptions, start

    with start(SandboxOptions(port=0, token="t", cases=seeds)) as sb:
        requests.get(f"{sb.url}/cases", headers={"X-API-Key": sb.token})
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from importer.sandbox.app import Runtime, build_app
from importer.sandbox.auth import Authenticator, PublicKey, load_public_key
from importer.sandbox.faults import FaultInjector, Faults
from importer.sandbox.store import Store, parse_cases_document

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class SandboxOptions:
    """How to run one sandbox.

    Attributes:
        host: loopback address to bind (the sandbox is not meant for other hosts).
        port: TCP port; 0 picks a free one (see ``RunningSandbox.url``).
        cases: seed cases as in the cases file's ``"cases"`` list (checked on start).
        api_codes: API codes → creditor id (or None) accepted by both logins.
        token: a fixed access token that never expires; None for none (then only logins).
        public_keys: PEM public keys (text, bytes or key objects) for the JWT login.
        token_lifetime: seconds an issued access token stays valid.
        max_jwt_lifetime: how far ahead (seconds) a login JWT's ``exp`` may lie.
        faults: the fault knobs at start.
        return_status_fields: also return status, status_reason_locale, settled_amount,
            case_invoice_number and case_reference_number in the 201.
        registration_interest: interest added on case registration, as a share of capital.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    cases: Sequence[Mapping[str, Any]] = ()
    api_codes: Mapping[str, str | None] = field(default_factory=dict)
    token: str | None = None
    public_keys: Sequence[str | bytes | PublicKey] = ()
    token_lifetime: float = 3600.0
    max_jwt_lifetime: float = 600.0
    faults: Faults = Faults()
    return_status_fields: bool = False
    registration_interest: float = 0.007


def _runtime(options: SandboxOptions) -> Runtime:
    seeds, codes = parse_cases_document(
        {"cases": list(options.cases), "api_codes": dict(options.api_codes)}, "options")
    keys = [k if not isinstance(k, str | bytes) else load_public_key(k)
            for k in options.public_keys]
    store = Store(seeds, codes, options.return_status_fields, options.registration_interest)
    auth = Authenticator(codes, keys, options.token, options.token_lifetime,
                         options.max_jwt_lifetime)
    return Runtime(store, auth, FaultInjector(options.faults), options.faults)


def _protocol(transports: dict[tuple[str, int], asyncio.Transport]
              ) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, remembering each connection's transport by client address.

    ASGI gives an app no handle on the socket; the "drop after store" fault needs one to
    abort the connection without sending a single byte back. httptools (C) rather than h11
    (pure Python): the sandbox must not be the bottleneck of the posting benchmarks.
    """

    class Protocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            raw = transport.get_extra_info("socket")
            if raw is not None:  # see _bind: no Nagle delay between headers and body
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.client:
                transports[tuple(self.client)] = transport  # type: ignore[index]

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client:
                transports.pop(tuple(self.client), None)  # type: ignore[arg-type]
            super().connection_lost(exc)

    return Protocol


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it each
    # response (headers and body are two writes) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _server(options: SandboxOptions) -> tuple[uvicorn.Server, socket.socket, Runtime, str]:
    rt = _runtime(options)
    sock = _bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    rt.base_url = url
    config = uvicorn.Config(build_app(rt), http=_protocol(rt.transports), ws="none",
                            lifespan="off", access_log=False, log_level="warning",
                            # uvloop where installed (not on Windows), else asyncio
                            loop="auto", timeout_keep_alive=30)
    return uvicorn.Server(config), sock, rt, url


class RunningSandbox:
    """A sandbox serving in a background thread; stop it with ``stop()`` or ``with``.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:41234``.
        token: the fixed access token (None when not configured).
        state: the in-memory :class:`~importer.sandbox.store.Store` (for test assertions).
    """

    def __init__(self, options: SandboxOptions) -> None:
        self._server, self._socket, self._runtime, self.url = _server(options)
        self.token = options.token
        self.state: Store = self._runtime.store
        self._thread = threading.Thread(target=self._run, name="amili-sandbox", daemon=True)
        self._error: BaseException | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``{"X-API-Key": token}`` for the fixed token (empty when there is none)."""
        return {"X-API-Key": self.token} if self.token else {}

    @property
    def app_state(self) -> Store:
        """The same as ``state`` (the name docs/ARCHITECTURE.md uses)."""
        return self.state

    @property
    def faults(self) -> Faults:
        """The fault knobs in force."""
        return self._runtime.injector.faults

    def set_faults(self, **knobs: Any) -> Faults:
        """Change fault knobs (same names as ``Faults``), like ``POST /_sandbox/faults``."""
        injector = self._runtime.injector
        with self.state.lock:
            injector.configure(injector.faults.updated(knobs))
        return injector.faults

    def reset(self) -> None:
        """Back to the seeds and the starting fault knobs, like ``POST /_sandbox/reset``."""
        with self.state.lock:
            self.state.reset()
            self._runtime.injector.configure(self._runtime.initial_faults)
            self._runtime.injector.reseed()

    def expire_tokens(self) -> int:
        """Expire every issued access token now (the fixed one stays valid)."""
        with self.state.lock:
            return self._runtime.auth.expire_all()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start(); a thread cannot raise to us
            self._error = exc

    def start(self) -> RunningSandbox:
        """Start serving; returns once connections are accepted."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started and self._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the sandbox did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=START_TIMEOUT)
        self._socket.close()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(options: SandboxOptions) -> RunningSandbox:
    """Start a sandbox in a background thread.

    Args:
        options: what to serve and where (port 0 picks a free port).

    Returns:
        The running sandbox; it accepts connections when this returns.

    Raises:
        OSError: the address cannot be bound.
        CasesFileError: the seed cases are wrong.
    """
    return RunningSandbox(options).start()


def serve(options: SandboxOptions, out: TextIO = sys.stdout) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, printing the URL and token on ``out``.

    Args:
        options: what to serve and where.
        out: where the URL and the token to use are printed (stdout for scripts).
    """
    if options.token is None:
        options = replace(options, token=secrets.token_urlsafe(24))
    server, sock, rt, url = _server(options)
    cases = rt.store.count("cases")
    # Shell-style lines the importer's config reads from the environment.
    print(f"AMILI_API_URL={url}", file=out)
    print(f"AMILI_ACCESS_TOKEN={options.token}", file=out)
    print("AMILI_ALLOW_HTTP=1", file=out)
    print(f"amili sandbox: {cases} case(s) loaded; press Ctrl+C to stop", file=sys.stderr)
    out.flush()
    # uvicorn re-raises the signal it stopped on once it has shut down; both are a normal stop.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    print("amili sandbox: stopped", file=sys.stderr)


class _Stopped(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown)."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


"""Turn the ``amili-import sandbox`` flags into :class:`SandboxOptions` and serve."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from importer.errors import UsageError
from importer.sandbox.auth import PublicKey, load_public_key
from importer.sandbox.faults import Faults
from importer.sandbox.server import SandboxOptions, serve
from importer.sandbox.store import CasesFileError, load_cases_file


@dataclass(frozen=True)
class SandboxFlags:
    """The command's flags, as click parsed them."""

    host: str
    port: int
    cases: Path | None
    token: str | None
    public_keys: tuple[Path, ...]
    api_codes: tuple[str, ...]
    token_lifetime: float
    latency_ms: float
    fail_503: float
    fail_429: float
    retry_after: float | None
    fail_500_after_store: float
    drop_after_store: float
    rate_limit: int | None
    faults_on_gets: bool
    seed: int | None
    return_status_fields: bool


def build_options(flags: SandboxFlags) -> SandboxOptions:
    """Read the files the flags name and check the knobs.

    Args:
        flags: the parsed command line.

    Returns:
        Options for :func:`importer.sandbox.server.serve`.

    Raises:
        UsageError: a file cannot be read or a knob is out of range (the message names it).
    """
    seeds: list[dict[str, object]] = []
    codes: dict[str, str | None] = {}
    if flags.cases is not None:
        try:
            seeds, codes = load_cases_file(flags.cases)
        except CasesFileError as exc:
            raise UsageError(f"--cases {exc}") from None
    for code in flags.api_codes:
        codes.setdefault(code, None)  # accepted for any creditor
    keys: list[PublicKey] = []
    for path in flags.public_keys:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            raise UsageError(f"--public-key {path}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise UsageError(f"--public-key {path}: not a PEM EC/RSA public key ({exc})") from None
    try:
        faults = Faults(latency_ms=flags.latency_ms, fail_503=flags.fail_503,
                        fail_429=flags.fail_429, retry_after=flags.retry_after,
                        fail_500_after_store=flags.fail_500_after_store,
                        drop_after_store=flags.drop_after_store, rate_limit=flags.rate_limit,
                        faults_on_gets=flags.faults_on_gets, seed=flags.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if flags.token_lifetime <= 0:
        raise UsageError("--token-lifetime must be more than 0 seconds")
    return SandboxOptions(host=flags.host, port=flags.port, cases=seeds, api_codes=codes,
                          token=flags.token, public_keys=keys,
                          token_lifetime=flags.token_lifetime, faults=faults,
                          return_status_fields=flags.return_status_fields)


def run(flags: SandboxFlags) -> None:
    """Serve in the foreground until Ctrl+C (the URL and token go to stdout).

    Raises:
        UsageError: bad flags or files, or the port cannot be bound.
    """
    options = build_options(flags)
    try:
        serve(options)
    except OSError as exc:
        raise UsageError(f"cannot listen on {flags.host}:{flags.port} ({exc.strerror}); "
                         "pick another --port") from None

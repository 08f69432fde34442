"""``amili-import doctor``: check the setup one step at a time, one clear line per check.

Each line reads ``ok``, ``warn`` or ``FAIL``, the check's name and a detail. A check that
cannot run because an earlier one failed is skipped with its reason. The exit code is 0 when no
check failed (warnings do not fail), else 3 (``CANNOT_RUN``): a cron job or CI step can run
``doctor`` before ``run``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from importer.config import ENV, Config, default_config_file
from importer.errors import ExitCode, ImporterError

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's output."""

    status: str  # ok | warn | FAIL
    name: str
    detail: str

    def line(self) -> str:
        """The line as printed: ``ok    login: ...``."""
        return f"{self.status:<5} {self.name}: {self.detail}"


def config_sources(config_file: Path | None, flags: list[str],
                   environ: Mapping[str, str] | None = None) -> str:
    """Which sources the merged configuration came from (names only, never values).

    Args:
        config_file: the ``--config`` file, if given.
        flags: names of the command-line settings that were given.
        environ: the environment (``os.environ`` when None).

    Returns:
        E.g. ``defaults, file ~/.config/amili-import/config.toml, environment (AMILI_API_URL)``.
    """
    env = os.environ if environ is None else environ
    parts = ["defaults"]
    path = config_file or (Path(env["AMILI_CONFIG"]) if env.get("AMILI_CONFIG") else None)
    if path is None and default_config_file().is_file():
        path = default_config_file()
    if path is not None:
        parts.append(f"file {path}")
    names = [var for var in ENV if env.get(var)]
    if names:
        parts.append(f"environment ({', '.join(names)})")
    if flags:
        parts.append(f"flags ({', '.join('--' + f.replace('_', '-') for f in flags)})")
    return ", ".join(parts)


def run_doctor(load: Callable[[], Config], sources: str,
               echo: Callable[[str], None] = print) -> ExitCode:
    """Run every check, printing each line as it completes.

    Args:
        load: builds the merged configuration (may raise ConfigError).
        sources: from :func:`config_sources`, for the first line.
        echo: where lines go (stdout in the CLI).

    Returns:
        ``ExitCode.OK`` when no check failed, else ``ExitCode.CANNOT_RUN``.
    """
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        echo(check.line())

    try:
        config = load()
    except ImporterError as exc:
        report(Check(FAIL, "config", f"{exc} (sources: {sources})"))
        return ExitCode.CANNOT_RUN
    report(Check(OK, "config", f"merged from {sources}"))
    api_ok = _check_api_url(config, report)
    login_ok = _check_login_settings(config, report)
    if api_ok and login_ok:
        _check_api(config, report)
    else:
        report(Check(FAIL, "login", "skipped: fix the lines above first"))
    if _check_state_dir(config.state_dir, report):
        _check_journal(config.state_dir, report)
    return ExitCode.CANNOT_RUN if any(c.status == FAIL for c in checks) else ExitCode.OK


def _check_api_url(config: Config, report: Callable[[Check], None]) -> bool:
    from importer.client import check_api_url

    try:
        url = check_api_url(config)
    except ImporterError as exc:
        report(Check(FAIL, "api_url", str(exc)))
        return False
    scheme = urlsplit(url).scheme
    if scheme == "https":
        report(Check(OK, "api_url", f"{url} (https, certificate verified)"))
    else:
        report(Check(WARN if config.allow_http else OK, "api_url",
                     f"{url} (plain http: " + ("allowed by allow_http)" if config.allow_http
                                               else "loopback only)")))
    return True


def _check_login_settings(config: Config, report: Callable[[Check], None]) -> bool:
    from importer.auth import (
        describe_key,
        key_algorithm,
        key_file_exposure,
        load_private_key,
        login_method,
    )

    try:
        method = login_method(config)
    except ImporterError as exc:
        report(Check(FAIL, "login method", str(exc)))
        return False
    labels = {"token": "ready access token (cannot be renewed)",
              "jwt": "JWT login with API code and private key",
              "api-code": "API-code login (POST)"}
    report(Check(OK, "login method", f"{method}: {labels[method]}"))
    if method != "jwt":
        return True
    assert config.private_key_file is not None
    path = Path(config.private_key_file).expanduser()
    if not path.is_file():
        report(Check(FAIL, "private key", f"{path} does not exist (private_key_file, env "
                                          "AMILI_PRIVATE_KEY_FILE)"))
        return False
    exposure = key_file_exposure(path)
    report(Check(WARN, "key permissions", exposure) if exposure
           else Check(OK, "key permissions", f"{path} is readable by its owner only"))
    try:
        key = load_private_key(path)
        algorithm = key_algorithm(key, config.jwt_algorithm)
    except ImporterError as exc:
        report(Check(FAIL, "private key", str(exc)))
        return False
    how = "set by jwt_algorithm" if config.jwt_algorithm else "from the key"
    report(Check(OK, "private key", f"{describe_key(key)} key loaded; algorithm {algorithm} "
                                    f"({how})"))
    return True


class _Silent:
    """A logger for the doctor's client: its own lines already say what the events would."""

    def _drop(self, event: str, **fields: object) -> None:
        pass

    debug = info = warning = error = _drop


def _check_api(config: Config, report: Callable[[Check], None]) -> None:
    from importer.client import ApiClient

    # Two attempts at most: the doctor should answer quickly, not retry for minutes.
    quick = config.with_overrides(max_attempts=min(config.max_attempts, 2), backoff_max=1.0)
    try:
        client = ApiClient(quick, log=_Silent())
    except ImporterError as exc:
        report(Check(FAIL, "login", str(exc)))
        return
    try:
        try:
            client.login()
        except ImporterError as exc:
            report(Check(FAIL, "login", str(exc)))
            return
        if client.auth.renewable:
            lifetime = client.auth.lifetime or 0.0
            report(Check(OK, "login", f"got an access token, valid for {lifetime:.0f} s "
                                      "(renewed before it expires)"))
        else:
            report(Check(OK, "login", "using the configured access token"))
        try:
            page = client.get_page("/cases", {"max_results": 1})
        except ImporterError as exc:
            report(Check(FAIL, "api access", str(exc)))
            return
        meta = page.get("_meta")
        total = meta.get("total") if isinstance(meta, dict) else None
        seen = f"{total} case(s) visible" if isinstance(total, int) else "answered"
        report(Check(OK, "api access", f"GET /cases?max_results=1: {seen}"))
        _check_clock(client.read_clock_offset, report)
    finally:
        client.close()


CLOCK_TOLERANCE = 60.0  # seconds between this machine's clock and the API's before a warning


def _check_clock(ahead: float | None, report: Callable[[Check], None]) -> None:
    """This machine's clock against the API's (its answers' Date header)."""
    if ahead is None:
        report(Check(WARN, "clock", "the API's answers carry no Date header: this machine's "
                                    "clock cannot be compared with it; keep it in sync (NTP)"))
    elif abs(ahead) <= CLOCK_TOLERANCE:
        report(Check(OK, "clock", f"in step with the API's (within {abs(ahead):.0f} s)"))
    else:
        way = "ahead of" if ahead > 0 else "behind"
        report(Check(WARN, "clock", (
            f"this machine's clock is {abs(ahead):.0f} s {way} the API's: keep it in sync "
            "(NTP). Bank dates 'in the future' are judged by it; the read-back of a lost "
            "answer allows for the difference it measures")))


def _check_state_dir(state_dir: Path, report: Callable[[Check], None]) -> bool:
    path = Path(state_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        report(Check(FAIL, "state directory", f"{path} is not writable: "
                                              f"{exc.strerror or exc} (state_dir, env "
                                              "AMILI_STATE_DIR, --state-dir)"))
        return False
    report(Check(OK, "state directory", f"{path} is writable"))
    return True


def _check_journal(state_dir: Path, report: Callable[[Check], None]) -> None:
    """SQLite's full integrity check of the journal, as every posting run makes (see
    ``Journal.verify``)."""
    import sqlite3

    from importer.journal import JOURNAL_NAME, damaged_message, integrity_problems

    path = Path(state_dir).expanduser() / JOURNAL_NAME
    if not path.exists():
        report(Check(OK, "journal", f"none yet in {path.parent} (the first posting run makes "
                                    "it)"))
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        problems = [str(exc)]
    else:
        try:
            problems = integrity_problems(db)
        finally:
            db.close()
    if problems:
        report(Check(FAIL, "journal", damaged_message(path, problems)))
    else:
        report(Check(OK, "journal", f"{path} passes SQLite's integrity check"))

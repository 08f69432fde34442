"""Configuration: a TOML file, environment variables and flags, merged here and only here.

Precedence, lowest first: built-in defaults < config file < environment < command-line flags.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from importer.errors import ConfigError, UsageError

HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")


def default_state_dir() -> Path:
    """Where runs, reports and the journal live when nothing else is said."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "amili-import"


def default_config_file() -> Path:
    """The config file read when neither --config nor AMILI_CONFIG names one."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "amili-import" / "config.toml"


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know, typed; the core never sees click objects."""

    api_url: str | None = None
    access_token: str | None = field(default=None, repr=False)
    api_code: str | None = field(default=None, repr=False)
    private_key_file: Path | None = None
    jwt_algorithm: str | None = None  # None: chosen from the key
    login: str = "auto"  # auto | token | jwt | api-code
    token_field: str | None = None  # field of the login answer holding the token
    # The JSON field of the older POST login's body (not shown in Amili's public docs).
    api_code_field: str = "api_code"
    token_lifetime: float = 600.0  # seconds assumed when the login answer says nothing
    allow_http: bool = False  # plain http:// to a non-loopback host
    state_dir: Path = field(default_factory=default_state_dir)
    default_creditor: str | None = None
    send_account: bool = False
    concurrency: int = 8
    rate_limit: float | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A POST whose answer was lost may still be stored this long after it was sent (a backend
    # that carries on after the gateway gave up): the row is posted again only when a
    # read-back at that age finds nothing. Keep it above connect_timeout + read_timeout.
    settle_seconds: float = 60.0
    allow_duplicates: bool = False
    encoding: str | None = None
    delimiter: str | None = None
    log_format: str = "auto"  # auto | json | console
    inbox_min_age: float = 60.0  # seconds a drop-folder file must rest before it is taken
    inbox_require_sidecar: bool = False  # take only files with a NAME.done / NAME.ok beside them

    def with_overrides(self, **values: Any) -> Config:
        """A copy with the given non-None values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


ENV = {
    "AMILI_API_URL": "api_url",
    "AMILI_ACCESS_TOKEN": "access_token",
    "AMILI_API_CODE": "api_code",
    "AMILI_PRIVATE_KEY_FILE": "private_key_file",
    "AMILI_JWT_ALGORITHM": "jwt_algorithm",
    "AMILI_LOGIN": "login",
    "AMILI_STATE_DIR": "state_dir",
    "AMILI_DEFAULT_CREDITOR": "default_creditor",
    "AMILI_CONCURRENCY": "concurrency",
    "AMILI_RATE_LIMIT": "rate_limit",
    "AMILI_ALLOW_HTTP": "allow_http",
    "AMILI_INBOX_MIN_AGE": "inbox_min_age",
    "AMILI_SETTLE_SECONDS": "settle_seconds",
    "AMILI_INBOX_REQUIRE_SIDECAR": "inbox_require_sidecar",
}
_TYPES = {f.name: f.type for f in fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = str(_TYPES[name])
    error = UsageError if source.startswith("--") else ConfigError
    try:
        if "Path" in kind:
            return Path(str(value)).expanduser()
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in {"1", "true", "yes", "on"}
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # never 8.9 → 8, nor true → 1
            return int(value)
        if kind.startswith("float"):
            number = float(value)
            if isinstance(value, bool) or not math.isfinite(number):
                raise ValueError(value)  # inf and nan are no timeouts, rates or ages
            return number
        return str(value)
    except (TypeError, ValueError):
        raise error(f"{source}: {name} = {value!r} is not a valid value") from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = {k.replace("-", "_"): v for k, v in data.get("amili", data).items()}
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    if "allow_duplicates" in data:
        # A decision about the rows of one run, never a standing setting: in a config file it
        # would let every identical row of every later run through (overlapping exports
        # posted twice, night after night).
        raise ConfigError(f"config file {path}: allow_duplicates is not a setting; pass "
                          "--allow-duplicates to the one run that holds a separate event "
                          "with the same values (never to the nightly job)")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def load_config(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> Config:
    """Merge defaults, the config file, the environment and flags (flags win).

    Args:
        config_file: explicit file (``--config``); else ``AMILI_CONFIG``; else the
            default path if it exists.
        environ: the environment to read (``os.environ`` when None).
        **flags: command-line values; None means "not given".

    Returns:
        The merged, checked configuration.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["AMILI_CONFIG"]) if env.get("AMILI_CONFIG") else None)
    if path is None and default_config_file().is_file():
        path = default_config_file()
    if path is not None:
        values.update(_from_file(path))
    for var, name in ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], var)
    given = {k: v for k, v in flags.items() if v is not None}
    values.update({k: _coerce(k, v, "--" + k) for k, v in given.items()})
    for secret in ("access_token", "api_code"):
        # "$(cat token.txt)" of a file saved on Windows ends in a CR: not part of the secret.
        if isinstance(values.get(secret), str):
            values[secret] = values[secret].strip()
    config = Config(**values)
    problem = _problem(config)
    if problem is not None:
        setting, message = problem
        # A bad value on the command line is a usage error (2); in the file or the
        # environment, a configuration that cannot run (3).
        raise (UsageError if setting in given else ConfigError)(message)
    return config


def header_safe(value: str) -> bool:
    """Whether a token can go into an HTTP header as it is: visible ASCII only."""
    return value.isascii() and value.isprintable() and " " not in value


def _problem(config: Config) -> tuple[str, str] | None:
    """The first setting whose value cannot work, and why; None when all can."""
    checks: list[tuple[str, bool, str]] = [
        ("default_creditor", config.default_creditor is None
         or bool(HEX24.match(config.default_creditor)),
         f"default_creditor {config.default_creditor!r} is not a 24-hex-digit creditor id"),
        ("concurrency", 1 <= config.concurrency <= 256, "concurrency must be between 1 and 256"),
        ("rate_limit", config.rate_limit is None or config.rate_limit > 0,
         "rate_limit must be greater than zero"),
        ("login", config.login in {"auto", "token", "jwt", "api-code"},
         "login must be one of auto, token, jwt, api-code"),
        ("log_format", config.log_format in {"auto", "json", "console"},
         "log_format must be one of auto, json, console"),
        ("inbox_min_age", config.inbox_min_age >= 0, "inbox_min_age must be zero or more seconds"),
        ("max_attempts", config.max_attempts >= 1, "max_attempts must be at least 1"),
        ("settle_seconds", config.settle_seconds >= 0,
         "settle_seconds must be zero or more seconds"),
        ("connect_timeout", config.connect_timeout > 0,
         "connect_timeout must be more than zero seconds"),
        ("read_timeout", config.read_timeout > 0, "read_timeout must be more than zero seconds"),
        ("backoff_base", config.backoff_base >= 0, "backoff_base must be zero or more seconds"),
        ("backoff_max", config.backoff_max >= 0, "backoff_max must be zero or more seconds"),
        ("token_lifetime", config.token_lifetime > 0,
         "token_lifetime must be more than zero seconds"),
        # Never quoted: a secret does not go into a message.
        ("access_token", config.access_token is None or header_safe(config.access_token),
         "access_token holds a character an HTTP header cannot carry (a space, a control "
         "character or a non-ASCII letter); check how it was copied (it is not shown here)"),
    ]
    return next(((name, message) for name, ok, message in checks if not ok), None)

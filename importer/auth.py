"""Login to Amili's API and keep a valid access token, shared by every posting thread.

Three ways in, chosen by ``config.login`` (``auto`` picks the first that is configured):

- ``token``: a ready access token (``AMILI_ACCESS_TOKEN``); it cannot be renewed.
- ``jwt``: ``GET /authenticates/api-code`` with ``X-API-Key: <JWT>``, the JWT signed by the
  creditor's private key with claims ``{"api_code", "exp"}``.
- ``api-code``: the older ``POST /authenticates/api-code`` with ``{"api_code": ...}`` (the field
  name is not shown in the public docs: ``config.api_code_field``).

The login answer's token field and lifetime are not public, so both are read tolerantly (see
:func:`parse_login_answer`). Nothing here ever logs or puts in a message the token, the JWT,
the API code or the key.
"""

from __future__ import annotations

import json
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from importer.answers import parse_instant
from importer.config import Config, header_safe
from importer.errors import ApiError, ConfigError

LOGIN_PATH = "/authenticates/api-code"
TOKEN_FIELDS = ("token", "access_token", "api_key", "accessToken", "key", "apiKey", "jwt",
                "x-api-key", "auth_token", "authToken")
# Fields of a login answer that describe the token rather than hold it.
LIFETIME_FIELDS = ("expires", "expires_in", "exp", "expires_at", "expiry")
# The docs say the JWT "should expire after 10 minutes". It is used once, right away; 5 minutes
# leaves room for a client clock that is off by up to 5 minutes either way.
JWT_VALIDITY = 300
RENEW_MARGIN = 60.0  # renew when less than this (or 10 % of the lifetime) remains

_CURVE_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_EC_ALGORITHMS = {"ES256", "ES384", "ES512"}
_RSA_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SendFn(Protocol):
    """How the provider reaches the API: the client's rate-limited, retrying sender."""

    def __call__(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                 data: str | None = None) -> requests.Response: ...


def login_method(config: Config) -> str:
    """The login to use: ``token``, ``jwt`` or ``api-code``.

    Args:
        config: the merged configuration.

    Returns:
        The method; ``auto`` resolves to the first one whose settings are present.

    Raises:
        ConfigError: the chosen (or any, for ``auto``) method lacks its settings.
    """
    method = config.login
    if method == "auto":
        if config.access_token:
            return "token"
        if config.api_code and config.private_key_file:
            return "jwt"
        if config.api_code:
            return "api-code"
        raise ConfigError(
            "no login configured: set AMILI_ACCESS_TOKEN (a ready access token), or "
            "AMILI_API_CODE with AMILI_PRIVATE_KEY_FILE (JWT login), or AMILI_API_CODE alone "
            "(API-code login)"
        )
    needs = {"token": ("access_token", "AMILI_ACCESS_TOKEN"),
             "jwt": ("api_code", "AMILI_API_CODE"),
             "api-code": ("api_code", "AMILI_API_CODE")}
    name, env = needs[method]
    if not getattr(config, name):
        raise ConfigError(f"login = {method} needs {name} (env {env})")
    if method == "jwt" and not config.private_key_file:
        raise ConfigError("login = jwt needs private_key_file (env AMILI_PRIVATE_KEY_FILE)")
    return method


def key_file_exposure(path: Path) -> str | None:
    """Why the key file is too open (group/other may read it), or None when it is private.

    Args:
        path: the private key file.

    Returns:
        A one-line warning with the fix, or None (also on Windows, where mode bits mean little).
    """
    if os.name == "nt":
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (f"{path} can be read by group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}")
    return None


def load_private_key(path: Path) -> PrivateKey:
    """Load a PEM (or DER) EC or RSA private key without a passphrase.

    Args:
        path: the key file.

    Returns:
        The key.

    Raises:
        ConfigError: missing, unreadable, encrypted, not a key, or of an unsupported type.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"private key file {path}: {exc.strerror or exc}") from None
    loader = (serialization.load_pem_private_key if b"-----BEGIN" in data
              else serialization.load_der_private_key)
    try:
        key = loader(data, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise ConfigError(f"private key file {path} is encrypted; amili-import needs a key "
                          "without a passphrase (keep the file private: chmod 600)") from None
    except ValueError:
        raise ConfigError(f"private key file {path} does not hold a PEM or DER "
                          "private key") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and friends
        raise ConfigError(f"private key file {path} cannot be used: "
                          f"{type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"private key file {path} holds a {type(key).__name__}; Amili takes "
                          "EC (P-256, P-384, P-521) or RSA keys")
    return key


def key_algorithm(key: PrivateKey, override: str | None = None) -> str:
    """The JWT algorithm for a key: EC P-256/384/521 → ES256/384/512, RSA → RS256.

    Args:
        key: the loaded private key.
        override: ``config.jwt_algorithm``; must suit the key's family.

    Returns:
        The algorithm name for PyJWT.

    Raises:
        ConfigError: the curve is unsupported or the override does not fit the key.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        family, allowed = "EC", _EC_ALGORITHMS
        chosen = _CURVE_ALGORITHMS.get(key.curve.name)
        if chosen is None:
            raise ConfigError(f"EC curve {key.curve.name} is not supported; use P-256, P-384 "
                              "or P-521")
    else:
        family, allowed, chosen = "RSA", _RSA_ALGORITHMS, "RS256"
    if override is not None:
        algorithm = override.strip().upper()
        if algorithm not in allowed:
            raise ConfigError(f"jwt_algorithm {override} does not fit an {family} key; use one of "
                              f"{', '.join(sorted(allowed))}")
        if family == "EC" and algorithm != chosen:
            # An EC algorithm names its curve (RFC 7518): nothing can sign ES512 with P-256.
            raise ConfigError(
                f"jwt_algorithm {override} needs another curve than this key's "
                f"({describe_key(key)}, which signs {chosen}). An older Amili page says ES512 "
                f"while generating a P-256 key: leave jwt_algorithm out (the key decides) or "
                f"set it to {chosen}")
        return algorithm
    return chosen


def describe_key(key: PrivateKey) -> str:
    """A short human description of a key (``EC P-256``, ``RSA 2048``), never its material."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    return f"RSA {key.key_size}"


@dataclass(frozen=True)
class LoginAnswer:
    """What a login answer gave: the token and, if it said, how long it lasts (seconds)."""

    token: str
    lifetime: float | None


def parse_login_answer(response: requests.Response, token_field: str | None,
                       now: float | None = None) -> LoginAnswer:
    """Find the access token and its lifetime in a login answer.

    Args:
        response: a 2xx answer from the login endpoint.
        token_field: ``config.token_field``; else the first string among :data:`TOKEN_FIELDS`,
            or a bare JSON string body.
        now: the current Unix time (for ``expires``/``exp``); ``time.time()`` when None.

    Returns:
        The token and its lifetime from ``expires_in`` (seconds), ``expires`` (RFC 1123 date
        or Unix time), ``exp``, or the token's own JWT ``exp``; None when nothing says.

    Raises:
        ApiError: no token found (the message names the fields seen, never their values).
    """
    now = time.time() if now is None else now
    try:
        data: Any = response.json()
    except ValueError:
        text = response.text.strip()
        # A plain-text answer that is one opaque word is taken as the token itself.
        data = text if text and len(text) < 8192 and not any(c.isspace() for c in text) else None
    token: Any = None
    if isinstance(data, str):
        token, data = data, {}
    elif isinstance(data, dict):
        token, data = _find_token(data, token_field)
    if isinstance(token, str):
        token = token.strip()
        if not header_safe(token):
            raise ApiError("the login answer's access token holds a character an HTTP header "
                           "cannot carry (a space, a control character or a non-ASCII letter);"
                           " it is not shown here")
    if not isinstance(token, str) or not token:
        seen = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        wanted = token_field or " / ".join(TOKEN_FIELDS)
        raise ApiError(f"login answer has no access token in {wanted} (fields seen: "
                       f"{seen or 'none'}); set token_field in the config file")
    return LoginAnswer(token, _lifetime(data if isinstance(data, dict) else {}, token, now))


def _find_token(data: dict[str, Any], token_field: str | None) -> tuple[str | None, dict[str, Any]]:
    """The token and the object holding it (its lifetime sits beside it).

    The field name is not public, so without ``token_field`` (a name, or a dotted path such as
    ``data.token``) the answer is searched at the top level, then one level down: first the
    usual names, then the one string field that is neither an Eve ``_`` field nor a lifetime.
    """
    if token_field:
        *path, name = token_field.split(".")
        scope: Any = data
        for part in path:
            scope = scope.get(part) if isinstance(scope, dict) else None
        if isinstance(scope, dict) and isinstance(scope.get(name), str) and scope[name]:
            return scope[name], scope
        return None, data
    scopes = [data, *(v for v in data.values() if isinstance(v, dict))]
    for scope in scopes:
        for name in TOKEN_FIELDS:
            if isinstance(scope.get(name), str) and scope[name]:
                return scope[name], scope
    for scope in scopes:
        # A token is long and has no spaces; "ok" or "Logged in" is a message, not a token.
        strings = [k for k, v in scope.items() if isinstance(v, str) and len(v) >= 16
                   and not any(c.isspace() for c in v)
                   and not k.startswith("_") and k not in LIFETIME_FIELDS]
        if len(strings) == 1:
            return scope[strings[0]], scope
    return None, data


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _epoch(value: Any) -> float | None:
    number = _number(value)
    if number is not None:
        return number / 1000 if number > 1e12 else number  # milliseconds, if that large
    moment = parse_instant(value)  # RFC 1123 or ISO 8601
    return moment.timestamp() if moment is not None else None


def _lifetime(data: dict[str, Any], token: str, now: float) -> float | None:
    seconds = _number(data.get("expires_in"))
    if seconds is not None:
        return seconds
    for name in ("expires", "exp", "expires_at", "expiry"):
        when = _epoch(data.get(name))
        if when is not None:
            return when - now
    if token.count(".") == 2:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        when = _epoch(claims.get("exp"))
        if when is not None:
            return when - now
    return None


class TokenProvider:
    """A valid access token on demand, for any number of threads.

    Args:
        config: the merged configuration.
        send: the client's sender (rate limit, timeouts, retries of transient failures).
        log: a structlog logger.
        clock: monotonic seconds; injectable for tests.

    Raises:
        ConfigError: login settings are missing, or the key file cannot be used.
    """

    def __init__(self, config: Config, send: SendFn, log: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.method = login_method(config)
        self._config = config
        self._send = send
        self._log = log if log is not None else structlog.get_logger()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = math.inf
        self.lifetime: float | None = None  # seconds granted by the last login, if known
        self.logins = 0
        self._key: PrivateKey | None = None
        self.algorithm: str | None = None
        if self.method == "token":
            self._token = config.access_token
        elif self.method == "jwt":
            assert config.private_key_file is not None
            path = Path(config.private_key_file).expanduser()
            self._key = load_private_key(path)
            self.algorithm = key_algorithm(self._key, config.jwt_algorithm)
            exposure = key_file_exposure(path)
            if exposure:
                # Warn, not refuse: mounted secrets are often 0644 and the fix is the user's.
                self._log.warning("auth.key_file_exposed", detail=exposure)

    @property
    def renewable(self) -> bool:
        """Whether a new token can be had (False for a ready access token)."""
        return self.method != "token"

    def get_valid_token(self) -> str:
        """A token with time left; logs in (once, for all threads) when needed.

        Raises:
            ApiError: the login was refused or the API could not be reached.
        """
        with self._lock:
            if self._token is not None and (not self.renewable or self._clock() < self._renew_at):
                return self._token
            return self._login()

    def fresh(self, token: str) -> bool:
        """Whether ``token`` is still the current one, with time left (no lock, no login: asked
        while holding a rate-limiter slot that a login would need)."""
        return token == self._token and (not self.renewable or self._clock() < self._renew_at)

    def login(self) -> None:
        """Log in now, even if the current token is still valid (a ready token is kept).

        Raises:
            ApiError: the login was refused or the API could not be reached.
        """
        if self.renewable:
            with self._lock:
                self._login()

    def invalidate(self, token: str | None = None) -> None:
        """Drop a token the API refused (HTTP 401), so the next call logs in again.

        Args:
            token: the refused token; if another thread already renewed it, nothing happens.

        Raises:
            ApiError: the token is a ready access token, which cannot be renewed.
        """
        if not self.renewable:
            raise ApiError("the access token was refused (expired?): set a new "
                           "AMILI_ACCESS_TOKEN, or log in with AMILI_API_CODE")
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def _login(self) -> str:
        if self.method == "jwt":
            assert self._key is not None and self.algorithm is not None
            claims = {"api_code": self._config.api_code, "exp": int(time.time()) + JWT_VALIDITY}
            try:
                assertion = jwt.encode(claims, self._key, algorithm=self.algorithm)
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise ConfigError(f"cannot sign the login JWT with {self.algorithm}: "
                                  f"{type(exc).__name__}") from None
            response = self._send("GET", LOGIN_PATH, headers={"X-API-Key": assertion})
        else:
            response = self._send("POST", LOGIN_PATH,
                                  headers={"Content-Type": "application/json"},
                                  data=json.dumps({self._config.api_code_field:
                                                   self._config.api_code}))
        verb = "GET" if self.method == "jwt" else "POST"
        if not 200 <= response.status_code < 300:
            from importer.client import api_message  # the one place API errors are worded

            raise ApiError(f"login refused ({self.method} login, {verb} {LOGIN_PATH}): "
                           f"{api_message(response)}")
        answer = parse_login_answer(response, self._config.token_field)
        lifetime = answer.lifetime
        if lifetime is None or lifetime <= 0:
            if lifetime is not None:  # already past: our clock and the API's disagree
                self._log.warning("auth.token_expiry_in_past", seconds=round(lifetime, 1))
            lifetime = self._config.token_lifetime
        self._token = answer.token
        self.lifetime = lifetime
        self.logins += 1
        self._renew_at = self._clock() + lifetime - min(RENEW_MARGIN, lifetime * 0.1)
        self._log.info("auth.login", method=self.method, lifetime_s=round(lifetime, 1),
                       logins=self.logins)
        return answer.token

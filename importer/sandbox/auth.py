"""Login (JWT or API code) and the opaque access tokens every other call sends as ``X-API-Key``.

Tokens are random strings kept in memory; they are never logged. A JWT is accepted when its
signature verifies against one of the configured public keys (EC keys: ES256/384/512, RSA keys:
RS256/384/512; PyJWT also insists that the EC curve matches the algorithm, e.g. P-256 ↔ ES256),
it carries ``api_code`` and ``exp``, it has not expired (30 s leeway for clock skew), and its
``exp`` lies no more than ``max_jwt_lifetime`` seconds (+ leeway) ahead: Amili's docs say the JWT
should expire after 10 minutes, and holding the importer to that costs nothing.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

LEEWAY_SECONDS = 30
EC_ALGORITHMS = ["ES256", "ES384", "ES512"]
RSA_ALGORITHMS = ["RS256", "RS384", "RS512"]

log = logging.getLogger("importer.sandbox")

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def load_public_key(pem: bytes | str) -> PublicKey:
    """Load one PEM public key (EC or RSA).

    Args:
        pem: the PEM text (``-----BEGIN PUBLIC KEY-----``).

    Returns:
        The key object.

    Raises:
        ValueError: not a PEM public key, or neither EC nor RSA.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    key = load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"only EC and RSA public keys are supported, not {type(key).__name__}")
    return key


@dataclass
class Grant:
    """What a token was issued for."""

    api_code: str | None
    expires_at: float  # time.time(); inf for the fixed token


class Authenticator:
    """Issues and checks access tokens.

    Args:
        api_codes: accepted API codes → their creditor id (None: any creditor).
        public_keys: keys a login JWT may be signed with.
        fixed_token: a token that is always valid (for the demo and tests); None for none.
        token_lifetime: seconds an issued token stays valid.
        max_jwt_lifetime: how far ahead a JWT's ``exp`` may lie, in seconds.
    """

    def __init__(self, api_codes: dict[str, str | None], public_keys: Iterable[PublicKey],
                 fixed_token: str | None, token_lifetime: float,
                 max_jwt_lifetime: float = 600.0) -> None:
        self.api_codes = dict(api_codes)
        self.public_keys = list(public_keys)
        self.fixed_token = fixed_token
        self.token_lifetime = token_lifetime
        self.max_jwt_lifetime = max_jwt_lifetime
        self._grants: dict[str, Grant] = {}

    # -- logins ---------------------------------------------------------------------------

    def login_with_jwt(self, token: str | None) -> dict[str, Any] | None:
        """Verify a login JWT and issue an access token, or None when it is refused."""
        if not token:
            log.info("login refused: no X-API-Key header")
            return None
        claims = self._verify(token)
        if claims is None:
            return None
        return self._issue(claims["api_code"])

    def login_with_code(self, api_code: object) -> dict[str, Any] | None:
        """Issue an access token for a known API code, or None when it is refused."""
        if not isinstance(api_code, str) or api_code not in self.api_codes:
            log.info("login refused: unknown API code")
            return None
        return self._issue(api_code)

    def _verify(self, token: str) -> dict[str, Any] | None:
        if not self.public_keys:
            log.info("login refused: no public key is configured for JWT login")
            return None
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            log.info("login refused: X-API-Key is not a JWT")
            return None
        for key in self.public_keys:
            algorithms = EC_ALGORITHMS if isinstance(key, ec.EllipticCurvePublicKey) \
                else RSA_ALGORITHMS
            if alg not in algorithms:
                continue
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key, algorithms=algorithms, leeway=LEEWAY_SECONDS,
                    options={"require": ["exp", "api_code"]})
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
                continue  # signed with another registered key (or a curve that does not fit)
            except jwt.PyJWTError as exc:
                log.info("login refused: %s", type(exc).__name__)
                return None
            exp = claims["exp"]
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                log.info("login refused: JWT exp is not a number of seconds")
                return None  # (PyJWT takes "1764000000" as a string)
            if exp > time.time() + self.max_jwt_lifetime + LEEWAY_SECONDS:
                log.info("login refused: JWT exp more than %ss ahead", self.max_jwt_lifetime)
                return None
            if not isinstance(claims["api_code"], str) or claims["api_code"] not in self.api_codes:
                log.info("login refused: unknown API code in JWT")
                return None
            return claims
        log.info("login refused: JWT signature matches no configured public key")
        return None

    def _issue(self, api_code: str) -> dict[str, Any]:
        from importer.sandbox.store import rfc1123

        token = secrets.token_urlsafe(32)
        now = time.time()
        self._grants[token] = Grant(api_code, now + self.token_lifetime)
        self._forget_expired(now)
        return {"token": token, "expires": rfc1123(now + self.token_lifetime),
                "expires_in": int(self.token_lifetime)}

    # -- checks ---------------------------------------------------------------------------

    def check(self, token: str | None) -> bool:
        """Whether ``token`` (the X-API-Key header) is valid now."""
        if not token:
            return False
        if self.fixed_token is not None and secrets.compare_digest(token, self.fixed_token):
            return True
        grant = self._grants.get(token)
        return grant is not None and grant.expires_at > time.time()

    def expire_all(self) -> int:
        """Make every issued token expired now (not the fixed one); returns how many."""
        count = len(self._grants)
        for grant in self._grants.values():
            grant.expires_at = 0.0
        return count

    def _forget_expired(self, now: float) -> None:
        # Keeps memory bounded in long benchmark runs; expired tokens fail the same either way.
        if len(self._grants) > 1000:
            for token in [t for t, g in self._grants.items() if g.expires_at <= now]:
                del self._grants[token]

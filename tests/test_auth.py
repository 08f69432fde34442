"""Login: key loading, algorithm choice, the login answer, and logins against the sandbox."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fixtures_sandbox import API_CODE, payment_body

from importer.auth import (
    key_algorithm,
    key_file_exposure,
    load_private_key,
    login_method,
    parse_login_answer,
)
from importer.client import ApiClient
from importer.config import Config
from importer.errors import ApiError, ConfigError
from importer.kinds import PAYMENTS
from importer.sandbox.server import RunningSandbox

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def write_key(path: Path, key: PrivateKey, mode: int = 0o600) -> Path:
    """Write a key as unencrypted PKCS#8 PEM with the given file mode."""
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, mode)
    return path


def public_pem(key: PrivateKey) -> str:
    """The PEM public key the sandbox is configured with."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def answer(body: Any, status: int = 200, raw: bytes | None = None) -> requests.Response:
    """A real requests.Response carrying a login answer (no network involved)."""
    response = requests.Response()
    response.status_code = status
    response._content = raw if raw is not None else json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


@pytest.mark.parametrize(("curve", "algorithm"), [
    (ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")])
def test_ec_curve_picks_algorithm(tmp_path: Path, curve: ec.EllipticCurve, algorithm: str) -> None:
    """An EC key's curve decides the JWT algorithm (P-256 → ES256, P-384 → ES384, P-521 → ES512)."""
    path = write_key(tmp_path / "key.pem", ec.generate_private_key(curve))
    assert key_algorithm(load_private_key(path)) == algorithm


def test_an_ec_override_must_name_the_keys_curve() -> None:
    """helper-55: ES512 with a P-256 key (the older docs' pairing) passed the configuration
    and failed only at login; it is refused up front, naming the way out."""
    key = ec.generate_private_key(ec.SECP256R1())
    assert key_algorithm(key, "es256") == "ES256"
    with pytest.raises(ConfigError, match=r"jwt_algorithm ES512 needs another curve than this "
                                          r"key's \(EC P-256, which signs ES256\)"):
        key_algorithm(key, "ES512")


def test_rsa_key_is_rs256_and_override_must_fit(tmp_path: Path) -> None:
    """An RSA key signs RS256; jwt_algorithm overrides within the key's family only."""
    key = load_private_key(write_key(tmp_path / "rsa.pem",
                                     rsa.generate_private_key(65537, 2048)))
    assert key_algorithm(key) == "RS256"
    assert key_algorithm(key, "rs512") == "RS512"
    with pytest.raises(ConfigError, match="does not fit an RSA key"):
        key_algorithm(key, "ES256")


def test_unusable_key_files_give_clear_errors(tmp_path: Path) -> None:
    """A missing, non-key or passphrase-protected key file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="missing.pem"):
        load_private_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="does not hold"):
        load_private_key(junk)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="encrypted"):
        load_private_key(locked)


def test_key_file_readable_by_others_is_reported(tmp_path: Path) -> None:
    """A key file readable by group or others is flagged with the chmod that fixes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    assert key_file_exposure(write_key(tmp_path / "private.pem", key)) is None
    exposed = key_file_exposure(write_key(tmp_path / "open.pem", key, 0o644))
    assert exposed is not None and "chmod 600" in exposed and "0644" in exposed


def test_auto_login_method_order(tmp_path: Path) -> None:
    """auto picks a ready token, else JWT (code + key), else the API-code POST; none is an error."""
    key = tmp_path / "k.pem"
    assert login_method(Config(access_token="t", api_code="c", private_key_file=key)) == "token"
    assert login_method(Config(api_code="c", private_key_file=key)) == "jwt"
    assert login_method(Config(api_code="c")) == "api-code"
    with pytest.raises(ConfigError, match="AMILI_ACCESS_TOKEN"):
        login_method(Config())
    with pytest.raises(ConfigError, match="private_key_file"):
        login_method(Config(login="jwt", api_code="c"))


def test_login_answer_token_field_and_lifetime() -> None:
    """The token is the first string among the known fields; expires_in gives the lifetime."""
    got = parse_login_answer(answer({"_id": "x", "access_token": "abc", "expires_in": 120}), None)
    assert (got.token, got.lifetime) == ("abc", 120.0)
    got = parse_login_answer(answer({"jwt": "abc", "token": "other"}), "jwt")
    assert got.token == "abc" and got.lifetime is None


def test_login_answer_expiry_forms() -> None:
    """expires as RFC 1123 date or epoch, exp, expires_at in ISO 8601, expiry, and a JWT
    token's own exp all give a lifetime."""
    now = 1_750_000_000.0
    date = formatdate(now + 300, usegmt=True)  # "Sun, 15 Jun 2025 15:11:40 GMT"
    assert parse_login_answer(answer({"token": "t", "expires": date}), None, now).lifetime == 300
    assert parse_login_answer(answer({"key": "t", "expires": now + 90}), None, now).lifetime == 90
    assert parse_login_answer(answer({"token": "t", "exp": now + 45}), None, now).lifetime == 45
    iso = datetime.fromtimestamp(now + 120, UTC).isoformat()
    assert parse_login_answer(answer({"token": "t", "expires_at": iso}), None, now).lifetime == 120
    assert parse_login_answer(answer({"token": "t", "expiry": now + 75}), None, now).lifetime == 75
    token = jwt.encode({"exp": int(now) + 200}, "k" * 32, algorithm="HS256")
    assert parse_login_answer(answer({"token": token}), None, now).lifetime == 200


def test_login_answer_bare_string_and_missing_token() -> None:
    """A bare JSON string is the token; an answer without one names the fields, not values."""
    assert parse_login_answer(answer("tok-123"), None).token == "tok-123"
    with pytest.raises(ApiError, match=r"fields seen: secret_value_holder") as info:
        parse_login_answer(answer({"secret_value_holder": 12}), None)
    assert "12" not in str(info.value)


def test_a_login_answers_token_a_header_cannot_carry_is_refused_unquoted() -> None:
    """helper-53: the same for a token the login answers with (trimmed; refused, not shown,
    when it holds a character a header cannot carry)."""
    assert parse_login_answer(answer({"token": "issued\r\n"}), None).token == "issued"
    with pytest.raises(ApiError, match="it is not shown here") as info:
        parse_login_answer(answer({"token": "SECRET\u00e9"}), None)
    assert "SECRET" not in str(info.value)


def test_jwt_claims_and_expiry_are_short(tmp_path: Path) -> None:
    """The login JWT carries api_code and an exp no more than 10 minutes ahead."""
    from importer.auth import TokenProvider

    key = ec.generate_private_key(ec.SECP384R1())
    path = write_key(tmp_path / "k.pem", key)
    sent: list[dict[str, str]] = []

    def send(method: str, path: str, *, headers: dict[str, str] | None = None,
             data: str | None = None) -> requests.Response:
        sent.append(dict(headers or {}))
        return answer({"token": "issued", "expires_in": 50})

    provider = TokenProvider(Config(api_code="CODE-1", private_key_file=path), send)
    assert provider.get_valid_token() == "issued"
    claims = jwt.decode(sent[0]["X-API-Key"], key.public_key(), algorithms=["ES384"])
    assert claims["api_code"] == "CODE-1"
    assert time.time() < claims["exp"] <= time.time() + 600
    assert provider.lifetime == 50


def test_the_api_code_logins_body_field_is_a_setting(tmp_path: Path) -> None:
    """helper-55: the older POST login's body field is not in Amili's public docs (very
    likely api_code, the default); a config file can name another."""
    from importer.auth import TokenProvider
    from importer.config import load_config

    bodies: list[str | None] = []

    def send(method: str, path: str, *, headers: dict[str, str] | None = None,
             data: str | None = None) -> requests.Response:
        bodies.append(data)
        return answer({"token": "issued", "expires_in": 50})

    conf = tmp_path / "c.toml"
    conf.write_text('api_code = "CODE-1"\napi_code_field = "code"\n', encoding="utf-8")
    for config in (Config(api_code="CODE-1"), load_config(conf, environ={})):
        assert TokenProvider(config, send).get_valid_token() == "issued"
    assert [json.loads(b or "") for b in bodies] == [{"api_code": "CODE-1"}, {"code": "CODE-1"}]


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP521R1()),
    lambda: rsa.generate_private_key(65537, 2048),
], ids=["EC-P256", "EC-P521", "RSA-2048"])
def test_jwt_login_against_the_sandbox(make_sandbox: Callable[..., RunningSandbox],
                                       tmp_path: Path, make_key: Callable[[], PrivateKey]) -> None:
    """A JWT signed with a registered EC or RSA key logs in, and the token then posts."""
    key = make_key()
    sb = make_sandbox(token=None, public_keys=[public_pem(key)])
    config = Config(api_url=sb.url, api_code=API_CODE,
                    private_key_file=write_key(tmp_path / "key.pem", key))
    with ApiClient(config) as client:
        client.login()
        assert client.auth.method == "jwt" and client.auth.lifetime == 3600
        assert client.post(PAYMENTS, payment_body()).outcome == "created"


def test_jwt_with_unregistered_key_is_refused(make_sandbox: Callable[..., RunningSandbox],
                                              tmp_path: Path) -> None:
    """A key the API does not know: one clear ApiError line, with no JWT or key material."""
    registered = ec.generate_private_key(ec.SECP256R1())
    sb = make_sandbox(token=None, public_keys=[public_pem(registered)])
    path = write_key(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    with ApiClient(Config(api_url=sb.url, api_code=API_CODE, private_key_file=path)) as client, \
            pytest.raises(ApiError) as info:
        client.post(PAYMENTS, payment_body())
    message = str(info.value)
    assert message.startswith("login refused (jwt login, GET /authenticates/api-code): HTTP 401")
    assert "eyJ" not in message and "PRIVATE" not in message and API_CODE not in message
    assert sb.state.count(PAYMENTS.resource) == 0


def test_api_code_post_login(sandbox: RunningSandbox) -> None:
    """api_code alone logs in with POST /authenticates/api-code and reads expires_in."""
    with ApiClient(Config(api_url=sandbox.url, api_code=API_CODE)) as client:
        client.login()
        assert client.auth.method == "api-code" and client.auth.lifetime == 3600
        assert client.get_case("0" * 24) is None


def test_login_answer_other_shapes() -> None:
    """Undocumented answer shapes still work: nested one level, other names, a dotted path."""
    now = 1_750_000_000.0
    nested = parse_login_answer(answer({"_status": "OK", "data": {"accessToken": "n1",
                                                                  "expires_in": 60}}), None, now)
    assert (nested.token, nested.lifetime) == ("n1", 60.0)
    session = "sess-0123456789abcdef"
    only = parse_login_answer(answer({"_status": "OK", "session": session, "expires": now + 30}),
                              None, now)
    assert (only.token, only.lifetime) == (session, 30.0)
    # A short or spaced string is a message, not a token: the nested one is taken.
    wrapped = parse_login_answer(answer({"message": "ok", "result": {"value": session}}),
                                 None, now)
    assert wrapped.token == session
    dotted = parse_login_answer(answer({"result": {"value": "d1"}}), "result.value", now)
    assert dotted.token == "d1"
    with pytest.raises(ApiError, match="fields seen"):
        parse_login_answer(answer({"a": "x", "b": "y"}), None, now)

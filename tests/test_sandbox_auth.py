"""Logins and access tokens over HTTP: JWT (EC and RSA), API code, expiry and the Eve 401."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fixtures_sandbox import API_CODE, payment_body

from importer.sandbox.server import RunningSandbox

LOGIN = "/authenticates/api-code"
UNAUTHORISED = {"_status": "ERR",
                "_error": {"code": 401, "message": "Please provide proper credentials"}}


def _pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key pair made for these tests."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA 2048 key pair made for these tests."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed(key: Any, algorithm: str, lifetime: float = 600, code: str = API_CODE) -> str:
    return jwt.encode({"api_code": code, "exp": int(time.time() + lifetime)}, key,
                      algorithm=algorithm)


def mismatched_curve(key: ec.EllipticCurvePrivateKey) -> str:
    """An 'ES512' JWT signed with a P-256 key, as an older Amili page suggests (PyJWT won't)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"api_code": API_CODE, "exp": int(time.time() + 600)}
    signing_input = (b64(json.dumps({"alg": "ES512", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(claims).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA512())))
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def login_jwt(sb: RunningSandbox, token: str) -> requests.Response:
    return requests.get(f"{sb.url}{LOGIN}", headers={"X-API-Key": token}, timeout=10)


def cases_with(sb: RunningSandbox, token: str | None) -> requests.Response:
    headers = {"X-API-Key": token} if token is not None else {}
    return requests.get(f"{sb.url}/cases", headers=headers, timeout=10)


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_missing_or_wrong_token_is_eve_401(sandbox: RunningSandbox, token: str | None) -> None:
    """Without a valid X-API-Key every endpoint answers Eve's 401 body."""
    response = cases_with(sandbox, token)
    assert response.status_code == 401
    assert response.json() == UNAUTHORISED
    posted = requests.post(f"{sandbox.url}/creditor--payments", json=payment_body(),
                           headers={"X-API-Key": token or ""}, timeout=10)
    assert posted.status_code == 401
    assert sandbox.state.count("creditor--payments") == 0


def test_fixed_token_is_accepted(sandbox: RunningSandbox) -> None:
    """The fixed token opens every endpoint."""
    assert cases_with(sandbox, sandbox.token).status_code == 200


@pytest.mark.parametrize(("key_name", "algorithm"), [("ec_key", "ES256"), ("rsa_key", "RS256"),
                                                     ("rsa_key", "RS512")])
def test_jwt_login_issues_a_working_token(make_sandbox: Any, request: pytest.FixtureRequest,
                                          key_name: str, algorithm: str) -> None:
    """A JWT signed by a registered key (EC or RSA) gets a token that opens the API."""
    key = request.getfixturevalue(key_name)
    sb = make_sandbox(token=None, public_keys=[_pem(key)], token_lifetime=120)
    response = login_jwt(sb, signed(key, algorithm))
    assert response.status_code == 200, response.text
    grant = response.json()
    assert set(grant) == {"token", "expires", "expires_in"}
    assert grant["expires_in"] == 120
    assert grant["expires"].endswith(" GMT")
    assert cases_with(sb, grant["token"]).status_code == 200


def test_jwt_login_accepts_either_of_two_keys(make_sandbox: Any, ec_key: Any,
                                              rsa_key: Any) -> None:
    """With several registered keys, a JWT signed by any of them is accepted."""
    sb = make_sandbox(public_keys=[_pem(ec_key), _pem(rsa_key)])
    assert login_jwt(sb, signed(ec_key, "ES256")).status_code == 200
    assert login_jwt(sb, signed(rsa_key, "RS384")).status_code == 200


def test_jwt_login_refusals_are_401(make_sandbox: Any, ec_key: Any, rsa_key: Any) -> None:
    """Wrong key, expired, too long-lived, unknown code, wrong curve or no JWT: all 401."""
    sb = make_sandbox(public_keys=[_pem(ec_key)])
    other = ec.generate_private_key(ec.SECP256R1())
    refused = [
        signed(other, "ES256"),  # not a registered key
        signed(ec_key, "ES256", lifetime=-120),  # expired (beyond the 30 s leeway)
        signed(ec_key, "ES256", lifetime=3600),  # exp more than 10 minutes ahead
        signed(ec_key, "ES256", code="nope"),  # unknown API code
        mismatched_curve(ec_key),  # ES512 label on a P-256 signature
        signed(rsa_key, "RS256"),  # RSA key not registered
        jwt.encode({"api_code": API_CODE}, ec_key, algorithm="ES256"),  # no exp
        jwt.encode({"api_code": API_CODE, "exp": str(int(time.time()) + 60)}, ec_key,
                   algorithm="ES256"),  # exp as text (PyJWT takes it; the sandbox crashed)
        "not-a-jwt",
    ]
    for token in refused:
        response = login_jwt(sb, token)
        assert response.status_code == 401, token
        assert response.json() == UNAUTHORISED


def test_api_code_login(sandbox: RunningSandbox) -> None:
    """POST /authenticates/api-code with a known code gets a token; an unknown code is 401."""
    response = requests.post(f"{sandbox.url}{LOGIN}", json={"api_code": API_CODE}, timeout=10)
    assert response.status_code == 200
    assert cases_with(sandbox, response.json()["token"]).status_code == 200
    refused = requests.post(f"{sandbox.url}{LOGIN}", json={"api_code": "guess"}, timeout=10)
    assert refused.status_code == 401 and refused.json() == UNAUTHORISED
    no_code = requests.post(f"{sandbox.url}{LOGIN}", json={}, timeout=10)
    assert no_code.status_code == 401


def test_tokens_expire_after_their_lifetime(make_sandbox: Any) -> None:
    """An issued token stops working after token_lifetime; a new login works again."""
    sb = make_sandbox(token_lifetime=1)
    token = requests.post(f"{sb.url}{LOGIN}", json={"api_code": API_CODE},
                          timeout=10).json()["token"]
    assert cases_with(sb, token).status_code == 200
    time.sleep(1.2)
    assert cases_with(sb, token).status_code == 401
    fresh = requests.post(f"{sb.url}{LOGIN}", json={"api_code": API_CODE},
                          timeout=10).json()["token"]
    assert cases_with(sb, fresh).status_code == 200


def test_admin_can_expire_issued_tokens(sandbox: RunningSandbox) -> None:
    """POST /_sandbox/expire-tokens ends issued tokens at once; the fixed token stays valid."""
    token = requests.post(f"{sandbox.url}{LOGIN}", json={"api_code": API_CODE},
                          timeout=10).json()["token"]
    answer = requests.post(f"{sandbox.url}/_sandbox/expire-tokens", timeout=10).json()
    assert answer == {"expired": 1}
    assert cases_with(sandbox, token).status_code == 401
    assert cases_with(sandbox, sandbox.token).status_code == 200

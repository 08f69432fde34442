"""``amili-import sandbox``: flags, the cases file, and serving in the foreground."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures_sandbox import API_CODE, CREDITOR, OPEN_CASE, seed_document

from importer.errors import UsageError
from importer.sandbox.cli import SandboxFlags, build_options
from importer.sandbox.server import SandboxOptions, start
from importer.sandbox.store import CasesFileError, load_cases_file


def flags(**changes: Any) -> SandboxFlags:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "cases": None, "token": "t", "public_keys": (),
        "api_codes": (), "token_lifetime": 60.0, "latency_ms": 0.0, "fail_503": 0.0,
        "fail_429": 0.0, "retry_after": None, "fail_500_after_store": 0.0,
        "drop_after_store": 0.0, "rate_limit": None, "faults_on_gets": False, "seed": None,
        "return_status_fields": False}
    values.update(changes)
    return SandboxFlags(**values)


def write_cases(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_cases_file_fills_defaults_and_serves_them(tmp_path: Path) -> None:
    """A minimal cases file gets defaults (status, amounts, reference) and is served as cases."""
    path = write_cases(tmp_path, {"cases": [
        {"creditor": CREDITOR, "invoice_number": "A-1", "capital": 100},
        {"creditor": CREDITOR, "invoice_number": "A-2", "capital": 50.5, "status": "closed",
         "debtor_name": "Kund AB", "note": "kept as given"},
    ], "api_codes": {"code-1": CREDITOR}})
    options = build_options(flags(cases=path, api_codes=("extra-code",)))
    assert dict(options.api_codes) == {"code-1": CREDITOR, "extra-code": None}
    with start(options) as sb:
        items = requests.get(f"{sb.url}/cases", headers=sb.headers, timeout=10).json()["_items"]
    assert [c["status"] for c in items] == ["debt_collection", "closed"]
    assert items[0]["total_remaining_capital_amount"] == 100.0
    assert items[0]["reference_number"] and len(items[0]["_id"]) == 24
    assert items[1]["closed"]["reason"] == "fully_paid"
    assert items[1]["debtor_name"] == "Kund AB" and items[1]["note"] == "kept as given"


def test_fixture_seed_document_round_trips(tmp_path: Path) -> None:
    """The fixtures' seed document is a valid cases file."""
    seeds, codes = load_cases_file(write_cases(tmp_path, seed_document()))
    assert seeds[0]["_id"] == OPEN_CASE.id
    assert codes == {API_CODE: CREDITOR}


@pytest.mark.parametrize(("document", "names"), [
    ({"cases": [{"creditor": CREDITOR}]}, "cases[0].invoice_number"),
    ({"cases": [{"creditor": CREDITOR, "invoice_number": "A", "capital": "1,5"}]},
     "cases[0].capital"),
    ({"cases": [{"creditor": CREDITOR, "invoice_number": "A", "status": "open"}]},
     "cases[0].status"),
    ({"cases": [{"creditor": "acme", "invoice_number": "A"}]}, "cases[0].creditor"),
    ({"cases": [{"creditor": CREDITOR, "invoice_number": "A"},
                {"creditor": CREDITOR, "invoice_number": "A"}]}, "cases[1].invoice_number"),
    ({"cases": {}}, "'cases' must be a list"),
    ({"api_codes": {"c": "x"}}, "api_codes"),
])
def test_bad_cases_file_names_the_place(tmp_path: Path, document: Any, names: str) -> None:
    """A wrong cases file is refused with a message naming the file and the entry."""
    path = write_cases(tmp_path, document)
    with pytest.raises(CasesFileError, match=r"cases\.json") as caught:
        load_cases_file(path)
    assert names in str(caught.value)


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    """Unreadable files, non-PEM keys and out-of-range knobs are usage errors."""
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    (tmp_path / "key.pem").write_text("not a key", encoding="utf-8")
    for bad in (flags(cases=tmp_path / "bad.json"), flags(cases=tmp_path / "missing.json"),
                flags(public_keys=(tmp_path / "key.pem",)), flags(fail_503=1.5),
                flags(token_lifetime=0)):
        with pytest.raises(UsageError):
            build_options(bad)


def test_public_key_files_are_loaded(tmp_path: Path) -> None:
    """--public-key reads PEM public keys."""
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    path = tmp_path / "amili.pub"
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    options = build_options(flags(public_keys=(path,), fail_429=0.25, seed=3))
    assert isinstance(options, SandboxOptions)
    assert len(options.public_keys) == 1
    assert options.faults.fail_429 == 0.25 and options.faults.seed == 3


def test_sandbox_command_has_help_and_rejects_bad_cases(
        cli: Callable[..., Result], tmp_path: Path) -> None:
    """The command documents its flags and exits 2 with a message for a bad cases file."""
    help_text = cli(["sandbox", "--help"]).output
    for flag in ("--cases", "--token", "--public-key", "--api-code", "--token-lifetime",
                 "--latency-ms", "--fail-503", "--fail-429", "--retry-after",
                 "--fail-500-after-store", "--drop-after-store", "--rate-limit", "--seed",
                 "--return-status-fields"):
        assert flag in help_text
    result = cli(["sandbox", "--cases", str(tmp_path / "none.json")], expect=2)
    assert "none.json" in result.output


def test_serve_prints_url_and_token_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The foreground server prints AMILI_API_URL/AMILI_ACCESS_TOKEN, serves, exits 0."""
    cases = write_cases(tmp_path, seed_document())
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    process = subprocess.Popen(
        [sys.executable, "-m", "importer", "sandbox", "--port", "0", "--cases", str(cases)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        url, token = lines["AMILI_API_URL"], lines["AMILI_ACCESS_TOKEN"]
        assert url.startswith("http://127.0.0.1:") and len(token) >= 20
        response = requests.get(f"{url}/cases/{OPEN_CASE.id}", headers={"X-API-Key": token},
                                timeout=10)
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

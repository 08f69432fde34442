"""Fault injection and the admin endpoints: each knob, seeded replay, reset and state."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from fixtures_sandbox import OPEN_CASE, SEED_CASES, payment_body

from importer.sandbox.server import RunningSandbox

PAYMENTS = "creditor--payments"
RATE_LIMITED = {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}}


def pay(sb: RunningSandbox, session: requests.Session | None = None, **extra: Any
        ) -> requests.Response:
    http = session or requests
    return http.post(f"{sb.url}/{PAYMENTS}", json=payment_body(OPEN_CASE, 1.0, **extra),
                     headers=sb.headers, timeout=10)


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (2, "2"), (0.5, "0.5")])
def test_503_before_store_with_and_without_retry_after(
        sandbox: RunningSandbox, retry_after: float | None, header: str | None) -> None:
    """fail_503 answers 503 (an HTML page) before storing; Retry-After only when configured."""
    sandbox.set_faults(fail_503=1.0, retry_after=retry_after)
    response = pay(sandbox)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers.get("Retry-After") == header
    assert sandbox.state.count(PAYMENTS) == 0
    assert sandbox.state.snapshot()["faults"] == {"503": 1}


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (3, "3")])
def test_429_before_store_with_and_without_retry_after(
        sandbox: RunningSandbox, retry_after: float | None, header: str | None) -> None:
    """fail_429 answers Eve's 429 'Rate limit exceeded' before storing."""
    sandbox.set_faults(fail_429=1.0, retry_after=retry_after)
    response = pay(sandbox)
    assert response.status_code == 429
    assert response.json() == RATE_LIMITED
    assert response.headers.get("Retry-After") == header
    assert sandbox.state.count(PAYMENTS) == 0


def test_500_after_store_keeps_the_record(sandbox: RunningSandbox) -> None:
    """fail_500_after_store answers a 500 HTML page although the record was stored."""
    sandbox.set_faults(fail_500_after_store=1.0)
    response = pay(sandbox, creditor_payment_reference="LOST-1")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Internal Server Error" in response.text
    records = sandbox.state.records(PAYMENTS)
    assert [r["creditor_payment_reference"] for r in records] == ["LOST-1"]
    case = sandbox.state.case(OPEN_CASE.id)
    assert case is not None and case["total_remaining_capital_amount"] == 1999.0


def test_dropped_connection_after_store_keeps_the_record(sandbox: RunningSandbox) -> None:
    """drop_after_store aborts the connection with no response; the record exists."""
    sandbox.set_faults(drop_after_store=1.0)
    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        pay(sandbox, session, creditor_payment_reference="LOST-2")
    assert sandbox.state.count(PAYMENTS) == 1
    sandbox.set_faults(drop_after_store=0.0)
    with requests.Session() as session:  # the server keeps serving afterwards
        assert pay(sandbox, session).status_code == 201
        assert pay(sandbox, session).status_code == 201
    assert sandbox.state.snapshot()["faults"] == {"drop": 1}


def test_rejected_posts_get_no_after_store_fault(sandbox: RunningSandbox) -> None:
    """A 422 stores nothing, so the after-store faults never hit it."""
    sandbox.set_faults(fail_500_after_store=1.0)
    response = pay(sandbox, currency="EUR")
    assert response.status_code == 422
    assert sandbox.state.snapshot()["faults"] == {}


def test_rate_limit_answers_429_above_n_per_second(sandbox: RunningSandbox) -> None:
    """rate_limit=N answers 429 to requests beyond N within one second; they store nothing."""
    sandbox.set_faults(rate_limit=1)
    with requests.Session() as session:
        statuses = [pay(sandbox, session).status_code for _ in range(4)]
    assert statuses[0] == 201
    assert 429 in statuses
    assert set(statuses) == {201, 429}
    assert sandbox.state.count(PAYMENTS) == statuses.count(201)
    assert sandbox.state.snapshot()["faults"]["rate_limited"] == statuses.count(429)


def test_faults_hit_only_creditor_posts_unless_asked(sandbox: RunningSandbox) -> None:
    """Faults spare logins, GETs and registrations; faults_on_gets extends them to GETs."""
    sandbox.set_faults(fail_503=1.0)
    assert requests.get(f"{sandbox.url}/cases", headers=sandbox.headers,
                        timeout=10).status_code == 200
    assert requests.get(f"{sandbox.url}/cases/{OPEN_CASE.id}", headers=sandbox.headers,
                        timeout=10).status_code == 200
    sandbox.set_faults(faults_on_gets=True)
    assert requests.get(f"{sandbox.url}/cases", headers=sandbox.headers,
                        timeout=10).status_code == 503


def test_seeded_faults_replay_after_reset(make_sandbox: Any) -> None:
    """The same seed gives the same sequence of outcomes, also after POST /_sandbox/reset."""
    sb = make_sandbox(fail_503=0.3, fail_429=0.2, fail_500_after_store=0.2, seed=42)

    def run() -> list[int]:
        with requests.Session() as session:
            return [pay(sb, session).status_code for _ in range(25)]

    first = run()
    assert {201, 429, 500, 503} <= set(first)
    reset = requests.post(f"{sb.url}/_sandbox/reset", timeout=10)
    assert reset.status_code == 200 and reset.json()["records"][PAYMENTS] == 0
    assert run() == first
    again = make_sandbox(fail_503=0.3, fail_429=0.2, fail_500_after_store=0.2, seed=42)
    with requests.Session() as session:
        assert [pay(again, session).status_code for _ in range(25)] == first


def test_latency_delays_each_request(sandbox: RunningSandbox) -> None:
    """latency_ms holds every API request back at least that long."""
    sandbox.set_faults(latency_ms=60)
    started = time.monotonic()
    assert pay(sandbox).status_code == 201
    assert time.monotonic() - started >= 0.055


def test_admin_faults_endpoint_sets_and_checks_knobs(sandbox: RunningSandbox) -> None:
    """POST /_sandbox/faults changes knobs (echoed back); unknown or bad ones are 400."""
    url = f"{sandbox.url}/_sandbox/faults"
    answer = requests.post(url, json={"fail_429": 1.0, "retry_after": 1}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["fail_429"] == 1.0 and answer.json()["retry_after"] == 1.0
    assert pay(sandbox).status_code == 429
    for bad in ({"fail_4029": 1}, {"fail_503": 2}, {"rate_limit": "ten"}, [1]):
        response = requests.post(url, json=bad, timeout=10)
        assert response.status_code == 400, bad
    assert requests.get(url, timeout=10).json()["fail_429"] == 1.0


def test_admin_state_counts_records_and_requests(sandbox: RunningSandbox) -> None:
    """GET /_sandbox/state counts stored records per collection and the requests seen."""
    pay(sandbox)
    requests.get(f"{sandbox.url}/cases", headers=sandbox.headers, timeout=10)
    state = requests.get(f"{sandbox.url}/_sandbox/state", timeout=10).json()
    assert state["records"][PAYMENTS] == 1
    assert state["records"]["cases"] == len(SEED_CASES)
    assert state["requests"] == {"POST /creditor--payments": 1, "GET /cases": 1}
    assert state["requests_total"] == 2


def test_reset_restores_seeds_and_starting_faults(sandbox: RunningSandbox) -> None:
    """Reset clears records, restores the seeded cases and the knobs the sandbox started with."""
    pay(sandbox)
    sandbox.set_faults(fail_503=1.0)
    sandbox.reset()
    assert sandbox.state.count(PAYMENTS) == 0
    case = sandbox.state.case(OPEN_CASE.id)
    assert case is not None and case["total_remaining_capital_amount"] == OPEN_CASE.capital
    assert sandbox.faults.fail_503 == 0.0
    assert pay(sandbox).status_code == 201


def test_admin_answers_loopback_only() -> None:
    """The knobs change what every client sees: /_sandbox/* answers this machine only, also
    when the sandbox listens on every address (called as ASGI with the client's address)."""
    import asyncio

    from importer.sandbox.app import build_app
    from importer.sandbox.server import SandboxOptions, _runtime

    app = build_app(_runtime(SandboxOptions(port=0)))

    async def status(host: str, path: str = "/_sandbox/state") -> int:
        sent: list[dict[str, Any]] = []
        scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "headers": [],
                 "client": (host, 50000), "server": ("0.0.0.0", 8080), "scheme": "http",
                 "root_path": ""}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    assert asyncio.run(status("192.0.2.7")) == 403
    assert asyncio.run(status("127.0.0.1")) == asyncio.run(status("::1")) == 200
    assert asyncio.run(status("192.0.2.7", "/_sandbox/faults")) == 403

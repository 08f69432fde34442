"""The API client: URL safety, error wording, safe retries, the rate limit, reads and logins."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import formatdate
from typing import Any

import pytest
import requests
from fixtures_sandbox import API_CODE, OPEN_CASE, TOKEN, payment_body
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from importer.client import (
    ApiClient,
    _never_sent,
    api_message,
    check_api_url,
    is_loopback,
    retry_after_seconds,
)
from importer.config import Config
from importer.errors import ApiError, ConfigError
from importer.kinds import PAYMENTS
from importer.ratelimit import RateLimiter
from importer.sandbox.server import RunningSandbox

MakeSandbox = Callable[..., RunningSandbox]
RESOURCE = PAYMENTS.resource


class Recorder:
    """A structlog-shaped logger that keeps every event, to assert on what was logged."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    info = warning = error = debug = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def client_for(sb: RunningSandbox, log: Recorder | None = None, **settings: Any) -> ApiClient:
    """A client on the sandbox with the fixed token and fast backoff, unless overridden."""
    values: dict[str, Any] = {"api_url": sb.url, "access_token": TOKEN, "backoff_base": 0.01,
                              "backoff_max": 0.05, "read_timeout": 5.0}
    values.update(settings)
    return ApiClient(Config(**values), log=log)


def posts_seen(sb: RunningSandbox) -> int:
    """POSTs to the payments collection the sandbox received (stored or not)."""
    return int(sb.state.snapshot()["requests"].get(f"POST /{RESOURCE}", 0))


def response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    """A real requests.Response with the given status and body (no network involved)."""
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = content_type
    return r


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of timestamps inside any half-open window of the given length."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- URL policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "[::1]", "localhost", "LOCALHOST."])
def test_plain_http_allowed_to_loopback(host: str) -> None:
    """http:// is accepted for 127.0.0.0/8, ::1 and localhost without allow_http."""
    assert check_api_url(Config(api_url=f"http://{host}:8080/")) == f"http://{host}:8080"


def test_plain_http_to_other_hosts_needs_allow_http() -> None:
    """http:// to a non-loopback host is a ConfigError naming allow_http, unless it is set."""
    with pytest.raises(ConfigError, match="allow_http"):
        ApiClient(Config(api_url="http://api.example.com", access_token="t"))
    assert check_api_url(Config(api_url="http://10.0.0.1", allow_http=True)) == "http://10.0.0.1"
    assert not is_loopback("128.0.0.1") and not is_loopback("localhost.example.com")


def test_missing_or_odd_api_url_is_a_config_error() -> None:
    """No api_url, or one that is not http(s), stops before any request with a clear line."""
    with pytest.raises(ConfigError, match="AMILI_API_URL"):
        ApiClient(Config(access_token="t"))
    with pytest.raises(ConfigError, match="not an http"):
        check_api_url(Config(api_url="ftp://api.example.com"))


# -- wording of API errors --------------------------------------------------------------------


def test_message_from_eve_issues_and_error() -> None:
    """A 422 message lists each field's issue, then Eve's _error message."""
    body = (b'{"_status": "ERR", "_issues": {"amount": "must be of number type", '
            b'"debt": {"invoice_number": "required field"}}, '
            b'"_error": {"code": 422, "message": "Insertion failure: 1 document(s) contain(s) '
            b'error(s)"}}')
    assert api_message(response(422, body)) == (
        "HTTP 422: amount: must be of number type; debt.invoice_number: required field "
        "(Insertion failure: 1 document(s) contain(s) error(s))")


def test_message_from_html_error_page() -> None:
    """A non-JSON (HTML) answer is summarised by its title, not dumped whole."""
    page = b"<html><head><title>500 Internal Server Error</title></head><body>x</body></html>"
    assert api_message(response(500, page, "text/html")) == (
        "HTTP 500: non-JSON answer: 500 Internal Server Error")


def test_retry_after_seconds_and_http_date() -> None:
    """Retry-After is read as seconds or as an HTTP-date; garbage is ignored."""
    now = datetime(2025, 7, 4, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    later = formatdate(now.timestamp() + 7, usegmt=True)
    assert retry_after_seconds(later, now) == 7.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_only_connection_phase_errors_count_as_never_sent() -> None:
    """Refused and DNS failures are safe to re-send; a drop after sending or a read timeout is not.

    A DNS failure cannot be produced on loopback, so the exception is built as urllib3 raises it.
    """
    dns = NameResolutionError("api.invalid", None, socket.gaierror("Name or service not known"))
    refused = NewConnectionError(None, "Connection refused")
    assert _never_sent(requests.ConnectionError(MaxRetryError(None, "/", dns)))
    assert _never_sent(requests.ConnectionError(MaxRetryError(None, "/", refused)))
    assert _never_sent(requests.ConnectTimeout())
    assert not _never_sent(requests.ReadTimeout())
    assert not _never_sent(requests.ConnectionError("Connection aborted.", "RemoteDisconnected"))
    assert not _never_sent(requests.exceptions.ChunkedEncodingError())


# -- rate limiter -----------------------------------------------------------------------------


def test_rate_limiter_never_exceeds_r_in_any_second_across_threads() -> None:
    """8 threads through a 20/s limiter: no 1-s window holds more than 20 starts."""
    limiter = RateLimiter(20)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            with limiter.slot():
                with lock:
                    starts.append(time.monotonic())
                time.sleep(0.002)  # the "request"

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 32
    assert max_in_window(starts) <= 20


def test_rate_limiter_fractional_rates() -> None:
    """2.5/s allows 2 per second (never 3); 0.5/s means one request per 2 s."""
    assert (RateLimiter(2.5).slots, RateLimiter(2.5).window) == (2, 1.0)
    assert (RateLimiter(0.5).slots, RateLimiter(0.5).window) == (1, 2.0)


def test_rate_limiter_slot_frees_one_window_after_release() -> None:
    """A slot is reusable only a full window after its request finished (fake clock)."""
    now = [100.0]
    limiter = RateLimiter(1, clock=lambda: now[0])
    with limiter.slot():
        now[0] += 5.0  # a slow request: the window counts from its end, not its start
    now[0] += 0.999
    waited: list[float] = []
    thread = threading.Thread(target=lambda: (limiter.acquire(), waited.append(now[0])))
    thread.start()
    thread.join(0.05)
    assert thread.is_alive() and not waited
    now[0] += 0.001
    with limiter._cond:
        limiter._cond.notify_all()
    thread.join(2)
    assert waited == [106.0]


# -- transport failures without a server ------------------------------------------------------


def test_connection_refused_is_retried_then_the_api_is_unusable() -> None:
    """Nothing listening: the POST is retried max_attempts times; when not one attempt could
    connect, the API is unusable (ApiError: the run stops instead of waiting through the same
    retries for every row). Nothing was sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(api_url=f"http://127.0.0.1:{port}", access_token="t", max_attempts=3,
                    backoff_base=0.01, backoff_max=0.02)
    with ApiClient(config) as client, \
            pytest.raises(ApiError, match=r"cannot reach the API: .*connection refused.*"
                                          r"\(3 attempts\)"):
        client.post(PAYMENTS, {"amount": 1.0})


# -- against the sandbox ----------------------------------------------------------------------


def test_post_created_and_read_back(sandbox: RunningSandbox) -> None:
    """A valid POST is "created" with Amili's body; get() reads it back, a missing id is None."""
    with client_for(sandbox) as client:
        result = client.post(PAYMENTS, payment_body(OPEN_CASE, Decimal("12.50")))
        assert (result.outcome, result.http_status, result.attempts) == ("created", 201, 1)
        assert result.body is not None
        record = client.get(PAYMENTS, result.body["_id"])
        assert record is not None and record["amount"] == 12.5  # sent as a JSON number
        assert client.get(PAYMENTS, "0" * 24) is None
        assert client.get_case(OPEN_CASE.id)["_id"] == OPEN_CASE.id  # type: ignore[index]
    assert sandbox.state.count(RESOURCE) == 1


def test_422_is_rejected_with_the_field_issues(sandbox: RunningSandbox) -> None:
    """A 422 is "rejected" (never retried) and the message names the field and Eve's error."""
    with client_for(sandbox) as client:
        result = client.post(PAYMENTS, payment_body(OPEN_CASE, "a lot"))
    assert (result.outcome, result.http_status, result.attempts) == ("rejected", 422, 1)
    assert result.message.startswith("HTTP 422: ") and "amount: " in result.message
    assert "Insertion failure" in result.message
    assert sandbox.state.count(RESOURCE) == 0 and posts_seen(sandbox) == 1


def test_503_and_429_are_retried_until_created_exactly_once(make_sandbox: MakeSandbox) -> None:
    """With 503s and 429s injected, every POST ends "created" once; sends = rows + faults."""
    sb = make_sandbox(fail_503=0.3, fail_429=0.3, retry_after=0, seed=11)
    log = Recorder()
    with client_for(sb, log, max_attempts=20) as client:
        results = [client.post(PAYMENTS, payment_body(OPEN_CASE, 10.0)) for _ in range(12)]
    faults = sb.state.snapshot()["faults"]
    assert all(r.outcome == "created" for r in results)
    assert faults.get("503", 0) > 0 and faults.get("429", 0) > 0
    assert sb.state.count(RESOURCE) == 12
    assert sum(r.attempts for r in results) == posts_seen(sb) == 12 + faults["503"] + faults["429"]
    assert {e["status"] for e in log.named("http.retry")} == {429, 503}


def test_retry_after_is_honoured_and_exhaustion_fails(make_sandbox: MakeSandbox) -> None:
    """A 429 with Retry-After waits exactly that long; when attempts run out the row "failed"."""
    sb = make_sandbox(fail_429=1.0, retry_after=0.2)
    log = Recorder()
    with client_for(sb, log, max_attempts=3) as client:
        result = client.post(PAYMENTS, payment_body())
    assert (result.outcome, result.http_status, result.attempts) == ("failed", 429, 3)
    assert "Rate limit exceeded" in result.message and "safe to retry later" in result.message
    assert [e["delay_s"] for e in log.named("http.retry")] == [0.2, 0.2]
    assert sb.state.count(RESOURCE) == 0


def test_503_exhausted_is_failed_with_backoff_bounded(make_sandbox: MakeSandbox) -> None:
    """503 (with Retry-After) on every try: max_attempts sends, delays within backoff_max,
    then "failed"."""
    sb = make_sandbox(fail_503=1.0, retry_after=0)
    log = Recorder()
    with client_for(sb, log, max_attempts=4, backoff_base=0.01, backoff_max=0.03) as client:
        result = client.post(PAYMENTS, payment_body())
    assert (result.outcome, result.attempts) == ("failed", 4)
    assert "503 Service Temporarily Unavailable" in result.message
    delays = [e["delay_s"] for e in log.named("http.retry")]
    assert len(delays) == 3 and all(0 <= d <= 0.03 for d in delays)
    assert posts_seen(sb) == 4 and sb.state.count(RESOURCE) == 0


def test_a_bare_503_is_an_unknown_outcome(make_sandbox: MakeSandbox) -> None:
    """A 503 that does not decline the request itself (no Retry-After, an HTML page: a proxy
    may send it after the API stored the row) is not re-sent: its outcome is unknown."""
    sb = make_sandbox(fail_503=1.0)
    with client_for(sb, max_attempts=5) as client:
        result = client.post(PAYMENTS, payment_body())
    assert (result.outcome, result.http_status, result.attempts) == ("unknown", 503, 1)
    assert "read it back" in result.message and posts_seen(sb) == 1


@pytest.mark.parametrize("fault", ["fail_500_after_store", "drop_after_store"])
def test_answer_lost_after_store_is_unknown_and_not_resent(make_sandbox: MakeSandbox,
                                                           fault: str) -> None:
    """A 500 or a dropped connection after storing: "unknown" at once, sent once, stored once."""
    sb = make_sandbox(**{fault: 1.0})
    body = payment_body(OPEN_CASE, 25.0, creditor_payment_reference="PAY-LOST-1")
    with client_for(sb, max_attempts=5) as client:
        result = client.post(PAYMENTS, body)
        assert (result.outcome, result.attempts) == ("unknown", 1)
        assert "read it back" in result.message
        assert posts_seen(sb) == 1 and sb.state.count(RESOURCE) == 1
        found = client.find(PAYMENTS, {"creditor_payment_reference": "PAY-LOST-1"})
    assert [f["amount"] for f in found] == [25.0]
    if fault == "fail_500_after_store":
        assert result.http_status == 500 and "500 Internal Server Error" in result.message
    else:
        assert result.http_status is None


def test_read_timeout_is_unknown(make_sandbox: MakeSandbox) -> None:
    """No answer within the read timeout: "unknown" after one send, never re-sent."""
    sb = make_sandbox(latency_ms=500)
    with client_for(sb, read_timeout=0.1, max_attempts=5) as client:
        result = client.post(PAYMENTS, payment_body())
    assert (result.outcome, result.attempts, result.http_status) == ("unknown", 1, None)
    assert "read timeout" in result.message
    assert posts_seen(sb) == 1


def test_gets_are_retried_on_transient_failures(make_sandbox: MakeSandbox) -> None:
    """Reads have no side effects: 503s on GETs are retried until the answer comes."""
    sb = make_sandbox(fail_503=0.5, faults_on_gets=True, seed=1)
    with client_for(sb, max_attempts=20) as client:
        cases = [client.get_case(OPEN_CASE.id) for _ in range(6)]
    assert all(c is not None and c["_id"] == OPEN_CASE.id for c in cases)
    assert sb.state.snapshot()["faults"].get("503", 0) > 0


def test_find_follows_pages(sandbox: RunningSandbox) -> None:
    """find() pages through _meta.total 100 at a time; more than max_pages hold is an error."""
    with client_for(sandbox, concurrency=8) as client, ThreadPoolExecutor(8) as pool:
        posted = list(pool.map(lambda _: client.post(PAYMENTS, payment_body(OPEN_CASE, 1.0)),
                               range(205)))
        assert all(r.outcome == "created" for r in posted)
        before = sandbox.state.snapshot()["requests"].get(f"GET /{RESOURCE}", 0)
        found = client.find(PAYMENTS, {"case": OPEN_CASE.id})
        after = sandbox.state.snapshot()["requests"].get(f"GET /{RESOURCE}", 0)
        assert len(found) == 205 and len({f["_id"] for f in found}) == 205
        assert after - before == 3
        with pytest.raises(ApiError, match="more than 200 records match case"):
            client.find(PAYMENTS, {"case": OPEN_CASE.id}, max_pages=2)
        assert client.find_cases({"debt.invoice_number": OPEN_CASE.invoice_number})[0]["_id"] \
            == OPEN_CASE.id


def test_rate_limit_holds_for_the_server_under_threads(make_sandbox: MakeSandbox) -> None:
    """8 threads at rate_limit 10: the sandbox, limiting at 10/s, never has to refuse one."""
    sb = make_sandbox(rate_limit=10, faults_on_gets=True)
    with client_for(sb, rate_limit=10, concurrency=8, max_attempts=1) as client:
        results: list[Any] = []

        def worker() -> None:
            for _ in range(3):
                results.append(client.get_case(OPEN_CASE.id))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 24 and all(r is not None for r in results)
    assert sb.state.snapshot()["faults"].get("rate_limited", 0) == 0


def test_jwt_login_renewal_before_expiry(make_sandbox: MakeSandbox, tmp_path: Any) -> None:
    """With a 1-s token, the client logs in again before expiry instead of collecting a 401."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from test_auth import public_pem, write_key

    key = ec.generate_private_key(ec.SECP256R1())
    sb = make_sandbox(token=None, public_keys=[public_pem(key)], token_lifetime=1)
    path = write_key(tmp_path / "key.pem", key)
    with client_for(sb, access_token=None, api_code=API_CODE, private_key_file=path) as client:
        assert client.post(PAYMENTS, payment_body()).outcome == "created"
        time.sleep(0.95)
        assert client.post(PAYMENTS, payment_body()).outcome == "created"
        assert client.auth.logins == 2 and client.auth.lifetime == 1
    assert posts_seen(sb) == 2  # no 401 was needed


def test_a_token_aged_in_the_rate_limiters_queue_is_not_sent(make_sandbox: MakeSandbox) -> None:
    """Eight threads through a 4-per-second limit with a 2-s token: a request whose token
    aged while it waited for its slot gets a fresh one first, so none is refused (a renewed
    token refused again used to stop the run)."""
    from concurrent.futures import ThreadPoolExecutor

    sb = make_sandbox(token=None, token_lifetime=2)
    with client_for(sb, access_token=None, api_code=API_CODE, rate_limit=4) as client, \
            ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: client.post(PAYMENTS, payment_body(
            OPEN_CASE, 1.0 + n)), range(16)))
    assert [r.outcome for r in results] == ["created"] * 16
    # Each stored once (a token fresh when its slot came may still expire in flight on a
    # loaded machine: that one is renewed on its 401 and goes; no run-stopping refusal).
    assert sb.state.count(RESOURCE) == 16


def test_401_renews_once_and_retries(make_sandbox: MakeSandbox) -> None:
    """A token the API stops accepting is renewed once on the 401 and the POST goes through."""
    sb = make_sandbox(token=None)
    with client_for(sb, access_token=None, api_code=API_CODE) as client:
        assert client.post(PAYMENTS, payment_body()).outcome == "created"
        assert sb.expire_tokens() == 1
        result = client.post(PAYMENTS, payment_body())
        assert (result.outcome, result.attempts) == ("created", 2)
        assert client.auth.method == "api-code" and client.auth.logins == 2
    assert posts_seen(sb) == 3 and sb.state.count(RESOURCE) == 2


def test_refused_ready_token_is_an_api_error(sandbox: RunningSandbox) -> None:
    """A ready access token cannot be renewed: a 401 stops with "refused (expired?)"."""
    with client_for(sandbox, access_token="not-the-token") as client, \
            pytest.raises(ApiError, match=r"access token was refused \(expired\?\)") as info:
        client.post(PAYMENTS, payment_body())
    assert "not-the-token" not in str(info.value)
    assert sandbox.state.count(RESOURCE) == 0


def test_wrong_api_code_login_is_refused_clearly(sandbox: RunningSandbox) -> None:
    """A refused login is one ApiError line with the status and Eve's message, not the code."""
    with client_for(sandbox, access_token=None, api_code="WRONG-CODE-42") as client, \
            pytest.raises(ApiError) as info:
        client.login()
    message = str(info.value)
    assert "login refused" in message and "HTTP 401" in message
    assert "Please provide proper credentials" in message and "WRONG-CODE-42" not in message


class _Echo(threading.Thread):
    """A loopback HTTP server that sets a cookie, records each request and answers 201."""

    def __init__(self) -> None:
        import http.server

        seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.command, self.path, dict(self.headers.items()), body))
                out = b'{"_id": "65f0c0ffee00000000000001", "_status": "OK"}'
                self.send_response(201)
                self.send_header("Set-Cookie", "lb=node-7; Path=/")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        super().__init__(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_requests_carry_headers_body_and_session_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests prepared by the client carry the token, UA, exact body length and the
    session's cookies, with the environment read once at construction."""
    echo = _Echo()
    echo.start()
    try:
        client = ApiClient(Config(api_url=echo.url, access_token=TOKEN))
        # A proxy set after construction is not looked up per request (it would break this).
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        body = {"amount": Decimal("12.50"), "creditor_payment_reference": "ÅÄÖ-1"}
        first = client.post(PAYMENTS, body)
        second = client.post(PAYMENTS, body)
        # The echo answer has no _items: unreadable, so never "nothing stored".
        with pytest.raises(ApiError, match="no _items list"):
            client.find(PAYMENTS, {"creditor_payment_reference": "X"})
        client.close()
    finally:
        echo.close()
    assert first.outcome == second.outcome == "created"
    (m1, p1, h1, b1), (m2, _, h2, b2), (m3, p3, h3, b3) = echo.seen
    assert (m1, p1, m3) == ("POST", PAYMENTS.endpoint, "GET")
    assert p3.startswith(PAYMENTS.endpoint + "?where=") and b3 == b""
    assert b1 == b2 and int(h1["Content-Length"]) == len(b1)
    assert b'"amount": 12.5' in b1 and b"\\u00c5" in b1
    for headers in (h1, h2, h3):
        assert headers["X-API-Key"] == TOKEN
        assert headers["User-Agent"].startswith("amili-import/")
        assert headers["Accept"] == "application/json"
    assert h1["Content-Type"] == "application/json" and "Content-Type" not in h3
    assert "Cookie" not in h1 and h2["Cookie"] == "lb=node-7" and h3["Cookie"] == "lb=node-7"


def test_gateway_504_after_the_request_is_unknown_not_resent(tmp_path: Any) -> None:
    """A 502/504 from a gateway may follow a stored record: the POST is not repeated blindly."""
    import http.server

    seen: list[str] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            self.send_response(504)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = Config(api_url=f"http://127.0.0.1:{server.server_port}", access_token="t",
                        max_attempts=4, backoff_base=0.01)
        with ApiClient(config) as client:
            result = client.post(PAYMENTS, payment_body())
    finally:
        server.shutdown()
        server.server_close()
    assert (result.outcome, result.http_status, result.attempts) == ("unknown", 504, 1)
    assert seen == ["/creditor--payments"]

"""The API client: URL safety, error wording, safe retries, the rate limit, reads and logins."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate

import pytest
import requests
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
from importer.errors import ConfigError
from importer.kinds import PAYMENTS
from importer.ratelimit import RateLimiter


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
    """8 threads through a 20/s limiter: no 1-s window holds more than 20 starts or arrivals."""
    limiter = RateLimiter(20)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            with limiter.slot():
                with lock:
                    starts.append(time.monotonic())
                time.sleep(0.002)  # the "request"

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 48
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


def test_connection_refused_is_retried_then_failed() -> None:
    """Nothing listening: the POST is retried max_attempts times and ends "failed", safe to redo."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(api_url=f"http://127.0.0.1:{port}", access_token="t", max_attempts=3,
                    backoff_base=0.01, backoff_max=0.02)
    with ApiClient(config) as client:
        result = client.post(PAYMENTS, {"amount": 1.0})
    assert result.outcome == "failed" and result.attempts == 3 and result.http_status is None
    assert "connection refused" in result.message and "safe to retry" in result.message

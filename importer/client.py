"""Amili's API over one ``requests.Session``: login, timeouts, safe retries, rate limit, reads.

A POST has no idempotency key, so the client re-sends one only when the request provably never
reached the server (connection refused, connect timeout, DNS failure) or the server said so
(429, 408, 401, a 503 that declines the request itself). Anything after the request may have
arrived — a read timeout, a connection dropped during the answer, a 500, a proxy's bare 503 —
is an ``unknown`` outcome that the caller must settle by reading back; the client never
re-sends it. GETs have no side effects and are retried on every transient failure.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from requests.hooks import default_hooks
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from importer import __version__
from importer.answers import record_id
from importer.auth import TokenProvider
from importer.config import Config
from importer.errors import ApiError, ConfigError, TransientApiError
from importer.kinds import Kind
from importer.ratelimit import RateLimiter

USER_AGENT = f"amili-import/{__version__}"
PAGE_SIZE = 100  # Eve's max_results ceiling
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})  # a GET is safe to repeat on these
# A POST is repeated blindly only when the answer says it was not processed. A gateway's 502 or
# 504 may come after Amili received (and stored) the request: like a 500, its outcome is unknown
# and the engine reads it back before anything is sent again (stricter than issue 4's list,
# which names 502/503/504 as safe; the read-back costs one GET and never a duplicate). So may a
# proxy's 503 (Envoy's "upstream reset before headers"): a 503 is re-sent blindly only when it
# declines the request itself (see _declined).
POST_RETRY_STATUSES = frozenset({408, 429, 503})
RETRY_AFTER_CAP = 120.0  # never sleep longer than this on one Retry-After, whatever it says

_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout,
                     requests.exceptions.ChunkedEncodingError,
                     requests.exceptions.ContentDecodingError)


@dataclass
class PostResult:
    """What became of one POST.

    Attributes:
        outcome: ``created`` (2xx: stored; ``body`` None when it held no JSON object),
            ``rejected`` (4xx: not stored),
            ``unknown`` (the answer was lost after the request may have reached the server:
            read timeout, connection dropped mid-answer, 500 — read back before re-sending),
            ``failed`` (transient failures exhausted; nothing stored, safe to retry later).
        http_status: the last HTTP status seen, None when no answer came.
        body: the parsed JSON answer, when there was one.
        attempts: how many times the request was sent (or tried to be).
        message: human text, with the API's ``_issues``/``_error`` where given.
    """

    outcome: str
    http_status: int | None
    body: dict[str, Any] | None
    attempts: int
    message: str


def check_api_url(config: Config) -> str:
    """The API base URL without a trailing slash, after the safety checks.

    Args:
        config: the merged configuration.

    Returns:
        The base URL.

    Raises:
        ConfigError: not set, not http(s), or plain http to a non-loopback host without
            ``allow_http``.
    """
    url = (config.api_url or "").strip()
    if not url:
        raise ConfigError("api_url is not set: set AMILI_API_URL, api_url in the config file, "
                          "or pass --api-url")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"api_url {url!r} is not an http(s) URL like https://api.example.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not config.allow_http:
        raise ConfigError(
            f"api_url {url} is plain http:// to a non-loopback host, which would send the access "
            "token unencrypted; use https://, or set allow_http = true (env AMILI_ALLOW_HTTP=1) "
            "if you really mean it"
        )
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_message(response: requests.Response) -> str:
    """One line from an API answer: status, Eve's ``_issues`` (field: message) and ``_error``.

    Args:
        response: any answer, JSON or not (an HTML 500 page gives its title or first words).

    Returns:
        E.g. ``HTTP 422: amount: must be of number type (Insertion failure: ...)``.
    """
    head = f"HTTP {response.status_code}"
    data = _json_or_none(response)
    parts: list[str] = []
    if isinstance(data, dict):
        issues = data.get("_issues")
        if issues:
            parts.append("; ".join(_flatten_issues(issues)))
        error = data.get("_error")
        text = error.get("message") if isinstance(error, dict) else error
        if not text:
            text = data.get("message") or data.get("detail") or data.get("error")
        if text:
            parts.append(f"({text})" if issues else str(text))
    elif isinstance(data, str) and data:
        parts.append(data[:200])
    else:
        snippet = _text_snippet(response.text)
        if snippet:
            parts.append(f"non-JSON answer: {snippet}")
    if not parts and response.reason:
        parts.append(str(response.reason))
    return f"{head}: {' '.join(parts)}" if parts else head


def _flatten_issues(issues: Any, prefix: str = "") -> list[str]:
    if isinstance(issues, dict):
        out: list[str] = []
        for key, value in issues.items():
            out.extend(_flatten_issues(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = ", ".join(str(v) for v in issues) if isinstance(issues, list) else str(issues)
    return [f"{prefix}: {text}" if prefix else text]


def _text_snippet(text: str) -> str:
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    raw = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    return " ".join(raw.split())[:120]


def _json_object(path: str, response: requests.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer to ``GET path``.

    Raises:
        ApiError: not 2xx, or not a JSON object.
    """
    if not 200 <= response.status_code < 300:
        raise ApiError(f"GET {path}: {api_message(response)}")
    data = _json_or_none(response)
    if not isinstance(data, dict):
        raise ApiError(f"GET {path}: HTTP {response.status_code} answer is not a JSON object")
    return data


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when the request provably did not reach the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            # With max_retries=0, urllib3 wraps only connection-phase errors in MaxRetryError;
            # NewConnectionError covers refused, unreachable and (as a subclass) DNS failures.
            return isinstance(reason.reason, NewConnectionError)
    return False


def _describe(exc: requests.RequestException, config: Config) -> str:
    reason: Any = exc.args[0] if exc.args else exc
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(exc, requests.ConnectTimeout):
        return f"connect timeout after {config.connect_timeout:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within the read timeout of {config.read_timeout:g} s"
    if isinstance(reason, NameResolutionError):
        return "DNS lookup of the API host failed"
    if isinstance(reason, NewConnectionError):
        return "could not connect (connection refused or host unreachable)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped while the answer was being read"
    text = str(reason)
    if "RemoteDisconnected" in text or "without response" in text:
        return "connection closed by the server before it answered"
    if "Connection reset" in text or "Connection aborted" in text:
        return "connection dropped after the request was sent"
    return f"{type(exc).__name__}: {text[:160]}"


def _tls_verification_failed(exc: requests.RequestException) -> bool:
    """A certificate or handshake failure: the TLS session never existed, nothing was sent."""
    text = str(exc).lower()
    return isinstance(exc, requests.exceptions.SSLError) and any(
        s in text for s in ("certificate verify failed", "wrong version number", "hostname",
                            "handshake"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Amounts go out as JSON numbers; 2-decimal amounts survive float's shortest repr.
        return float(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


class ApiClient:
    """Amili's API for the posting engine, reconciliation and ``doctor``; thread-safe.

    Args:
        config: the merged configuration (api_url, login, timeouts, retries, rate limit).
        log: a structlog logger (bound with run id etc.); ``structlog.get_logger()`` if None.

    Raises:
        ConfigError: api_url missing or unsafe, login settings missing, key file unusable.
    """

    def __init__(self, config: Config, log: Any = None) -> None:
        self.config = config
        self.base_url = check_api_url(config)
        self._log = log if log is not None else structlog.get_logger()
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        # Seconds this machine's clock is ahead of the API's, from the last answer's Date
        # header (None until one came); see _note_clock.
        self.clock_offset: float | None = None
        self.read_clock_offset: float | None = None  # the same from any answer (doctor)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.concurrency, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # The environment (HTTPS_PROXY/NO_PROXY for this host, REQUESTS_CA_BUNDLE, ...) is read
        # once: Session.request would scan os.environ on every call (~0.3 ms a request).
        self._send_settings = self._session.merge_environment_settings(
            self.base_url, {}, None, None, None)
        # The session's default headers (User-Agent, Accept, Accept-Encoding, keep-alive).
        self._headers = {str(k): str(v) for k, v in self._session.headers.items()}
        self.auth = TokenProvider(config, self._send_safe, log=self._log)

    # -- public API ---------------------------------------------------------------------------

    def login(self) -> None:
        """Log in now (a ready access token is kept as is).

        Raises:
            ApiError: with a one-line reason (HTTP status, the API's message).
        """
        self.auth.login()
        self.auth.get_valid_token()

    def post(self, kind: Kind, body: dict[str, Any],
             on_send: Callable[[], None] | None = None) -> PostResult:
        """POST one record, re-sending only where that cannot create a duplicate.

        Args:
            kind: which endpoint.
            body: the JSON body (amounts as numbers; Decimal is accepted).
            on_send: called just before each attempt goes out (after the rate limiter), so
                the caller can note when the request was last sent.

        Returns:
            The outcome; see :class:`PostResult`.

        Raises:
            ApiError: the API cannot be used at all (login refused, token refused after
                renewal, TLS verification failed, not one attempt could connect); this
                request was not stored.
        """
        data = json.dumps(body, default=_json_default, allow_nan=False)
        path = kind.endpoint
        attempts = failures = unreachable = 0
        renewed = False
        token: str | None = None
        while True:
            attempts += 1
            try:
                response, token = self._once("POST", path, data=data, authenticated=True,
                                             on_send=on_send)
            except _TRANSPORT_ERRORS as exc:
                if _tls_verification_failed(exc):
                    raise ApiError(self._tls_message(exc)) from None
                what = _describe(exc, self.config)
                if not _never_sent(exc):
                    self._log.warning("http.unknown_outcome", method="POST", path=path,
                                      attempt=attempts, error=what)
                    return PostResult("unknown", None, None, attempts,
                                      f"{what}; the record may or may not have been stored: "
                                      "read it back before sending again")
                status, retry_after, last = None, None, what
                unreachable += 1
            else:
                status = response.status_code
                if 200 <= status < 300:
                    # A 2xx means stored, whatever its body: never sent again.
                    answer = _json_or_none(response)
                    return PostResult("created", status,
                                      answer if isinstance(answer, dict) else None, attempts,
                                      f"HTTP {status}" if isinstance(answer, dict) else
                                      f"HTTP {status} without a JSON object in the answer")
                if status == 401 and not renewed:
                    # 401 means the request was refused before anything was stored.
                    assert token is not None
                    self.auth.invalidate(token)
                    renewed = True
                    continue
                if status == 401:
                    raise ApiError(f"the API refused a freshly issued token on POST {path} "
                                   f"({api_message(response)})")
                if status not in POST_RETRY_STATUSES or (
                        status == 503 and not _declined(response)):
                    message = api_message(response)
                    if status >= 500 or 300 <= status < 400:
                        self._log.warning("http.unknown_outcome", method="POST", path=path,
                                          attempt=attempts, status=status)
                        return PostResult("unknown", status, _dict_or_none(response), attempts,
                                          f"{message}; the request reached the server and "
                                          "may have been stored: read it back before "
                                          "sending again")
                    return PostResult("rejected", status, _dict_or_none(response), attempts,
                                      message)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                last = api_message(response)
            failures += 1
            if failures >= self.config.max_attempts:
                self._log.warning("http.gave_up", method="POST", path=path, attempts=attempts,
                                  status=status, error=last)
                if unreachable == failures:
                    # Not one attempt reached the API: it is down or unreachable from here,
                    # and every other row would wait through the same retries. Stop the run
                    # (nothing was stored; the rows are posted by the next run).
                    raise ApiError(f"cannot reach the API: {last} ({attempts} attempts)")
                return PostResult("failed", status, None, attempts,
                                  f"gave up after {attempts} attempts ({last}); nothing was "
                                  "stored, safe to retry later")
            self._pause(failures, retry_after, "POST", path, attempts, status, last)

    def get(self, kind: Kind, record_id: str) -> dict[str, Any] | None:
        """One record by id, or None when the API says 404.

        Raises:
            ApiError: any other refusal; TransientApiError when retries ran out.
        """
        return self._get_record(f"{kind.endpoint}/{quote(record_id, safe='')}")

    def find(self, kind: Kind, where: dict[str, Any], max_pages: int = 10) -> list[dict[str, Any]]:
        """Records matching an Eve ``where`` filter, following pages (100 per page).

        Args:
            kind: which collection.
            where: e.g. ``{"creditor_payment_reference": "PAY-1", "creditor": "..."}``.
            max_pages: read at most this many pages.

        Returns:
            Every matching record, in the API's order.

        Raises:
            ApiError: more records match than ``max_pages`` pages hold (a partial answer is
                never returned as if it were whole), or the API refused the query.
            TransientApiError: retries ran out.
        """
        return self._find(kind.endpoint, where, max_pages)

    def get_case(self, case_id: str) -> dict[str, Any] | None:
        """One case by id, or None when it does not exist."""
        return self._get_record(f"/cases/{case_id}")

    def find_cases(self, where: dict[str, Any], max_pages: int = 10) -> list[dict[str, Any]]:
        """Cases matching an Eve ``where`` filter, e.g. ``{"debt.invoice_number": "103118"}``."""
        return self._find("/cases", where, max_pages)

    def case_ids_of_invoice(self, creditor: Any, invoice_number: Any) -> list[str]:
        """The ids of the creditor's cases for an invoice number (exactly one is the answer
        callers hope for; none means no such case).

        Two pages at most: "exactly one" is known even from a server that gives no total
        (its second page is empty); more cases than that are one answer too many anyway.

        Raises:
            ApiError: the lookup failed (more than two pages match, refused, retries ran out,
                or a case without a readable ``_id``: "none" must never be concluded from it).
        """
        cases = self.find_cases({"debt.invoice_number": invoice_number, "creditor": creditor},
                                max_pages=2)
        ids = [record_id(c) for c in cases]
        if None in ids:
            raise ApiError("GET /cases: a case in the answer has no readable _id")
        return [i for i in ids if i is not None]

    def get_page(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One raw JSON answer of a GET (e.g. a list envelope), retried while transient.

        Raises:
            ApiError: not 2xx, or not a JSON object; TransientApiError when retries ran out.
        """
        return _json_object(path, self._get(path, params))

    def close(self) -> None:
        """Close the connection pool."""
        self._session.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _slot(self) -> AbstractContextManager[None]:
        return self._limiter.slot() if self._limiter else nullcontext()

    def _once(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              data: str | None = None, authenticated: bool = False,
              headers: dict[str, str] | None = None,
              on_send: Callable[[], None] | None = None
              ) -> tuple[requests.Response, str | None]:
        """Send one request through the rate limiter; no retries here.

        Returns:
            The answer, and the token it was sent with: one still fresh when the rate limiter
            let the request go (a wait in its queue may outlast a short-lived token).

        The request is prepared here and given to ``Session.send`` (the session's pool,
        adapter, cookies and default headers, as ``Session.request`` would use them) with the
        environment settings read once in ``__init__``: the same request on the wire, without
        the per-call merging of settings that costs more CPU than the rest of the client.
        """
        prepared = PreparedRequest()
        prepared.method = method
        prepared.prepare_url(self.base_url + path, params)
        sent: CaseInsensitiveDict[str] = CaseInsensitiveDict(self._headers)
        if headers:
            sent.update(headers)
        prepared.headers = sent
        if data is not None:
            body = data.encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
            sent["Content-Length"] = str(len(body))
            prepared.body = body
        elif method not in ("GET", "HEAD"):
            sent["Content-Length"] = "0"
        prepared.prepare_cookies(self._session.cookies)
        prepared.hooks = default_hooks()
        for tries_left in range(2, -1, -1):
            # Logging in takes a slot of its own: the token is had before this one's.
            token = self.auth.get_valid_token() if authenticated else None
            with self._slot():
                if token is not None and tries_left and not self.auth.fresh(token):
                    continue  # it aged while the rate limiter held the request back
                if token is not None:
                    sent["X-API-Key"] = token
                if on_send is not None:
                    on_send()
                # No redirects: a redirected POST could be re-sent, or turned into a GET.
                response = self._session.send(prepared, timeout=self._timeout,
                                              allow_redirects=False, **self._send_settings)
                if "Age" not in response.headers:  # an answer from a cache: its time
                    self._note_clock(method, response.headers.get("Date"))
                return response, token
        raise AssertionError("unreachable: the last try always sends")

    def _note_clock(self, method: str, date: str | None) -> None:
        """How far this machine's clock is ahead of the API's (the ``Date`` of its answers,
        whole seconds): the read-back compares record times written by the API's clock with
        the journal's, written by this one. ``clock_offset`` comes from answers to POSTs
        (never from a cache), ``read_clock_offset`` from any (answers a cache gave, with an
        ``Age``, are not looked at)."""
        if date is None:
            return
        try:
            theirs = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if theirs.tzinfo is not None:
            ahead = (datetime.now(UTC) - theirs).total_seconds()
            self.read_clock_offset = ahead
            if method != "GET":
                self.clock_offset = ahead

    def _send_safe(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   data: str | None = None, headers: dict[str, str] | None = None,
                   authenticated: bool = False) -> requests.Response:
        """Send a request without side effects (GET, login), retrying every transient failure.

        Returns:
            The first answer that is not transient (any status, 401 after one renewal).

        Raises:
            ApiError: TLS verification failed. TransientApiError: retries ran out.
        """
        attempts = failures = 0
        renewed = False
        token: str | None = None
        while True:
            attempts += 1
            status: int | None = None
            retry_after = None
            try:
                response, token = self._once(method, path, params=params, data=data,
                                             authenticated=authenticated, headers=headers)
            except _TRANSPORT_ERRORS as exc:
                if _tls_verification_failed(exc):
                    raise ApiError(self._tls_message(exc)) from None
                last = _describe(exc, self.config)
            else:
                status = response.status_code
                if authenticated and status == 401 and not renewed:
                    assert token is not None
                    self.auth.invalidate(token)
                    renewed = True
                    continue
                if status not in RETRY_STATUSES and status != 500:
                    return response
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                last = api_message(response)
            failures += 1
            if failures >= self.config.max_attempts:
                raise TransientApiError(f"{method} {path}: gave up after {attempts} attempts "
                                        f"({last}); try again later")
            self._pause(failures, retry_after, method, path, attempts, status, last)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        response = self._send_safe("GET", path, params=params, authenticated=True)
        if response.status_code == 401:
            raise ApiError(f"the API refused a freshly issued token on GET {path} "
                           f"({api_message(response)})")
        return response

    def _get_record(self, path: str) -> dict[str, Any] | None:
        response = self._get(path)
        return None if response.status_code == 404 else _json_object(path, response)

    def _find(self, path: str, where: dict[str, Any], max_pages: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        where_json = json.dumps(where, default=_json_default, separators=(",", ":"))
        for page in range(1, max_pages + 1):
            envelope = self.get_page(path, {"where": where_json, "max_results": PAGE_SIZE,
                                            "page": page})
            listed = envelope.get("_items")
            if not isinstance(listed, list):
                # An answer we cannot read must never pass for "nothing stored".
                raise ApiError(f"GET {path}: the answer holds no _items list (keys: "
                               f"{', '.join(sorted(map(str, envelope))[:8]) or 'none'})")
            batch = [i for i in listed if isinstance(i, dict)]
            items.extend(batch)
            meta, links = envelope.get("_meta"), envelope.get("_links")
            total = meta.get("total") if isinstance(meta, dict) else None
            # The end is never inferred from a page's size (a server may cap it below ours
            # and still echo ours): an empty page, the total reached, or no "next" link.
            if not batch:
                return items
            if isinstance(total, int) and not isinstance(total, bool):
                if len(items) >= total:
                    return items
            elif isinstance(links, dict) and "next" not in links:
                return items
        # A partial list would let a read-back conclude "not stored" when it was: say so instead.
        raise ApiError(f"GET {path}: more than {len(items)} records match "
                       f"{', '.join(sorted(where)) or 'the query'} ({max_pages} pages); the "
                       "list would be incomplete")

    def _pause(self, failures: int, retry_after: float | None, method: str, path: str,
               attempt: int, status: int | None, error: str) -> None:
        if retry_after is not None:
            delay = min(retry_after, max(self.config.backoff_max, RETRY_AFTER_CAP))
        else:
            # Exponential backoff with full jitter: spreads the threads that failed together.
            ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** (failures - 1))
            delay = random.uniform(0, ceiling)
        self._log.warning("http.retry", method=method, path=path, attempt=attempt,
                          status=status, error=error, delay_s=round(delay, 3))
        time.sleep(delay)

    def _tls_message(self, exc: requests.RequestException) -> str:
        host = urlsplit(self.base_url).hostname
        return (f"TLS to {host} failed ({str(exc)[:160]}); HTTPS is always verified: fix the "
                "certificate, or set REQUESTS_CA_BUNDLE to your CA bundle")


def _declined(response: requests.Response) -> bool:
    """Whether a 503 says the request was turned away, not processed: it asks to be retried
    later (``Retry-After``) or is the API's own error answer (Eve's ``_status: ERR``); a bare
    page from a proxy in front of it says neither."""
    if response.headers.get("Retry-After") is not None:
        return True
    answer = _dict_or_none(response)
    return answer is not None and answer.get("_status") == "ERR"


def _dict_or_none(response: requests.Response) -> dict[str, Any] | None:
    data = _json_or_none(response)
    return data if isinstance(data, dict) else None

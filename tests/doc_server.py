"""A small Amili stand-in for the answers the docs allow but our sandbox does not give.

Amili's docs leave open how dates are written in answers, whether a list projects fields
away, how pages are capped and announced, and what a 201 carries. The sandbox answers one way;
this server (real HTTP on loopback, standard library only) answers the other ways, each set by
a knob on ``Variant``, so the client and the posting engine are tested against both.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Variant:
    """How this server answers; the defaults are Eve's own behaviour."""

    iso_dates: bool = False  # dates in answers as ISO 8601 instead of RFC 1123
    projection: tuple[str, ...] | None = None  # list items keep only these fields (and _*)
    page_cap: int = 25  # a page never holds more than this...
    meta: str = "eve"  # "eve": _meta with the capped max_results; "none": no _meta, no _links
    items_key: str = "_items"  # the list envelope's key for the records
    # 201 body: "meta" (Eve), "doc" (the docs' example, with _payment_status), "empty",
    # "oid" ({"$oid"}), "no_id"
    answer: str = "meta"
    status: str = "completed"  # the stored record's status (and the 201's, for "no_id")
    # Per POST, in order: "drop" the connection after storing; "late": answer 500 at once and
    # store the record `late_seconds` later (a backend that carries on after the gateway gave up);
    # "busy": 503 with Retry-After: 2, nothing stored; "slow": stored at once, the 201 sent
    # `slow_seconds` later; "proxy503": stored, then a proxy's bare 503 (text, no Retry-After:
    # Envoy's "upstream reset before headers").
    lose: list[str] = field(default_factory=list)
    # The same, in order, for the POSTs whose case (or invoice number) is the key.
    lose_when: dict[str, list[str]] = field(default_factory=dict)
    # Invoice number -> case id: a record posted by invoice number is stored with its case, as
    # Amili resolves it, and every record of that case shows it as case_invoice_number.
    resolve: dict[str, str] = field(default_factory=dict)
    late_seconds: float = 1.0
    slow_seconds: float = 1.0
    fail_gets: int = 0  # answer every GET with this HTTP status (0: never)
    fail_lists: int = 0  # the same for list reads only (GET /<resource>?where=...)
    ignore_where: bool = False  # list reads answer every record of the collection
    drop_invoice: bool = False  # records keep no invoice_number (only what the case shows)
    status_after: float = 0.0  # reads show a record's status only this many seconds after it


class _State:
    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.records: list[dict[str, Any]] = []
        self.posts = 0
        self.gets: list[str] = []
        self.lock = threading.Lock()
        self.ids = itertools.count(0x68B82422D6FD1D378F180000)


def _stamp(rfc: str, variant: Variant) -> str:
    return parsedate_to_datetime(rfc).isoformat() if variant.iso_dates else rfc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, obj: Any = None, raw: bytes | None = None,
              retry_after: str | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        v = self.state.variant
        self.state.gets.append(url.path)
        if v.fail_gets:
            return self._send(v.fail_gets, {"_status": "ERR", "_error": {
                "code": v.fail_gets, "message": "Service Unavailable"}})
        if len(parts) == 2:  # one record by id: always whole
            found = [r for r in self.state.records if r["_id"] == parts[1]]
            if found:
                return self._send(200, _public(found[0], v))
            return self._send(404, {"_status": "ERR", "_error": {"code": 404,
                                                                 "message": "Not Found"}})
        if v.fail_lists:
            return self._send(v.fail_lists, {"_status": "ERR", "_error": {
                "code": v.fail_lists, "message": "Gateway Timeout"}})
        where = json.loads(query.get("where", "{}"))
        items = [r for r in self.state.records if r["_resource"] == parts[0]
                 and (v.ignore_where or all(
                     r.get(k) in w["$in"] if isinstance(w, dict) and "$in" in w
                     else r.get(k) == w for k, w in where.items()))]
        page = int(query.get("page", 1))
        size = min(int(query.get("max_results", 25)), v.page_cap)
        chunk = [_public(r, v) for r in items[(page - 1) * size:page * size]]
        if v.projection is not None:
            chunk = [{k: x for k, x in r.items() if k in v.projection or k.startswith("_")}
                     for r in chunk]
        envelope: dict[str, Any] = {v.items_key: chunk}
        if v.meta == "eve":
            envelope["_meta"] = {"page": page, "max_results": size, "total": len(items)}
        self._send(200, envelope)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        v = self.state.variant
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        with self.state.lock:
            self.state.posts += 1
            lost = v.lose.pop(0) if v.lose else None
            marker = body.get("case") or body.get("invoice_number")
            if lost is None and v.lose_when.get(marker):
                lost = v.lose_when[marker].pop(0)
            if lost == "busy":
                return self._send(503, {"_status": "ERR", "_error": {
                    "code": 503, "message": "Service Unavailable"}}, retry_after="2")
            rid = format(next(self.state.ids), "x")
            record = {**body, "_id": rid, "_created": _stamp(now, v), "_updated": _stamp(now, v),
                      "_resource": self.path.strip("/"), "status": v.status,
                      "_payment_status": v.status, "_stored_at": time.monotonic()}
            for name in ("bank_transaction_date", "client_registration_date"):
                if name in record:
                    record[name] = _stamp(record[name], v)
            if body.get("invoice_number") in v.resolve:
                record["case"] = v.resolve[body["invoice_number"]]
            for invoice, case in v.resolve.items():  # Amili shows the case's invoice number
                if record.get("case") == case:
                    record["case_invoice_number"] = invoice
            if v.drop_invoice:
                record.pop("invoice_number", None)
            if lost == "late":
                threading.Timer(v.late_seconds, self.state.records.append, [record]).start()
            else:
                self.state.records.append(record)
        if lost == "late":
            return self._send(500, {"_status": "ERR", "_error": {"code": 500,
                                                                 "message": "Gateway gave up"}})
        if lost == "proxy503":
            return self._send(503, raw=b"upstream connect error or disconnect/reset before "
                                       b"headers. reset reason: connection termination")
        if lost == "slow":
            time.sleep(v.slow_seconds)
        if lost == "drop":
            self.connection.shutdown(2)
            self.connection.close()
            return
        answer: dict[str, Any] = {"_id": rid, "_created": now, "_updated": now, "_etag": "e1",
                                  "_status": "OK"}
        if v.answer == "doc":
            answer["_payment_status"] = "completed"
        if v.answer == "empty":
            return self._send(201, raw=b"")
        if v.answer == "oid":
            answer["_id"] = {"$oid": rid}
        if v.answer == "no_id":
            answer = {"_status": "OK", "status": v.status}
        self._send(201, answer)


def _public(record: dict[str, Any], variant: Variant) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in ("_resource", "_stored_at")}
    if time.monotonic() - record.get("_stored_at", 0.0) < variant.status_after:
        out.pop("status", None)  # processed a moment after it was stored
        out.pop("_payment_status", None)
    return out


class DocServer:
    """The server on a free loopback port, in a thread: ``url``, ``records``, ``posts``."""

    def __init__(self, variant: Variant) -> None:
        self.state = _State(variant)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.state.records

    @property
    def posts(self) -> int:
        return self.state.posts

    @property
    def gets(self) -> list[str]:
        """The paths of every GET so far."""
        return self.state.gets

    def add(self, resource: str, record: dict[str, Any]) -> None:
        """Store a record as if posted earlier by other means."""
        self.state.records.append({**record, "_resource": resource})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""The sandbox's routes (Starlette): Amili's creditor endpoints plus ``/_sandbox/*`` admin.

Every handler is async and touches the store without awaiting in between, so uvicorn's single
event loop applies each request atomically.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from importer.sandbox.auth import Authenticator
from importer.sandbox.faults import FaultInjector, Faults
from importer.sandbox.query import QueryError
from importer.sandbox.store import CASES, REGISTRATIONS, Store
from importer.sandbox.validation import RESOURCES, Resource

log = logging.getLogger("importer.sandbox")

BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand."
NOT_FOUND = ("The requested URL was not found on the server. If you entered the URL manually "
             "please check your spelling and try again.")
NOT_ALLOWED = "The method is not allowed for the requested URL."
CREDENTIALS = "Please provide proper credentials"
RATE_LIMITED = "Rate limit exceeded"
HTML_500 = ('<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n'
            '<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was '
            'unable to complete your request. Either the server is overloaded or there is an '
            'error in the application.</p>\n')
HTML_503 = ('<html><head><title>503 Service Temporarily Unavailable</title></head>\n<body>\n'
            '<center><h1>503 Service Temporarily Unavailable</h1></center>\n</body></html>\n')


@dataclass
class Runtime:
    """Everything the routes share: state, auth, faults, and the open connections.

    Attributes:
        store: the in-memory data.
        auth: logins and tokens.
        injector: fault decisions.
        initial_faults: the knobs at start (``/_sandbox/reset`` returns to them).
        transports: open connections by client address, filled by the server's protocol
            class, so that a "drop" fault can abort the connection without any response.
        base_url: the sandbox's own URL (for the fake media URLs).
    """

    store: Store
    auth: Authenticator
    injector: FaultInjector
    initial_faults: Faults
    transports: dict[tuple[str, int], asyncio.Transport] = field(default_factory=dict)
    base_url: str = ""


class EveJSON(JSONResponse):
    """JSON as Eve (Flask) writes it: non-ASCII escaped, so any string a client sent, even a
    lone surrogate, can be written back."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def eve_error(code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Eve's error body: ``{"_status": "ERR", "_error": {"code": n, "message": text}}``."""
    return EveJSON({"_status": "ERR", "_error": {"code": code, "message": message}},
                   status_code=code, headers=headers)


def _retry_after(faults: Faults) -> dict[str, str]:
    if faults.retry_after is None:
        return {}
    # HTTP allows whole seconds (or a date); a fraction is sent as given when the knob asks for
    # one, which only fast tests do (the importer reads both).
    value = faults.retry_after
    return {"Retry-After": str(int(value)) if value == int(value) else str(value)}


NO_CONTENT_TYPE = "Unknown or no Content-Type header supplied"


async def _json_body(request: Request) -> tuple[Any, Response | None]:
    """The JSON body of a POST; Eve's 400s for another Content-Type or a body not JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return None, eve_error(400, NO_CONTENT_TYPE)
    raw = await request.body()
    try:
        return json.loads(raw), None
    except ValueError:
        return None, eve_error(400, BAD_REQUEST)


def build_app(rt: Runtime) -> ASGIApp:
    """Build the ASGI app for one sandbox.

    Args:
        rt: the shared runtime state.

    Returns:
        The app, wrapped so that every API request is counted and delayed by the latency knob.
    """
    store, auth, injector = rt.store, rt.auth, rt.injector

    def authorised(request: Request) -> bool:
        return auth.check(request.headers.get("x-api-key"))

    def pre_faults(eligible: bool) -> Response | None:
        """Rate limit and the before-store failures (nothing has been stored yet)."""
        if not eligible:
            return None
        faults = injector.faults
        if injector.rate_limited():
            store.note_fault("rate_limited")
            headers = {"X-RateLimit-Limit": str(faults.rate_limit), "X-RateLimit-Remaining": "0",
                       **_retry_after(faults)}
            return eve_error(429, RATE_LIMITED, headers)
        decision = injector.before_store()
        if decision is None:
            return None
        store.note_fault(decision)
        if decision == "503":
            return HTMLResponse(HTML_503, status_code=503, headers=_retry_after(faults))
        return eve_error(429, RATE_LIMITED, _retry_after(faults))

    async def after_store(request: Request) -> Response | None:
        """The after-store failures: the record exists, the client will not know it."""
        decision = injector.after_store()
        if decision is None:
            return None
        store.note_fault(decision)
        if decision == "500":
            return HTMLResponse(HTML_500, status_code=500)
        client = request.scope.get("client")
        transport = rt.transports.get(tuple(client)) if client else None
        if transport is not None:
            transport.abort()
        # Let connection_lost run, so that uvicorn knows no response is expected.
        for _ in range(3):
            await asyncio.sleep(0)
        return Response(status_code=500)  # never sent: the connection is gone

    def guarded(handler: Callable[[Request], Awaitable[Response]], eligible_get: bool = False
                ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return eve_error(401, CREDENTIALS)
            refused = pre_faults(eligible_get and injector.faults.faults_on_gets)
            return refused or await handler(request)
        return endpoint

    # -- auth -----------------------------------------------------------------------------

    async def login_jwt(request: Request) -> Response:
        grant = auth.login_with_jwt(request.headers.get("x-api-key"))
        return EveJSON(grant) if grant else eve_error(401, CREDENTIALS)

    async def login_code(request: Request) -> Response:
        body, error = await _json_body(request)
        if error:
            return error
        grant = auth.login_with_code(body.get("api_code") if isinstance(body, dict) else None)
        return EveJSON(grant) if grant else eve_error(401, CREDENTIALS)

    # -- creditor actions -----------------------------------------------------------------

    def action_poster(resource: Resource) -> Callable[[Request], Awaitable[Response]]:
        async def post(request: Request) -> Response:
            if not authorised(request):
                return eve_error(401, CREDENTIALS)
            body, error = await _json_body(request)
            refused = pre_faults(True)
            if refused:
                return refused
            if error:
                return error
            if isinstance(body, list):
                if not body:
                    return eve_error(400, "Empty bulk insert")
                outcome = store.post_actions(resource, body)
            else:
                outcome = store.post_action(resource, body)
            if outcome.stored:
                failed = await after_store(request)
                if failed:
                    return failed
            return EveJSON(outcome.body, status_code=outcome.status_code)
        return post

    # -- reads ----------------------------------------------------------------------------

    def lister(resource: str) -> Callable[[Request], Awaitable[Response]]:
        async def get_list(request: Request) -> Response:
            try:
                return EveJSON(store.find(resource, dict(request.query_params)))
            except QueryError as exc:
                return eve_error(400, str(exc))
        return get_list

    def getter(resource: str) -> Callable[[Request], Awaitable[Response]]:
        async def get_one(request: Request) -> Response:
            try:
                found = store.get(resource, request.path_params["id"],
                                  request.query_params.get("projection"))
            except QueryError as exc:
                return eve_error(400, str(exc))
            return EveJSON(found) if found is not None else eve_error(404, NOT_FOUND)
        return get_one

    # -- cases ----------------------------------------------------------------------------

    async def register(request: Request) -> Response:
        body, error = await _json_body(request)
        if error:
            return error
        outcome = store.register_case(body)
        return EveJSON(outcome.body, status_code=outcome.status_code)

    async def media_upload(request: Request) -> Response:
        filename, content_type, size = _uploaded_file(
            request.headers.get("content-type", ""), await request.body())
        key = store.attach_media(request.path_params["id"], filename, content_type, size)
        if key is None:
            return eve_error(404, NOT_FOUND)
        return EveJSON({"url": f"{rt.base_url}/_sandbox/media/{key}"})

    # -- admin ----------------------------------------------------------------------------

    def loopback_only(handler: Callable[[Request], Awaitable[Response]]
                      ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            host = request.client.host if request.client else ""
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:  # the knobs change what every client sees: this machine only
                return eve_error(403, "the sandbox's admin endpoints answer loopback only")
            return await handler(request)
        return endpoint

    async def admin_faults(request: Request) -> Response:
        if request.method == "POST":
            body, error = await _json_body(request)
            if error:
                return error
            if not isinstance(body, dict):
                return eve_error(400, "send a JSON object of fault knobs")
            try:
                injector.configure(injector.faults.updated(body))
            except ValueError as exc:
                return eve_error(400, str(exc))
        return EveJSON(injector.faults.as_dict())

    async def admin_state(request: Request) -> Response:
        return EveJSON({**store.snapshot(), "faults_config": injector.faults.as_dict()})

    async def admin_reset(request: Request) -> Response:
        store.reset()
        injector.configure(rt.initial_faults)
        injector.reseed()
        return EveJSON(store.snapshot())

    async def admin_expire(request: Request) -> Response:
        return EveJSON({"expired": auth.expire_all()})

    routes = [
        Route("/authenticates/api-code", login_jwt, methods=["GET"]),
        Route("/authenticates/api-code", login_code, methods=["POST"]),
        Route("/_sandbox/faults", loopback_only(admin_faults), methods=["GET", "POST"]),
        Route("/_sandbox/state", loopback_only(admin_state), methods=["GET"]),
        Route("/_sandbox/reset", loopback_only(admin_reset), methods=["POST"]),
        Route("/_sandbox/expire-tokens", loopback_only(admin_expire), methods=["POST"]),
    ]
    for resource in RESOURCES.values():
        path = f"/{resource.name}"
        routes += [Route(path, action_poster(resource), methods=["POST"]),
                   Route(path, guarded(lister(resource.name), True), methods=["GET"]),
                   Route(path + "/{id}", guarded(getter(resource.name), True), methods=["GET"])]
    routes += [
        Route("/cases", guarded(lister(CASES), True), methods=["GET"]),
        Route("/cases/{id}", guarded(getter(CASES), True), methods=["GET"]),
        Route("/case--registrations", guarded(register), methods=["POST"]),
        Route("/case--registrations", guarded(lister(REGISTRATIONS), True), methods=["GET"]),
        Route("/case--registrations/{id}", guarded(getter(REGISTRATIONS), True),
              methods=["GET"]),
        Route("/media--upload/{id}", guarded(media_upload), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: NOT_FOUND, 405: NOT_ALLOWED}.get(code, BAD_REQUEST)
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        if code == 405:  # Allow names every method of the path (one route per method here)
            allowed = {m for route in routes if route.matches(request.scope)[0] != Match.NONE
                       for m in route.methods or ()}
            headers["Allow"] = ", ".join(sorted(allowed))
        return eve_error(code, message, headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _Counted(app, rt)


class _Counted:
    """Counts API requests per ``METHOD /collection`` and adds the latency knob."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sandbox/"):
            segment = scope["path"].split("/")[1] if scope["path"].count("/") else ""
            with self.rt.store.lock:
                self.rt.store.requests[f"{scope['method']} /{segment}"] += 1
            latency = self.rt.injector.faults.latency_ms
            if latency:
                await asyncio.sleep(latency / 1000)
        await self.app(scope, receive, send)


_PART = re.compile(rb'name="file"(?:; filename="(?P<name>[^"]*)")?\r\n'
                   rb'(?:Content-Type: (?P<type>[^\r\n]*)\r\n)?\r\n', re.IGNORECASE)


def _uploaded_file(content_type: str, body: bytes) -> tuple[str, str, int]:
    """Find the ``file`` part of a multipart body without a multipart library.

    Returns:
        (file name, content type, size in bytes); the whole body counts when no part is found.
    """
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    match = _PART.search(body)
    if not boundary or not match:
        return "upload", content_type or "application/octet-stream", len(body)
    end = body.find(b"\r\n--" + boundary.group(1).encode(), match.end())
    size = (end if end >= 0 else len(body)) - match.end()
    name = (match.group("name") or b"upload").decode("utf-8", "replace")
    kind = (match.group("type") or b"application/octet-stream").decode("latin-1")
    return name, kind, size

"""The intake API's one middleware: every call's headers and correlation id, its log line, the
last-resort 500.

Every answer, of every status, carries ``API-Version`` (the full version of the API, NL API
Design Rules ``/core/version-header``), ``X-Correlation-ID`` and ``traceparent``
(:mod:`connectors.correlation`) and the security headers of ``/core/transport/security-headers``;
the OpenAPI document may be read from any origin (``/core/publish-openapi``). The correlation id
is in the log context of the call, in its one ``api_call`` log line and in the ledger row it
writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.correlation import correlate
from connectors.intake_openapi import API_VERSION, DOCUMENT_PATHS
from connectors.intake_problems import origin_of, problem

#: Headers on every answer: the API's version and the security headers every API answer should
#: carry (NL API Design Rules /core/transport/security-headers; Strict-Transport-Security is the
#: TLS terminator's, see docs/api-design-rules.md).
_EVERY_ANSWER = ((b"api-version", API_VERSION.encode("ascii")),
                 (b"cache-control", b"no-store"),
                 (b"x-content-type-options", b"nosniff"),
                 (b"x-frame-options", b"DENY"),
                 (b"content-security-policy", b"frame-ancestors 'none'"))
#: What the answer of the OpenAPI document adds: any origin may read it.
_OPEN_TO_ALL = ((b"access-control-allow-origin", b"*"),)


def _log() -> Any:
    return structlog.get_logger("disclosure.api")


class CallMiddleware:
    """Gives every call its correlation id (header, log context) and one log line.

    Every answer, errors included, carries ``API-Version``, ``X-Correlation-ID``,
    ``traceparent`` and the security headers (those the answer did not set itself). An
    exception that escapes the app (a bug: nothing a client sends should get here) becomes a
    ``500`` problem with the correlation id, and is logged with its traceback.

    ``POST`` to ``fast_path`` (``POST /v1/requests``, the hot path) goes straight to its handler
    (``fast``) instead of through the router and its layers, which cost a sixth of each call;
    the route stays in the router for the OpenAPI document, and answers the same.
    """

    def __init__(self, app: ASGIApp, fast: ASGIApp | None = None,
                 fast_path: str | None = None) -> None:
        self.app = app
        self.fast = fast if fast_path is not None else None
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        correlation = correlate(_header(headers, b"traceparent"),
                                _header(headers, b"x-correlation-id"))
        state = scope.setdefault("state", {})
        state["correlation"] = correlation
        extra = [(b"x-correlation-id", correlation.correlation_id.encode("latin-1")),
                 (b"traceparent", correlation.traceparent.encode("latin-1")), *_EVERY_ANSWER]
        if scope.get("path") in DOCUMENT_PATHS:
            extra.extend(_OPEN_TO_ALL)
        started = time.perf_counter()
        status: list[int] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = list(message.get("headers", ()))
                own = {name.lower() for name, _ in headers}
                message["headers"] = [*headers, *(h for h in extra if h[0] not in own)]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation.correlation_id):
            target = self.app
            if self.fast is not None and scope.get("method") == "POST" and scope.get(
                    "path") == f"{scope.get('root_path', '')}{self.fast_path}":
                target = self.fast
            try:
                await target(scope, receive, send_with_headers)
            except Exception:
                _log().exception("api_unhandled_error", path=scope.get("path"))
                if not status:
                    response = problem(500, "internal_error", "the API failed; this is our "
                                       "error, not yours", origin=origin_of(scope))
                    await response(scope, receive, send_with_headers)
            finally:
                code = status[0] if status else 0
                log = _log()
                # one line per call costs a few percent: built only when it is kept
                if code >= 500 or _enabled(log, logging.INFO):
                    event = log.warning if code >= 500 else log.info
                    event("api_call", method=scope.get("method"), path=_route_of(scope),
                          status=code, ms=round((time.perf_counter() - started) * 1000, 2),
                          partner_id=state.get("partner_id"),
                          request_id=state.get("request_id"), code=state.get("code"),
                          refusal=state.get("auth_refusal"))


def _enabled(log: Any, level: int) -> bool:
    """Whether a structlog logger backed by the standard library keeps ``level`` (other
    loggers, such as the tests' capturing ones, keep everything)."""
    check = getattr(log, "isEnabledFor", None)
    return bool(check(level)) if callable(check) else True


def _header(headers: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else str(scope.get("path", ""))

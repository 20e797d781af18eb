"""The intake API's error answers: RFC 9457 problem details, one ``type`` URI per kind of problem.

Inside the API an error is raised as :class:`ApiError` and answered, by the app's exception
handlers or the submit route's fast path, as a :func:`problem` document. Its ``type`` is the
kind's URI under the origin the caller addressed (:mod:`connectors.intake_problem_types`, whose
pages those URIs resolve to); ``title`` is the kind's, ``detail`` this occurrence's. A problem
with what was sent (an *input* kind) also carries one entry per field (``errors``) and, where
the submission was recorded, its ledger ``request_id`` (and ``instance``, its status URL). The
call's correlation id is in the ``X-Correlation-ID`` header of every answer.

A refused credential is a ``401`` (:func:`unauthenticated`) that tells the caller nothing about
why; the log line keeps the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.types import Scope

from connectors.correlation import Correlation, correlate
from connectors.credentials import MISSING, Refusal
from connectors.errors import ConnectorError
from connectors.intake_problem_types import PROBLEMS_PATH, kind_of
from legal_bases.errors import FieldError

PROBLEM_JSON = "application/problem+json"
#: Where a request's status is, under the origin (its ``instance`` when a problem recorded it).
REQUESTS_PATH = "/v1/requests"
#: The reason phrase of each status the API answers with (the title of an ``about:blank``
#: problem, and of each error answer in the OpenAPI document).
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
          415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_AUTH_REALM = 'Bearer realm="disclosure-intake"'


class ApiError(ConnectorError):
    """Raised inside the API to answer with a problem document (never escapes the app)."""

    def __init__(self, status: int, code: str, detail: str, *,
                 errors: tuple[FieldError, ...] = (), headers: Mapping[str, str] | None = None,
                 request_id: str | None = None, existing_request_id: str | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.request_id = request_id
        self.existing_request_id = existing_request_id
        super().__init__(f"{status} {code}: {detail}")


def unauthenticated(request: Request, refusal: Refusal) -> ApiError:
    """The ``401`` of a refused credential (the log line gets the reason, the caller not)."""
    request.state.auth_refusal = refusal.reason
    header = _AUTH_REALM if refusal.code == MISSING else f'{_AUTH_REALM}, error="invalid_token"'
    detail = ("send an API key as Authorization: Bearer <key>, or a client certificate"
              if refusal.code == MISSING else "the credentials are not valid")
    return ApiError(401, refusal.code, detail, headers={"WWW-Authenticate": header})


def origin_of(scope: Scope) -> str:
    """``scheme://host`` and root path as the caller addressed us (no trailing slash)."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"


def correlation_of(request: Request) -> Correlation:
    """The call's correlation, as :class:`~connectors.intake_middleware.CallMiddleware` set it
    (a new one if the call did not pass through it)."""
    found = request.scope.get("state", {}).get("correlation")
    return found if isinstance(found, Correlation) else correlate(None, None)


def problem(status: int, code: str, detail: str, *, origin: str,
            errors: tuple[FieldError, ...] = (), headers: Mapping[str, str] | None = None,
            request_id: str | None = None, existing_request_id: str | None = None) -> Response:
    """A problem-details answer of the kind named by ``code`` (``invalid_request`` is the kind
    ``invalid-request``; a code of no kind is ``about:blank``), under ``origin``."""
    kind = kind_of(code)
    document: dict[str, Any] = {
        "type": f"{origin}{PROBLEMS_PATH}/{kind.kind}" if kind else "about:blank",
        "title": kind.title if kind else TITLES.get(status, "Error"), "status": status,
        "detail": detail}
    if request_id is not None:
        document["instance"] = f"{origin}{REQUESTS_PATH}/{request_id}"
    if kind is not None and kind.input:
        document["errors"] = [e.to_dict() for e in errors]
        if request_id is not None:
            document["request_id"] = request_id
        if existing_request_id is not None:
            document["existing_request_id"] = existing_request_id
    return Response(json.dumps(document, ensure_ascii=False), status_code=status,
                    headers=dict(headers or {}), media_type=PROBLEM_JSON)


def problem_of(request: Request, exc: ApiError) -> Response:
    """The answer to an :class:`ApiError` raised in a call (its code goes to the log line)."""
    request.state.code = exc.code
    return problem(exc.status, exc.code, exc.detail, origin=origin_of(request.scope),
                   errors=exc.errors, headers=exc.headers, request_id=exc.request_id,
                   existing_request_id=exc.existing_request_id)

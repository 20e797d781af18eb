"""The intake API's error answers: RFC 9457 problem details with a machine-readable ``code``.

Inside the API an error is raised as :class:`ApiError` and answered, by the app's exception
handlers or the submit route's fast path, as a :func:`problem` document carrying the call's
correlation id (and, for bad input, one entry per field). A refused credential is a ``401``
(:func:`unauthenticated`) that tells the caller nothing about why; the log line keeps the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from connectors.correlation import Correlation, correlate
from connectors.credentials import MISSING, Refusal
from connectors.errors import ConnectorError
from legal_bases.errors import FieldError

PROBLEM_JSON = "application/problem+json"
#: The title of a problem document, per status.
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


def correlation_of(request: Request) -> Correlation:
    """The call's correlation, as :class:`~connectors.intake_middleware.CallMiddleware` set it
    (a new one if the call did not pass through it)."""
    found = request.scope.get("state", {}).get("correlation")
    return found if isinstance(found, Correlation) else correlate(None, None)


def problem(status: int, code: str, detail: str, *, correlation_id: str,
            errors: tuple[FieldError, ...] = (), headers: Mapping[str, str] | None = None,
            request_id: str | None = None, existing_request_id: str | None = None) -> Response:
    """A problem-details answer."""
    document: dict[str, Any] = {
        "type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
        "code": code, "detail": detail, "errors": [e.to_dict() for e in errors],
        "correlation_id": correlation_id}
    if request_id is not None:
        document["request_id"] = request_id
    if existing_request_id is not None:
        document["existing_request_id"] = existing_request_id
    return Response(json.dumps(document, ensure_ascii=False), status_code=status,
                    headers=dict(headers or {}), media_type=PROBLEM_JSON)


def problem_of(request: Request, exc: ApiError) -> Response:
    """The answer to an :class:`ApiError` raised in a call (its code goes to the log line)."""
    request.state.code = exc.code
    return problem(exc.status, exc.code, exc.detail,
                   correlation_id=correlation_of(request).correlation_id, errors=exc.errors,
                   headers=exc.headers, request_id=exc.request_id,
                   existing_request_id=exc.existing_request_id)

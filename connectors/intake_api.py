"""The intake API (FastAPI): partners submit disclosure requests and follow them to delivery.

Routes (the OpenAPI document at ``/openapi.json``, readable at ``/docs``, says the same):

* ``POST /v1/requests`` — a request as DESIGN.md section 5. It is on the ledger before the
  answer: ``202`` with its id and status URL; the same reference and body again: ``200`` with the
  first request's id; the same reference with another body: ``409``. Then the dispatcher is
  nudged (coalesced, off the request path); if Prefect cannot be reached the dispatcher's
  schedule picks the request up.
* ``GET /v1/requests/{id}`` — state, decision (outcome, released and withheld categories, reasons
  with citations), deadline, delivery. Another partner's request is ``404``, as an unknown one.
* ``GET /v1/requests?state=&since=&limit=&cursor=`` — the partner's own requests, oldest first.
* ``GET /healthz`` — whether the ledger answers (no credentials needed).

Every answer carries ``X-Correlation-ID`` and ``traceparent`` (:mod:`connectors.correlation`);
the same id is in the ledger row and in the log line of the call. Errors are RFC 9457 problem
details with a machine-readable ``code`` and, for bad input, one entry per field. Every ``/v1``
route checks credentials before anything else: without valid ones the answer is ``401``, never a
word about the parameters or the body.

What the ledger records (nothing an identified partner sent within its rate disappears):

==========================  =========================================================
answer                      on the ledger
==========================  =========================================================
202 accepted                the request, state ``received``
200 repeat                  nothing new (the first request answers)
409 reference conflict      the submission, invalid (``reference_conflict``)
422 invalid body            the submission as received, invalid, one error per field
                            (a key named twice in one object: ``duplicate_key``)
400 not JSON / not UTF-8    the body after a one-line marker, invalid (``bad_json``)
415 not application/json    the body after a one-line marker, invalid
403 another body's ground   the submission, invalid (``requester_not_entitled``)
413 too large               a marker row: the size only; the body is not read
401, 429, 503               nothing (no partner known / refused before reading / the ledger
                            is down: the partner sends it again)
==========================  =========================================================

Every recorded rejection is then decided like any submission (rejected, ``invalid_request``)
by the dispatcher, and its ledger id is in the problem document (``request_id``).

A body that could not be read back as JSON by every later reader — nested deeper than
:data:`MAX_JSON_DEPTH`, or holding NUL characters or unpaired surrogates — is stored after a
one-line marker, so it stays whole but is never taken for JSON.

The app takes its dependencies as arguments (:func:`create_app`); it never imports Prefect: the
``nudge`` callback is how it asks for a dispatcher run.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, col
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.correlation import Correlation, correlate
from connectors.credentials import INVALID, MISSING, Authenticator, Identity, Refusal
from connectors.errors import ConnectorError
from connectors.group_commit import (
    NOT_PARSED,
    GroupCommitWriter,
    LedgerUnavailableError,
    Recorded,
    Recording,
    Submission,
)
from connectors.intake_models import (
    EXAMPLE_BULK,
    EXAMPLE_OM,
    EXAMPLE_REQUEST,
    REQUEST_SCHEMA,
    Accepted,
    Health,
    Problem,
    RequestOut,
    RequestPage,
)
from connectors.nudge import Nudger
from connectors.partner_file import PartnerSource
from connectors.partners import PartnerDirectory
from connectors.rate_limit import RateLimiter
from legal_bases import limits, strict_json
from legal_bases.errors import FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest, read_json, read_request
from legal_bases.strict_json import bad_character_path
from legal_bases.table import GroundTable
from records.db import read_only
from records.ledger import compute_deadline, latest_decision, received_on
from records.models import DeliveryRow, RequestRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.vocabulary import RequestState

#: Deepest JSON nesting stored as JSON. A valid request nests 3 deep; anything much deeper is
#: stored after a marker, so no later reader's parser runs out of stack on it.
MAX_JSON_DEPTH = limits.MAX_JSON_DEPTH
API_VERSION = "1.0.0"
PROBLEM_JSON = "application/problem+json"
_UNSET = NOT_PARSED
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_AUTH_REALM = 'Bearer realm="disclosure-intake"'
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The numbers the API runs with; the defaults are the project's limits."""

    rate_per_second: float = limits.API_RATE_PER_SECOND
    rate_burst: int = limits.API_RATE_BURST
    max_body_bytes: int = limits.MAX_REQUEST_BYTES
    inline_body_bytes: int = limits.INTAKE_INLINE_BODY_BYTES
    batch_size: int = limits.INTAKE_BATCH_SIZE
    queue_size: int = limits.INTAKE_QUEUE_SIZE
    write_timeout: float = limits.INTAKE_WRITE_TIMEOUT_SECONDS
    retry_after: int = limits.INTAKE_RETRY_AFTER_SECONDS
    nudge_interval: float = limits.NUDGE_WINDOW_SECONDS


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


def _log() -> Any:
    return structlog.get_logger("disclosure.api")


# -- reading a body -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reading:
    """What a submitted body says: the request or why it is refused, and what the ledger keeps.

    ``status`` is 202 for a valid request, else the answer for the recorded rejection.
    """

    raw_body: str
    data: Any
    parsed: DisclosureRequest | InvalidRequest
    status: int
    code: str
    detail: str


def _marked(marker: str, text: str) -> str:
    return f"({marker}; the body as received follows this line)\n{text}"


def _rejected(status: int, code: str, detail: str, raw_body: str, *,
              errors: tuple[FieldError, ...], legal_basis: str | None = None,
              data: Any = _UNSET) -> Reading:
    return Reading(raw_body, data, InvalidRequest(errors, legal_basis), status, code, detail)


def json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type header says JSON in UTF-8 (``application/json``)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
                "utf-8", "utf8"}:
            return False
    return True


def _depth(data: Any) -> int:
    """How deep JSON data nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
    return deepest


def read_body(body: bytes, *, content_type: str | None, body_of: str, received_at: datetime,
              table: GroundTable) -> Reading:
    """Read a submitted body for a partner of body ``body_of``: a pure function of its input.

    The JSON is read strictly (:mod:`legal_bases.strict_json`): a key named twice in one object
    makes the request ambiguous, so it is refused (``422``, ``duplicate_key`` with the key's path)
    and recorded as sent.

    What is stored behind a marker is the body as text, undecodable bytes and NUL characters
    replaced by U+FFFD (PostgreSQL text cannot hold NUL).
    """
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if not json_media_type(content_type):
        return _rejected(415, "unsupported_media_type",
                         "send the request as Content-Type: application/json (UTF-8)",
                         _marked("not sent as application/json", text),
                         errors=(FieldError("", "unsupported_media_type",
                                     "the body must be sent as application/json"),))
    try:
        strict = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _rejected(400, "bad_json", "the body is not UTF-8 text",
                         _marked("not UTF-8; undecodable bytes replaced", text),
                         errors=(FieldError("", "bad_encoding", f"not UTF-8 at byte {exc.start}"),))
    duplicate: strict_json.DuplicateKeyError | None = None
    try:
        try:
            data = strict_json.loads(strict)
        except strict_json.DuplicateKeyError as exc:
            # Refused below, once the checks of what is stored have run on the body as every
            # lenient reader (and the ledger's body hash) reads it: the last value wins.
            duplicate, data = exc, json.loads(strict)
    except RecursionError:
        return _rejected(400, "bad_json", "the body is not JSON: it nests too deeply",
                         _marked("not JSON", text),
                         errors=(FieldError("", "bad_json", "nested too deeply to read"),))
    except ValueError as exc:
        message = getattr(exc, "msg", None) or "not JSON"
        position = getattr(exc, "pos", None)
        where = f" at character {position}" if isinstance(position, int) else ""
        return _rejected(400, "bad_json", f"the body is not JSON: {message}{where}",
                         _marked("not JSON", text),
                         errors=(FieldError("", "bad_json", f"not JSON: {message}{where}"),))
    brackets = strict.count("[") + strict.count("{")
    if brackets > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        return _rejected(422, "invalid_request",
                         f"the body nests deeper than {MAX_JSON_DEPTH} levels",
                         _marked(f"nested deeper than {MAX_JSON_DEPTH} levels", strict),
                         errors=(FieldError("", "too_deep",
                                            f"nests deeper than {MAX_JSON_DEPTH} levels"),))
    if _SUSPECT_ESCAPE.search(strict):
        path = bad_character_path(data)
        if path is not None:
            return _rejected(422, "invalid_request",
                             "the body holds NUL characters or unpaired surrogates",
                             _marked("holds NUL characters or unpaired surrogates", strict),
                             errors=(FieldError(path, "invalid_characters",
                                                "holds a NUL character or an unpaired surrogate"),))
    if duplicate is not None:
        return _rejected(422, "invalid_request",
                         f"a key appears more than once in one object (at {duplicate.path}), "
                         "so the request is ambiguous; it was recorded as received and rejected",
                         strict, data=data, errors=(FieldError(
                             duplicate.path, "duplicate_key", "this key appears more than once "
                             "in its object; send each key once"),))
    parsed = read_request(data, received_on=received_on(received_at))
    if isinstance(parsed, InvalidRequest):
        count = len(parsed.errors)
        return Reading(strict, data, parsed, 422, "invalid_request",
                       f"the request has {count} invalid field(s); it was recorded as received "
                       "and rejected")
    ground = table.get(parsed.legal_basis)
    if ground is not None and body_of not in ground.requesters:
        error = FieldError("legal_basis", "requester_not_entitled",
                           f"ground {parsed.legal_basis} is not a ground of a {body_of} "
                           "requester")
        return _rejected(403, "requester_not_entitled",
                         f"the ground {parsed.legal_basis} may not be claimed by a {body_of}",
                         strict, errors=(error,), legal_basis=parsed.legal_basis, data=data)
    return Reading(strict, data, parsed, 202, "accepted", "accepted")


# -- the service behind the routes ----------------------------------------------------------------

class IntakeService:
    """The API's dependencies and the work of its routes."""

    def __init__(self, *, engine: Engine, partners: PartnerSource, pseudonymizer: Pseudonymizer,
                 table: GroundTable, nudge: Callable[[], object], config: ApiConfig) -> None:
        self.engine = engine
        self.reads = read_only(engine)
        self.partners = partners
        self.table = table
        self.config = config
        self.nudger = Nudger(nudge, interval=config.nudge_interval)
        self.writer = GroupCommitWriter(engine=engine, pseudonymizer=pseudonymizer,
                                        batch_size=config.batch_size,
                                        queue_size=config.queue_size,
                                        on_written=self.nudger.poke)
        self.limiter = RateLimiter(rate=config.rate_per_second, burst=config.rate_burst)
        self.authenticator = Authenticator(engine=engine, partners=partners)

    def start(self) -> None:
        self.nudger.start()
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()
        self.nudger.stop()

    def unavailable(self, what: str) -> ApiError:
        return ApiError(503, "ledger_unavailable", f"{what}; send the same request again later "
                        "(the same reference is safe to repeat)",
                        headers={"Retry-After": str(self.config.retry_after)})

    def identify(self, request: Request, *, submitting: bool = False) -> Identity:
        """The caller's partner, rate-limited; raises :class:`ApiError` 401, 429 or 503.

        ``submitting``: the key's revocation is checked by the transaction that records the
        submission (see :mod:`connectors.credentials`).
        """
        try:
            found = self.authenticator.authenticate(
                authorization=request.headers.get("authorization"), scope=request.scope,
                revocation_by_writer=submitting)
        except LedgerUnavailableError:
            raise self.unavailable("the ledger cannot check credentials now") from None
        if isinstance(found, Refusal):
            raise unauthenticated(request, found)
        request.state.partner_id = found.partner.id
        verdict = self.limiter.take(found.partner.id)
        if not verdict.allowed:
            raise ApiError(429, "rate_limited",
                           f"more than {self.limiter.rate:g} requests per second (burst "
                           f"{self.limiter.burst}); retry after {verdict.retry_after} s",
                           headers={"Retry-After": str(verdict.retry_after)})
        return found

    async def record(self, submission: Submission) -> Recorded:
        """Queue a submission for the ledger and wait until it is committed."""
        try:
            return await self.writer.record(submission, timeout=self.config.write_timeout)
        except TimeoutError:
            raise self.unavailable("the ledger did not answer in time") from None
        except LedgerUnavailableError:
            raise self.unavailable("the ledger could not record the request") from None


def unauthenticated(request: Request, refusal: Refusal) -> ApiError:
    """The ``401`` of a refused credential (the log line gets the reason, the caller not)."""
    request.state.auth_refusal = refusal.reason
    header = _AUTH_REALM if refusal.code == MISSING else f'{_AUTH_REALM}, error="invalid_token"'
    detail = ("send an API key as Authorization: Bearer <key>, or a client certificate"
              if refusal.code == MISSING else "the credentials are not valid")
    return ApiError(401, refusal.code, detail, headers={"WWW-Authenticate": header})


# -- problem answers ------------------------------------------------------------------------------

def _correlation(request: Request) -> Correlation:
    found = request.scope.get("state", {}).get("correlation")
    return found if isinstance(found, Correlation) else correlate(None, None)


def problem(status: int, code: str, detail: str, *, correlation_id: str,
            errors: tuple[FieldError, ...] = (), headers: Mapping[str, str] | None = None,
            request_id: str | None = None, existing_request_id: str | None = None) -> Response:
    """A problem-details answer."""
    document: dict[str, Any] = {
        "type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
        "code": code, "detail": detail, "errors": [e.to_dict() for e in errors],
        "correlation_id": correlation_id}
    if request_id is not None:
        document["request_id"] = request_id
    if existing_request_id is not None:
        document["existing_request_id"] = existing_request_id
    return Response(json.dumps(document, ensure_ascii=False), status_code=status,
                    headers=dict(headers or {}), media_type=PROBLEM_JSON)


def _status_url(request: Request, request_id: str) -> str:
    """The absolute URL of a request's status, as the caller addressed us (cheaper than
    ``url_for``, which this hot path would otherwise spend a tenth of its time in)."""
    scope = request.scope
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}" \
        f"/v1/requests/{request_id}"


def _from_api_error(request: Request, exc: ApiError) -> Response:
    request.state.code = exc.code
    return problem(exc.status, exc.code, exc.detail,
                   correlation_id=_correlation(request).correlation_id, errors=exc.errors,
                   headers=exc.headers, request_id=exc.request_id,
                   existing_request_id=exc.existing_request_id)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


# -- the middleware: correlation, log line, last-resort 500 ---------------------------------------

class CallMiddleware:
    """Gives every call its correlation id (header, log context) and one log line.

    Every answer, errors included, carries ``X-Correlation-ID`` and ``traceparent``. An
    exception that escapes the app (a bug: nothing a client sends should get here) becomes a
    ``500`` problem with the correlation id, and is logged with its traceback.

    ``POST /v1/requests``, the hot path, goes straight to its handler (``fast``) instead of
    through the router and its layers, which cost a sixth of each call; the route stays in the
    router for the OpenAPI document, and answers the same.
    """

    def __init__(self, app: ASGIApp, fast: ASGIApp | None = None) -> None:
        self.app = app
        self.fast = fast

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
                 (b"traceparent", correlation.traceparent.encode("latin-1"))]
        started = time.perf_counter()
        status: list[int] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation.correlation_id):
            target = self.app
            if self.fast is not None and scope.get("method") == "POST" and scope.get(
                    "path") == f"{scope.get('root_path', '')}{SUBMIT_PATH}":
                target = self.fast
            try:
                await target(scope, receive, send_with_headers)
            except Exception:
                _log().exception("api_unhandled_error", path=scope.get("path"))
                if not status:
                    response = problem(500, "internal_error", "the API failed; this is our "
                                       "error, not yours",
                                       correlation_id=correlation.correlation_id)
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


# -- status documents -----------------------------------------------------------------------------

_DELIVERY_BY_STATE = {RequestState.DELIVERED.value: "delivered",
                      RequestState.FAILED.value: "failed",
                      RequestState.REJECTED.value: "not_applicable",
                      RequestState.INVALID.value: "not_applicable"}


def _deadline(row: RequestRow, table: GroundTable) -> date | None:
    if not row.valid or row.legal_basis is None or row.reference_date is None:
        return None
    ground = table.get(row.legal_basis)
    version = ground.version_on(row.reference_date) if ground is not None else None
    if version is None:
        return None
    return compute_deadline(received_on=received_on(row.received_at),
                            response_days=version.response_days, due_date=row.due_date)


def _claimed_purpose(raw_body: str) -> str | None:
    """The purpose an invalid submission claimed, where its raw body reads (strictly) as a JSON
    object whose ``purpose`` is a string that fits a slug; else None. The ledger keeps a purpose
    for valid requests only; this reads it back for the status document, the ledger unchanged.
    """
    data, refused = read_json(raw_body)
    if refused is not None or not isinstance(data, dict):
        return None
    purpose = data.get("purpose")
    if not isinstance(purpose, str) or len(purpose) > limits.MAX_SLUG_LENGTH:
        return None
    if "\x00" in purpose or any(0xD800 <= ord(c) <= 0xDFFF for c in purpose):
        return None  # not text an answer should carry
    return purpose


def status_document(session: Session, row: RequestRow, state: str, table: GroundTable,
                    self_url: str) -> dict[str, Any]:
    """Where one request stands, as ``GET /v1/requests/{id}`` answers."""
    decision = latest_decision(session=session, request_id=row.id)
    decision_out: dict[str, Any] | None = None
    deadline = _deadline(row, table)
    if decision is not None:
        decision_out = {
            "outcome": decision.outcome, "released": decision.released,
            "withheld": decision.withheld, "reasons": decision.reasons,
            "review_triggers": decision.review_triggers, "ground": decision.ground_id,
            "ground_version": decision.ground_version,
            "decided_by": "engine" if decision.decided_by == "engine" else "reviewer",
            "decided_at": decision.decided_at}
        deadline = decision.deadline or deadline
    delivery: dict[str, Any] = {"status": _DELIVERY_BY_STATE.get(state, "pending")}
    if state == RequestState.DELIVERED.value:
        found = session.execute(
            select(DeliveryRow).where(col(DeliveryRow.request_id) == row.id)
            .order_by(col(DeliveryRow.delivered_at).desc()).limit(1)).scalars().first()
        if found is not None:
            delivery |= {"delivered_at": found.delivered_at, "destination": found.destination,
                         "sha256": found.receipt.get("sha256"),
                         "size": found.receipt.get("size")}
    return {
        "id": row.id, "reference": row.reference, "channel": row.channel,
        "received_at": row.received_at, "correlation_id": row.correlation_id, "state": state,
        "valid": row.valid, "errors": row.validation_errors, "legal_basis": row.legal_basis,
        "purpose": row.purpose if row.valid else _claimed_purpose(row.raw_body),
        "reference_date": row.reference_date, "due_date": row.due_date,
        "subject_count": row.subject_count, "decision": decision_out, "deadline": deadline,
        "delivery": delivery, "links": {"self": self_url}}


def _utc_moment(moment: datetime) -> datetime:
    """``moment`` in UTC (no offset: UTC), clamped to what a timestamp can hold."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 and the like
        if moment.year < 2:
            return datetime.min.replace(tzinfo=UTC)
        return datetime.max.replace(tzinfo=UTC)


def _encode_cursor(received_at: datetime, request_id: str) -> str:
    raw = json.dumps([received_at.astimezone(UTC).isoformat(), request_id])
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, request_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(request_id, str):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "invalid_request", "the cursor is not one this API gave out",
                       errors=(FieldError("query.cursor", "bad_cursor",
                                          "use the next link of the previous page"),)) from None
    return moment, request_id


# -- the app --------------------------------------------------------------------------------------

_PROBLEM_RESPONSE: dict[str, Any] = {"model": Problem}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"MutualTLS": []}]


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {**_PROBLEM_RESPONSE, "description": _TITLES[status]} for status in statuses}


def create_app(*, engine: Engine, partners: PartnerSource | PartnerDirectory,
               pseudonymizer: Pseudonymizer, table: GroundTable, nudge: Callable[[], object],
               config: ApiConfig | None = None) -> FastAPI:
    """The intake API over a migrated ledger ``engine``.

    ``nudge`` asks for a dispatcher run (it may fail: the sweeper then picks requests up); it
    is called from a thread of the API, at most once per ``config.nudge_interval`` seconds.
    An in-memory SQLite ledger (one shared connection) cannot serve concurrent readers and a
    writer: use a file or PostgreSQL.
    """
    if isinstance(engine.pool, StaticPool):
        raise ValueError("the intake API needs a ledger file or PostgreSQL, not an in-memory "
                         "SQLite database")
    source = partners if isinstance(partners, PartnerSource) else PartnerSource.fixed(partners)
    service = IntakeService(engine=engine, partners=source, pseudonymizer=pseudonymizer,
                            table=table, nudge=nudge, config=config or ApiConfig())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded so far (FastAPI, SQLAlchemy, Prefect's client…) lives as long as
        # the process: keep it out of the cyclic collector, whose full passes over it took
        # hundreds of milliseconds and showed as the API's slowest answers.
        gc.collect()
        gc.freeze()
        service.start()
        _log().info("intake_api_started", ledger=engine.url.get_backend_name(),
                    partners=len(source.directory))
        try:
            yield
        finally:
            service.stop()
            _log().info("intake_api_stopped", batches=service.writer.batches)

    app = FastAPI(title="DUO disclosure engine — intake API", version=API_VERSION,
                  description=_DESCRIPTION, lifespan=lifespan, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url="/redoc")
    app.state.intake = service
    app.add_middleware(CallMiddleware, fast=_submit_directly)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _api_error(request: Request, exc: ApiError) -> Response:
    return _from_api_error(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = tuple(FieldError(_field_path(e.get("loc", ())), str(e.get("type", "invalid")),
                              str(e.get("msg", "is not valid"))) for e in exc.errors())
    return _from_api_error(request, ApiError(
        422, "invalid_request", f"{len(errors)} invalid parameter(s)", errors=errors))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return _from_api_error(request, ApiError(exc.status_code, code, detail, headers=headers))


def _allowed_methods(request: Request) -> str:
    """Every method the requested path answers, for the ``Allow`` of a ``405`` (the router's own
    names only the first route of the path, and ``/v1/requests`` is two: GET and POST).

    The routes are the app's own (the documentation's) and those of :data:`router`, which the
    app includes without a prefix (FastAPI wraps an included router, so the app's list does not
    show its routes).
    """
    methods: set[str] = set()
    for route in (*request.app.router.routes, *router.routes):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def _submit_directly(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/requests`` without the router (see :class:`CallMiddleware`)."""
    request = Request(scope, receive)
    try:
        response = await submit_request(request)
    except ApiError as exc:
        response = _from_api_error(request, exc)
    await response(scope, receive, send)


def _service(request: Request) -> IntakeService:
    service: IntakeService = request.app.state.intake
    return service


def _identified(request: Request) -> Identity:
    """The caller of a route that needs credentials (a dependency: FastAPI solves it before it
    reads the route's parameters, so a caller without valid credentials gets ``401`` and learns
    nothing about them)."""
    return _service(request).identify(request)


Caller = Annotated[Identity, Depends(_identified)]


router = APIRouter()
SUBMIT_PATH = "/v1/requests"


@router.post(
    SUBMIT_PATH, status_code=202, tags=["requests"], operation_id="submitRequest",
    summary="Submit a disclosure request", response_model=Accepted,
    responses={200: {"model": Accepted, "description": "A repeat of an accepted request (same "
                     "reference, same body): the first request's id"},
               202: {"model": Accepted, "description": "Accepted: on the ledger, state "
                     "received", "headers": {"Location": {
                         "description": "the status URL", "schema": {"type": "string"}}}},
               **_problems(400, 401, 403, 409, 413, 415, 422, 429, 503)},
    openapi_extra={"security": _SECURITY, "requestBody": {
        "required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/DisclosureRequest"},
            "examples": {
                "tax": {"summary": "Belastingdienst, one subject (awr-55)",
                        "value": EXAMPLE_REQUEST},
                "bulk": {"summary": "CBS, several subjects (cbs-33)", "value": EXAMPLE_BULK},
                "rc_machtiging": {"summary": "OM with an rc-machtiging (sv-126nf)",
                                  "value": EXAMPLE_OM}}}}}})
async def submit_request(request: Request) -> Response:
    """Record a request and answer with where to follow it.

    The request is on DUO's ledger before this answers. Sending the same `reference` with the
    same body again is safe (`200`, the first request's id); with another body it is `409`.
    Rejected submissions are recorded too, and the problem document names the ledger id
    (`request_id`) they were recorded under.
    """
    service = _service(request)
    identity = service.identify(request, submitting=True)
    correlation = _correlation(request)
    received_at = datetime.now(UTC)
    reading = await _read_submission(request, service, identity, received_at)
    recorded = await service.record(Submission(
        partner_id=identity.partner.id, requester_body=identity.partner.body,
        raw_body=reading.raw_body, parsed=reading.parsed, received_at=received_at,
        correlation_id=correlation.correlation_id, data=reading.data,
        key_id=None if identity.revocation_checked else identity.key_id))
    if recorded.recording is Recording.REFUSED:
        if identity.key_id is not None:
            service.authenticator.forget(identity.key_id)
        raise unauthenticated(request, Refusal(INVALID, "key_revoked"))
    request.state.request_id = recorded.request_id
    if recorded.recording is Recording.CONFLICT:
        raise ApiError(409, "reference_conflict",
                       "this reference belongs to an accepted request with another body; this "
                       "submission was recorded as rejected",
                       errors=_conflict_errors(recorded), request_id=recorded.request_id,
                       existing_request_id=recorded.existing_request_id)
    if recorded.recording is Recording.INVALID:
        errors = reading.parsed.errors if isinstance(reading.parsed, InvalidRequest) else ()
        raise ApiError(reading.status, reading.code, reading.detail, errors=errors,
                       request_id=recorded.request_id)
    url = _status_url(request, recorded.request_id)
    state = recorded.state.value if recorded.state is not None else None
    status = 202
    if recorded.recording is Recording.REPEAT:
        status = 200
        state, received = await anyio.to_thread.run_sync(_current, service, recorded.request_id)
    else:
        received = recorded.received_at
    body = {"id": recorded.request_id, "reference": recorded.reference, "state": state,
            "status_url": url, "received_at": received.isoformat() if received else None,
            "correlation_id": correlation.correlation_id}
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"Location": url})


@router.get("/v1/requests/{request_id}", tags=["requests"], operation_id="getRequest",
            summary="Where a request stands", response_model=RequestOut,
            responses=_problems(401, 404, 429, 503), openapi_extra={"security": _SECURITY})
def get_request(request: Request, identity: Caller, request_id: str) -> dict[str, Any]:
    """State, decision (with the articles it rests on), deadline and delivery of one of your
    requests. Another partner's request id answers `404`, as an unknown id does."""
    service = _service(request)
    try:
        with Session(service.reads) as session:
            found = session.execute(
                select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
                .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
                .where(col(RequestRow.id) == request_id)).first()
            if found is None or found[0].partner_id != identity.partner.id:
                raise ApiError(404, "not_found", "you have no request with this id")
            row, state = found
            return status_document(session, row, state, service.table,
                                   _status_url(request, row.id))
    except SQLAlchemyError:
        raise service.unavailable("the ledger cannot be read now") from None


@router.get("/v1/requests", tags=["requests"], operation_id="listRequests",
            summary="Your requests, oldest first, a page at a time", response_model=RequestPage,
            responses=_problems(401, 422, 429, 503), openapi_extra={"security": _SECURITY})
def list_requests(
        request: Request,
        identity: Caller,
        *,
        state: Annotated[RequestState | None, Query(
            description="only requests in this state")] = None,
        since: Annotated[datetime | None, Query(
            description="only requests received at or after this moment (ISO 8601; no offset "
                        "means UTC)")] = None,
        limit: Annotated[int, Query(ge=1, le=limits.API_MAX_PAGE_SIZE,
                                    description="requests per page")] = limits.API_PAGE_SIZE,
        cursor: Annotated[str | None, Query(
            max_length=512, description="from the `next` link of the page before")] = None,
) -> dict[str, Any]:
    """Your own requests (never another partner's), filtered by state and time of receipt."""
    service = _service(request)
    query = (select(RequestRow.id, RequestRow.reference,  # type: ignore[call-overload]
                    RequestRow.valid, RequestRow.legal_basis, RequestRow.received_at,
                    RequestStatus.state)
             .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
             .where(col(RequestRow.partner_id) == identity.partner.id))
    if state is not None:
        query = query.where(col(RequestStatus.state) == state.value)
    if since is not None:
        query = query.where(col(RequestRow.received_at) >= _utc_moment(since))
    if cursor is not None:
        at, last_id = _decode_cursor(cursor)
        query = query.where(or_(col(RequestRow.received_at) > at,
                                and_(col(RequestRow.received_at) == at,
                                     col(RequestRow.id) > last_id)))
    query = query.order_by(col(RequestRow.received_at), col(RequestRow.id)).limit(limit + 1)
    try:
        with Session(service.reads) as session:
            rows = session.execute(query).all()
    except SQLAlchemyError:
        raise service.unavailable("the ledger cannot be read now") from None
    items = [{"id": r.id, "reference": r.reference, "state": r.state, "valid": r.valid,
              "legal_basis": r.legal_basis, "received_at": r.received_at,
              "status_url": _status_url(request, r.id)}
             for r in rows[:limit]]
    next_url = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_url = str(request.url.include_query_params(
            cursor=_encode_cursor(last.received_at, last.id)))
    return {"items": items, "next": next_url}


@router.get("/healthz", tags=["service"], operation_id="health", summary="Is the API up?",
            response_model=Health,
            responses={503: {"model": Health, "description": "The ledger is down"}})
def health(request: Request) -> Any:
    """Whether the ledger answers; for load balancers and monitoring (no credentials)."""
    service = _service(request)
    try:
        with service.reads.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "ledger": "unavailable",
                             "waiting": service.writer.waiting}, status_code=503)
    return {"status": "ok", "ledger": "ok", "waiting": service.writer.waiting}


def _conflict_errors(recorded: Recorded) -> tuple[FieldError, ...]:
    return (FieldError("reference", "reference_conflict",
                       f"already used by request {recorded.existing_request_id} with another "
                       "body"),)


def _current(service: IntakeService, request_id: str) -> tuple[str | None, datetime | None]:
    """The state and time of receipt of an accepted request (for a repeat's answer)."""
    try:
        with Session(service.reads) as session:
            found = session.execute(
                select(RequestStatus.state, RequestRow.received_at)  # type: ignore[call-overload]
                .join(RequestRow, col(RequestStatus.request_id) == col(RequestRow.id))
                .where(col(RequestRow.id) == request_id)).first()
    except SQLAlchemyError:
        return None, None
    return (found[0], found[1]) if found is not None else (None, None)


async def _read_submission(request: Request, service: IntakeService, identity: Identity,
                           received_at: datetime) -> Reading:
    """The body read and judged (413 and others as readings to record)."""
    limit = service.config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(f"{int(declared)} bytes declared", limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _too_large(f"more than {limit} bytes sent", limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the body did not arrive whole") from None
    body = b"".join(chunks)
    content_type = request.headers.get("content-type")
    body_of = identity.partner.body.value

    def read() -> Reading:
        return read_body(body, content_type=content_type, body_of=body_of,
                         received_at=received_at, table=service.table)

    if len(body) <= service.config.inline_body_bytes:
        return read()
    return await anyio.to_thread.run_sync(read)


def _too_large(what: str, limit: int) -> Reading:
    marker = (f"(not stored: the body was larger than the limit of {limit} bytes; {what}; "
              "nothing of it was read)")
    return _rejected(413, "too_large", f"the body is larger than {limit} bytes; split the "
                     "request", marker,
                     errors=(FieldError("", "too_large", f"larger than {limit} bytes"),))


# -- the OpenAPI document -------------------------------------------------------------------------

_DESCRIPTION = f"""
DUO's intake for disclosure requests (verstrekkingsverzoeken) from public bodies.

**Credentials.** Every `/v1` call names its partner by an API key,
`Authorization: Bearer dk_<key id>_<secret>`, issued by a DUO operator
(`disclosure partners add` / `rotate-key`) and shown once; or by a client certificate (mutual
TLS) whose subject serialNumber is the partner's OIN, as with PKIoverheid certificates. The
requester is always the partner of the credential, never a field of the body. A partner may
claim only the grounds of its own body (else `403`, code `requester_not_entitled`) and reads
only its own requests (another partner's id is `404`).

**Submitting.** `POST /v1/requests` with `Content-Type: application/json`. The request is on
DUO's ledger before the answer: `202` with its `id` and `status_url`. The `reference` is your
idempotency key: the same reference and body again gives `200` and the first id (safe to
retry after a time-out or a `503`); the same reference with another body is `409`. Invalid
bodies get `422` with one error per field (`path`, `code`, `message`) and are recorded as
received and rejected, as are bodies that are not JSON (`400`) or not sent as JSON (`415`).
Each key may appear once per object: a body naming a key twice (at any depth) is ambiguous and
gets `422` with code `duplicate_key` and the key's path (e.g. `subjects` or `subjects.0.bsn`).
At most {limits.MAX_REQUEST_BYTES} bytes per body (`413`) and
{limits.MAX_SUBJECTS_PER_REQUEST} subjects per request (`422`).

**Following.** `GET /v1/requests/{{id}}` tells the state (`received`, `decided`,
`awaiting_review`, `rejected`, `delivered`, …), the decision with the articles it rests on, the
deadline and the delivery. `GET /v1/requests` lists your requests, oldest first, with
`state`, `since` and a `next` link.

**Limits.** {limits.API_RATE_PER_SECOND} requests per second per partner, bursts of
{limits.API_RATE_BURST}; beyond that `429` with `Retry-After`. A `503` (with `Retry-After`)
means the ledger could not record your request: send it again.

**Tracing.** Send a W3C `traceparent` and its trace id becomes the correlation id; otherwise
one is made. Every answer carries `X-Correlation-ID` and `traceparent`; quote the id to DUO.

```sh
curl -sS https://<host>/v1/requests \\
  -H "Authorization: Bearer $DUO_API_KEY" -H "Content-Type: application/json" \\
  -d '{{"reference": "BD-2026-000123", "legal_basis": "awr-55",
       "purpose": "belastingheffing", "case_reference": "FIN/2026/77",
       "subjects": [{{"bsn": "111222333"}}], "categories": ["personalia"]}}'
curl -sS https://<host>/v1/requests/<id> -H "Authorization: Bearer $DUO_API_KEY"
```
"""

_CORRELATION_HEADERS = {
    "X-Correlation-ID": {"description": "The call's correlation id (also in DUO's ledger and "
                                        "logs)", "schema": {"type": "string"}},
    "traceparent": {"description": "W3C trace context of DUO's span in the caller's trace",
                    "schema": {"type": "string"}},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, tags=[
                               {"name": "requests", "description": "Submit and follow "
                                                                   "disclosure requests"},
                               {"name": "service", "description": "The API itself"}])
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["DisclosureRequest"] = REQUEST_SCHEMA
    components["securitySchemes"] = {
        "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "dk_<key id>_<secret>",
                   "description": "An API key issued by a DUO operator."},
        "MutualTLS": {"type": "mutualTLS",
                      "description": "A client certificate whose subject serialNumber is the "
                                     "partner's OIN."},
    }
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                response.setdefault("headers", {}).update(_CORRELATION_HEADERS)
                content = response.get("content", {})
                if str(status).startswith(("4", "5")) and "application/json" in content and (
                        content["application/json"].get("schema", {}).get("$ref", "")
                        .endswith("/Problem")):
                    response["content"] = {PROBLEM_JSON: content["application/json"]}
                if status == "401":
                    response["headers"]["WWW-Authenticate"] = {"schema": {"type": "string"}}
                if status in {"429", "503"}:
                    response["headers"]["Retry-After"] = {
                        "description": "seconds to wait", "schema": {"type": "integer"}}
    app.openapi_schema = document
    return document


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
* ``GET /v1/healthz`` (also ``/healthz``) — whether the ledger answers (no credentials needed).
* ``GET /v1/openapi.json`` (also ``/openapi.json``) — the OpenAPI document, open to any origin.
* ``GET /v1/problems/{kind}`` — the page of a kind of problem (each problem's ``type``).

The API follows the NL API Design Rules (``docs/api-design-rules.md``: rule by rule, how it
complies or why not). Every answer carries ``API-Version``, ``X-Correlation-ID`` and
``traceparent`` (:mod:`connectors.correlation`); the same id is in the ledger row and in the log
line of the call. Errors are RFC 9457 problem details whose ``type`` names the kind of problem
(:mod:`connectors.intake_problem_types`) and, for bad input, carry one entry per field. Every
``/v1`` route of a partner checks credentials before anything else: without valid ones the
answer is ``401``, never a word about the parameters or the body.

What the ledger records (nothing an identified partner sent within its rate disappears):

==========================  =========================================================
answer                      on the ledger
==========================  =========================================================
202 accepted                the request, state ``received``
200 repeat                  nothing new (the first request answers)
409 reference conflict      the submission, invalid (``reference-conflict``)
422 invalid body            the submission as received, invalid, one error per field
                            (a key named twice in one object: ``duplicate_key``)
400 not JSON / not UTF-8    the body after a one-line marker, invalid (``bad-json``)
415 not application/json    the body after a one-line marker, invalid
403 another body's ground   the submission, invalid (``requester-not-entitled``)
413 too large               a marker row: the size only; the body is not read
400 invalid parameters      nothing (a listing or a lookup, not a submission)
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

This module is the app and its routes; its parts are modules of their own:

* :mod:`connectors.intake_service` — :class:`ApiConfig` and the service behind the routes
  (credentials, rate limits, the ledger writer);
* :mod:`connectors.intake_body` — reading a submitted body (:func:`read_body`);
* :mod:`connectors.intake_status` — status documents, status URLs and list cursors;
* :mod:`connectors.intake_problems` — problem answers (:class:`ApiError`);
* :mod:`connectors.intake_middleware` — correlation ids, the log line, the last-resort ``500``;
* :mod:`connectors.intake_openapi` — the OpenAPI document;
* :mod:`connectors.intake_models` — the answers' models and examples.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import anyio
import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from connectors.credentials import INVALID, Identity, Refusal
from connectors.intake_body import MAX_JSON_DEPTH, read_body, read_submission
from connectors.intake_middleware import CallMiddleware
from connectors.intake_models import (
    EXAMPLE_BULK,
    EXAMPLE_OM,
    EXAMPLE_REQUEST,
    Accepted,
    Health,
    RequestOut,
    RequestPage,
)
from connectors.intake_openapi import (
    API_VERSION,
    DESCRIPTION,
    SECURITY,
    openapi_document,
    problem_responses,
)
from connectors.intake_problem_types import PROBLEM_TYPES, PROBLEMS_PATH, problem_page
from connectors.intake_problems import (
    TITLES,
    ApiError,
    correlation_of,
    origin_of,
    problem,
    problem_of,
    unauthenticated,
)
from connectors.intake_service import ApiConfig, IntakeService
from connectors.intake_status import (
    current_state,
    encode_cursor,
    find_request,
    requests_query,
    status_document,
    status_url,
)
from connectors.partner_file import PartnerSource
from connectors.partners import PartnerDirectory
from legal_bases import limits
from legal_bases.errors import FieldError
from legal_bases.request import InvalidRequest
from legal_bases.table import GroundTable
from records.pseudonym import Pseudonymizer
from records.submissions import Recorded, Recording, Submission
from records.vocabulary import RequestState

#: The app and its routes, and the names importers take from here (the config, the limit and
#: the body reader of :mod:`connectors.intake_service` and :mod:`connectors.intake_body`).
__all__ = ["MAX_JSON_DEPTH", "SUBMIT_PATH", "ApiConfig", "create_app", "get_request", "health",
           "list_requests", "openapi_json", "problem_type_page", "read_body", "router",
           "submit_request"]


def _log() -> Any:
    return structlog.get_logger("disclosure.api")


# -- the app --------------------------------------------------------------------------------------

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
    config = config or ApiConfig()
    service = IntakeService(engine=engine, partners=source, pseudonymizer=pseudonymizer,
                            table=table, nudge=nudge, config=config)

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

    # redirect_slashes off: a path with a trailing slash is 404, never a redirect (NL API
    # Design Rules /core/no-trailing-slash)
    app = FastAPI(title="DUO disclosure engine — intake API", version=API_VERSION,
                  description=DESCRIPTION, lifespan=lifespan, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url="/redoc", redirect_slashes=False)
    app.state.intake = service
    app.add_middleware(CallMiddleware, fast=_submit_directly, fast_path=SUBMIT_PATH)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.include_router(router)
    app.openapi = lambda: openapi_document(  # type: ignore[method-assign]
        app, contact=config.contact, public_url=config.public_url)
    return app


async def _api_error(request: Request, exc: ApiError) -> Response:
    return problem_of(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    """Invalid query or path parameters: ``400`` (NL API Design Rules
    ``/core/error-handling/invalid-input``), one entry per parameter. (The body of a submission
    is read by :func:`submit_request`, never by FastAPI.)"""
    errors = tuple(FieldError(_field_path(e.get("loc", ())), str(e.get("type", "invalid")),
                              str(e.get("msg", "is not valid"))) for e in exc.errors())
    return problem_of(request, ApiError(
        400, "invalid_parameters", f"{len(errors)} invalid parameter(s)", errors=errors))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_of(request, ApiError(exc.status_code, code, detail, headers=headers))


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
        response = problem_of(request, exc)
    await response(scope, receive, send)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


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
_LOCATION = {"Location": {"description": "The status URL", "required": True,
                          "schema": {"type": "string"}}}
#: The problems of a partner's call that reads (credentials, rate, ledger).
_READING = ("missing-credentials", "invalid-credentials", "rate-limited", "ledger-unavailable")


@router.post(
    SUBMIT_PATH, status_code=202, tags=["requests"], operation_id="submitRequest",
    summary="Submit a disclosure request", response_model=Accepted,
    responses={200: {"model": Accepted, "description": "A repeat of an accepted request (same "
                     "reference, same body): the first request's id", "headers": _LOCATION},
               202: {"model": Accepted, "description": "Accepted: on the ledger, state "
                     "received", "headers": _LOCATION},
               **problem_responses("bad-json", "client-disconnected", "missing-credentials",
                                   "invalid-credentials", "requester-not-entitled",
                                   "reference-conflict", "too-large", "unsupported-media-type",
                                   "invalid-request", "rate-limited", "ledger-unavailable")},
    openapi_extra={"security": SECURITY, "requestBody": {
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
    correlation = correlation_of(request)
    received_at = datetime.now(UTC)
    reading = await read_submission(
        request, body_of=identity.partner.body.value, received_at=received_at,
        table=service.table, max_bytes=service.config.max_body_bytes,
        inline_bytes=service.config.inline_body_bytes)
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
    url = status_url(request, recorded.request_id)
    state = recorded.state.value if recorded.state is not None else None
    status = 202
    if recorded.recording is Recording.REPEAT:
        status = 200
        state, received = await anyio.to_thread.run_sync(current_state, service.reads,
                                                       recorded.request_id)
    else:
        received = recorded.received_at
    body = {"id": recorded.request_id, "reference": recorded.reference, "state": state,
            "status_url": url, "received_at": received.isoformat() if received else None,
            "correlation_id": correlation.correlation_id}
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"Location": url})


@router.get("/v1/requests/{request_id}", tags=["requests"], operation_id="getRequest",
            summary="Where a request stands", response_model=RequestOut,
            responses=problem_responses("invalid-parameters", "not-found", *_READING),
            openapi_extra={"security": SECURITY})
def get_request(request: Request, identity: Caller, request_id: Annotated[UUID, Path(
        description="The `id` of the answer to your submission")]) -> dict[str, Any]:
    """State, decision (with the articles it rests on), deadline and delivery of one of your
    requests. Another partner's request id answers `404`, as an unknown id does; an id that is
    not a UUID is `400`."""
    service = _service(request)
    try:
        with Session(service.reads) as session:
            found = find_request(session, str(request_id))
            if found is None or found[0].partner_id != identity.partner.id:
                raise ApiError(404, "not_found", "you have no request with this id")
            row, state = found
            return status_document(session, row, state, service.table,
                                   status_url(request, row.id))
    except SQLAlchemyError:
        raise service.unavailable("the ledger cannot be read now") from None


@router.get("/v1/requests", tags=["requests"], operation_id="listRequests",
            summary="Your requests, oldest first, a page at a time", response_model=RequestPage,
            responses=problem_responses("invalid-parameters", *_READING),
            openapi_extra={"security": SECURITY})
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
    query = requests_query(identity.partner.id, state=state, since=since, cursor=cursor,
                           limit=limit)
    try:
        with Session(service.reads) as session:
            rows = session.execute(query).all()
    except SQLAlchemyError:
        raise service.unavailable("the ledger cannot be read now") from None
    items = [{"id": r.id, "reference": r.reference, "state": r.state, "valid": r.valid,
              "legal_basis": r.legal_basis, "received_at": r.received_at,
              "status_url": status_url(request, r.id)}
             for r in rows[:limit]]
    next_url = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_url = str(request.url.include_query_params(
            cursor=encode_cursor(last.received_at, last.id)))
    return {"items": items, "next": next_url}


@router.get("/v1/healthz", tags=["service"], operation_id="health", summary="Is the API up?",
            response_model=Health, responses=problem_responses("ledger-unavailable"))
@router.get("/healthz", include_in_schema=False)
def health(request: Request) -> Any:
    """Whether the ledger answers; for load balancers and monitoring (no credentials)."""
    service = _service(request)
    try:
        with service.reads.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError:
        request.state.code = "ledger_unavailable"
        return problem(503, "ledger_unavailable", f"the ledger does not answer; "
                       f"{service.writer.waiting} submission(s) wait for it",
                       origin=origin_of(request.scope),
                       headers={"Retry-After": str(service.config.retry_after)})
    return {"status": "ok", "ledger": "ok", "waiting": service.writer.waiting}


@router.get("/v1/openapi.json", tags=["service"], operation_id="getOpenApiDocument",
            summary="This document", response_model=None, responses={200: {
                "description": "The OpenAPI document of the API (also at `/openapi.json`)",
                "content": {"application/json": {"schema": {"type": "object"}}}}})
def openapi_json(request: Request) -> JSONResponse:
    """The OpenAPI document, for tools and any origin (no credentials)."""
    return JSONResponse(request.app.openapi())


@router.get(f"{PROBLEMS_PATH}/{{kind}}", include_in_schema=False)
def problem_type_page(request: Request, kind: str) -> Response:
    """The page a problem's ``type`` resolves to: what the kind means and what to do."""
    found = PROBLEM_TYPES.get(kind)
    if found is None:
        raise ApiError(404, "not_found", "there is no problem type of this name")
    return HTMLResponse(problem_page(
        found, type_uri=f"{origin_of(request.scope)}{PROBLEMS_PATH}/{kind}",
        api_version=API_VERSION))


def _conflict_errors(recorded: Recorded) -> tuple[FieldError, ...]:
    return (FieldError("reference", "reference_conflict",
                       f"already used by request {recorded.existing_request_id} with another "
                       "body"),)

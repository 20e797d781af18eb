"""The intake API's OpenAPI document (``/v1/openapi.json`` and ``/openapi.json``, readable at
``/docs``), as the NL API Design Rules want it (``docs/api-design-rules.md``).

FastAPI builds the document from the routes; :func:`openapi_document` adds what it cannot know
and puts it in the shape the rules ask for: the paths relative to the base path ``/v1`` named by
``servers`` (``/core/uri-version``), the contact of the team (``/core/doc-openapi-contact``), the
description partners read first, the request body's JSON Schema
(:data:`connectors.intake_models.REQUEST_SCHEMA`), the two ways to present credentials, the
headers of every answer (``API-Version``, ``/core/version-header``; the correlation headers), and
``application/problem+json`` for every error answer (``/core/problem-details``), FastAPI's own
validation answer replaced by ours. :func:`problem_responses` and :data:`SECURITY` are what the
routes declare about their errors and credentials.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from connectors.intake_models import REQUEST_SCHEMA, InvalidInputProblem, Problem
from connectors.intake_problem_types import PROBLEM_TYPES, PROBLEMS_PATH
from connectors.intake_problems import PROBLEM_JSON, TITLES
from legal_bases import limits

#: The version of the API the document describes, and every answer's ``API-Version`` (semver:
#: the major version is the ``/v1`` of every path).
API_VERSION = "1.0.0"
#: The base path of the API: the major version (``/core/uri-version``).
BASE_PATH = "/v1"
#: Where the document is served; any origin may read it (``/core/publish-openapi``).
DOCUMENT_PATHS = frozenset({"/openapi.json", f"{BASE_PATH}/openapi.json"})
#: Who answers partners' questions about the API (``info.contact``). PLACEHOLDERS, as the
#: register URIs of legal_bases/accountability.yaml: DUO sets its team's own address with
#: ``ApiConfig(contact=...)`` before the API is opened to partners.
DEFAULT_CONTACT: dict[str, str] = {
    "name": "DUO, team verstrekkingen (intake API)",
    "email": "intake-api@duo.example",
    "url": "https://intake.duo.example/v1/problems",
}
#: The credentials every ``/v1`` route accepts (either one).
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"MutualTLS": []}]


def problem_responses(*kinds: str) -> dict[int | str, dict[str, Any]]:
    """A route's error answers for its ``responses``: one per status, naming the kinds of
    problem (:data:`~connectors.intake_problem_types.PROBLEM_TYPES`) it may answer with."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for kind in kinds:
        by_status[PROBLEM_TYPES[kind].status].append(kind)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, named in sorted(by_status.items()):
        some_input = any(PROBLEM_TYPES[k].input for k in named)
        listed = "; ".join(f"`{PROBLEMS_PATH}/{k}`: {PROBLEM_TYPES[k].title}" for k in named)
        responses[status] = {"model": InvalidInputProblem if some_input else Problem,
                             "description": f"{TITLES[status]} — problem type {listed}"}
    return responses


#: What a partner reads first (the document's ``info.description``).
DESCRIPTION = f"""
DUO's intake for disclosure requests (verstrekkingsverzoeken) from public bodies. The partner's
guide (`docs/partners.md` in the engine's repository) says all of this at length.

**Credentials.** Every call but `/healthz` and `/openapi.json` names its partner by an API key,
`Authorization: Bearer dk_<key id>_<secret>`, issued by a DUO operator and shown once; or by a
client certificate (mutual TLS) whose subject serialNumber is the partner's OIN, as with
PKIoverheid certificates. The requester is always the partner of the credential, never a field
of the body. A partner may claim only the grounds of its own body (else `403`) and reads only
its own requests (another partner's id is `404`).

**Submitting.** `POST /v1/requests` with `Content-Type: application/json`. The request is on
DUO's ledger before the answer: `202` with its `id` and `status_url`. The `reference` is your
idempotency key: the same reference and body again gives `200` and the first id (safe to
retry after a time-out or a `503`); the same reference with another body is `409`. A body that
breaks the request format gets `422` with one error per field (`path`, `code`, `message`) and
is recorded as received and rejected, as are bodies that are not JSON (`400`) or not sent as
JSON (`415`). Each key may appear once per object: a body naming a key twice (at any depth) is
ambiguous and gets `422` with code `duplicate_key` and the key's path. At most
{limits.MAX_REQUEST_BYTES} bytes per body (`413`) and {limits.MAX_SUBJECTS_PER_REQUEST}
subjects per request (`422`).

**Following.** `GET /v1/requests/{{id}}` tells the state (`received`, `decided`,
`awaiting_review`, `rejected`, `delivered`, …), the decision with the articles it rests on, the
deadline and the delivery. `GET /v1/requests` lists your requests, oldest first, with
`state`, `since` and a `next` link. A parameter that is not valid is `400`.

**Problems.** Every error answer is `application/problem+json` (RFC 9457). Its `type` is
`<origin>{PROBLEMS_PATH}/<kind>`, one stable URI per kind of problem, whose page says what it
means and what to do; match on it. Problems with what you sent also carry `errors` (one per
field) and, when the submission was recorded, its `request_id`.

**Limits.** {limits.API_RATE_PER_SECOND} requests per second per partner, bursts of
{limits.API_RATE_BURST}; beyond that `429` with `Retry-After`. A `503` (with `Retry-After`)
means the ledger could not record your request: send it again.

**Versions and tracing.** Every answer carries `API-Version` (this document's version) and
`X-Correlation-ID`; send a W3C `traceparent` and its trace id becomes the correlation id, the
trace id DUO's Logboek Dataverwerkingen records for your request. Quote it to DUO.

```sh
curl -sS https://<host>/v1/requests \\
  -H "Authorization: Bearer $DUO_API_KEY" -H "Content-Type: application/json" \\
  -d '{{"reference": "BD-2026-000123", "legal_basis": "awr-55",
       "purpose": "belastingheffing", "case_reference": "FIN/2026/77",
       "subjects": [{{"bsn": "111222333"}}], "categories": ["personalia"]}}'
curl -sS https://<host>/v1/requests/<id> -H "Authorization: Bearer $DUO_API_KEY"
```
"""

_TEXT = {"type": "string"}
_EVERY_ANSWER_HEADERS: dict[str, Any] = {
    "API-Version": {"description": "The full version of the API (semver), this document's "
                                   "`info.version`", "required": True,
                    "schema": {**_TEXT, "example": API_VERSION}},
    "X-Correlation-ID": {"description": "The call's correlation id, in DUO's ledger and logs "
                                        "(and the Logboek's trace id when it is a W3C trace "
                                        "id): quote it to DUO", "required": True,
                         "schema": _TEXT},
    "traceparent": {"description": "W3C trace context of DUO's span in the caller's trace",
                    "required": True, "schema": _TEXT},
}
_STATUS_HEADERS: dict[str, dict[str, Any]] = {
    "401": {"WWW-Authenticate": {"description": "The Bearer challenge", "required": True,
                                 "schema": _TEXT}},
    "429": {"Retry-After": {"description": "Seconds to wait", "required": True,
                            "schema": {"type": "integer"}}},
    "503": {"Retry-After": {"description": "Seconds to wait", "required": True,
                            "schema": {"type": "integer"}}},
}
_DOCUMENT_HEADERS = {"Access-Control-Allow-Origin": {
    "description": "`*`: any origin may read the document", "required": True,
    "schema": _TEXT}}
#: FastAPI's own answer to invalid parameters, which this API answers as a 400 problem instead.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def openapi_document(app: FastAPI, *, contact: dict[str, str] | None = None,
                     public_url: str | None = None) -> dict[str, Any]:
    """The app's OpenAPI document, built once (FastAPI's, completed as this module says).

    ``public_url`` (``https://host``, no path) adds the absolute address partners use to the
    ``servers``; the relative ``/v1`` (the origin that served the document) is always there.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    servers = [{"url": BASE_PATH, "description": "This server: the origin that served this "
                                                 "document"}]
    if public_url:
        servers.insert(0, {"url": f"{public_url.rstrip('/')}{BASE_PATH}",
                           "description": "DUO's intake API"})
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, servers=servers,
                           contact=contact or DEFAULT_CONTACT, tags=[
                               {"name": "requests", "description": "Submit and follow "
                                                                   "disclosure requests"},
                               {"name": "service", "description": "The API itself"}])
    document["paths"] = {_relative(path): item for path, item in document["paths"].items()}
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["DisclosureRequest"] = REQUEST_SCHEMA
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    components["securitySchemes"] = {
        "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "dk_<key id>_<secret>",
                   "description": "An API key issued by a DUO operator."},
        "MutualTLS": {"type": "mutualTLS",
                      "description": "A client certificate whose subject serialNumber is the "
                                     "partner's OIN."},
    }
    for path, item in document["paths"].items():
        for operation in item.values():
            _complete(operation, document_path=f"{BASE_PATH}{path}" in DOCUMENT_PATHS)
    app.openapi_schema = document
    return document


def _relative(path: str) -> str:
    """A route's path relative to the base path the ``servers`` name."""
    if not path.startswith(f"{BASE_PATH}/"):
        raise ValueError(f"a documented route must be under {BASE_PATH}: {path}")
    return path.removeprefix(BASE_PATH)


def _complete(operation: dict[str, Any], *, document_path: bool) -> None:
    """One operation's answers as the rules want them: headers, problem documents."""
    responses = operation.get("responses", {})
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if fastapi_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers.update(_EVERY_ANSWER_HEADERS)
        headers.update(_STATUS_HEADERS.get(status, {}))
        if document_path and status.startswith("2"):
            headers.update(_DOCUMENT_HEADERS)
        content = response.get("content", {})
        if status.startswith(("4", "5")) and "application/json" in content:
            response["content"] = {PROBLEM_JSON: content["application/json"]}

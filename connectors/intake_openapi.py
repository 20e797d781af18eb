"""The intake API's OpenAPI document (``/openapi.json``, readable at ``/docs``).

FastAPI builds the document from the routes; :func:`openapi_document` adds what it cannot know:
the description partners read first, the request body's JSON Schema
(:data:`connectors.intake_models.REQUEST_SCHEMA`), the two ways to present credentials, the
correlation headers of every answer, and ``application/problem+json`` for the error answers.
:func:`problem_responses` and :data:`SECURITY` are what the routes declare about their errors
and credentials.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from connectors.intake_models import REQUEST_SCHEMA, Problem
from connectors.intake_problems import PROBLEM_JSON, TITLES
from legal_bases import limits

_PROBLEM_RESPONSE: dict[str, Any] = {"model": Problem}
#: The credentials every ``/v1`` route accepts (either one).
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"MutualTLS": []}]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's error answers, each a problem document, for its ``responses``."""
    return {status: {**_PROBLEM_RESPONSE, "description": TITLES[status]} for status in statuses}


#: The version of the API the document describes.
API_VERSION = "1.0.0"
#: What a partner reads first (the document's ``info.description``).
DESCRIPTION = f"""
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


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once (FastAPI's, completed as this module says)."""
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


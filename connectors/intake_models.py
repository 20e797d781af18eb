"""What the intake API says, as partners read it in the OpenAPI document: shapes and examples.

The request body is described by a JSON Schema written out here from the same limits and
vocabularies the cerberus schema (``legal_bases/schemas/request.yaml``) checks; cerberus stays
the one validator, this schema is documentation (and what the fuzz tests generate from). The
answers are pydantic models, so the document and the answers cannot drift apart.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from legal_bases import limits
from legal_bases.vocabulary import AuthorisationKind, Category, Purpose, slugs

# -- the request body (documentation) -------------------------------------------------------------

EXAMPLE_REQUEST: dict[str, Any] = {
    "reference": "BD-2026-000123",
    "legal_basis": "awr-55",
    "purpose": "belastingheffing",
    "reference_date": "2026-11-28",
    "subjects": [{"bsn": "111222333"}],
    "categories": ["personalia", "opleidingsgegevens"],
    "case_reference": "FIN/2026/77",
    "due_date": "2026-12-26",
}
EXAMPLE_BULK: dict[str, Any] = {
    "reference": "CBS-2026-COHORT-7",
    "legal_basis": "cbs-33",
    "purpose": "statistiek",
    "subjects": [{"bsn": "111222333"}, {"onderwijsnummer": "102791163"}],
    "categories": ["opleidingsgegevens"],
}
EXAMPLE_OM: dict[str, Any] = {
    "reference": "OM-2026-1234",
    "legal_basis": "sv-126nf",
    "purpose": "strafrechtelijk_onderzoek",
    "subjects": [{"bsn": "111222333"}],
    "categories": ["gezondheid"],
    "case_reference": "PARKET-2026-0815",
    "authorisations": [{"kind": "rc_machtiging", "reference": "RC-2026-12",
                        "issued_on": "2026-11-20"}],
}

_DATE = {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (OpenAPI 3.1, JSON Schema 2020-12)."""
    return {**schema, "type": [schema["type"], "null"]}


REQUEST_SCHEMA: dict[str, Any] = {
    "title": "DisclosureRequest",
    "type": "object",
    "description": (
        "A disclosure request (verstrekkingsverzoek). The requester is never a field: it is the "
        "partner the credential belongs to. `reference` is the partner's own id and the "
        "idempotency key. Every object names each of its keys once: a key named twice makes the "
        "request ambiguous and is refused (`422`, error code `duplicate_key`)."),
    "required": ["reference", "legal_basis", "purpose", "subjects", "categories"],
    "additionalProperties": False,
    "properties": {
        "reference": {
            "type": "string", "minLength": 1, "maxLength": limits.MAX_REFERENCE_LENGTH,
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
            "description": "The partner's own id of the request; the idempotency key."},
        "legal_basis": {
            "type": "string", "minLength": 1, "maxLength": 64,
            "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$",
            "description": "The id of the statutory ground claimed (see the README's table of "
                           "grounds); it must be one of the partner's own body's grounds."},
        "purpose": {"type": "string", "enum": slugs(Purpose),
                    "description": "The statutory purpose the data is asked for."},
        "reference_date": _nullable({**_DATE, "description": "The date whose law applies; "
                                            "default the day of receipt (Europe/Amsterdam)."}),
        "subjects": {
            "type": "array", "minItems": 1, "maxItems": limits.MAX_SUBJECTS_PER_REQUEST,
            "description": "The data subjects, each by exactly one identifier.",
            "items": {"oneOf": [
                {"type": "object", "required": ["bsn"], "additionalProperties": False,
                 "properties": {"bsn": {"type": "string", "pattern": r"^[0-9]{9}$",
                                        "description": "9 digits passing the elfproef"}}},
                {"type": "object", "required": ["onderwijsnummer"],
                 "additionalProperties": False,
                 "properties": {"onderwijsnummer": {
                     "type": "string", "pattern": r"^10[0-9]{7}$",
                     "description": "9 digits starting with 10, with its check digit"}}},
            ]}},
        "categories": {
            "type": "array", "minItems": 1,
            "items": {"type": "string", "enum": slugs(Category)},
            "description": "The data categories asked for; one listed twice counts once."},
        "case_reference": _nullable({
            "type": "string", "minLength": 1, "maxLength": limits.MAX_CASE_REFERENCE_LENGTH,
            "description": "The partner's case (required by some grounds)."}),
        "authorisations": {
            "type": "array", "maxItems": limits.MAX_AUTHORISATIONS,
            "items": {"type": "object", "required": ["kind", "reference"],
                      "additionalProperties": False,
                      "properties": {
                          "kind": {"type": "string", "enum": slugs(AuthorisationKind)},
                          "reference": {"type": "string", "minLength": 1,
                                        "maxLength": limits.MAX_CASE_REFERENCE_LENGTH},
                          "issued_on": _nullable(_DATE)}}},
        "due_date": _nullable({**_DATE, "description": "When the partner needs the answer; "
                                                      "not before reference_date."}),
    },
}


# -- answers --------------------------------------------------------------------------------------

#: A date or null, described with its format at the top (NL API Design Rules /core/date-time).
OptionalDate = Annotated[date | None, WithJsonSchema({"type": ["string", "null"],
                                                      "format": "date"})]

class FieldProblem(BaseModel):
    """One problem with one field of a submission."""

    path: str = Field(description="Dotted path of the field ('' for the whole body), e.g. "
                                  "`subjects.0.bsn`.")
    code: str = Field(description="Stable machine-readable code, e.g. `invalid_bsn`, or "
                                  "`duplicate_key` for a key named twice in one object (its "
                                  "path names the key).")
    message: str


class Problem(BaseModel):
    """An error answer: RFC 9457 problem details (`application/problem+json`), the core members
    only. `type` names the kind of problem and resolves to its page; the partner's guide lists
    every kind. The call's correlation id is in the `X-Correlation-ID` header."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "https://intake.duo.example/v1/problems/rate-limited",
        "title": "Too many requests", "status": 429,
        "detail": f"more than {limits.API_RATE_PER_SECOND} requests per second (burst "
                  f"{limits.API_RATE_BURST}); retry after 1 s"}]})

    type: str = Field(description="The kind of problem: `<origin>/v1/problems/<kind>`, a page "
                                  "saying what it means and what to do; stable per kind.")
    title: str = Field(description="The kind's title (the same for every problem of a kind).")
    status: int = Field(description="The HTTP status of the answer.")
    detail: str = Field(description="What went wrong this time.")
    instance: str | None = Field(default=None, description="Where this occurrence can be "
                                 "followed, if anywhere.")


class InvalidInputProblem(BaseModel):
    """A problem with what was sent (the body or the parameters): the core members, one entry
    per field (`errors`) and, when the submission was recorded as received and rejected, its
    ledger id (`request_id`, and its status URL as `instance`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "https://intake.duo.example/v1/problems/invalid-request",
        "title": "The request breaks the request format", "status": 422,
        "detail": "the request has 1 invalid field(s); it was recorded as received and rejected",
        "instance": "https://intake.duo.example/v1/requests/3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e",
        "errors": [{"path": "subjects.0.bsn", "code": "invalid_bsn",
                    "message": "fails the elfproef (check digit)"}],
        "request_id": "3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e"}]})

    type: str = Field(description="The kind of problem: `<origin>/v1/problems/<kind>`, a page "
                                  "saying what it means and what to do; stable per kind.")
    title: str = Field(description="The kind's title (the same for every problem of a kind).")
    status: int = Field(description="The HTTP status of the answer.")
    detail: str = Field(description="What went wrong this time.")
    instance: str | None = Field(default=None, description="For a recorded submission: its "
                                 "status URL, where the rejection can be read again.")
    errors: list[FieldProblem] = Field(description="One entry per field or parameter that is "
                                                   "wrong; all of them at once.")
    request_id: str | None = Field(default=None, description="The ledger id under which this "
                                                             "rejected submission was recorded.")
    existing_request_id: str | None = Field(default=None, description="For a conflict: the "
                                            "accepted request that holds this reference.")


class Accepted(BaseModel):
    """A request on the ledger: where to follow it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e", "reference": "BD-2026-000123",
        "state": "received",
        "status_url": "https://intake.duo.example/v1/requests/3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e",
        "received_at": "2026-11-28T10:15:02.123456+00:00",
        "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736"}]})

    id: str = Field(description="The request's id in DUO's ledger.")
    reference: str
    state: str = Field(description="`received` when just accepted; a repeat shows where the "
                                   "request stands now.")
    status_url: str
    received_at: datetime | None = None
    correlation_id: str


class Reason(BaseModel):
    """Why a decision came out as it did, with the article it rests on."""

    code: str
    citation: dict[str, str] = Field(description="law, bwb_id, article, paragraph, url")
    categories: list[str] = Field(default_factory=list)


class DecisionOut(BaseModel):
    """The decision in force on a request."""

    outcome: str = Field(description="approved, partially_approved, rejected or needs_review")
    released: list[str]
    withheld: list[str]
    reasons: list[Reason]
    review_triggers: list[Reason] = Field(default_factory=list)
    ground: str | None = None
    ground_version: str | None = None
    decided_by: str = Field(description="`engine`, or `reviewer` for a person's decision")
    decided_at: datetime


class DeliveryOut(BaseModel):
    """Whether the released data reached the partner."""

    status: str = Field(description="`pending` (not decided or not yet delivered), "
                                    "`delivered`, `failed` (an operator acts) or "
                                    "`not_applicable` (nothing to deliver)")
    delivered_at: datetime | None = None
    destination: str | None = Field(default=None, description="file_drop or https")
    sha256: str | None = Field(default=None, description="of the delivered document")
    size: int | None = None


class RequestOut(BaseModel):
    """Where one request stands: state, decision, deadline, delivery."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e", "reference": "BD-2026-000123",
        "channel": "api", "received_at": "2026-11-28T10:15:02.123456+00:00",
        "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736", "state": "delivered",
        "valid": True, "errors": [], "legal_basis": "awr-55", "purpose": "belastingheffing",
        "reference_date": "2026-11-28", "due_date": "2026-12-26", "subject_count": 1,
        "decision": {
            "outcome": "approved", "released": ["opleidingsgegevens", "personalia"],
            "withheld": [], "reasons": [{"code": "ground_applies", "citation": {
                "law": "Algemene wet inzake rijksbelastingen", "bwb_id": "BWBR0002320",
                "article": "55", "paragraph": "1",
                "url": "https://wetten.overheid.nl/BWBR0002320/2017-05-10#Artikel55"},
                "categories": ["opleidingsgegevens", "personalia"]}],
            "review_triggers": [], "ground": "awr-55",
            "ground_version": "awr-55@2020-08-01#3f9c1a2b", "decided_by": "engine",
            "decided_at": "2026-11-28T10:15:04.5+00:00"},
        "deadline": "2026-12-26",
        "delivery": {"status": "delivered", "delivered_at": "2026-11-28T10:15:05+00:00",
                     "destination": "file_drop", "sha256": "9f2c…", "size": 812},
        "links": {"self": "/v1/requests/3b0d2c9e-8f7a-4d61-9c3e-2f1a0b9c8d7e"}}]})

    id: str
    reference: str | None
    channel: str
    received_at: datetime
    correlation_id: str | None
    state: str = Field(description="received, invalid, decided, rejected, awaiting_review, "
                                   "delivered, failed (and any state the engine adds)")
    valid: bool
    errors: list[FieldProblem] = Field(description="Why the submission was rejected at intake.")
    legal_basis: str | None
    purpose: str | None = Field(description="The purpose asked for; for a submission rejected at "
                                            "intake, the one its body claimed where that body "
                                            "reads as a JSON object (else null).")
    reference_date: OptionalDate
    due_date: OptionalDate
    subject_count: int | None
    decision: DecisionOut | None
    deadline: date | None = Field(description="When the answer is due: the decision's, or "
                                              "before a decision the statutory term.")
    delivery: DeliveryOut
    links: dict[str, str]


class RequestSummary(BaseModel):
    """One of the partner's requests in a list."""

    id: str
    reference: str | None
    state: str
    valid: bool
    legal_basis: str | None
    received_at: datetime
    status_url: str


class RequestPage(BaseModel):
    """A page of the partner's own requests, oldest first."""

    items: list[RequestSummary]
    next: str | None = Field(description="URL of the next page, or null on the last page.")


class Health(BaseModel):
    """Whether the API can take requests."""

    status: str = Field(description="`ok`, or `unavailable` (with 503)")
    ledger: str
    waiting: int = Field(description="Submissions waiting for the ledger writer.")

"""The intake API over real HTTP on loopback, against a real ledger (SQLite file and PostgreSQL).

Each test serves the API with uvicorn in a thread and talks to it with ``requests``, as a
partner's system would; what a test checks is what a partner sees (status, headers, problem
documents) and what the ledger holds afterwards (rows, states, audit events).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import structlog
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col
from structlog.testing import capture_logs

from cli.api_server import serve_in_thread
from connectors.intake_api import MAX_JSON_DEPTH, ApiConfig, create_app
from connectors.intake_models import EXAMPLE_BULK, EXAMPLE_OM, EXAMPLE_REQUEST
from connectors.intake_openapi import API_VERSION
from connectors.intake_problem_types import PROBLEM_TYPES
from connectors.partners import PartnerDirectory, load_partners
from legal_bases import limits
from legal_bases.table import GroundTable
from records.api_keys import issue_key, revoke_keys
from records.chain import verify_chain
from records.data_keys import SEALED_PREFIX
from records.ledger import audit_events_for, count_requests, raw_body_of, received_on
from records.models import RequestRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.queue import claim_requests

ROOT = Path(__file__).parents[1]
PARTNERS_FILE = ROOT / "examples" / "partners.yaml"
#: The HTTP tests run on a SQLite file and on PostgreSQL (an in-memory SQLite ledger is one
#: shared connection: the API refuses it).
API_BACKENDS = [pytest.param("sqlite", id="sqlite"),
                pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
pytestmark = pytest.mark.parametrize("ledger_engine", API_BACKENDS, indirect=True)

TAX = {"reference": "BD-2026-000123", "legal_basis": "awr-55", "purpose": "belastingheffing",
       "case_reference": "FIN/2026/77", "subjects": [{"bsn": "111222333"}],
       "categories": ["personalia", "opleidingsgegevens"]}


@dataclass
class Api:
    """A running API and what a test needs beside it."""

    url: str
    engine: Engine
    app: FastAPI
    keys: dict[str, str]
    nudges: list[float] = field(default_factory=list)

    def headers(self, partner: str | None = "belastingdienst", **extra: str) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.keys[partner]}"} if partner else {}
        return found | extra

    def post(self, body: Any, partner: str | None = "belastingdienst",
             **extra: str) -> requests.Response:
        return requests.post(f"{self.url}/v1/requests", json=body, timeout=30,
                             headers=self.headers(partner, **extra))

    def post_raw(self, data: bytes | str, content_type: str | None = "application/json",
                 partner: str | None = "belastingdienst") -> requests.Response:
        headers = self.headers(partner)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(f"{self.url}/v1/requests", data=data, timeout=30,
                             headers=headers)

    def get(self, path: str, partner: str | None = "belastingdienst",
            **extra: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=30, headers=self.headers(partner, **extra))

    def rows(self) -> int:
        with Session(self.engine) as session:
            return count_requests(session=session)

    def row(self, request_id: str) -> tuple[RequestRow, str]:
        with Session(self.engine) as session:
            found = session.execute(
                select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
                .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
                .where(col(RequestRow.id) == request_id)).one()
            return found[0], found[1]

    def received(self, request_id: str) -> str:
        """The request's body as received: stored sealed under its data key, opened here."""
        with Session(self.engine) as session:
            row = session.get(RequestRow, request_id)
            assert row is not None
            assert row.raw_body.startswith(SEALED_PREFIX), row.raw_body[:40]
            opened = raw_body_of(session=session, row=row)
            assert opened is not None
            return opened


def issue(engine: Engine, partner_id: str) -> str:
    with Session(engine) as session, session.begin():
        return issue_key(session=session, partner_id=partner_id, issued_at=datetime.now(UTC),
                         issued_by="test").key


@contextmanager
def running_api(engine: Engine, table: GroundTable, *, nudge: Callable[[], object] | None = None,
                config: ApiConfig | None = None,
                partners: PartnerDirectory | None = None) -> Iterator[Api]:
    """The API over ``engine`` on a free loopback port, with keys for three partners."""
    keys = {p: issue(engine, p) for p in ("belastingdienst", "uwv", "gemeente-utrecht")}
    nudges: list[float] = []

    def record_nudge() -> None:
        nudges.append(time.monotonic())

    app = create_app(engine=engine, partners=partners or load_partners(PARTNERS_FILE),
                     pseudonymizer=Pseudonymizer(bytes(32)), table=table,
                     nudge=nudge or record_nudge, config=config)
    with serve_in_thread(app) as url:
        yield Api(url, engine, app, keys, nudges)


@pytest.fixture
def api(ledger_engine: Engine, shipped_table: GroundTable) -> Iterator[Api]:
    with running_api(ledger_engine, shipped_table) as running:
        yield running


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The problem document of an error answer, checked for its status, its kind (``code``:
    ``invalid_request`` is the type ``…/v1/problems/invalid-request``) and headers.

    A problem carries the RFC 9457 core members; only one about what was sent (an input kind)
    carries ``errors`` and ``request_id`` besides (NL API Design Rules, docs/api-design-rules.md).
    """
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["API-Version"] == API_VERSION
    assert len(response.headers["X-Correlation-ID"]) >= 1
    document: dict[str, Any] = response.json()
    kind = PROBLEM_TYPES[code.replace("_", "-")]
    assert document["status"] == status == kind.status
    called = urlsplit(response.url)
    assert document["type"] == f"{called.scheme}://{called.netloc}/v1/problems/{kind.kind}"
    assert document["title"] == kind.title
    core = {"type", "title", "status", "detail", "instance"}
    extensions = {"errors", "request_id", "existing_request_id"} if kind.input else set()
    assert set(document) <= core | extensions, document
    return document


# -- accepting ------------------------------------------------------------------------------------

def test_an_accepted_request_is_on_the_ledger_before_the_answer_and_the_dispatcher_is_nudged(
        api: Api) -> None:
    response = api.post(TAX)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "received"
    assert body["reference"] == TAX["reference"]
    assert response.headers["Location"] == body["status_url"] == (
        f"{api.url}/v1/requests/{body['id']}")
    row, state = api.row(body["id"])
    assert (row.partner_id, row.requester_body, row.channel, row.valid) == (
        "belastingdienst", "belastingdienst", "api", True)
    assert state == "received"
    assert json.loads(api.received(row.id)) == TAX
    assert row.correlation_id == response.headers["X-Correlation-ID"] == body["correlation_id"]
    with Session(api.engine) as session:
        kinds = [e.kind for e in audit_events_for(session=session, request_id=body["id"])]
        assert kinds == ["request_received"]
        assert verify_chain(session=session).ok
    assert wait_for(lambda: len(api.nudges) == 1)


def test_many_requests_at_once_nudge_the_dispatcher_once(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with running_api(ledger_engine, shipped_table,
                     config=ApiConfig(nudge_interval=120)) as api, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: api.post({**TAX, "reference": f"BD-{n}"}),
                                range(40)))
        assert [a.status_code for a in answers] == [202] * 40
        assert len({a.json()["id"] for a in answers}) == 40
        assert api.rows() == 40
        time.sleep(0.3)
        assert len(api.nudges) == 1  # one nudge per window, however many requests


def test_the_requester_is_the_partner_of_the_key_never_a_field_of_the_body(api: Api) -> None:
    answer = api.post({**TAX, "requester": "uwv", "partner_id": "uwv"})
    document = problem(answer, 422, "invalid_request")
    assert {e["path"] for e in document["errors"]} == {"requester", "partner_id"}
    row, _ = api.row(document["request_id"])
    assert row.partner_id == "belastingdienst"


def test_the_examples_of_the_openapi_document_are_accepted(api: Api) -> None:
    assert api.post(EXAMPLE_REQUEST).status_code == 202
    for partner, example in (("cbs", EXAMPLE_BULK), ("om-midden-nederland", EXAMPLE_OM)):
        api.keys[partner] = issue(api.engine, partner)
        assert api.post(example, partner).status_code == 202, partner


# -- credentials ----------------------------------------------------------------------------------

def test_without_credentials_the_answer_is_401_and_nothing_is_recorded(api: Api) -> None:
    answer = api.post(TAX, partner=None)
    problem(answer, 401, "missing_credentials")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/v1/requests", partner=None).status_code == 401
    assert api.rows() == 0


@pytest.mark.parametrize("authorization", [
    "Bearer dk_0123456789abcdef_" + "A" * 43,  # well-formed, never issued
    "Bearer not-a-key",
    "Basic YmVsYXN0aW5nZGllbnN0OnNlY3JldA==",
    "Bearer ",
])
def test_a_wrong_key_is_401_and_nothing_is_recorded(api: Api, authorization: str) -> None:
    answer = requests.post(f"{api.url}/v1/requests", json=TAX, timeout=10,
                           headers={"Authorization": authorization})
    problem(answer, 401, "invalid_credentials")
    assert api.rows() == 0


def test_a_key_with_the_wrong_secret_is_401(api: Api) -> None:
    key = api.keys["belastingdienst"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert api.post(TAX).status_code == 202  # the genuine key, now known to the API
    answer = requests.post(f"{api.url}/v1/requests", json={**TAX, "reference": "X-2"},
                           headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    problem(answer, 401, "invalid_credentials")
    assert api.rows() == 1


def test_a_revoked_key_stops_working_at_once(api: Api) -> None:
    assert api.post(TAX).status_code == 202
    assert api.get("/v1/requests").status_code == 200
    with Session(api.engine) as session, session.begin():
        revoke_keys(session=session, partner_id="belastingdienst", key_ids=None,
                    revoked_at=datetime.now(UTC), revoked_by="test")
    for attempt in range(2):
        answer = api.post({**TAX, "reference": f"AFTER-{attempt}"})
        problem(answer, 401, "invalid_credentials")
    problem(api.get("/v1/requests"), 401, "invalid_credentials")
    assert api.rows() == 1
    assert api.post(TAX, "uwv").status_code == 403  # other partners' keys still work


def test_a_partner_may_claim_only_its_own_bodys_grounds(api: Api) -> None:
    answer = api.post({**TAX, "reference": "UWV-1"}, "uwv")  # awr-55 is the tax authority's
    document = problem(answer, 403, "requester_not_entitled")
    assert document["errors"] == [{"path": "legal_basis", "code": "requester_not_entitled",
                                   "message": "ground awr-55 is not a ground of a uwv requester"}]
    row, state = api.row(document["request_id"])
    assert (row.partner_id, row.valid, state) == ("uwv", False, "invalid")
    assert row.validation_errors[0]["code"] == "requester_not_entitled"


def test_an_unknown_ground_is_accepted_and_left_to_the_engine_to_reject(api: Api) -> None:
    answer = api.post({**TAX, "legal_basis": "no-such-ground"})
    assert answer.status_code == 202
    assert api.row(answer.json()["id"])[1] == "received"


def test_a_partner_reads_only_its_own_requests(api: Api) -> None:
    own = api.post(TAX).json()["id"]
    theirs = api.post({"reference": "UWV-9", "legal_basis": "suwi-54-uwv",
                       "purpose": "werk_en_inkomen", "subjects": [{"bsn": "111222333"}],
                       "categories": ["personalia"]}, "uwv").json()["id"]
    assert api.get(f"/v1/requests/{own}").status_code == 200
    other = api.get(f"/v1/requests/{theirs}")
    unknown = api.get("/v1/requests/00000000-0000-4000-8000-000000000000")
    assert problem(other, 404, "not_found")["detail"] == problem(unknown, 404, "not_found")[
        "detail"]
    listed = [item["id"] for item in api.get("/v1/requests").json()["items"]]
    assert listed == [own]
    assert [i["id"] for i in api.get("/v1/requests", "uwv").json()["items"]] == [theirs]


@pytest.mark.parametrize("path", [
    "/v1/requests?limit=abc",
    "/v1/requests?limit=100000",
    "/v1/requests?state=nonsense&since=yesterday&cursor=bm9wZQ",
    "/v1/requests/not-a-request-id",
    "/v1/requests/" + "x" * 300,
])
@pytest.mark.parametrize(("authorization", "code"), [
    (None, "missing_credentials"),
    ("Bearer dk_0123456789abcdef_" + "A" * 43, "invalid_credentials"),
], ids=["missing", "invalid"])
def test_credentials_are_checked_before_the_parameters(
        api: Api, path: str, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.get(f"{api.url}{path}", headers=headers, timeout=10)
    document = problem(answer, 401, code)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "errors" not in document  # nothing about the parameters


# -- bad input ------------------------------------------------------------------------------------

def test_an_invalid_body_gets_one_error_per_field_and_is_recorded_as_rejected(api: Api) -> None:
    body = {**TAX, "subjects": [{"bsn": "123456789"}, {"onderwijsnummer": "101234568"}],
            "purpose": "tuinieren", "categories": []}
    document = problem(api.post(body), 422, "invalid_request")
    errors = {e["path"]: e["code"] for e in document["errors"]}
    assert errors == {"purpose": "unknown_value", "subjects.0.bsn": "invalid_bsn",
                      "subjects.1.onderwijsnummer": "invalid_onderwijsnummer",
                      "categories": "too_short"}
    assert all(e["message"] for e in document["errors"])
    row, state = api.row(document["request_id"])
    assert (row.valid, state, json.loads(api.received(row.id))) == (False, "invalid", body)
    assert {e["path"] for e in row.validation_errors} == set(errors)
    with Session(api.engine) as session:
        events = audit_events_for(session=session, request_id=row.id)
        assert [e.kind for e in events] == ["request_invalid"]
        assert "123456789" not in json.dumps(events[0].payload)


def test_too_many_subjects_is_422(api: Api) -> None:
    subjects = [{"bsn": "111222333"}] * (limits.MAX_SUBJECTS_PER_REQUEST + 1)
    document = problem(api.post({**TAX, "subjects": subjects}), 422, "invalid_request")
    assert [e["code"] for e in document["errors"]] == ["too_long"]
    assert api.rows() == 1


def test_a_body_larger_than_the_limit_is_413_and_recorded_as_a_marker(api: Api) -> None:
    big = json.dumps({**TAX, "case_reference": "x" * limits.MAX_REQUEST_BYTES})
    document = problem(api.post_raw(big), 413, "too_large")
    row, state = api.row(document["request_id"])
    assert (row.valid, state) == (False, "invalid")
    received = api.received(row.id)
    assert received.startswith("(not stored: the body was larger than the limit")
    assert str(len(big.encode())) in received


def test_a_streamed_body_larger_than_the_limit_is_413(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with running_api(ledger_engine, shipped_table,
                     config=ApiConfig(max_body_bytes=1000)) as small:
        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield b" " * 100
        answer = requests.post(f"{small.url}/v1/requests", data=chunks(), timeout=10,
                               headers=small.headers(**{"Content-Type": "application/json"}))
        document = problem(answer, 413, "too_large")
        assert "more than 1000 bytes" in small.received(document["request_id"])


@pytest.mark.parametrize(("data", "code"), [
    (b'{"reference": "BD-1",', "bad_json"),
    (b"\xff\xfe{}", "bad_encoding"),
    (b"[" * 100_000, "bad_json"),
    (b"1" * 5000, "bad_json"),
    (b"\x00", "bad_json"),
    (b'{"reference": "\x00"}', "bad_json"),
])
def test_a_body_that_is_not_json_is_400_and_recorded(api: Api, data: bytes, code: str) -> None:
    document = problem(api.post_raw(data), 400, "bad_json")
    assert document["errors"][0]["code"] == code
    row, state = api.row(document["request_id"])
    assert (row.valid, state) == (False, "invalid")
    first_line, _, rest = api.received(row.id).partition("\n")
    assert first_line.startswith("(not")
    assert rest == data.decode("utf-8", "replace").replace("\x00", "\ufffd")


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/json; charset=latin-1",
                                          "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_415_and_recorded(api: Api, content_type: str | None) -> None:
    document = problem(api.post_raw(json.dumps(TAX), content_type), 415,
                       "unsupported_media_type")
    row, _ = api.row(document["request_id"])
    assert api.received(row.id).endswith(json.dumps(TAX))


@pytest.mark.parametrize("text", [
    '{"reference": "BD-\\u0000", "legal_basis": "awr-55"}',
    '{"reference": "BD-1", "note\\ud800": 1}',
    '{"reference": "\\udfff"}',
    "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
])
def test_bodies_no_later_reader_could_read_are_recorded_behind_a_marker_never_a_500(
        api: Api, text: str) -> None:
    document = problem(api.post_raw(text), 422, "invalid_request")
    row, _ = api.row(document["request_id"])
    first_line, _, rest = api.received(row.id).partition("\n")
    assert first_line.startswith("(")
    assert rest == text
    with Session(api.engine) as session:
        assert verify_chain(session=session).ok


def test_a_nul_free_body_with_escapes_is_stored_as_received(api: Api) -> None:
    text = json.dumps({**TAX, "case_reference": "caf\u00e9 \ud83d\ude00"}, ensure_ascii=True)
    answer = api.post_raw(text)
    assert answer.status_code == 202
    assert api.received(answer.json()["id"]) == text


@pytest.mark.parametrize(("text", "path"), [
    ('{"reference": "BD-DUP-1", "legal_basis": "awr-55", "purpose": "belastingheffing", '
     '"subjects": [{"bsn": "111222333"}], "subjects": [{"bsn": "123456782"}], '
     '"categories": ["personalia"]}', "subjects"),
    ('{"reference": "BD-DUP-2", "legal_basis": "awr-55", "purpose": "belastingheffing", '
     '"subjects": [{"bsn": "111222333", "bsn": "123456782"}], "categories": ["personalia"]}',
     "subjects.0.bsn"),
    ('{"reference": "BD-DUP-3", "reference": "BD-DUP-3", "legal_basis": "awr-55", '
     '"purpose": "belastingheffing", "subjects": [{"bsn": "111222333"}], '
     '"categories": ["personalia"]}', "reference"),
])
def test_a_body_naming_a_key_twice_is_422_and_recorded_as_sent(
        api: Api, text: str, path: str) -> None:
    answer = api.post_raw(text)
    document = problem(answer, 422, "invalid_request")
    assert [(e["path"], e["code"]) for e in document["errors"]] == [(path, "duplicate_key")]
    row, state = api.row(document["request_id"])
    assert (row.valid, state, api.received(row.id)) == (False, "invalid", text)
    assert [e["code"] for e in row.validation_errors] == ["duplicate_key"]
    with Session(api.engine) as session:
        assert [e.kind for e in audit_events_for(session=session, request_id=row.id)] == [
            "request_invalid"]
        assert verify_chain(session=session).ok
    status = api.get(f"/v1/requests/{row.id}").json()
    assert [(e["path"], e["code"]) for e in status["errors"]] == [(path, "duplicate_key")]
    problem(api.post_raw(text, "text/plain"), 415, "unsupported_media_type")  # 415 comes first
    assert api.rows() == 2


# -- idempotency ----------------------------------------------------------------------------------

def test_the_same_reference_and_body_again_is_the_first_request(api: Api) -> None:
    first = api.post(TAX)
    again = api.post_raw(json.dumps(dict(reversed(list(TAX.items()))), indent=2))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json()["received_at"] == first.json()["received_at"]
    assert api.rows() == 1


def test_the_same_reference_with_another_body_is_409_and_recorded(api: Api) -> None:
    first = api.post(TAX).json()["id"]
    document = problem(api.post({**TAX, "categories": ["personalia"]}), 409,
                       "reference_conflict")
    assert document["existing_request_id"] == first
    row, state = api.row(document["request_id"])
    assert (row.valid, state, row.reference) == (False, "invalid", TAX["reference"])
    assert row.validation_errors[0]["code"] == "reference_conflict"
    assert api.rows() == 2
    assert api.post(TAX).json()["id"] == first  # the accepted one still answers


def test_the_same_reference_at_once_from_many_connections_is_one_request(api: Api) -> None:
    start = threading.Barrier(12)

    def send(_: int) -> requests.Response:
        start.wait()
        return api.post(TAX)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 11 + [202]
    assert len({a.json()["id"] for a in answers}) == 1
    assert api.rows() == 1


def test_the_same_reference_from_another_partner_is_another_request(api: Api) -> None:
    uwv = {"reference": TAX["reference"], "legal_basis": "suwi-54-uwv",
           "purpose": "werk_en_inkomen", "subjects": [{"bsn": "111222333"}],
           "categories": ["personalia"]}
    assert api.post(TAX).status_code == 202
    assert api.post(uwv, "uwv").status_code == 202


# -- limits, tracing, health ----------------------------------------------------------------------

def test_a_partner_over_its_rate_gets_429_with_retry_after(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with running_api(ledger_engine, shipped_table,
                     config=ApiConfig(rate_per_second=0.01, rate_burst=2)) as slow:
        answers = [slow.post({**TAX, "reference": f"R-{n}"}) for n in range(3)]
        assert [a.status_code for a in answers[:2]] == [202, 202]
        problem(answers[2], 429, "rate_limited")
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert slow.post({**TAX, "reference": "R-9"}, "uwv").status_code == 403  # its own
        assert slow.rows() == 3


@pytest.fixture
def info_logs() -> Iterator[None]:
    """The engine's logger keeps INFO lines (whatever an earlier test configured)."""
    logger = logging.getLogger("disclosure")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("info_logs")
def test_a_w3c_traceparent_becomes_the_correlation_id_everywhere(api: Api) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        answer = api.post(TAX, traceparent=f"00-{trace}-00f067aa0ba902b7-01")
        # the server thread writes its line once the answer is on its way: wait for it
        deadline = time.monotonic() + 5
        while not any(e["event"] == "api_call" for e in logs) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert answer.headers["X-Correlation-ID"] == answer.json()["correlation_id"] == trace
    version, trace_id, span, flags = answer.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", trace, "01")
    assert span != "00f067aa0ba902b7"
    assert api.row(answer.json()["id"])[0].correlation_id == trace
    calls = [e for e in logs if e["event"] == "api_call"]
    assert calls
    assert (calls[-1]["correlation_id"], calls[-1]["status"]) == (trace, 202)


@pytest.mark.parametrize("header", ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                    "garbage"])
def test_an_invalid_traceparent_is_ignored(api: Api, header: str) -> None:
    answer = api.post(TAX, traceparent=header)
    assert answer.status_code == 202
    assert len(answer.headers["X-Correlation-ID"]) == 32
    assert answer.headers["X-Correlation-ID"] not in header


def test_every_answer_carries_a_correlation_id(api: Api) -> None:
    for answer in (api.get("/healthz", None), api.get("/nowhere"), api.post(TAX, None),
                   requests.delete(f"{api.url}/v1/requests", timeout=10),
                   api.get("/v1/requests?limit=0")):
        assert len(answer.headers["X-Correlation-ID"]) == 32, answer.status_code
        assert answer.headers["traceparent"].startswith("00-")
        assert answer.headers["API-Version"] == API_VERSION


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/requests", {"GET", "POST"}),
    ("DELETE", "/v1/requests", {"GET", "POST"}),
    ("PATCH", "/v1/requests", {"GET", "POST"}),
    ("DELETE", "/v1/requests/00000000-0000-4000-8000-000000000000", {"GET"}),
    ("POST", "/v1/requests/00000000-0000-4000-8000-000000000000", {"GET"}),
    ("POST", "/healthz", {"GET"}),
])
def test_a_method_not_allowed_is_405_listing_every_method_of_the_path(
        api: Api, method: str, path: str, allowed: set[str]) -> None:
    answer = requests.request(method, f"{api.url}{path}", headers=api.headers(), timeout=10)
    problem(answer, 405, "method_not_allowed")
    assert {m.strip() for m in answer.headers["Allow"].split(",")} == allowed


def test_health_and_the_openapi_document(api: Api) -> None:
    for path in ("/healthz", "/v1/healthz"):
        assert api.get(path, None).json() == {"status": "ok", "ledger": "ok", "waiting": 0}
    document = api.get("/openapi.json", None).json()
    assert api.get("/v1/openapi.json", None).json() == document
    # the paths are relative to the base path with the major version (/core/uri-version)
    assert [s["url"] for s in document["servers"]] == ["/v1"]
    assert set(document["paths"]) == {"/requests", "/requests/{request_id}", "/healthz",
                                      "/openapi.json"}
    post = document["paths"]["/requests"]["post"]
    assert set(post["responses"]) == {"200", "202", "400", "401", "403", "409", "413", "415",
                                      "422", "429", "503"}
    assert post["security"] == [{"ApiKey": []}, {"MutualTLS": []}]
    assert set(post["requestBody"]["content"]["application/json"]["examples"]) == {
        "tax", "bulk", "rc_machtiging"}
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert document["components"]["schemas"]["DisclosureRequest"]["required"] == [
        "reference", "legal_basis", "purpose", "subjects", "categories"]
    assert "curl" in document["info"]["description"]


def test_when_the_ledger_cannot_be_reached_the_answer_is_503_never_500(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError  # noqa: PLC0415

    service = api.app.state.intake

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("the database is gone"))

    monkeypatch.setattr("connectors.group_commit.record_submissions", broken)
    answer = api.post(TAX)
    problem(answer, 503, "ledger_unavailable")
    assert int(answer.headers["Retry-After"]) == limits.INTAKE_RETRY_AFTER_SECONDS
    assert service.writer.waiting == 0
    monkeypatch.undo()
    assert api.post(TAX).status_code == 202  # the same request again, once the ledger is back


# -- following a request --------------------------------------------------------------------------

def test_a_request_accepted_while_prefect_is_down_is_claimed_by_the_dispatcher_later(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    def prefect_down() -> None:
        raise ConnectionError("Prefect cannot be reached")

    with running_api(ledger_engine, shipped_table, nudge=prefect_down) as down:
        answer = down.post(TAX)
        assert answer.status_code == 202
        service = down.app.state.intake
        assert wait_for(lambda: service.nudger.failures == 1)
        request_id = answer.json()["id"]
        assert down.row(request_id)[1] == "received"
    with Session(ledger_engine) as session, session.begin():
        claimed = claim_requests(session=session, worker="sweeper", limit=10,
                                 lease=timedelta(minutes=1), now=datetime.now(UTC))
    assert claimed == [request_id]


def test_a_partner_follows_its_request_to_delivery(
        ledger_engine: Engine, shipped_table: GroundTable, tmp_path: Path) -> None:
    from connectors.register import make_register_engine  # noqa: PLC0415
    from connectors.register_seed import ensure_register  # noqa: PLC0415
    from flows.pipeline.decide import decide_requests  # noqa: PLC0415
    from flows.pipeline.deliver import deliver_requests  # noqa: PLC0415
    from flows.runtime import Runtime  # noqa: PLC0415
    from legal_bases.request import Subject  # noqa: PLC0415
    from legal_bases.vocabulary import SubjectIdType  # noqa: PLC0415
    from records.settings import load_settings  # noqa: PLC0415

    register = make_register_engine(f"sqlite:///{tmp_path / 'register.db'}")
    ensure_register(engine=register, persons=3, seed=7,
                    include=[Subject(SubjectIdType.BSN, "111222333")])
    with running_api(ledger_engine, shipped_table) as api:
        request_id = api.post(TAX).json()["id"]
        before = api.get(f"/v1/requests/{request_id}").json()
        assert (before["state"], before["decision"], before["delivery"]["status"]) == (
            "received", None, "pending")
        # counted from the day of receipt in the Netherlands (not the UTC date: they differ
        # from 23:00 or 22:00 UTC on)
        assert before["deadline"] == (received_on(datetime.fromisoformat(
            before["received_at"])) + timedelta(days=28)).isoformat()
        rt = Runtime(settings=load_settings(data_dir=tmp_path), ledger=ledger_engine,
                     register_engine=register, table=shipped_table,
                     partners=load_partners(PARTNERS_FILE),
                     pseudonymizer=Pseudonymizer(bytes(32)))
        decided = decide_requests(rt, [request_id], flow_run_id=None)
        assert decided.deliver == [request_id]
        middle = api.get(f"/v1/requests/{request_id}").json()
        assert middle["state"] == "decided"
        assert middle["decision"]["outcome"] == "approved"
        assert middle["decision"]["released"] == ["opleidingsgegevens", "personalia"]
        reason = middle["decision"]["reasons"][0]
        assert reason["code"] == "ground_applies"
        assert reason["citation"]["url"].startswith("https://wetten.overheid.nl/")
        assert middle["decision"]["decided_by"] == "engine"
        assert deliver_requests(rt, [request_id], flow_run_id=None).delivered == 1
        after = api.get(f"/v1/requests/{request_id}").json()
        assert after["state"] == "delivered"
        assert after["delivery"]["status"] == "delivered"
        assert after["delivery"]["destination"] == "file_drop"
        assert len(after["delivery"]["sha256"]) == 64
    register.dispose()


_INVALID = {**TAX, "reference": "BD-INVALID", "categories": []}


@pytest.mark.parametrize(("text", "purpose"), [
    (json.dumps(_INVALID), "belastingheffing"),
    (json.dumps({**_INVALID, "purpose": "tuinieren"}), "tuinieren"),
    (json.dumps({**_INVALID, "purpose": "p" * limits.MAX_SLUG_LENGTH}),
     "p" * limits.MAX_SLUG_LENGTH),
    (json.dumps({**_INVALID, "purpose": "p" * (limits.MAX_SLUG_LENGTH + 1)}), None),
    (json.dumps({**_INVALID, "purpose": ["belastingheffing"]}), None),
    (json.dumps([_INVALID]), None),
    ('{"purpose": "belastingheffing", "purpose": "statistiek", "reference": "BD-X"}', None),
    ('{"purpose": "belastingheffing", ', None),
])
def test_the_status_of_an_invalid_submission_shows_the_purpose_it_claimed(
        api: Api, text: str, purpose: str | None) -> None:
    answer = api.post_raw(text)
    assert answer.status_code in {400, 422}, answer.text
    request_id = answer.json()["request_id"]
    status = api.get(f"/v1/requests/{request_id}")
    assert status.status_code == 200, status.text
    document = status.json()
    assert (document["valid"], document["state"], document["purpose"]) == (
        False, "invalid", purpose)
    assert api.row(request_id)[0].purpose is None  # the ledger is as it was


def test_listing_pages_through_the_partners_requests(api: Api) -> None:
    ids = [api.post({**TAX, "reference": f"P-{n}"}).json()["id"] for n in range(5)]
    problem(api.post({**TAX, "reference": "P-bad", "purpose": "x"}), 422, "invalid_request")
    seen: list[str] = []
    url: str | None = f"{api.url}/v1/requests?limit=2&state=received"
    while url is not None:
        page = requests.get(url, headers=api.headers(), timeout=10).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        url = page["next"]
    assert seen == ids
    invalid = api.get("/v1/requests?state=invalid").json()["items"]
    assert [i["reference"] for i in invalid] == ["P-bad"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert requests.get(f"{api.url}/v1/requests", params={"since": future},
                        headers=api.headers(), timeout=10).json()["items"] == []


@pytest.mark.parametrize("query", ["state=nonsense", "limit=0", "cursor=bm9wZQ",
                                   f"limit={limits.API_MAX_PAGE_SIZE + 1}", "since=yesterday"])
def test_a_bad_listing_query_is_400_naming_the_parameter(api: Api, query: str) -> None:
    """Invalid parameters are 400 (NL API Design Rules /core/error-handling/invalid-input;
    before the rules were applied, 422), and nothing is recorded."""
    document = problem(api.get(f"/v1/requests?{query}"), 400, "invalid_parameters")
    assert document["errors"][0]["path"].startswith("query.")
    assert "request_id" not in document
    assert api.rows() == 0


@pytest.mark.parametrize("request_id", ["not-a-request-id", "x" * 300, "1234"])
def test_a_request_id_that_is_not_a_uuid_is_400_and_an_unknown_one_404(
        api: Api, request_id: str) -> None:
    document = problem(api.get(f"/v1/requests/{request_id}"), 400, "invalid_parameters")
    assert [e["path"] for e in document["errors"]] == ["path.request_id"]
    problem(api.get("/v1/requests/00000000-0000-4000-8000-000000000000"), 404, "not_found")


def test_the_ledger_stays_consistent_with_the_answers(api: Api) -> None:
    answers = [api.post({**TAX, "reference": f"C-{n % 3}",
                         "categories": ["personalia"] if n % 4 == 3 else TAX["categories"]})
               for n in range(12)]
    statuses = [a.status_code for a in answers]
    written = sum(1 for s in statuses if s != 200)
    assert api.rows() == written
    with Session(api.engine) as session:
        accepted = session.execute(select(func.count()).select_from(RequestRow)
                                   .where(col(RequestRow.valid))).scalar_one()
        assert accepted == 3
        assert verify_chain(session=session).ok

"""A property-based fuzz run over the API's own OpenAPI document (schemathesis + hypothesis).

Schemathesis reads ``/openapi.json`` from the running API and generates calls of every operation,
valid ones and invalid ones (wrong types, missing fields, bad parameters), which go over real
HTTP with a partner's key. Every answer must be a non-5xx the document declares, with the
declared content type, schema and headers (``API-Version`` and the correlation headers are
required on every answer); and afterwards the ledger must hold exactly one row
per submission that the API said it recorded, and nothing for repeats: no request lost, none
duplicated, the audit chain intact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, select
from sqlmodel import Session, col
from test_intake_api import API_BACKENDS, Api, running_api

from connectors.intake_api import ApiConfig
from legal_bases.table import GroundTable
from records.chain import verify_chain
from records.ledger import count_requests
from records.models import RequestRow

pytestmark = [pytest.mark.parametrize("ledger_engine", API_BACKENDS, indirect=True),
              pytest.mark.slow]

#: Generated calls per backend (all operations, valid and invalid data mixed).
EXAMPLES = 300
#: Answers to POST /v1/requests after which the ledger holds one more row.
WRITES_A_ROW = {202, 400, 403, 409, 413, 415, 422}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


def valid_requests() -> st.SearchStrategy[dict[str, Any]]:
    """Valid requests of the tax authority, over few references: repeats and conflicts too."""
    subjects = st.sampled_from([{"bsn": "111222333"}, {"bsn": "738199795"},
                                {"onderwijsnummer": "102791163"}])
    categories = st.sampled_from(["personalia", "opleidingsgegevens", "financiele_gegevens",
                                  "gezondheid"])
    return st.fixed_dictionaries({
        "reference": st.sampled_from([f"FUZZ-{n}" for n in range(8)]),
        "legal_basis": st.just("awr-55"), "purpose": st.just("belastingheffing"),
        "case_reference": st.sampled_from(["FIN/1", "FIN/2"]),
        "subjects": st.lists(subjects, min_size=1, max_size=3),
        "categories": st.lists(categories, min_size=1, max_size=3)})


@pytest.fixture
def fuzzed_api(ledger_engine: Engine, shipped_table: GroundTable) -> Iterator[Api]:
    # no rate limit in the way: the fuzzer is one partner sending as fast as it can
    with running_api(ledger_engine, shipped_table,
                     config=ApiConfig(rate_per_second=1e6, rate_burst=1_000_000)) as api:
        yield api


def test_fuzzing_the_openapi_document_finds_no_5xx_and_loses_or_duplicates_nothing(
        fuzzed_api: Api) -> None:
    api = fuzzed_api
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # the paths are relative to the servers' base path, /v1 (NL API Design Rules)
    assert {f"{o.method.upper()} {o.path}" for o in operations} == {
        "POST /requests", "GET /requests", "GET /requests/{request_id}", "GET /healthz",
        "GET /openapi.json"}
    strategies = [operation.as_strategy(generation_mode=mode) for operation in operations
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    posted: Counter[int] = Counter()
    accepted_ids: list[str] = []
    repeated_ids: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(*strategies, valid_requests()))
    def call(case: Any) -> None:
        if isinstance(case, dict):  # a valid request: accepted, repeated or conflicting
            response = api.post(case)
            assert response.status_code in {200, 202, 409}, response.text
        else:
            response = case.call(base_url=f"{api.url}/v1", headers=api.headers())
            case.validate_response(response, checks=CHECKS)
        if isinstance(case, dict) or case.operation.method.upper() == "POST":
            posted[response.status_code] += 1
            if response.status_code == 202:
                accepted_ids.append(response.json()["id"])
            elif response.status_code == 200:
                repeated_ids.append(response.json()["id"])

    call()
    assert sum(posted.values()) > EXAMPLES // 10, posted
    assert posted[202] > 0, posted
    assert not set(posted) - WRITES_A_ROW - {200}, posted
    with Session(api.engine) as session:
        assert count_requests(session=session) == sum(posted[s] for s in WRITES_A_ROW)
        valid = set(session.execute(select(col(RequestRow.id)).where(
            col(RequestRow.valid))).scalars())
        assert valid == set(accepted_ids)
        assert len(accepted_ids) == len(set(accepted_ids))
        assert set(repeated_ids) <= valid
        assert verify_chain(session=session).ok

"""The partner API follows the NL API Design Rules (Logius), and CI proves it.

The OpenAPI document the API serves is linted by the pinned Spectral CLI (``.ci/spectral``,
installed by ``.ci/run``) with Logius' own rulesets, copied unedited into
``connectors/schemas/adr/``: ``linter.yaml`` as it is, and ``spectral.yml`` through
``spectral-explained.yaml``, which switches off its one rule this API explains instead of
following (``docs/api-design-rules.md``). Any error fails. Under CI (``CI`` set) a missing
Spectral fails too; elsewhere it skips, saying how to install it.

Then the real answers are held to what the document promises: ``API-Version`` (the document's
version) and the security headers on every answer of every status, each problem's ``type`` a
page that says what it means, each problem document no more than its documented schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, create_engine
from structlog.testing import capture_logs
from test_intake_api import TAX, Api, running_api

from connectors.intake_api import ApiConfig, create_app
from connectors.intake_body import read_body
from connectors.intake_openapi import API_VERSION
from connectors.intake_problem_types import PROBLEM_TYPES
from connectors.partners import load_partners
from legal_bases import limits
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body
from records.pseudonym import Pseudonymizer

ROOT = Path(__file__).parents[1]
ADR = ROOT / "connectors" / "schemas" / "adr"
SPECTRAL_HOME = ROOT / ".ci" / "spectral"
SPECTRAL = SPECTRAL_HOME / "node_modules" / ".bin" / "spectral"
#: The rulesets the served document must pass with no error.
RULESETS = ("linter.yaml", "spectral-explained.yaml")
#: The vendored Logius files, each with the hash its header records.
VENDORED = ("linter.yaml", "spectral.yml")
SQLITE = pytest.mark.parametrize("ledger_engine", [pytest.param("sqlite", id="sqlite")],
                                 indirect=True)
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'"}


def pinned_spectral() -> str:
    """The Spectral CLI version ``.ci/spectral/package.json`` pins."""
    manifest = json.loads((SPECTRAL_HOME / "package.json").read_text("utf-8"))
    return str(manifest["dependencies"]["@stoplight/spectral-cli"])


def spectral_or_skip() -> Path:
    """The pinned Spectral CLI; fails under CI, skips elsewhere, when it is not installed."""
    installed = SPECTRAL_HOME / "node_modules" / "@stoplight" / "spectral-cli" / "package.json"
    version = (json.loads(installed.read_text("utf-8"))["version"] if installed.exists()
               else None)
    if SPECTRAL.exists() and version == pinned_spectral():
        return SPECTRAL
    reason = (f"Spectral {pinned_spectral()} is not installed in .ci/spectral (found: "
              f"{version}); install it with: npm ci --prefix .ci/spectral")
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run does)")
    pytest.skip(reason)


@pytest.fixture
def api(ledger_engine: Engine, shipped_table: GroundTable) -> Iterator[Api]:
    # a small body limit and rate, to see a 413 and a 429 without sending much
    with running_api(ledger_engine, shipped_table, config=ApiConfig(
            max_body_bytes=2000, rate_per_second=1, rate_burst=40)) as running:
        yield running


# -- the document ---------------------------------------------------------------------------------

@SQLITE
def test_the_served_document_passes_the_logius_rulesets(api: Api, tmp_path: Path) -> None:
    spectral = spectral_or_skip()
    served = requests.get(f"{api.url}/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    document = tmp_path / "openapi.json"  # the name spectral-explained.yaml's override names
    document.write_bytes(served.content)
    started = time.monotonic()
    runs = {name: subprocess.Popen(
        [str(spectral), "lint", "--quiet", "--format", "json", "--output",
         str(tmp_path / f"{name}.results.json"), "--ruleset", str(ADR / name), str(document)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in RULESETS}
    found: dict[str, list[str]] = {}
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        results_file = tmp_path / f"{name}.results.json"
        assert results_file.exists(), f"spectral did not run with {name}: {stderr.decode()}"
        results: list[dict[str, Any]] = json.loads(results_file.read_text("utf-8") or "[]")
        found[name] = [f"{r['code']} at {'.'.join(map(str, r['path']))}: {r['message']}"
                       for r in results if r["severity"] == 0]
    assert found == {name: [] for name in RULESETS}, json.dumps(found, indent=2)
    assert time.monotonic() - started < 60


def test_the_vendored_rulesets_are_logius_files_as_published() -> None:
    for name in VENDORED:
        text = (ADR / name).read_text("utf-8")
        header, marker, published = text.partition("# --- as published ---\n")
        assert marker, name
        recorded = re.search(r"sha256:\s+([0-9a-f]{64})", header)
        assert recorded is not None, name
        assert hashlib.sha256(published.encode("utf-8")).hexdigest() == recorded[1], name
        assert re.search(r"commit:\s+[0-9a-f]{40}", header), name
        assert "Logius-standaarden/API-Design-Rules" in header, name


def test_the_absolute_address_partners_use_is_a_server_of_the_document(
        tmp_path: Path, shipped_table: GroundTable) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    app = create_app(engine=engine, partners=load_partners(ROOT / "examples" / "partners.yaml"),
                     pseudonymizer=Pseudonymizer(bytes(32)), table=shipped_table,
                     nudge=lambda: None,
                     config=ApiConfig(public_url="https://intake.duo.example/",
                                      contact={"name": "Team", "email": "team@duo.example",
                                               "url": "https://duo.example/team"}))
    document = app.openapi()
    assert [s["url"] for s in document["servers"]] == ["https://intake.duo.example/v1", "/v1"]
    assert document["info"]["contact"]["email"] == "team@duo.example"
    assert document["info"]["version"] == API_VERSION
    engine.dispose()


# -- the answers ----------------------------------------------------------------------------------

def answers_of_every_kind(api: Api, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One answer of each status the API gives (and its pages), by what it is."""
    first = api.post(TAX)
    answers: dict[str, requests.Response] = {
        "202 accepted": first,
        "200 repeat": api.post(TAX),
        "200 status": api.get(f"/v1/requests/{first.json()['id']}"),
        "200 list": api.get("/v1/requests"),
        "200 health": api.get("/v1/healthz", None),
        "200 document": api.get("/v1/openapi.json", None),
        "200 document at the root": api.get("/openapi.json", None),
        "200 docs": api.get("/docs", None),
        "200 problem page": api.get("/v1/problems/not-found", None),
        "400 bad json": api.post_raw(b'{"reference": '),
        "400 bad parameter": api.get("/v1/requests?limit=0"),
        "400 bad id": api.get("/v1/requests/not-an-id"),
        "401": api.get("/v1/requests", None),
        "403": api.post({**TAX, "reference": "UWV-1"}, "uwv"),
        "404": api.get("/v1/requests/00000000-0000-4000-8000-000000000000"),
        "404 path": api.get("/nowhere"),
        "405": requests.put(f"{api.url}/v1/requests", timeout=10),
        "409": api.post({**TAX, "categories": ["personalia"]}),
        "413": api.post({**TAX, "reference": "BIG", "case_reference": "x" * 3000}),
        "415": api.post_raw(json.dumps(TAX), "text/plain"),
        "422": api.post({**TAX, "reference": "BAD", "purpose": "tuinieren"}),
    }

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    rejected = answers["422"].json()
    answers["200 status of the rejected"] = api.get(
        rejected["instance"].removeprefix(api.url))
    monkeypatch.setattr("connectors.intake_api.status_document", crash)
    with capture_logs():  # the bug's traceback, kept instead of rendered (seconds)
        answers["500"] = api.get(f"/v1/requests/{first.json()['id']}")
    service = api.app.state.intake
    monkeypatch.setattr(service, "reads", create_engine("sqlite:////nonexistent/ledger.db"))
    answers["503 health"] = api.get("/v1/healthz", None)
    answers["503 read"] = api.get("/v1/requests")
    monkeypatch.undo()
    for n in range(100):  # the rest of the burst, then one too many
        over = api.get("/v1/requests")
        if over.status_code == 429:
            answers["429"] = over
            break
        assert over.status_code == 200, n
    return answers


@SQLITE
def test_every_answer_of_every_status_carries_the_documented_version(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    document = api.get("/v1/openapi.json", None).json()
    answers = answers_of_every_kind(api, monkeypatch)
    statuses = {answer.status_code for answer in answers.values()}
    assert statuses == {200, 202, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503}
    for what, answer in answers.items():
        assert answer.status_code == int(what[:3]), (what, answer.text)
        assert answer.headers["API-Version"] == document["info"]["version"] == API_VERSION, what
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (what, name)
        assert len(answer.headers["X-Correlation-ID"]) == 32, what
    for what in ("200 document", "200 document at the root"):
        assert answers[what].headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in answers["200 list"].headers


@SQLITE
def test_every_problem_is_its_documented_schema_and_its_type_resolves_to_its_page(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas = api.get("/v1/openapi.json", None).json()["components"]["schemas"]
    answers = answers_of_every_kind(api, monkeypatch)
    problems = {what: a for what, a in answers.items() if a.status_code >= 400}
    assert len(problems) == 16
    for what, answer in problems.items():
        assert answer.headers["Content-Type"] == "application/problem+json", what
        body = answer.json()
        kind = PROBLEM_TYPES[body["type"].rsplit("/", 1)[1]]
        assert (body["status"], body["title"]) == (kind.status, kind.title), what
        schema = schemas["InvalidInputProblem" if kind.input else "Problem"]
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), what
        page = requests.get(body["type"], timeout=10)  # no credentials: documentation
        assert page.status_code == 200, what
        assert page.headers["Content-Type"].startswith("text/html")
        assert page.headers["API-Version"] == API_VERSION
        assert kind.title in page.text
        assert f"<strong>{kind.status}</strong>" in page.text
    recorded = problems["422"].json()
    assert recorded["instance"] == f"{api.url}/v1/requests/{recorded['request_id']}"
    assert answers["200 status of the rejected"].json()["errors"] == recorded["errors"]
    unknown = requests.get(f"{api.url}/v1/problems/no-such-kind", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["type"] == f"{api.url}/v1/problems/not-found"


@SQLITE
def test_a_trailing_slash_is_404_never_a_redirect(api: Api) -> None:
    for path in ("/v1/requests/", "/v1/healthz/", "/v1/openapi.json/"):
        answer = requests.get(f"{api.url}{path}", headers=api.headers(), timeout=10,
                              allow_redirects=False)
        assert answer.status_code == 404, path
        assert "Location" not in answer.headers
        assert answer.json()["type"].endswith("/v1/problems/not-found")


# -- the partner's guide --------------------------------------------------------------------------

_EXAMPLE = re.compile(r"<!-- request-example body=(\w+) -->\n```json\n(.*?)\n```", re.DOTALL)


def test_the_guide_has_one_accepted_example_for_every_requesting_body(
        shipped_table: GroundTable) -> None:
    guide = (ROOT / "docs" / "partners.md").read_text("utf-8")
    examples = _EXAMPLE.findall(guide)
    assert sorted(body for body, _ in examples) == sorted(b.value for b in Body)
    for body, text in examples:
        reading = read_body(text.encode("utf-8"), content_type="application/json", body_of=body,
                            received_at=datetime.now(UTC), table=shipped_table)
        assert (reading.status, reading.code) == (202, "accepted"), (body, reading)


def test_the_guides_numbers_are_the_limits() -> None:
    guide = " ".join((ROOT / "docs" / "partners.md").read_text("utf-8").split())
    for sentence in (f"{limits.API_RATE_PER_SECOND} requests per second",
                     f"bursts of {limits.API_RATE_BURST}",
                     f"at most {limits.MAX_REQUEST_BYTES} bytes",
                     f"over {limits.MAX_REQUEST_BYTES} bytes",
                     f"at most {limits.MAX_SUBJECTS_PER_REQUEST}",
                     f"1–{limits.MAX_REFERENCE_LENGTH} characters",
                     f"1–{limits.MAX_CASE_REFERENCE_LENGTH} characters",
                     f"at most {limits.MAX_AUTHORISATIONS}",
                     f"{limits.API_PAGE_SIZE} per page (`limit` up to {limits.API_MAX_PAGE_SIZE})",
                     f"up to {limits.MAX_ACTIVE_API_KEYS} unrevoked keys",
                     f"longer than {limits.INTAKE_WRITE_TIMEOUT_SECONDS} seconds"):
        assert sentence in guide, sentence



def test_the_partners_guide_names_every_operation_problem_type_and_the_version() -> None:
    guide = (ROOT / "docs" / "partners.md").read_text("utf-8")
    rules = (ROOT / "docs" / "api-design-rules.md").read_text("utf-8")
    for kind in PROBLEM_TYPES:
        assert f"/v1/problems/{kind}" in guide, kind
    for operation in ("POST /v1/requests", "GET /v1/requests/{id}", "GET /v1/requests",
                      "GET /v1/healthz", "GET /v1/openapi.json"):
        assert operation in guide, operation
    assert f"API-Version: {API_VERSION}" in guide
    for name in VENDORED:
        commit = re.search(r"commit:\s+([0-9a-f]{40})", (ADR / name).read_text("utf-8"))
        assert commit is not None
        assert commit[1] in rules, name
    assert pinned_spectral() in rules

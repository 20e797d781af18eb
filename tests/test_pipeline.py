"""The pipeline on Prefect, against real parts: the flows ``collect-dropoffs`` and
``process-requests`` run against a Prefect test server, files are dropped into real partner
folders, documents go to a real file drop and to a real HTTPS receiver on loopback, and the
ledger is SQLite or PostgreSQL.

Each test checks what a user would: which requests were recorded (rows counted), the reports
beside the dropped files, the documents delivered (the released categories and nothing else, per
subject, pseudonymised where the ground says so, once), the ledger's states, receipts and flow run
ids, the audit chain, and what Prefect holds (ids, never a BSN).

* The HTTPS partner goes through the partner configuration: the configuration accepts only
  ``https://`` URLs, so the receiver serves TLS with a certificate made for 127.0.0.1 and the
  partner's ``verify`` names it. Only the slow-receiver test replaces that partner's destination
  (``Runtime._destinations``): the configuration has no time-out setting.
* Crashes are simulated where a process would die: a task without retries raising at the named
  step, and (for a killed process) the claim not released.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from uuid import UUID

import pipeline_support as ps
import pytest
from conftest import _postgres_engine
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from prefect.logging.handlers import APILogHandler
from sqlalchemy.exc import NoResultFound
from sqlmodel import Session

import flows.pipeline.decide
import flows.pipeline.deliver
import flows.pipeline.dispatcher
import flows.pipeline.dropoff
import flows.pipeline.take_in
import flows.pipeline.tasks
import flows.starts
from connectors.destinations import HttpsDestination
from connectors.dropoff import DropBox
from connectors.errors import RegisterUnavailableError
from connectors.register import SqlRegister, make_register_engine
from connectors.register_seed import ensure_register, sample_subjects, set_shielded
from flows.pipeline.dispatcher import process_requests
from flows.pipeline.dropoff import collect_dropoffs
from flows.review.flow import review_request
from flows.runtime import reset_runtime, runtime
from flows.starts import DEPLOYMENT, DISPATCHER, REVIEW
from legal_bases.request import Subject
from records import chain
from records.models import DecisionRow, DeliveryRow, RequestRow, RequestStatus
from records.replay import replay_request

BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


# -- Prefect ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect(prefect_harness: None) -> Iterator[None]:
    """The Prefect test server with the flow processes' logging of the product.

    The served flows run with ``PREFECT_LOGGING_EXTRA_LOGGERS=disclosure``
    (flows/local_prefect.py): the engine's structlog lines go to the run's logs in the API. The
    same handler is attached here, so the privacy test reads those lines too.
    """
    handler = APILogHandler()
    logger = logging.getLogger("disclosure")
    logger.addHandler(handler)
    try:
        # the deployments exist, so nudges and start_review create runs of them (which
        # nobody executes here: the tests run the flows by calling them)
        review_request.to_deployment(name=DEPLOYMENT).apply()
        process_requests.to_deployment(name=DEPLOYMENT).apply()
        yield
    finally:
        logger.removeHandler(handler)


def deployment_runs(name: str) -> list[FlowRun]:
    """The flow runs of a deployment (``flow/deployment``) the Prefect server holds."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment.id])))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ps.make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The ledger's backend: sqlite unless a test parametrizes it (indirectly)."""
    return str(getattr(request, "param", "sqlite"))


def _forget_runtime() -> None:
    if runtime.cache_info().currsize:
        rt = runtime()
        rt.ledger.dispose()
        rt.register_engine.dispose()
        rt._http.close()
    reset_runtime()


@pytest.fixture
def pipeline(prefect: None, backend: str, certificate: tuple[Path, Path],
             request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[ps.Pipeline]:
    """A data folder, a small seeded register, our partners, and the ledger on ``backend``."""
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        if name != "DISCLOSURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    with ExitStack() as stack:
        if backend == "postgresql":
            schema_engine = stack.enter_context(
                _postgres_engine(request.getfixturevalue("postgres_server")))
            monkeypatch.setenv("DISCLOSURE_DATABASE_URL",
                               schema_engine.url.render_as_string(hide_password=False))
        receiver = ps.Receiver()
        server = ps.LoopbackServer(receiver, *certificate)
        server.start()
        stack.callback(server.stop)
        config = tmp_path / "config"
        config.mkdir()
        ca_file = config / "receiver-ca.pem"
        shutil.copyfile(certificate[0], ca_file)
        partners = config / "partners.yaml"
        partners.write_text(ps.partners_yaml(https_url=server.url, ca_file=ca_file), "utf-8")
        register = make_register_engine(f"sqlite:///{data / 'register.db'}")
        stack.callback(register.dispose)
        ensure_register(engine=register, persons=ps.REGISTER_PERSONS, seed=ps.REGISTER_SEED,
                        include=list(ps.IN_REGISTER))
        for name, value in {"DATA_DIR": data, "REGISTER_PERSONS": ps.REGISTER_PERSONS,
                            "REGISTER_SEED": ps.REGISTER_SEED, "PARTNERS_FILE": partners,
                            "PSEUDONYM_KEY": ps.PSEUDONYM_KEY}.items():
            monkeypatch.setenv(f"DISCLOSURE_{name}", str(value))
        reset_runtime()
        stack.callback(_forget_runtime)
        yield ps.Pipeline(backend=backend, data_dir=data, register=register,
                          receiver=receiver, server=server, ca_file=ca_file)


# -- the checks of a delivered document ----------------------------------------------------------

def assert_released_records(pipeline: ps.Pipeline, document: dict[str, Any],
                            subjects: list[Subject], released: list[str],
                            code: Callable[[Subject], str] | None = None) -> None:
    """One record per found subject, holding ``subject`` and exactly the released categories,
    each equal to the register's data; pseudonymised (``code``) records carry only a code."""
    records = document["records"]
    assert [sorted(record) for record in records] == [sorted(["subject", *released])] * len(
        subjects)
    if code is None:
        assert [record["subject"] for record in records] == [ps.wire(s) for s in subjects]
        pairs = list(zip(records, subjects, strict=True))
    else:
        by_code = {code(s): s for s in subjects}
        assert [record["subject"] for record in records] == [
            {"pseudonym": c} for c in sorted(by_code)]
        pairs = [(record, by_code[record["subject"]["pseudonym"]]) for record in records]
    for record, subject in pairs:
        entry = ps.register_entry(pipeline.register, subject)
        assert {c: record[c] for c in released} == {c: entry[c] for c in released}
    assert any(record[c] is not None for record in records for c in released)


def test_the_receiver_and_register_helpers_see_what_they_should(pipeline: ps.Pipeline) -> None:
    """The test's own instruments: the register holds the test's subjects and not the absent
    ones; the TLS receiver is reachable with the configured CA and counts keys."""
    for subject in ps.IN_REGISTER:
        assert ps.register_entry(pipeline.register, subject)["personalia"] is not None
    for subject in ps.NOT_IN_REGISTER:
        with pytest.raises(NoResultFound):
            ps.register_entry(pipeline.register, subject)
    destination = HttpsDestination(pipeline.server.url, verify=pipeline.ca_file)
    destination.deliver(idempotency_key="k-1", document={"x": 1})
    destination.deliver(idempotency_key="k-1", document={"x": 1})
    assert (pipeline.receiver.requests, pipeline.receiver.distinct_deliveries) == (2, 1)


# -- (a) the folder drop-off --------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_dropoff_records_every_line_once_and_files_each_file_away(
        pipeline: ps.Pipeline) -> None:
    single = pipeline.drop("belastingdienst", "single.json",
                           json.dumps(ps.tax_request("BD-A-1")))
    bad_bsn = ps.leerplicht_with_health("UTR-A-2") | {"subjects": [{"bsn": ps.BAD_BSN}]}
    other_ground = ps.tax_request("UTR-A-3")  # a gemeente is not entitled under awr-55
    batch = pipeline.drop("gemeente-utrecht", "batch.jsonl", ps.jsonl(
        ps.leerplicht_with_health("UTR-A-1"), bad_bsn, "{this is not json", "", other_ground))
    only_invalid = pipeline.drop("toeslagen", "only-invalid.jsonl", ps.jsonl(
        "not json either", {"reference": "TS-A-1", "legal_basis": "awir-38",
                            "purpose": "toeslagen", "subjects": [{"bsn": ps.BAD_BSN}],
                            "categories": ["opleidingsgegevens"]}))
    stray = pipeline.drop("nobody", "stray.json", json.dumps(ps.tax_request("X-1")))
    in_progress = pipeline.dropoff / "belastingdienst" / "later.json.part"
    in_progress.write_text('{"reference": "half', "utf-8")
    sent = {path.name: path.read_bytes() for path in (single, batch, only_invalid, stray)}

    run = pipeline.collect()

    assert run.state.is_completed(), run.state
    assert run.totals == {"files": 4, "valid": 3, "invalid": 4, "not_filed": 0}
    requests = ps.rows(pipeline.ledger, RequestRow)
    assert len(requests) == 7  # 1 + 4 non-blank lines + 2; nothing of the unknown partner
    keys = {r.intake_key: r for r in requests}
    digest = {name: hashlib.sha256(body).hexdigest() for name, body in sent.items()}
    assert set(keys) == {
        f"dropoff:belastingdienst:{digest['single.json']}:1",
        *(f"dropoff:gemeente-utrecht:{digest['batch.jsonl']}:{line}" for line in (1, 2, 3, 5)),
        *(f"dropoff:toeslagen:{digest['only-invalid.jsonl']}:{line}" for line in (1, 2))}
    assert {r.channel for r in requests} == {"dropoff"}

    # each file moved, unchanged, with a report beside it; the half-written file left alone
    for partner, name, where in (("belastingdienst", "single.json", "processed"),
                                 ("gemeente-utrecht", "batch.jsonl", "processed"),
                                 ("toeslagen", "only-invalid.jsonl", "rejected"),
                                 ("nobody", "stray.json", "rejected")):
        folder = pipeline.dropoff / partner
        assert (folder / where / name).read_bytes() == sent[name]
        assert not (folder / name).exists()
        assert (folder / where / f"{name}.report.json").is_file()
    assert in_progress.read_text("utf-8") == '{"reference": "half'
    assert sorted(p.name for p in (pipeline.dropoff / "belastingdienst").iterdir()) == [
        "later.json.part", "processed"]

    report = json.loads((pipeline.dropoff / "gemeente-utrecht" / "processed" /
                         "batch.jsonl.report.json").read_text("utf-8"))
    assert (report["file"], report["sha256"]) == ("batch.jsonl", digest["batch.jsonl"])
    assert (report["requests"], report["valid"], report["invalid"]) == (4, 2, 2)
    entries = report["entries"]
    assert [e["line"] for e in entries] == [1, 2, 3, 5]
    assert [e["valid"] for e in entries] == [True, False, False, True]
    for entry in entries:
        row = keys[f"dropoff:gemeente-utrecht:{digest['batch.jsonl']}:{entry['line']}"]
        assert entry["request_id"] == row.id
        assert entry["errors"] == row.validation_errors
    assert [(e["path"], e["code"]) for e in entries[1]["errors"]] == [
        ("subjects.0.bsn", "invalid_bsn")]
    assert [e["code"] for e in entries[2]["errors"]] == ["bad_json"]
    assert entries[0]["errors"] == entries[3]["errors"] == []
    assert ps.BAD_BSN not in json.dumps(report["entries"][1]["errors"])

    rejected_report = json.loads((pipeline.dropoff / "toeslagen" / "rejected" /
                                  "only-invalid.jsonl.report.json").read_text("utf-8"))
    assert (rejected_report["valid"], rejected_report["invalid"]) == (0, 2)
    stray_report = json.loads((pipeline.dropoff / "nobody" / "rejected" /
                               "stray.json.report.json").read_text("utf-8"))
    assert stray_report["error"] == "unknown_partner"

    states = {r.intake_key: ps.state_of(pipeline.ledger, r.id) for r in requests}
    assert sorted(states.values()) == ["invalid"] * 4 + ["received"] * 3

    # a second sweep finds nothing new
    again = pipeline.collect()
    assert again.totals == {"files": 0, "valid": 0, "invalid": 0, "not_filed": 0}
    assert ps.count(pipeline.ledger, RequestRow) == 7

    # the dispatcher then gives every recorded request, valid or not, exactly one decision
    dispatched = pipeline.dispatch()
    assert dispatched.state.is_completed(), dispatched.state
    outcomes = {}
    for row in requests:
        decision = pipeline.decision(row.id)
        outcomes[row.intake_key.rsplit(":", 1)[1] + "@" + row.partner_id] = (
            decision.outcome, [r["code"] for r in decision.reasons])
    assert outcomes["1@gemeente-utrecht"][0] == "needs_review"
    assert outcomes["5@gemeente-utrecht"] == ("rejected", ["requester_not_entitled"])
    for key in ("2@gemeente-utrecht", "3@gemeente-utrecht", "1@toeslagen", "2@toeslagen"):
        assert outcomes[key] == ("rejected", ["invalid_request"]), key
    assert outcomes["1@belastingdienst"][0] == "approved"
    assert set(pipeline.delivered()) == {"belastingdienst"}


# -- (b) + (g) the dispatcher: what is delivered, and where each request ended -------------------

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_dispatcher_delivers_exactly_the_released_data_once(pipeline: ps.Pipeline) -> None:
    pipeline.drop("belastingdienst", "approved.json",
                  json.dumps(ps.tax_request("BD-B-1", subjects=(ps.TAX_SUBJECT, ps.ABSENT))))
    pipeline.drop("belastingdienst", "more.jsonl", ps.jsonl(
        ps.tax_request("BD-B-2", subjects=(ps.TAX_SUBJECT_2,),
                       categories=("personalia", "contacthistorie")),
        ps.tax_request("BD-B-3", subjects=(ps.TAX_SUBJECT_2, ps.TAX_SUBJECT))))
    pipeline.drop("inspectie", "pseudonymised.json", json.dumps(ps.inspectie_request("IV-B-1")))
    pipeline.drop("uwv", "wrong-ground.json", json.dumps(ps.uwv_on_tax_ground("UWV-B-1")))
    pipeline.drop("gemeente-utrecht", "health.json",
                  json.dumps(ps.leerplicht_with_health("UTR-B-1")))
    pipeline.drop("svb", "shielded.json", json.dumps(ps.svb_request("SVB-B-1")))
    assert pipeline.collect().totals == {"files": 6, "valid": 7, "invalid": 0, "not_filed": 0}
    assert set_shielded(engine=pipeline.register, subjects=[ps.SVB_PARENT], shielded=True) == 1

    run = pipeline.dispatch()

    assert run.state.is_completed(), run.state
    assert run.totals is not None
    assert (run.totals["claimed"], run.totals["delivered"], run.totals["to_review"],
            run.totals["rejected"], run.totals["failed"]) == (7, 4, 2, 1, 0)
    ids = {ref: pipeline.request(partner, ref).id for partner, ref in (
        ("belastingdienst", "BD-B-1"), ("belastingdienst", "BD-B-2"),
        ("belastingdienst", "BD-B-3"), ("inspectie", "IV-B-1"), ("uwv", "UWV-B-1"),
        ("gemeente-utrecht", "UTR-B-1"), ("svb", "SVB-B-1"))}
    states = {ref: ps.state_of(pipeline.ledger, rid) for ref, rid in ids.items()}
    assert states == {"BD-B-1": "delivered", "BD-B-2": "delivered", "BD-B-3": "delivered",
                      "IV-B-1": "delivered", "UWV-B-1": "rejected",
                      "UTR-B-1": "awaiting_review", "SVB-B-1": "awaiting_review"}
    decisions = {ref: pipeline.decision(rid) for ref, rid in ids.items()}
    assert decisions["SVB-B-1"].outcome == "needs_review"
    assert [t["code"] for t in decisions["SVB-B-1"].review_triggers] == ["shielded_subject"]
    assert decisions["SVB-B-1"].proposal is not None  # what the reviewer starts from
    assert [t["code"] for t in decisions["UTR-B-1"].review_triggers] == ["special_category"]

    # one file per releasing decision, nothing for the rejected and the reviewed requests
    assert pipeline.delivered() == {
        "belastingdienst": sorted(f"delivery-{decisions[r].id}.json"
                                  for r in ("BD-B-1", "BD-B-2", "BD-B-3")),
        "inspectie": [f"delivery-{decisions['IV-B-1'].id}.json"]}

    document, _ = pipeline.document("belastingdienst", decisions["BD-B-1"].id)
    assert document["disclosure"]["request_id"] == ids["BD-B-1"]
    assert document["disclosure"]["reference"] == "BD-B-1"
    assert document["disclosure"]["outcome"] == "approved"
    assert sorted(document["disclosure"]["released"]) == ["financiele_gegevens", "personalia"]
    assert document["subjects_pseudonymised"] is False
    assert_released_records(pipeline, document, [ps.TAX_SUBJECT],
                            ["financiele_gegevens", "personalia"])
    assert document["not_found"] == [ps.wire(ps.ABSENT)]

    document, _ = pipeline.document("belastingdienst", decisions["BD-B-2"].id)
    assert document["disclosure"]["outcome"] == "partially_approved"
    assert document["disclosure"]["withheld"] == ["contacthistorie"]
    assert_released_records(pipeline, document, [ps.TAX_SUBJECT_2], ["personalia"])
    assert document["not_found"] == []

    # two requests that share a subject each get their own subjects, in their own order
    document, _ = pipeline.document("belastingdienst", decisions["BD-B-3"].id)
    assert_released_records(pipeline, document, [ps.TAX_SUBJECT_2, ps.TAX_SUBJECT],
                            ["financiele_gegevens", "personalia"])
    assert document["not_found"] == []

    document, raw = pipeline.document("inspectie", decisions["IV-B-1"].id)
    assert document["subjects_pseudonymised"] is True
    assert document["disclosure"]["withheld"] == ["personalia"]
    code = pipeline.rt.pseudonymizer.for_recipient("inspectie")
    assert_released_records(pipeline, document, [ps.INSPECTED_BSN, ps.INSPECTED_ONR],
                            ["opleidingsgegevens"], code=code)
    assert document["not_found"] == {"count": 1}
    text = raw.decode("utf-8")
    for subject in (ps.INSPECTED_BSN, ps.INSPECTED_ONR, ps.ABSENT_2):
        assert subject.number not in text
        assert pipeline.rt.pseudonymizer.of(subject) not in text  # not the ledger's pseudonym

    # (g) every decision and delivery carries the dispatcher's flow run id; receipts match
    deliveries = ps.rows(pipeline.ledger, DeliveryRow)
    assert sorted(d.request_id for d in deliveries) == sorted(
        ids[r] for r in ("BD-B-1", "BD-B-2", "BD-B-3", "IV-B-1"))
    for delivery in deliveries:
        assert delivery.flow_run_id == run.id
        assert delivery.decision_id == pipeline.decision(delivery.request_id).id
        body = Path(delivery.receipt["location"]).read_bytes()
        assert delivery.receipt["sha256"] == hashlib.sha256(body).hexdigest()
        assert delivery.receipt["status"] == "delivered"
    assert {d.flow_run_id for d in decisions.values()} == {run.id}
    for rid in ids.values():
        assert {e.flow_run_id for e in ps.events_of(pipeline.ledger, rid)
                if e.kind in ("decision_recorded", "delivery_recorded")} == {run.id}

    # (c) a second run claims nothing and delivers nothing again
    written = {p: p.stat().st_mtime_ns for p in pipeline.outbox.rglob("*.json")}
    again = pipeline.dispatch()
    assert again.totals is not None
    assert (again.totals["claimed"], again.totals["delivered"]) == (0, 0)
    assert {p: p.stat().st_mtime_ns for p in pipeline.outbox.rglob("*.json")} == written
    assert ps.count(pipeline.ledger, DeliveryRow) == 4
    assert ps.count(pipeline.ledger, DecisionRow) == 7

    # one review-request run per request waiting for a reviewer, with the request id only
    reviews = deployment_runs(REVIEW)
    assert sorted(r.parameters["request_id"] for r in reviews
                  if r.parameters.get("request_id") in ids.values()) == sorted(
        [ids["UTR-B-1"], ids["SVB-B-1"]])
    assert all(r.parameters == {"request_id": r.parameters["request_id"]} for r in reviews)
    assert pipeline.chain_ok()


def test_a_subject_shielded_before_a_retried_delivery_is_not_delivered_without_review(
        pipeline: ps.Pipeline) -> None:
    pipeline.drop("belastingdienst", "two.json", json.dumps(ps.tax_request(
        "BD-S-2", subjects=(ps.TAX_SUBJECT, ps.TAX_SUBJECT_2))))
    pipeline.collect()
    request_id = pipeline.request("belastingdienst", "BD-S-2").id
    blocked = pipeline.outbox / "belastingdienst"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the partner's folder should be")  # the drop cannot write
    first = pipeline.dispatch()
    assert first.totals["failed"] == 1
    assert ps.state_of(pipeline.ledger, request_id) == "decided"
    blocked.unlink()
    set_shielded(engine=pipeline.register, subjects=[ps.TAX_SUBJECT_2], shielded=True)

    again = pipeline.dispatch()

    assert pipeline.delivered() == {}
    assert ps.state_of(pipeline.ledger, request_id) == "awaiting_review"
    first, resent = sorted(ps.decisions_of(pipeline.ledger, request_id), key=lambda d: d.sequence)
    assert (first.outcome, resent.outcome, resent.decided_by) == (
        "approved", "needs_review", "engine")
    assert [t["code"] for t in resent.review_triggers] == ["shielded_subject"]
    assert resent.proposal == {"released": first.released, "withheld": first.withheld}
    # a review run of its own (the first decision never had one), on the record
    assert again.totals["reviews_started"] == 1
    (run,) = [r for r in deployment_runs(REVIEW) if r.parameters == {"request_id": request_id}]
    assert run.idempotency_key == f"review-{request_id}-2"
    (started,) = ps.events_of(pipeline.ledger, request_id, "review_run_started")
    assert started.payload == {"review_run_id": str(run.id), "decision_id": resent.id}
    # and replay accounts for it: re-derived, the shielding taken from the record
    replay = replay_request(pipeline.ledger, request_id)
    assert replay is not None
    assert replay.status.value == "agrees", replay.differences
    assert replay.review is not None
    assert replay.review.pending


# -- fail closed --------------------------------------------------------------------------------

def test_nothing_is_delivered_when_the_decision_cannot_be_recorded(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.drop("belastingdienst", "one.json", json.dumps(ps.tax_request("BD-F-1")))
    pipeline.collect()
    request_id = pipeline.request("belastingdienst", "BD-F-1").id
    with monkeypatch.context() as patch:
        ps.no_retries(patch, flows.pipeline.dispatcher, "decide_batch")
        # the audit event of the decision cannot be written
        ps.fail_once(patch, chain, "append_events", when=lambda *, session, events: any(
            e.kind == "decision_recorded" for e in events))
        crashed = pipeline.dispatch()
    assert crashed.state.is_failed()
    assert ps.decisions_of(pipeline.ledger, request_id) == []
    assert ps.state_of(pipeline.ledger, request_id) == "received"
    assert pipeline.delivered() == {}
    assert ps.count(pipeline.ledger, DeliveryRow) == 0

    run = pipeline.dispatch()  # the claim was released: the next sweep decides and delivers
    assert run.totals is not None
    assert run.totals["delivered"] == 1
    assert len(ps.deliveries_of(pipeline.ledger, request_id)) == 1
    assert pipeline.chain_ok()


# -- (c) crashes and re-runs --------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "kind"), [
    pytest.param("sqlite", "file_drop", id="sqlite-file_drop"),
    pytest.param("postgresql", "file_drop", id="postgresql-file_drop",
                 marks=pytest.mark.postgres),
    pytest.param("sqlite", "https", id="sqlite-https"),
], indirect=["backend"])
def test_a_run_that_dies_after_delivering_is_rerun_without_a_second_delivery(
        pipeline: ps.Pipeline, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "https":
        partner = ps.HTTPS_PARTNER
        pipeline.drop(partner, "one.json", json.dumps(ps.cbs_request("CBS-C-1")))
    else:
        partner = "belastingdienst"
        pipeline.drop(partner, "one.json", json.dumps(ps.tax_request("BD-C-1")))
    pipeline.collect()
    request_id = ps.rows(pipeline.ledger, RequestRow)[0].id

    with monkeypatch.context() as patch:
        # the process dies after the destination took the document, before the ledger recorded
        # it: no task retry, no release of the claim
        ps.no_retries(patch, flows.pipeline.dispatcher, "deliver_batch")
        ps.fail_once(patch, flows.pipeline.deliver, "record_deliveries")
        patch.setattr(flows.pipeline.tasks, "release_claims", lambda **_: None)
        crashed = pipeline.dispatch()
    assert crashed.state.is_failed()
    decision = pipeline.decision(request_id)
    assert ps.state_of(pipeline.ledger, request_id) == "decided"
    assert ps.deliveries_of(pipeline.ledger, request_id) == []
    if kind == "https":
        assert pipeline.receiver.distinct_deliveries == 1
    else:
        assert pipeline.delivered() == {partner: [f"delivery-{decision.id}.json"]}

    # while the dead run's lease holds, no other run takes the request
    waiting = pipeline.dispatch()
    assert waiting.totals is not None
    assert waiting.totals["claimed"] == 0

    pipeline.expire_claims()
    rerun = pipeline.dispatch()
    assert rerun.totals is not None
    assert (rerun.totals["claimed"], rerun.totals["delivered"]) == (1, 1)
    assert pipeline.decision(request_id).id == decision.id  # not decided again
    deliveries = ps.deliveries_of(pipeline.ledger, request_id)
    assert len(deliveries) == 1
    assert deliveries[0].flow_run_id == rerun.id
    assert deliveries[0].receipt["status"] == "repeat"  # the destination had it already
    assert ps.state_of(pipeline.ledger, request_id) == "delivered"
    assert len(ps.events_of(pipeline.ledger, request_id, "delivery_recorded")) == 1
    if kind == "https":
        assert pipeline.receiver.distinct_deliveries == 1
        assert pipeline.receiver.requests == 2
        assert deliveries[0].receipt["detail"]["replayed"] is True
    else:
        assert pipeline.delivered() == {partner: [f"delivery-{decision.id}.json"]}
    assert pipeline.chain_ok()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_dropoff_stopped_half_way_through_a_file_records_no_line_twice(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [ps.tax_request(f"BD-H-{n:03d}", subjects=(ps.TAX_SUBJECT,)) for n in range(210)]
    lines[7] = {"reference": "BD-H-bad", "subjects": "nope"}  # one invalid line among them
    batch = pipeline.drop("belastingdienst", "big.jsonl", ps.jsonl(*lines))
    calls: list[int] = []

    def stop_at_line_205(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 205:
            raise RuntimeError("simulated stop half-way")
        return real(**kwargs)

    real = flows.pipeline.take_in.record_submission
    with monkeypatch.context() as patch:
        ps.no_retries(patch, flows.pipeline.dropoff, "take_in")
        patch.setattr(flows.pipeline.take_in, "record_submission", stop_at_line_205)
        stopped = pipeline.collect()
    assert stopped.state.is_failed()
    recorded = ps.count(pipeline.ledger, RequestRow)
    assert 0 < recorded < 210  # part of the file is on the record
    assert batch.exists()  # and the file is still waiting

    run = pipeline.collect()
    assert run.state.is_completed(), run.state
    requests = ps.rows(pipeline.ledger, RequestRow)
    assert len(requests) == 210
    assert len({r.intake_key for r in requests}) == 210
    assert sum(not r.valid for r in requests) == 1
    assert not batch.exists()
    report = json.loads((batch.parent / "processed" / "big.jsonl.report.json").read_text())
    assert (report["requests"], report["valid"], report["invalid"]) == (210, 209, 1)
    assert sorted(e["request_id"] for e in report["entries"]) == sorted(r.id for r in requests)
    assert pipeline.chain_ok()


def test_a_dropoff_stopped_before_filing_away_takes_the_file_in_once(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = pipeline.drop("belastingdienst", "two.jsonl", ps.jsonl(
        ps.tax_request("BD-S-1"), "not json"))
    with monkeypatch.context() as patch:
        ps.no_retries(patch, flows.pipeline.dropoff, "take_in")
        ps.fail_once(patch, DropBox, "file_away")
        stopped = pipeline.collect()
    assert stopped.state.is_failed()
    assert batch.exists()
    first = sorted(r.id for r in ps.rows(pipeline.ledger, RequestRow))
    assert len(first) == 2

    run = pipeline.collect()
    assert run.state.is_completed(), run.state
    assert sorted(r.id for r in ps.rows(pipeline.ledger, RequestRow)) == first
    assert not batch.exists()
    report = json.loads((batch.parent / "processed" / "two.jsonl.report.json").read_text())
    assert sorted(e["request_id"] for e in report["entries"]) == first
    assert list((batch.parent / "rejected").glob("*")) == []


def test_a_review_run_that_could_not_be_started_is_started_by_a_later_run(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.drop("gemeente-utrecht", "health.json",
                  json.dumps(ps.leerplicht_with_health("UTR-R-1")))
    pipeline.collect()
    request_id = pipeline.request("gemeente-utrecht", "UTR-R-1").id
    with monkeypatch.context() as patch:
        # Prefect cannot be reached when the review run is to be created
        ps.no_retries(patch, flows.pipeline.dispatcher, "start_reviews")
        ps.fail_once(patch, flows.starts, "start_review",
                     error=ConnectionError("Prefect API unreachable"))
        failed = pipeline.dispatch()
    assert failed.state.is_failed()
    assert ps.state_of(pipeline.ledger, request_id) == "awaiting_review"

    pipeline.dispatch()  # the next sweep, with Prefect back

    reviews = [r for r in deployment_runs(REVIEW) if r.parameters["request_id"] == request_id]
    assert len(reviews) == 1


def test_a_dropoff_that_recorded_requests_starts_the_dispatcher(pipeline: ps.Pipeline) -> None:
    pipeline.drop("belastingdienst", "one.json", json.dumps(ps.tax_request("BD-N-1")))
    before = {r.id for r in deployment_runs(DISPATCHER)}
    collected = ps.run_flow(collect_dropoffs)
    nudged = [r for r in deployment_runs(DISPATCHER) if r.id not in before]
    assert collected.totals["valid"] == 1
    assert len(nudged) == 1
    assert nudged[0].parameters == {}  # it carries nothing but the defaults
    assert nudged[0].idempotency_key == f"dropoff-{collected.id}"

    idle = ps.run_flow(collect_dropoffs)  # nothing dropped: no dispatcher run
    assert idle.totals == {"files": 0, "valid": 0, "invalid": 0, "not_filed": 0}
    assert [r.id for r in deployment_runs(DISPATCHER) if r.id not in before] == [nudged[0].id]


def test_an_unreachable_register_is_retried_and_delivers_once(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.drop("belastingdienst", "one.json", json.dumps(ps.tax_request("BD-R-1")))
    pipeline.collect()
    request_id = pipeline.request("belastingdienst", "BD-R-1").id
    failed = ps.fail_once(monkeypatch, SqlRegister, "fetch",
                        error=RegisterUnavailableError("OperationalError: database is locked"))

    run = pipeline.dispatch()

    assert failed == [1]
    assert run.state.is_completed(), run.state
    assert run.totals["delivered"] == 1
    assert len(ps.deliveries_of(pipeline.ledger, request_id)) == 1
    assert ps.events_of(pipeline.ledger, request_id, "delivery_failed") == []
    assert len(pipeline.delivered()["belastingdienst"]) == 1
    with get_client(sync_client=True) as client:
        def delivery_task() -> list[Any]:
            return [t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(run.id)])))
                if t.name.startswith("deliver-requests") and t.state is not None
                and t.state.is_completed()]

        (task_run,) = ps.wait_for(delivery_task)
    assert task_run.run_count == 2  # the task's retry, after its back-off


# -- (d) HTTPS delivery through the pipeline ------------------------------------------------------

def _cbs_request(pipeline: ps.Pipeline, reference: str) -> str:
    pipeline.drop(ps.HTTPS_PARTNER, f"{reference}.json", json.dumps(
        ps.cbs_request(reference, subjects=(ps.CBS_SUBJECT, ps.ABSENT, ps.CBS_SUBJECT_2))))
    pipeline.collect()
    return pipeline.request(ps.HTTPS_PARTNER, reference).id


def test_https_delivery_survives_503s_and_records_the_receipt(pipeline: ps.Pipeline) -> None:
    request_id = _cbs_request(pipeline, "CBS-D-1")
    pipeline.receiver.fail_503 = 2

    run = pipeline.dispatch()

    assert run.totals is not None
    assert run.totals["delivered"] == 1
    assert (pipeline.receiver.requests, pipeline.receiver.distinct_deliveries) == (3, 1)
    decision = pipeline.decision(request_id)
    assert set(pipeline.receiver.keys) == {f"delivery-{decision.id}"}
    (body,) = pipeline.receiver.deliveries.values()
    document = json.loads(body)
    assert document["disclosure"]["decision_id"] == decision.id
    assert_released_records(pipeline, document, [ps.CBS_SUBJECT, ps.CBS_SUBJECT_2],
                            ["opleidingsgegevens"])
    assert document["not_found"] == [ps.wire(ps.ABSENT)]
    (delivery,) = ps.deliveries_of(pipeline.ledger, request_id)
    assert delivery.destination == "https"
    assert delivery.flow_run_id == run.id
    assert delivery.receipt["location"] == pipeline.server.url
    assert delivery.receipt["sha256"] == hashlib.sha256(body).hexdigest()
    assert delivery.receipt["detail"] == {"status_code": 201, "receipt_id": "R-1",
                                          "attempts": 3, "replayed": False}
    assert ps.state_of(pipeline.ledger, request_id) == "delivered"
    assert pipeline.delivered() == {}  # nothing went to a file drop instead


def test_an_https_400_fails_the_request_for_good(pipeline: ps.Pipeline) -> None:
    request_id = _cbs_request(pipeline, "CBS-D-2")
    pipeline.receiver.always_status = 400

    run = pipeline.dispatch()

    assert run.state.is_completed(), run.state
    assert run.totals is not None
    assert (run.totals["delivered"], run.totals["failed"]) == (0, 1)
    assert pipeline.receiver.requests == 1  # a 400 is not retried
    assert ps.state_of(pipeline.ledger, request_id) == "failed"
    assert ps.deliveries_of(pipeline.ledger, request_id) == []
    (event,) = ps.events_of(pipeline.ledger, request_id, "delivery_failed")
    assert event.payload["permanent"] is True
    assert event.payload["error"] == "DeliveryRejectedError"
    assert event.payload["decision_id"] == pipeline.decision(request_id).id
    assert event.flow_run_id == run.id
    later = pipeline.dispatch()  # an operator acts; the sweeper does not try again
    assert later.totals is not None
    assert later.totals["claimed"] == 0
    assert pipeline.receiver.requests == 1


def test_a_receiver_that_is_down_is_delivered_to_by_a_later_run(pipeline: ps.Pipeline) -> None:
    request_id = _cbs_request(pipeline, "CBS-D-3")
    pipeline.server.stop()  # connection refused on the configured port

    down = pipeline.dispatch(max_batches=3)

    assert down.state.is_completed(), down.state
    assert ps.state_of(pipeline.ledger, request_id) == "decided"
    assert ps.deliveries_of(pipeline.ledger, request_id) == []
    failures = ps.events_of(pipeline.ledger, request_id, "delivery_failed")
    assert [(e.payload["permanent"], e.payload["error"]) for e in failures] == [
        (False, "DeliveryFailedError")]  # one attempt (with its retries) per run
    with Session(pipeline.ledger) as session:
        status = session.get(RequestStatus, request_id)
        assert status is not None
        assert status.claimed_by is None  # released for the next sweep

    pipeline.server.start()
    up = pipeline.dispatch()
    assert up.totals is not None
    assert up.totals["delivered"] == 1
    assert pipeline.receiver.distinct_deliveries == 1
    assert len(ps.deliveries_of(pipeline.ledger, request_id)) == 1
    assert ps.state_of(pipeline.ledger, request_id) == "delivered"
    assert pipeline.decision(request_id).flow_run_id == down.id  # decided once, by the first


def test_a_slow_receiver_gets_one_delivery_when_the_post_is_retried(pipeline: ps.Pipeline) -> None:
    request_id = _cbs_request(pipeline, "CBS-D-4")
    # the configuration has no time-out setting: this partner's destination is given a short one
    pipeline.rt._destinations[ps.HTTPS_PARTNER] = HttpsDestination(
        pipeline.server.url, verify=pipeline.ca_file, timeout=(2.0, 0.5), retries=2,
        backoff=0.05)
    pipeline.receiver.slow, pipeline.receiver.slow_seconds = 1, 2.0

    run = pipeline.dispatch()

    assert run.totals is not None
    assert run.totals["delivered"] == 1
    assert (pipeline.receiver.requests, pipeline.receiver.distinct_deliveries) == (2, 1)
    (delivery,) = ps.deliveries_of(pipeline.ledger, request_id)
    assert delivery.receipt["status"] == "repeat"
    assert delivery.receipt["detail"]["attempts"] == 2


# -- (e) two dispatcher runs at the same time ------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_two_dispatcher_runs_at_once_decide_and_deliver_each_request_once(
        pipeline: ps.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    subjects = sample_subjects(engine=pipeline.register, count=150, seed=7, shielded=False)
    pipeline.drop("belastingdienst", "many.jsonl", ps.jsonl(*(
        ps.tax_request(f"BD-E-{n:03d}", subjects=(subjects[n % len(subjects)],))
        for n in range(200))))
    assert pipeline.collect().totals == {"files": 1, "valid": 200, "invalid": 0, "not_filed": 0}

    # both runs hold a claimed batch before either decides: they really run side by side
    barrier = threading.Barrier(2, timeout=60)
    met: set[int] = set()
    real = flows.pipeline.decide.decide_requests

    def decide_side_by_side(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() not in met:
            met.add(threading.get_ident())
            barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.pipeline.decide, "decide_requests", decide_side_by_side)
    runs: list[ps.Run] = []
    errors: list[BaseException] = []

    def dispatch() -> None:
        try:
            runs.append(pipeline.dispatch(batch_size=30))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=dispatch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert errors == []
    assert len(runs) == 2
    assert all(r.state.is_completed() for r in runs), [r.state for r in runs]
    claimed = [r.totals["claimed"] for r in runs if r.totals]
    assert sum(claimed) == 200  # no request claimed by both
    assert min(claimed) > 0

    decisions = ps.rows(pipeline.ledger, DecisionRow)
    assert len(decisions) == 200
    assert len({d.request_id for d in decisions}) == 200
    assert {d.flow_run_id for d in decisions} == {r.id for r in runs}
    deliveries = ps.rows(pipeline.ledger, DeliveryRow)
    assert len(deliveries) == 200
    assert len({d.request_id for d in deliveries}) == 200
    decided_by = {d.request_id: d.flow_run_id for d in decisions}
    assert all(d.flow_run_id == decided_by[d.request_id] for d in deliveries)
    assert len(pipeline.delivered()["belastingdienst"]) == 200
    assert {s.state for s in ps.rows(pipeline.ledger, RequestStatus)} == {"delivered"}
    assert pipeline.chain_ok()


# -- (f) nothing personal in Prefect ---------------------------------------------------------------

def test_prefect_holds_ids_and_counts_never_a_bsn(pipeline: ps.Pipeline) -> None:
    pipeline.drop("belastingdienst", "tax.jsonl", ps.jsonl(
        ps.tax_request("BD-P-1", subjects=(ps.TAX_SUBJECT, ps.ABSENT)),
        ps.tax_request("BD-P-2") | {"subjects": [{"bsn": ps.BAD_BSN}]}))
    pipeline.drop("inspectie", "pseudo.json", json.dumps(ps.inspectie_request("IV-P-1")))
    pipeline.drop("gemeente-utrecht", "review.json",
                  json.dumps(ps.leerplicht_with_health("UTR-P-1")))
    collected = pipeline.collect()
    dispatched = pipeline.dispatch()
    review_id = pipeline.request("gemeente-utrecht", "UTR-P-1").id
    assert dispatched.totals is not None
    assert dispatched.totals["delivered"] == 2

    expected_tasks = {collected.id: {"list-drop-files", "take-in-files"},
                      dispatched.id: {"claim-requests", "decide-requests", "start-reviews",
                                      "deliver-requests", "release-claims"}}
    ours = [UUID(r.id) for r in (collected, dispatched)]
    with get_client(sync_client=True) as client:
        flow_runs: list[FlowRun] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ours)))
        review_runs = [r for r in deployment_runs(REVIEW)
                       if r.parameters.get("request_id") == review_id]

        def task_runs() -> list[Any]:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ours)))
            names = {run: {t.name.rsplit("-", 1)[0] for t in found
                           if str(t.flow_run_id) == run} for run in expected_tasks}
            return found if all(names[k] >= v for k, v in expected_tasks.items()) else []

        tasks = ps.wait_for(task_runs)

        def logs_with_ours() -> list[Any]:
            found: list[Any] = []
            while page := client.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=ours)), limit=200, offset=len(found)):
                found += page
            return found if any("batch_delivered" in lg.message for lg in found) else []

        logs = ps.wait_for(logs_with_ours)
        states = [s for run in ours for s in client.read_flow_run_states(run)]

        def read_events(resources: EventAnyResourceFilter) -> list[Any]:
            page = client.read_events(filter=EventFilter(any_resource=resources), limit=50)
            found = list(page.events)
            while page.next_page and len(found) < 2000:
                page = client.read_events_page(page.next_page)
                found += page.events
            return found

        events = ps.wait_for(lambda: read_events(EventAnyResourceFilter(
            id=[f"prefect.flow-run.{run}" for run in ours])))
        events += read_events(EventAnyResourceFilter(id_prefix=["disclosure."]))
        artifacts = client.read_artifacts()

    assert len(flow_runs) == 2
    assert tasks, "the task runs of the flows did not reach the API"
    assert {e.event for e in events} >= {"prefect.flow-run.Completed"}
    assert {lg.name for lg in logs} >= {"disclosure.dispatcher", "disclosure.delivery",
                                        "disclosure.dropoff"}, "our log lines did not arrive"

    # parameters: ids and settings only
    assert sorted((r.parameters for r in flow_runs), key=json.dumps) == sorted(
        [{"nudge": False}, {"max_batches": 100, "batch_size": 500}], key=json.dumps)
    assert [r.parameters for r in review_runs] == [{"request_id": review_id}]
    assert all(t.state is not None and t.state.data is None for t in tasks)  # no results kept

    everything = json.dumps([
        [r.model_dump(mode="json") for r in flow_runs + review_runs],
        [t.model_dump(mode="json") for t in tasks],
        [lg.model_dump(mode="json") for lg in logs],
        [s.model_dump(mode="json") for s in states],
        [e.model_dump(mode="json") for e in events],
        [a.model_dump(mode="json") for a in artifacts]])
    leaked = sorted(n for n in ps.ALL_NUMBERS if n in everything)
    assert leaked == []
    assert review_id in everything  # the check did read our runs

"""``disclosure timeline``: one request's history from the ledger and from Prefect.

The Prefect cases run the real flows against the pipeline suite's Prefect test server (the
``prefect`` and ``pipeline`` fixtures of ``tests/test_pipeline.py``): requests are dropped off,
taken in by ``collect-dropoffs`` and decided and delivered by ``process-requests``, and the
command is run as an auditor runs it (``disclosure timeline ID --json``), its exit status and
output checked. Gaps are made as they happen: a flow run deleted in Prefect, a request recorded
by a flow run Prefect never had or at a time its run did not run, a run that decides without
delivering, a dispatcher that dies after starting a review run but before recording it, a review
run that ends without a decision, and a Prefect that cannot be reached.

The ledger-only cases read a synthetic history (``records.synthetic_history``) on SQLite and
PostgreSQL and compare the flags with what the generator says it wrote.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pipeline_support as ps
import pytest
import test_pipeline
from conftest import TEST_CHAIN_KEY_RING
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Completed
from sqlalchemy import Engine, select
from sqlmodel import Session, col

import flows.pipeline.dispatcher
import flows.pipeline.review_runs
from cli.main import main
from flows.audit.request_timeline import timeline_of
from flows.audit.timeline_render import render_text
from legal_bases.request import read_request
from legal_bases.table import GroundTable
from records.ledger import record_submission
from records.models import AuditEvent
from records.pseudonym import Pseudonymizer
from records.synthetic_history import write_history
from records.vocabulary import Channel

BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

# The pipeline suite's Prefect test server and ledger set-up, shared rather than copied.
prefect = test_pipeline.prefect
certificate = test_pipeline.certificate
backend = test_pipeline.backend
pipeline = test_pipeline.pipeline


# -- helpers -------------------------------------------------------------------------------------

def run_timeline(capsys: pytest.CaptureFixture[str], request_id: str, *extra: str,
                 text: bool = False) -> tuple[int, dict[str, Any], str]:
    """``disclosure timeline ID --json`` (and, with ``text``, the same as text):
    (exit status, JSON, text)."""
    code = main(["timeline", request_id, "--json", *extra])
    data = json.loads(capsys.readouterr().out)
    shown = ""
    if text:
        assert main(["timeline", request_id, *extra]) == code
        shown = capsys.readouterr().out
    for number in ps.ALL_NUMBERS:  # no subject number, in either form
        assert number not in shown
        assert number not in json.dumps(data)
    return code, data, shown


def codes(data: dict[str, Any]) -> list[str]:
    return [f["code"] for f in data["flags"]]


def flagged(data: dict[str, Any], code: str) -> list[tuple[str, str]]:
    """The rows (source, what) the flags with ``code`` mark."""
    numbers = {f["number"] for f in data["flags"] if f["code"] == code}
    return [(r["source"], r["what"]) for r in data["rows"] if numbers & set(r["flags"])]


def position(data: dict[str, Any], what: str, run_id: str | None = None,
             source: str = "ledger") -> int:
    """The index of the one row that says ``what`` (of ``run_id``, if given)."""
    found = [i for i, r in enumerate(data["rows"]) if r["what"] == what and r["source"] == source
             and (run_id is None or r["flow_run_id"] == run_id)]
    assert len(found) == 1, (what, run_id, [r["what"] for r in data["rows"]])
    return found[0]


def take_in(pipeline: ps.Pipeline, partner: str, reference: str, body: dict[str, Any],
            ) -> tuple[str, ps.Run]:
    pipeline.drop(partner, f"{reference}.json", json.dumps(body))
    collected = pipeline.collect()
    return pipeline.request(partner, reference).id, collected


def record_by_run(pipeline: ps.Pipeline, reference: str, flow_run_id: str,
                  received_at: datetime) -> str:
    """Record a tax request as a drop-off run would, naming ``flow_run_id`` as that run."""
    body = ps.tax_request(reference, subjects=(ps.TAX_SUBJECT,))
    rt = pipeline.rt
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        row = record_submission(
            session=session, partner_id="belastingdienst", requester_body="belastingdienst",
            channel=Channel.DROPOFF, raw_body=json.dumps(body),
            parsed=read_request(body, received_on=received_at.astimezone(AMSTERDAM).date()),
            received_at=received_at, pseudonymizer=rt.pseudonymizer, flow_run_id=flow_run_id,
            intake_key=f"test:{reference}")
    return row.id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- with Prefect --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_delivered_request_reads_in_order_inside_its_runs_without_flags(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    request_id, collected = take_in(pipeline, "belastingdienst", "BD-T-1",
                                    ps.tax_request("BD-T-1"))
    dispatched = pipeline.dispatch()
    assert dispatched.totals is not None
    assert dispatched.totals["delivered"] == 1

    code, data, text = run_timeline(capsys, request_id, text=True)

    assert code == 0, data["flags"]
    assert data["flags"] == []
    assert data["ok"] is True
    assert (data["request"]["id"], data["request"]["state"]) == (request_id, "delivered")
    ledger = [(r["what"], r["actor"], r["flow_run_id"]) for r in data["rows"]
              if r["source"] == "ledger"]
    assert ledger == [("received", "belastingdienst", collected.id),
                      ("decided", "engine", dispatched.id),
                      ("delivered", "belastingdienst", dispatched.id)]
    # each ledger step inside the state history of the run that recorded it
    assert (position(data, "run Running", collected.id, "prefect")
            < position(data, "received")
            < position(data, "run Completed", collected.id, "prefect"))
    assert (position(data, "run Running", dispatched.id, "prefect")
            < position(data, "decided") < position(data, "delivered")
            < position(data, "run Completed", dispatched.id, "prefect"))
    times = [r["time"] for r in data["rows"]]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)
    runs = {r["id"]: r for r in data["runs"]}
    assert set(runs) == {collected.id, dispatched.id}
    assert runs[dispatched.id]["flow"] == "process-requests"
    assert runs[dispatched.id]["final_state"] == "Completed"
    assert runs[dispatched.id]["per_request"] is False  # a batch run: only lines naming the id
    assert all(request_id in r["detail"] or r["what"].startswith("run ")
               for r in data["rows"] if r["source"] == "prefect" and r["what"].startswith("log"))
    decided = data["rows"][position(data, "decided")]
    assert "approved under awr-55" in decided["detail"]
    assert "released financiele_gegevens, personalia" in decided["detail"]
    # the text: a header, the table with short run ids, and the verdict
    assert text.startswith(f"Timeline of request {request_id}\n")
    assert "time (UTC)" in text.splitlines()[4]
    assert dispatched.id[:8] in text
    assert "No flags" in text

    # Prefect unreachable: the ledger's timeline alone, with the note, exit 1 (not a crash)
    closed = f"http://127.0.0.1:{closed_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: closed}):
        code, data, text = run_timeline(capsys, request_id, text=True)
    assert code == 1
    assert codes(data) == ["prefect_unreachable"]
    assert data["prefect"]["reachable"] is False
    assert closed in data["prefect"]["note"]
    assert {r["source"] for r in data["rows"]} == {"ledger"}
    assert [r["what"] for r in data["rows"]] == ["received", "decided", "delivered"]
    assert f"NOT REACHED — Prefect at {closed}" in text
    # ... and left out on purpose: no flag
    code, data, _ = run_timeline(capsys, request_id, "--ledger-only")
    assert (code, data["flags"], data["prefect"]["consulted"]) == (0, [], False)


def test_a_flow_run_deleted_in_prefect_is_flagged_on_the_steps_it_recorded(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    request_id, collected = take_in(pipeline, "belastingdienst", "BD-T-2",
                                    ps.tax_request("BD-T-2"))
    dispatched = pipeline.dispatch()
    with get_client(sync_client=True) as client:
        client.delete_flow_run(UUID(dispatched.id))

    code, data, text = run_timeline(capsys, request_id, text=True)

    assert code == 1
    assert codes(data) == ["run_unknown"]
    assert data["flags"][0]["flow_run_id"] == dispatched.id
    assert flagged(data, "run_unknown") == [("ledger", "decided"), ("ledger", "delivered")]
    runs = {r["id"]: r for r in data["runs"]}
    assert runs[dispatched.id]["known"] is False
    assert runs[collected.id]["final_state"] == "Completed"
    assert "FLAGS (1):\n  [!1] run_unknown: Prefect does not know" in text
    assert f"{dispatched.id}  UNKNOWN to Prefect" in text


def test_a_run_prefect_never_had_and_an_event_outside_its_run_are_flagged(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    earlier = pipeline.dispatch()  # a run that claims nothing and is over
    now = datetime.now(UTC)
    stranger = str(uuid4())
    never = record_by_run(pipeline, "BD-T-3", stranger, now)
    early = record_by_run(pipeline, "BD-T-4", earlier.id, now - timedelta(hours=1))
    dispatched = pipeline.dispatch()
    assert dispatched.totals is not None
    assert dispatched.totals["delivered"] == 2

    code, data, _ = run_timeline(capsys, never)
    assert code == 1
    assert codes(data) == ["run_unknown"]
    assert flagged(data, "run_unknown") == [("ledger", "received")]
    assert stranger in data["flags"][0]["message"]

    code, data, _ = run_timeline(capsys, early)
    assert code == 1
    assert codes(data) == ["outside_run"]
    assert flagged(data, "outside_run") == [("ledger", "received")]
    assert earlier.id[:8] in data["flags"][0]["message"]


def test_a_run_that_decides_to_release_but_never_delivers_is_flagged(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    request_id, _ = take_in(pipeline, "belastingdienst", "BD-T-5", ps.tax_request("BD-T-5"))

    def no_delivery(request_ids: list[str], flow_run_id: str | None) -> dict[str, Any]:
        return {"delivered": 0, "failed_transient": 0, "failed_permanent": 0, "to_review": [],
                "set_aside": []}

    monkeypatch.setattr(flows.pipeline.dispatcher, "deliver_batch", no_delivery)
    dispatched = pipeline.dispatch()
    assert dispatched.state.is_completed()

    code, data, _ = run_timeline(capsys, request_id)

    assert code == 1
    assert sorted(codes(data)) == ["delivery_missing", "run_completed_step_missing"]
    assert flagged(data, "delivery_missing") == [("ledger", "decided")]
    assert flagged(data, "run_completed_step_missing") == [
        ("ledger", "decided"), ("prefect", "run Completed")]


def test_a_refused_delivery_shows_the_batch_runs_line_about_the_request(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline.drop(ps.HTTPS_PARTNER, "CBS-T-1.json", json.dumps(ps.cbs_request("CBS-T-1")))
    pipeline.collect()
    request_id = pipeline.request(ps.HTTPS_PARTNER, "CBS-T-1").id
    pipeline.receiver.always_status = 400
    dispatched = pipeline.dispatch()
    assert dispatched.totals is not None
    assert dispatched.totals["failed"] == 1

    def with_logs() -> tuple[int, dict[str, Any], str] | None:
        found = run_timeline(capsys, request_id)
        run = next(r for r in found[1]["runs"] if r["id"] == dispatched.id)
        return found if run["log_lines_shown"] else None

    code, data, _ = ps.wait_for(with_logs)

    assert code == 1
    assert codes(data) == ["delivery_missing"]
    assert "the destination refused it for good" in data["flags"][0]["message"]
    assert flagged(data, "delivery_missing") == [("ledger", "decided"),
                                                ("ledger", "delivery failed")]
    run = next(r for r in data["runs"] if r["id"] == dispatched.id)
    logs = [r for r in data["rows"] if r["what"].startswith("log ")]
    # of the batch run's lines, only the one naming this request is shown, and all are counted
    assert [(r["what"], r["actor"], r["flow_run_id"]) for r in logs] == [
        ("log WARNING", "disclosure.delivery", dispatched.id)]
    assert logs[0]["detail"].startswith("delivery_failed ")
    assert "error=DeliveryRejectedError" in logs[0]["detail"]
    assert run["log_lines"] > run["log_lines_shown"] == 1


def test_a_review_run_the_ledger_missed_and_one_that_ended_without_a_decision(
        pipeline: ps.Pipeline, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    request_id, _ = take_in(pipeline, "gemeente-utrecht", "UTR-T-1",
                            ps.leerplicht_with_health("UTR-T-1"))
    with monkeypatch.context() as patch:
        # the dispatcher dies between starting the review run and putting it on the record
        ps.no_retries(patch, flows.pipeline.dispatcher, "start_reviews")
        ps.fail_once(patch, flows.pipeline.review_runs, "record_review_started")
        failed = pipeline.dispatch()
    assert failed.state.is_failed()

    code, data, text = run_timeline(capsys, request_id, text=True)

    assert code == 1
    # flags marked inline (the rows they are about) and listed at the end
    (assessed,) = [line for line in text.splitlines() if "assessed: needs review" in line]
    assert assessed.startswith("!")
    assert "FLAGS (3):" in text
    assert sorted(codes(data)) == ["review_missing", "run_failed_but_recorded",
                                   "run_not_in_ledger"]
    assert flagged(data, "run_failed_but_recorded") == [
        ("ledger", "assessed: needs review"), ("prefect", "run Failed")]
    (review_run,) = [r for r in data["runs"] if r["flow"] == "review-request"]
    assert review_run["per_request"] is True
    assert [f["flow_run_id"] for f in data["flags"] if f["code"] == "run_not_in_ledger"] == [
        review_run["id"]]

    pipeline.dispatch()  # the next sweep puts the (same) review run on the record

    code, data, _ = run_timeline(capsys, request_id)
    assert code == 1
    assert codes(data) == ["run_failed_but_recorded"]  # what happened stays on the record
    started = data["rows"][position(data, "review run started")]
    assert review_run["id"][:8] in started["detail"]
    assert any(n.startswith("review pending") for n in data["notes"])
    assert position(data, "assessed: needs review") < position(data, "review run started")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(review_run["id"]), Completed(), force=True)
    code, data, _ = run_timeline(capsys, request_id)
    assert sorted(codes(data)) == ["run_completed_step_missing", "run_failed_but_recorded"]

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(review_run["id"]), Cancelled(), force=True)
    code, data, _ = run_timeline(capsys, request_id)
    assert sorted(codes(data)) == ["review_missing", "run_failed_but_recorded"]
    assert flagged(data, "review_missing") == [("ledger", "assessed: needs review"),
                                              ("ledger", "review run started"),
                                              ("prefect", "run Cancelled")]


# -- without Prefect -----------------------------------------------------------------------------

def test_an_unknown_request_id_is_a_usage_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    assert main(["timeline", "0b0b0b0b-0000-4000-8000-000000000000"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "no request '0b0b0b0b-0000-4000-8000-000000000000'" in err


@pytest.fixture
def history(ledger_engine: Engine, shipped_table: GroundTable) -> Any:
    pseudonymizer = Pseudonymizer(bytes.fromhex("cd" * 32))
    return write_history(engine=ledger_engine, pseudonymizer=pseudonymizer,
                        tables=[(datetime(2020, 1, 1, tzinfo=UTC), shipped_table)],
                         requests=120, seed=6, start=datetime(2026, 1, 5, tzinfo=UTC),
                         end=datetime(2026, 2, 20, tzinfo=UTC))


@pytest.mark.parametrize("ledger_engine", ["sqlite", "postgresql"], indirect=True)
def test_the_ledger_alone_flags_exactly_the_reviews_that_went_wrong(
        ledger_engine: Engine, history: Any) -> None:
    now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    with Session(ledger_engine) as session:
        escalated = set(session.execute(select(col(AuditEvent.request_id)).where(
            col(AuditEvent.kind) == "review_escalated")).scalars())
    assert escalated, "the history should hold an escalated review"
    seen: set[str] = set()
    for truth in history.truths:
        found = timeline_of(ledger_engine, truth.request_id, prefect_api_url=None, now=now)
        assert found is not None
        data = found.to_dict()
        whats = [r["what"] for r in data["rows"]]
        assert {r["source"] for r in data["rows"]} == {"ledger"}
        assert whats[0] == ("received" if truth.valid else "received (invalid)")
        assert [r["time"] for r in data["rows"]] == sorted(r["time"] for r in data["rows"])
        if truth.delivered:
            assert whats[-1] == "delivered"
        expected: set[str] = set()
        if truth.review_pending:
            expected.add("review_missing")  # no review run started, nobody answered
            if truth.request_id in escalated:
                expected.add("review_escalated")
            elif truth.deadline is not None and truth.deadline < now.date():
                expected.add("review_overdue")
        elif truth.reviewed:
            assert truth.deadline is not None
            if truth.decided_at.astimezone(AMSTERDAM).date() > truth.deadline:
                expected.add("review_overdue")  # decided late, never escalated
        assert set(codes(data)) == expected, (truth, data["flags"])
        seen |= expected
        assert render_text(found).count("[!") == len(data["flags"])
    assert seen >= {"review_missing", "review_escalated"}


@pytest.mark.parametrize("ledger_engine", ["sqlite", "postgresql"], indirect=True)
def test_a_request_left_undecided_is_flagged_only_once_the_sweeps_had_their_time(
        ledger_engine: Engine) -> None:
    received_at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    body = ps.tax_request("BD-T-9", subjects=(ps.TAX_SUBJECT,))
    with Session(ledger_engine, expire_on_commit=False) as session, session.begin():
        row = record_submission(
            session=session, partner_id="belastingdienst", requester_body="belastingdienst",
            channel=Channel.API, raw_body=json.dumps(body),
            parsed=read_request(body, received_on=received_at.astimezone(AMSTERDAM).date()),
            received_at=received_at, pseudonymizer=Pseudonymizer(bytes.fromhex("cd" * 32)))

    soon = timeline_of(ledger_engine, row.id, prefect_api_url=None,
                       now=received_at + timedelta(minutes=10))
    late = timeline_of(ledger_engine, row.id, prefect_api_url=None,
                       now=received_at + timedelta(hours=3))

    assert soon is not None
    assert late is not None
    assert soon.flags == []
    assert soon.notes == ["not decided yet: the dispatcher's next sweep takes it"]
    data = late.to_dict()
    assert codes(data) == ["not_decided"]
    assert "3.0 hours" in data["flags"][0]["message"]
    assert flagged(data, "not_decided") == [("ledger", "received")]
    assert data["rows"][0]["flow_run_id"] is None  # the intake API records with no flow run
    assert "received" in render_text(late)

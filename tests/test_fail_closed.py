"""Fail closed (DESIGN.md section 10): nothing refused is ever released, no submission can stop
the others, and the record says so.

Each test follows a strange or refused submission past the door: through the intake API (real
HTTP on loopback) or a drop-off file, then through the dispatcher's own steps (decide, fetch,
deliver into a real file drop) and the audit tools (verification, replay), on SQLite and
PostgreSQL. The steps run without Prefect here — the flows only put them in order; the fault
suite (``tests/faults/``) runs them in Prefect and kills them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pipeline_support as ps
import pytest
import requests
from conftest import TEST_CHAIN_KEYS, opened_raw_body
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlmodel import Session, col
from test_intake_api import Api, issue, running_api

import records.decisions
import records.ledger
from connectors.dropoff import DropFile
from connectors.partners import load_partners
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register
from flows.pipeline import decide, deliver, take_in
from flows.review.flow import load_review, take_answer
from flows.review.form import review_form
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.assessment import assess
from legal_bases.decision import Decision, Reason
from legal_bases.request import DisclosureRequest, read_request
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReasonCode
from records import totp
from records.api_keys import key_hash, revoke_keys
from records.chain import chain_head
from records.decisions import DecisionItem, record_decisions, record_decisions_apart
from records.deliveries import DeliveryItem, record_deliveries
from records.ledger import decisions_for, received_on, status_of
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestRow
from records.pseudonym import Pseudonymizer
from records.queue import claim_requests, release_claims
from records.replay import replay_request
from records.replay_results import ReplayStatus
from records.reviews import enroll_reviewer, remove_reviewer, verify_code
from records.settings import load_settings
from records.totp import SecretSeal
from records.verification import verify_record

ROOT = Path(__file__).parents[1]
BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
pytestmark = pytest.mark.parametrize("ledger_engine", BACKENDS, indirect=True)

#: A Belastingdienst request for a subject the test register holds (delivered when approved).
TAX = ps.tax_request("BD-FC-1", subjects=(ps.TAX_SUBJECT,), categories=("personalia",))


@dataclass
class Dispatcher:
    """The engine's runtime on the test ledger, its dispatcher's steps, and where its
    deliveries land."""

    rt: Runtime
    outbox: Path

    @property
    def ledger(self) -> Engine:
        return self.rt.ledger

    def dispatch(self) -> tuple[decide.Decided, deliver.Delivered]:
        """One sweep of the dispatcher: claim everything waiting, decide it, deliver it."""
        with Session(self.ledger) as session, session.begin():
            claimed = claim_requests(session=session, worker="test", limit=10_000,
                                     lease=timedelta(minutes=1), now=datetime.now(UTC))
        try:
            decided = decide.decide_requests(self.rt, claimed, flow_run_id=None)
            return decided, deliver.deliver_requests(self.rt, decided.deliver, flow_run_id=None)
        finally:
            with Session(self.ledger) as session, session.begin():
                release_claims(session=session, worker="test", request_ids=claimed)

    def files(self) -> list[Path]:
        """Every file under the outbox (temporary files included)."""
        return sorted(p for p in self.outbox.rglob("*") if p.is_file())


@pytest.fixture
def engine(ledger_engine: Engine, tmp_path: Path) -> Iterator[Dispatcher]:
    settings = load_settings(data_dir=tmp_path / "data", pseudonym_key=ps.PSEUDONYM_KEY,
                             partners_file=ROOT / "examples" / "partners.yaml")
    register = make_register_engine(f"sqlite:///{tmp_path / 'register.db'}")
    ensure_register(engine=register, persons=ps.REGISTER_PERSONS, seed=ps.REGISTER_SEED,
                    include=list(ps.IN_REGISTER))
    rt = Runtime(settings=settings, ledger=ledger_engine, register_engine=register,
                 table=settings.ground_table(), partners=load_partners(settings.partners_file),
                 pseudonymizer=Pseudonymizer.from_settings(settings))
    try:
        yield Dispatcher(rt, settings.resolved_outbox_dir)
    finally:
        rt._http.close()
        register.dispose()


@pytest.fixture
def api(engine: Dispatcher, shipped_table: GroundTable) -> Iterator[Api]:
    with running_api(engine.ledger, shipped_table, partners=engine.rt.partners) as running:
        yield running


def verified(ledger: Engine) -> list[str]:
    """The problem codes ``audit verify`` finds (warnings included)."""
    with Session(ledger) as session:
        return sorted({p.code for p in verify_record(session=session).problems})


def replayed(ledger: Engine, request_id: str) -> ReplayStatus:
    return replay_request(ledger, request_id).status


def row_of(ledger: Engine, request_id: str) -> RequestRow:
    with Session(ledger, expire_on_commit=False) as session:
        row = session.get(RequestRow, request_id)
        assert row is not None
        return row


def state(ledger: Engine, request_id: str) -> str:
    with Session(ledger) as session:
        found = status_of(session=session, request_id=request_id)
        assert found is not None
        return found.state


# -- a submission refused at the door is never released --------------------------------------------

def test_a_submission_answered_409_is_rejected_and_never_delivered(engine: Dispatcher,
                                                                  api: Api) -> None:
    first = api.post(TAX)
    assert first.status_code == 202, first.text
    wider = {**TAX, "categories": ["personalia", "financiele_gegevens"]}
    conflict = api.post(wider)
    assert conflict.status_code == 409, conflict.text
    refused_id = conflict.json()["request_id"]
    assert row_of(engine.ledger, refused_id).valid is False

    decided, delivered = engine.dispatch()

    accepted_id = first.json()["id"]
    assert decided.deliver == [accepted_id]
    assert refused_id in decided.rejected
    with Session(engine.ledger) as session:
        (decision,) = decisions_for(session=session, request_id=refused_id)
    assert (decision.outcome, decision.released) == ("rejected", [])
    assert [r["code"] for r in decision.reasons] == ["invalid_request"]
    assert state(engine.ledger, refused_id) == "rejected"
    # one delivery, of the accepted request, with its one category
    assert delivered.delivered == 1
    (only,) = engine.files()
    document = json.loads(only.read_text("utf-8"))
    assert document["disclosure"]["request_id"] == accepted_id
    assert document["disclosure"]["released"] == ["personalia"]
    assert ps.count(engine.ledger, DeliveryRow) == 1
    # and the audit tools agree with what happened
    assert verified(engine.ledger) == []
    assert replayed(engine.ledger, refused_id) is ReplayStatus.AGREES
    assert replayed(engine.ledger, accepted_id) is ReplayStatus.AGREES


def test_a_refused_submission_is_rejected_however_well_formed_its_body(
        engine: Dispatcher, api: Api) -> None:
    """A 403 (a ground of another body) and a 409 both have bodies that read as requests: the
    intake refused them, so the dispatcher rejects them with the errors recorded at intake."""
    assert api.post(TAX).status_code == 202
    not_ours = api.post({**TAX, "reference": "UWV-1"}, partner="uwv")
    assert not_ours.status_code == 403
    again = api.post({**TAX, "due_date": "2030-01-01"})
    assert again.status_code == 409
    decided, _ = engine.dispatch()
    for answer in (not_ours, again):
        request_id = answer.json()["request_id"]
        assert request_id in decided.rejected
        with Session(engine.ledger) as session:
            (decision,) = decisions_for(session=session, request_id=request_id)
        assert [r["code"] for r in decision.reasons] == ["invalid_request"]
        assert replayed(engine.ledger, request_id) is ReplayStatus.AGREES
    assert verified(engine.ledger) == []


def test_the_gate_refuses_a_release_for_a_refused_submission_even_when_decided_approved(
        engine: Dispatcher, api: Api) -> None:
    """Were a bug upstream to decide a refused submission ``approved`` (as the last release
    did), the delivery step itself refuses it: it is set aside, nothing leaves, and every audit
    tool names it."""
    assert api.post(TAX).status_code == 202
    refused_id = api.post({**TAX, "categories": ["personalia", "opleidingsgegevens"]}).json()[
        "request_id"]
    engine.dispatch()
    forged = _approve_as_the_old_dispatcher_did(engine, refused_id)

    _, delivered = engine.dispatch()
    assert delivered.delivered == 0
    with Session(engine.ledger) as session, session.begin():
        claimed = claim_requests(session=session, worker="t", limit=10, lease=timedelta(1),
                                 now=datetime.now(UTC))
    assert claimed == []  # set aside: failed, not waiting for delivery again
    done = deliver.deliver_requests(engine.rt, [refused_id], flow_run_id=None)
    assert (done.delivered, done.set_aside) == (0, [])  # failed now: nothing to deliver
    assert len(engine.files()) == 1  # the accepted request's delivery only
    assert state(engine.ledger, refused_id) == "failed"
    kinds = [e.kind for e in ps.events_of(engine.ledger, refused_id)]
    assert kinds[-1] == "request_set_aside"
    (aside,) = ps.events_of(engine.ledger, refused_id, "request_set_aside")
    assert aside.payload == {"state": "failed", "step": "deliver", "reason": "release_refused",
                             "detail": "request_invalid"}
    assert "release_for_invalid_request" in verified(engine.ledger)
    assert replayed(engine.ledger, refused_id) is ReplayStatus.DIFFERS
    assert forged.id not in {d.decision_id for d in ps.rows(engine.ledger, DeliveryRow)}


def test_verification_names_a_delivery_made_for_a_refused_submission(engine: Dispatcher,
                                                                     api: Api) -> None:
    """The record the last release wrote: a refused submission decided approved and delivered,
    every row with its event. The chain is intact; the record is not."""
    assert api.post(TAX).status_code == 202
    refused_id = api.post({**TAX, "categories": ["personalia", "opleidingsgegevens"]}).json()[
        "request_id"]
    engine.dispatch()
    forged = _approve_as_the_old_dispatcher_did(engine, refused_id)
    with Session(engine.ledger) as session, session.begin():
        record_deliveries(session=session, items=[DeliveryItem(
            request_id=refused_id, decision_id=forged.id, partner_id="belastingdienst",
            destination="file_drop", receipt={"sha256": "0" * 64}, delivered_at=datetime.now(UTC),
            released=tuple(forged.released))])
    found = verified(engine.ledger)
    assert {"release_for_invalid_request", "delivery_for_invalid_request"} <= set(found)
    assert "hash_mismatch" not in found  # the chain itself is intact: the rows say what happened
    assert replayed(engine.ledger, refused_id) is ReplayStatus.DIFFERS


def test_one_delivery_is_recorded_per_decision_and_one_that_claims_more_is_named(
        engine: Dispatcher, api: Api) -> None:
    request_id = api.post(TAX).json()["id"]
    engine.dispatch()
    with Session(engine.ledger) as session:
        (decision,) = decisions_for(session=session, request_id=request_id)

    def claim(decision_id: str, sha: str) -> None:
        with Session(engine.ledger) as session, session.begin():
            record_deliveries(session=session, items=[DeliveryItem(
                request_id=request_id, decision_id=decision_id, partner_id="belastingdienst",
                destination="file_drop", receipt={"sha256": sha}, delivered_at=datetime.now(UTC),
                released=("financiele_gegevens", "personalia"))])

    claim(decision.id, "1" * 64)  # a second worker recording the same decision's delivery
    assert ps.count(engine.ledger, DeliveryRow) == 1
    with Session(engine.ledger, expire_on_commit=False) as session, session.begin():
        other = _record_approval(session, engine, request_id, released=(Category.PERSONALIA,))
    claim(other.id, "2" * 64)  # a delivery claiming more than its decision released
    assert "delivery_categories_differ" in verified(engine.ledger)


def _record_approval(session: Session, engine: Dispatcher, request_id: str,
                     released: tuple[Category, ...]) -> DecisionRow:
    table = engine.rt.table
    decision = Decision(Outcome.APPROVED, Body.BELASTINGDIENST, table.hash,
                        (Reason(ReasonCode.GROUND_APPLIES,
                                table.grounds["awr-55"].versions[0].citation, released),),
                        released=released, ground_id="awr-55",
                        ground_version=table.grounds["awr-55"].versions[0].id)
    (row,) = record_decisions(session=session, table=table, items=[DecisionItem(
        request_id=request_id, decision=decision, decided_at=datetime.now(UTC),
        decided_by="operator")])
    return row


def _approve_as_the_old_dispatcher_did(engine: Dispatcher, request_id: str) -> DecisionRow:
    """What 0.3.0's dispatcher recorded for a 409: the body's assessment (approved), as a
    decision superseding the rejection, with its event — through the ledger's own functions."""
    from records.replay import read_recorded  # noqa: PLC0415 - the old reading, on purpose

    row = row_of(engine.ledger, request_id)
    raw = opened_raw_body(engine.ledger, request_id)
    assert raw is not None
    decision = assess(read_recorded(raw, row.received_at), Body(row.requester_body),
                      engine.rt.table)
    assert decision.outcome is Outcome.APPROVED
    with Session(engine.ledger, expire_on_commit=False) as session, session.begin():
        (recorded,) = record_decisions(session=session, table=engine.rt.table, items=[
            DecisionItem(request_id=request_id, decision=decision,
                         decided_at=datetime.now(UTC))])
    return recorded


# -- no submission stops the others ---------------------------------------------------------------

def test_submissions_with_an_overlong_ground_stop_no_decision(engine: Dispatcher, api: Api) -> None:
    """A legal_basis one character longer than the column is answered 422 and recorded; then
    decided rejected like any invalid submission, while every other request is decided."""
    overlong = "a" * (limits.MAX_SLUG_LENGTH + 1)
    poison = [api.post({**TAX, "reference": f"P-{i}", "legal_basis": overlong})
              for i in range(25)]
    assert {p.status_code for p in poison} == {422}
    good = [api.post({**TAX, "reference": f"G-{i}"}) for i in range(30)]
    assert {g.status_code for g in good} == {202}

    decided, delivered = engine.dispatch()

    assert len(decided.rejected) == 25
    assert len(decided.deliver) == 30
    assert decided.set_aside == []
    assert delivered.delivered == 30
    with Session(engine.ledger) as session:
        ground_ids = set(session.execute(select(DecisionRow.ground_id).where(
            col(DecisionRow.outcome) == "rejected")).scalars())
    assert ground_ids == {None}
    assert verified(engine.ledger) == []


def test_a_decision_that_cannot_be_recorded_is_set_aside_and_the_others_are_recorded(
        engine: Dispatcher, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever value does not fit (here: a decision naming a 65-character ground, as the last
    release wrote), the request is set aside visibly and the batch goes on — first by the
    length check, and, with the check gone, by the database's own refusal."""
    ids = [api.post({**TAX, "reference": f"R-{i}"}).json()["id"] for i in range(4)]
    table = engine.rt.table
    good = assess(ps_request(), Body.BELASTINGDIENST, table)
    bad = Decision(Outcome.REJECTED, Body.BELASTINGDIENST, table.hash,
                   good.reasons[:1], ground_id="x" * (limits.MAX_SLUG_LENGTH + 1))

    def items() -> list[DecisionItem]:
        now = datetime.now(UTC)
        return [DecisionItem(request_id=rid, decision=bad if i % 2 else good, decided_at=now)
                for i, rid in enumerate(ids)]

    with Session(engine.ledger, expire_on_commit=False) as session, session.begin():
        recorded, aside = record_decisions_apart(session=session, table=table,
                                                 items=items()[:2])
    assert [r.request_id for r in recorded] == [ids[0]]
    assert [(a.request_id, a.reason, a.detail) for a in aside] == [
        (ids[1], "value_too_long", "decisions.ground_id holds at most 64 characters")]

    monkeypatch.setattr(records.decisions, "overlong", lambda *_: [])  # the database must refuse
    with Session(engine.ledger, expire_on_commit=False) as session, session.begin():
        recorded, aside = record_decisions_apart(session=session, table=table,
                                                 items=items()[2:])
    assert [r.request_id for r in recorded] == [ids[2]]
    assert [(a.request_id, a.reason) for a in aside] == [(ids[3], "not_recordable")]
    for request_id in (ids[1], ids[3]):
        assert state(engine.ledger, request_id) == "failed"
        (event,) = ps.events_of(engine.ledger, request_id, "request_set_aside")
        assert event.payload["step"] == "decide"
    assert [state(engine.ledger, i) for i in (ids[0], ids[2])] == ["decided", "decided"]
    assert verified(engine.ledger) == []


def ps_request() -> DisclosureRequest:
    """:data:`TAX` as the engine reads it today."""
    request = read_request(TAX, received_on=received_on(datetime.now(UTC)))
    assert isinstance(request, DisclosureRequest)
    return request


# -- duplicate keys -----------------------------------------------------------------------------

DUPLICATED = ('{"reference": "BD-DUP-1", "legal_basis": "awr-55", "purpose": "belastingheffing", '
              '"case_reference": "FIN/1", "categories": ["personalia"], '
              f'"subjects": [{{"bsn": "{ps.ABSENT.number}"}}], '
              f'"subjects": [{{"bsn": "{ps.TAX_SUBJECT.number}"}}]}}')


def test_a_dropped_file_with_a_duplicated_key_is_refused_with_its_path(engine: Dispatcher) -> None:
    folder = engine.rt.settings.resolved_dropoff_dir / "belastingdienst"
    folder.mkdir(parents=True)
    path = folder / "dup.json"
    path.write_text(DUPLICATED, "utf-8")
    taken = take_in.take_in_file(engine.rt, DropFile("belastingdienst", path,
                                                   hashlib.sha256(path.read_bytes()).hexdigest()))
    assert (taken.valid, taken.invalid) == (0, 1)
    row = row_of(engine.ledger, taken.request_ids[0])
    assert DUPLICATED not in row.raw_body  # sealed ...
    assert opened_raw_body(engine.ledger, row.id) == DUPLICATED  # ... and nothing lost
    assert [(e["path"], e["code"]) for e in row.validation_errors] == [("subjects",
                                                                       "duplicate_key")]
    decided, delivered = engine.dispatch()
    assert decided.rejected == [row.id]
    assert delivered.delivered == 0
    assert engine.files() == []


def test_replay_does_not_read_a_duplicated_key_recorded_as_valid(engine: Dispatcher) -> None:
    """A submission recorded valid before duplicates were refused no longer reads as a request:
    replay says so instead of agreeing with whichever value won."""
    with Session(engine.ledger, expire_on_commit=False) as session, session.begin():
        request = ps_request()
        row = records.ledger.record_submission(
            session=session, partner_id="belastingdienst", requester_body="belastingdienst",
            channel="api", raw_body=DUPLICATED, parsed=request, received_at=datetime.now(UTC),
            pseudonymizer=engine.rt.pseudonymizer)
    engine.dispatch()
    assert replay_request(engine.ledger, row.id).status is ReplayStatus.CANNOT_REPLAY
    with Session(engine.ledger) as session:
        (decision,) = decisions_for(session=session, request_id=row.id)
    assert decision.outcome == "rejected"  # the dispatcher reads it strictly too
    assert ps.count(engine.ledger, DeliveryRow) == 0
    with Session(engine.ledger) as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() > 0


# -- a reviewer's code counts as of its submission ----------------------------------------------

def test_a_code_valid_when_submitted_counts_however_late_the_run_takes_it(
        engine: Dispatcher, api: Api) -> None:
    """The run may sit in Resuming for minutes after a restart; the one-time code the reviewer
    typed is checked as of the moment the form was submitted (the Prefect server's time of the
    stored input), still once."""
    api.keys["om-midden-nederland"] = issue(engine.ledger, "om-midden-nederland")
    body = json.loads((ROOT / "examples/requests/om-midden-nederland/126nd-financial.json")
                      .read_text("utf-8"))
    request_id = api.post(body, partner="om-midden-nederland").json()["id"]
    engine.dispatch()
    assert state(engine.ledger, request_id) == "awaiting_review"
    seal = SecretSeal(engine.rt.settings.pseudonym_key_bytes())
    with Session(engine.ledger) as session, session.begin():
        secret = enroll_reviewer(session=session, reviewer_id="anna", name="Anna",
                                 role="jurist", seal=seal, now=datetime.now(UTC))
    typed = datetime.now(UTC) - timedelta(seconds=150)  # five code steps ago
    review = load_review(engine.rt, request_id)
    assert review is not None
    form = review_form(review.proposal)(
        decision="approve", motivation="The vordering names this suspect; the data are needed.",
        reviewer_id="anna", code=totp.code_at(secret, totp.step_of(typed.timestamp())))
    # checked as of now (the last release), the code has expired
    assert take_answer(engine.rt, review, form, flow_run_id=None) == "refused"
    review = load_review(engine.rt, request_id)
    assert review is not None
    assert take_answer(engine.rt, review, form, flow_run_id=None, submitted=typed) == "decided"
    (_, answer) = ps.events_of(engine.ledger, request_id, "review_answer_recorded")
    assert answer.payload["accepted"] is True
    assert datetime.fromisoformat(answer.payload["submitted_at"]) == typed
    review = load_review(engine.rt, request_id)
    # the same code once more: spent
    assert review is not None
    assert review.reviewed
    with Session(engine.ledger) as session, session.begin():
        assert verify_code(session=session, reviewer_id="anna", code=form.code, seal=seal,
                           now=typed) == "code_reused"


# -- an insider with the database but not the chain key -----------------------------------------

@contextmanager
def guards_off(engine: Engine) -> Iterator[Connection]:
    """Commit changes with the append-only triggers off: an insider with database rights."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for name in connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars().all():
                connection.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield connection


def test_a_forged_approval_with_a_made_up_seal_is_set_aside(engine: Dispatcher,
                                                            api: Api) -> None:
    request_id = api.post(TAX).json()["id"]
    engine.dispatch()  # delivered; now an insider adds a second, wider approval
    decision_id = str(uuid.uuid4())
    with Session(engine.ledger) as session:
        seq, head = chain_head(session=session)
        (first,) = decisions_for(session=session, request_id=request_id)
    with guards_off(engine.ledger) as db:
        db.execute(insert(DecisionRow.__table__), [{  # type: ignore[attr-defined]
            **first.model_dump(), "id": decision_id, "sequence": 2, "supersedes": first.id,
            "released": ["financiele_gegevens", "personalia"], "decided_by": "engine"}])
        db.execute(insert(AuditEvent.__table__), [{  # type: ignore[attr-defined]
            "seq": seq + 1, "id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC),
            "kind": "decision_recorded", "request_id": request_id, "actor": "engine",
            "flow_run_id": None, "prev_hash": head, "hash": "f" * 64,
            "key_id": TEST_CHAIN_KEYS.current.key_id,
            "payload": {"decision_id": decision_id, "outcome": "approved", "state": "decided",
                        "released": ["financiele_gegevens", "personalia"]}}])
        db.execute(text("UPDATE request_status SET state = 'decided' WHERE request_id = :r"),
                   {"r": request_id})
    before = engine.files()
    _, delivered = engine.dispatch()
    assert delivered.delivered == 0
    assert engine.files() == before  # nothing more left
    (aside,) = ps.events_of(engine.ledger, request_id, "request_set_aside")
    assert aside.payload["detail"] == "decision_event_missing"
    assert "hash_mismatch" in verified(engine.ledger)


def test_a_reviewer_written_into_the_database_cannot_decide(engine: Dispatcher) -> None:
    seal = SecretSeal(engine.rt.settings.pseudonym_key_bytes())
    now = datetime.now(UTC)
    with Session(engine.ledger) as session, session.begin():
        secret = enroll_reviewer(session=session, reviewer_id="anna", name="Anna",
                                 role="jurist", seal=seal, now=now)
        enroll_reviewer(session=session, reviewer_id="cees", name="Cees", role="jurist",
                        seal=seal, now=now)
        remove_reviewer(session=session, reviewer_id="cees", now=now)
    with guards_off(engine.ledger) as db:
        # bram, with anna's sealed secret: anna's code would count as bram's
        db.execute(text("INSERT INTO reviewers SELECT 'bram', 'Bram', 'senior_jurist', "
                        "totp_secret_sealed, enrolled_at FROM reviewers WHERE id = 'anna'"))
        # and cees's removal undone
        db.execute(text("DELETE FROM reviewer_removals WHERE reviewer_id = 'cees'"))
        # and cees given anna's secret
        db.execute(text("UPDATE reviewers SET totp_secret_sealed = (SELECT totp_secret_sealed "
                        "FROM reviewers WHERE id = 'anna') WHERE id = 'cees'"))
    code = totp.code_at(secret, totp.step_of(now.timestamp()))
    with Session(engine.ledger) as session, session.begin():
        assert verify_code(session=session, reviewer_id="bram", code=code, seal=seal,
                           now=now) == "reviewer_not_on_record"
        assert verify_code(session=session, reviewer_id="cees", code=code, seal=seal,
                           now=now) == "reviewer_not_on_record"
        assert not isinstance(verify_code(session=session, reviewer_id="anna", code=code,
                                          seal=seal, now=now), str)
    found = verified(engine.ledger)
    assert {"reviewer_without_event", "event_without_removal"} <= set(found)


def test_an_api_key_written_into_the_database_opens_nothing(engine: Dispatcher,
                                                          api: Api) -> None:
    """A key row an insider inserted (a key they chose) is refused; a revocation whose row was
    deleted still holds."""
    forged_key = "dk_c1b2c3d4e5f60710_" + "A" * 43
    revoked = issue(engine.ledger, "uwv")
    with Session(engine.ledger) as session, session.begin():
        revoke_keys(session=session, partner_id="uwv", key_ids=None,
                    revoked_at=datetime.now(UTC), revoked_by="operator")
    with guards_off(engine.ledger) as db:
        db.execute(text("INSERT INTO api_keys (key_id, partner_id, key_hash, issued_at, "
                        "issued_by) VALUES (:k, 'belastingdienst', :h, :t, 'insider')"),
                   {"k": "c1b2c3d4e5f60710", "h": key_hash(forged_key), "t": datetime.now(UTC)})
        db.execute(text("DELETE FROM api_key_revocations"))
    for key in (forged_key, revoked):
        answer = requests.post(f"{api.url}/v1/requests", json=TAX, timeout=10,
                               headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 401, answer.text
    assert {"api_key_without_event", "event_without_revocation"} <= set(verified(engine.ledger))


def test_a_reference_of_escape_codes_is_not_kept_for_display(engine: Dispatcher,
                                                             api: Api) -> None:
    """An invalid submission's reference goes into a column operators' commands print: only
    printable text does (the raw body keeps what was sent)."""
    answer = api.post({**TAX, "reference": "X\x1b[2J\x1b[31mRED"})
    assert answer.status_code == 422
    row = row_of(engine.ledger, answer.json()["request_id"])
    assert row.reference is None
    assert "\x1b[2J" in json.loads(opened_raw_body(engine.ledger, row.id) or "{}")["reference"]

"""Claims never hand one request to two workers; deliveries are recorded once, with receipts."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from test_ledger import (
    DECIDED,
    FILE_BACKED,
    PSEUDONYMS,
    RECEIVED,
    decide,
    request_body,
    submit,
    transaction,
)

from legal_bases.request import read_request
from legal_bases.table import GroundTable
from records.chain import verify_chain
from records.deliveries import (
    DeliveryFailure,
    DeliveryItem,
    delivered,
    record_deliveries,
    record_delivery_failures,
)
from records.ledger import (
    derived_state,
    latest_decision,
    received_on,
    record_submission,
    status_of,
)
from records.models import DeliveryRow
from records.queue import claim_requests, release_claims, waiting_counts
from records.vocabulary import RequestState

LEASE = timedelta(minutes=5)


def submit_many(engine: Engine, count: int) -> list[str]:
    with transaction(engine) as session:
        return [submit(session, request_body(reference=f"Q-{i}")).id for i in range(count)]


def test_a_claim_takes_waiting_requests_once_until_released_or_expired(
        ledger_engine: Engine) -> None:
    ids = submit_many(ledger_engine, 5)
    with transaction(ledger_engine) as session:
        first = claim_requests(session=session, worker="w1", limit=3, lease=LEASE, now=DECIDED)
    with transaction(ledger_engine) as session:
        second = claim_requests(session=session, worker="w2", limit=10, lease=LEASE, now=DECIDED)
    assert len(first) == 3
    assert sorted(first + second) == sorted(ids)
    with transaction(ledger_engine) as session:
        assert claim_requests(session=session, worker="w3", limit=10, lease=LEASE,
                              now=DECIDED) == []
        release_claims(session=session, worker="w3", request_ids=first)  # not w3's: no effect
    with transaction(ledger_engine) as session:
        assert claim_requests(session=session, worker="w3", limit=10, lease=LEASE,
                              now=DECIDED) == []
        release_claims(session=session, worker="w1", request_ids=first)
    with transaction(ledger_engine) as session:
        again = claim_requests(session=session, worker="w3", limit=10, lease=LEASE, now=DECIDED)
    assert sorted(again) == sorted(first)
    with transaction(ledger_engine) as session:  # just before the leases end: nothing
        assert claim_requests(session=session, worker="w4", limit=10, lease=LEASE,
                              now=DECIDED + LEASE - timedelta(seconds=1)) == []
    with transaction(ledger_engine) as session:  # w2 and w3 died: their leases run out
        later = claim_requests(session=session, worker="w4", limit=10, lease=LEASE,
                               now=DECIDED + LEASE + timedelta(seconds=1))
    assert sorted(later) == sorted(ids)


def test_decided_requests_wait_for_delivery_rejected_ones_do_not(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        approved = submit(session, request_body(reference="A-1")).id
        rejected = submit(session, request_body(reference="R-1", purpose="leerplicht")).id
        decide(session, approved, shipped_table)
        decide(session, rejected, shipped_table)
    with transaction(ledger_engine) as session:
        assert waiting_counts(session=session) == {"decided": 1, "rejected": 1}
        assert claim_requests(session=session, worker="w", limit=10, lease=LEASE,
                              now=DECIDED) == [approved]


@pytest.mark.parametrize("ledger_engine", FILE_BACKED, indirect=True)
def test_concurrent_claimers_never_share_a_request(ledger_engine: Engine) -> None:
    submit_many(ledger_engine, 60)
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(3)

    def worker(name: str) -> None:
        barrier.wait()
        mine: list[str] = []
        while True:
            with transaction(ledger_engine) as session:
                got = claim_requests(session=session, worker=name, limit=7, lease=LEASE,
                                     now=DECIDED)
            if not got:
                break
            mine += got
        claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [rid for ids in claimed.values() for rid in ids]
    assert len(every) == 60
    assert len(set(every)) == 60


def _deliver(session: Session, request_id: str, **changes: object) -> DeliveryItem:
    decision = latest_decision(session=session, request_id=request_id)
    assert decision is not None
    options: dict[str, object] = {
        "request_id": request_id, "decision_id": decision.id, "partner_id": "gemeente-utrecht",
        "destination": "file_drop", "receipt": {"sha256": "ab" * 32, "status": "delivered"},
        "delivered_at": DECIDED + timedelta(minutes=1), "flow_run_id": "run-1",
        "counts": {"records": 2, "not_found": 0}}
    options.update(changes)
    return DeliveryItem(**options)  # type: ignore[arg-type]


def test_a_delivery_is_recorded_once_and_moves_the_request_to_delivered(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body()).id
        decision_id = decide(session, request_id, shipped_table).id
        rows = record_deliveries(session=session, items=[_deliver(session, request_id)])
        assert rows[0].idempotency_key == f"delivery-{decision_id}"
        assert delivered(session=session, decision_ids=[decision_id, "other"]) == {decision_id}
        assert status_of(session=session, request_id=request_id).state == "delivered"
        assert derived_state(session=session, request_id=request_id) is RequestState.DELIVERED
    with transaction(ledger_engine) as session:  # a second worker's receipt: left out
        assert record_deliveries(session=session, items=[_deliver(session, request_id)]) == []
    with transaction(ledger_engine) as session:
        twin = {**session.execute(select(DeliveryRow)).scalars().one().model_dump(),
                "id": str(uuid.uuid4())}
    with pytest.raises(IntegrityError), transaction(ledger_engine) as session:
        # and the database itself refuses a twin of the delivery
        session.execute(insert(DeliveryRow.__table__), [twin])  # type: ignore[attr-defined]
    with transaction(ledger_engine) as session:
        assert verify_chain(session=session).ok


def test_failures_are_on_the_record_and_only_permanent_ones_stop_the_request(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        transient = submit(session, request_body(reference="T-1")).id
        permanent = submit(session, request_body(reference="P-1")).id
        failures = []
        for request_id, is_permanent in ((transient, False), (permanent, True)):
            decision = decide(session, request_id, shipped_table)
            failures.append(DeliveryFailure(
                request_id=request_id, decision_id=decision.id, partner_id="gemeente-utrecht",
                error="DeliveryFailedError", failed_at=RECEIVED + timedelta(hours=1),
                permanent=is_permanent))
        record_delivery_failures(session=session, failures=failures)
        assert status_of(session=session, request_id=transient).state == "decided"
        assert status_of(session=session, request_id=permanent).state == "failed"
        assert derived_state(session=session, request_id=permanent) is RequestState.FAILED
        assert derived_state(session=session, request_id=transient) is RequestState.DECIDED
        assert verify_chain(session=session).ok


def test_an_intake_key_records_a_source_line_once_valid_or_not(ledger_engine: Engine) -> None:
    def record(session: Session, raw: str, key: str) -> str:
        return record_submission(
            session=session, partner_id="cbs", requester_body="cbs", channel="dropoff",
            raw_body=raw, parsed=read_request({"nonsense": 1}, received_on=received_on(RECEIVED)),
            received_at=RECEIVED, pseudonymizer=PSEUDONYMS, intake_key=key).id

    with transaction(ledger_engine) as session:
        first = record(session, '{"nonsense": 1}', "dropoff:cbs:abc:1")
        assert record(session, '{"nonsense": 1}', "dropoff:cbs:abc:1") == first
        assert record(session, '{"nonsense": 1}', "dropoff:cbs:abc:2") != first

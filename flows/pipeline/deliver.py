"""Delivering decided requests: through the release gate, fetch from the register in chunks,
hand each document to its destination, and record the delivery (or the failure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from connectors.errors import (
    DeliveryRejectedError,
    IdempotencyConflictError,
    IdentifierLeakError,
    IdentifiersInPseudonymisedFetchError,
    RegisterUnavailableError,
)
from connectors.register import FetchResult
from flows.faults import fault
from flows.logs import get_logger
from flows.pipeline import bulk
from flows.pipeline.recorded import chunks, parse_submission, requests_in
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.errors import DisclosureError
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReviewTrigger
from records.db import read_only
from records.decisions import DecisionItem, SetAside, record_decisions_apart, record_set_aside
from records.deliveries import (
    DeliveryFailure,
    DeliveryItem,
    delivered,
    delivery_key,
    record_deliveries,
    record_delivery_failures,
)
from records.errors import ReleaseRefusedError
from records.ledger import ENGINE
from records.models import DecisionRow, RequestRow, RequestStatus
from records.release import RELEASING, Release, check_releases, document_refusal
from records.snapshots import load_table_snapshot
from records.vocabulary import RequestState


@dataclass
class Delivered:
    """What a delivery step did: counts, the ids of requests it sent (back) to review because a
    subject is shielded now, and of those it set aside (the gate refused the release)."""

    delivered: int = 0
    repeats: int = 0
    skipped: int = 0
    failed_transient: int = 0
    failed_permanent: int = 0
    records: int = 0
    not_found: int = 0
    to_review: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)

    def add(self, other: Delivered) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _Pending:
    """A decided request to deliver: its row, the decision in force, and the engine decision a
    reviewer's decision answered (None for the engine's own decision)."""

    request: RequestRow
    decision: DecisionRow
    reviewed: DecisionRow | None


def _deliverable(rt: Runtime, ids: Sequence[str]) -> tuple[list[_Pending], int]:
    """The requests among ``ids`` whose latest decision releases data and is not delivered."""
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        rows = [row for row, state in requests_in(session, ids)
                if state == RequestState.DECIDED.value]
        by_id: dict[str, DecisionRow] = {}
        latest: dict[str, DecisionRow] = {}
        for chunk in chunks([r.id for r in rows], 500):
            for decision in session.execute(select(DecisionRow).where(
                    col(DecisionRow.request_id).in_(chunk))).scalars():
                by_id[decision.id] = decision
                held = latest.get(decision.request_id)
                if held is None or decision.sequence > held.sequence:
                    latest[decision.request_id] = decision
        done = delivered(session=session, decision_ids=[d.id for d in latest.values()])
        pending = [_Pending(row, latest[row.id], by_id.get(latest[row.id].supersedes or "")
                            if latest[row.id].decided_by != ENGINE else None)
                   for row in rows if row.id in latest
                   and latest[row.id].outcome in RELEASING and latest[row.id].id not in done]
    return pending, len(ids) - len(pending)


def table_of(rt: Runtime, decision: DecisionRow) -> GroundTable:
    if decision.table_hash == rt.table.hash:
        return rt.table
    with Session(rt.ledger, expire_on_commit=False) as session:
        return load_table_snapshot(session=session, table_hash=decision.table_hash)


def delivery_document(request: RequestRow, decision: DecisionRow, version: GroundVersion,
                      result: FetchResult) -> dict[str, Any]:
    """What the partner receives: the decision it rests on and the released records only.

    Where the ground pseudonymises, records are ordered by code and subjects not found are
    only counted, so nothing in the document links a code to a number the partner sent.
    """
    records = result.records
    if version.pseudonymise:
        records = sorted(records, key=lambda r: str(r["subject"].get("pseudonym")))
        not_found: Any = {"count": len(result.not_found)}
    else:
        not_found = [{s.id_type.value: s.number} for s in result.not_found]
    return {
        "disclosure": {
            "request_id": request.id,
            "reference": request.reference,
            "decision_id": decision.id,
            "outcome": decision.outcome,
            "ground": decision.ground_id,
            "ground_version": decision.ground_version,
            "citation": version.citation.to_dict(),
            "released": decision.released,
            "withheld": decision.withheld,
            "decided_by": decision.decided_by,
            "decided_at": decision.decided_at.astimezone(UTC).isoformat(),
        },
        "subjects_pseudonymised": version.pseudonymise,
        "records": records,
        "not_found": not_found,
    }


def deliver_requests(rt: Runtime, request_ids: Sequence[str], *, flow_run_id: str | None,
                     run_part: bulk.PartRunner[bulk.PartReceipt] | None = None,
                     progress: bulk.Progress | None = None) -> Delivered:
    """Fetch the released categories and deliver each decided request once, receipt recorded.

    Data leaves only through the gate (:mod:`records.release`): the request was accepted as
    valid, the decision in force releases exactly what is sent, and its event is on the chain —
    checked in the ledger before the register is read, and the document held against the
    decision before it goes out; a release the gate refuses is set aside. A decision that would
    release data about a subject shielded since (no reviewer weighed the shielding) goes back to
    review instead. A destination that refuses for good fails the request (an operator acts);
    any other delivery failure leaves it decided, and the next sweep tries again. If the
    register is unreachable the step raises (the task retries): nothing half-fetched goes out.
    The register is read once per chunk and kind of release, not once per request. A bulk
    request (:mod:`flows.pipeline.bulk`) is delivered in parts, each run by ``run_part`` (a
    Prefect task of its own in a flow run), with ``progress`` told after each part.
    """
    log = get_logger("delivery")
    pending, skipped = _deliverable(rt, request_ids)
    total = Delivered(skipped=skipped)
    for start in range(0, len(pending), limits.DELIVERY_RECORD_CHUNK):
        part = _deliver_chunk(rt, pending[start:start + limits.DELIVERY_RECORD_CHUNK],
                              flow_run_id, run_part=run_part, progress=progress)
        total.add(part)
    counts = {k: v for k, v in vars(total).items() if not isinstance(v, list)}
    log.info("batch_delivered", **counts, to_review=len(total.to_review),
             set_aside=len(total.set_aside))
    return total


def _deliver_chunk(rt: Runtime, chunk: Sequence[_Pending], flow_run_id: str | None, *,
                   run_part: bulk.PartRunner[bulk.PartReceipt] | None = None,
                   progress: bulk.Progress | None = None) -> Delivered:
    part = Delivered()
    now = datetime.now(UTC)
    allowed, aside = _through_gate(rt, chunk, flow_run_id=flow_run_id, at=now)
    fetched = _fetch_chunk(rt, [p for p in allowed if not bulk.is_bulk(p.request)])
    fetched |= {p.decision.id: _bulk_ready(rt, p) for p in allowed if bulk.is_bulk(p.request)}
    fault("fetched")
    items: list[DeliveryItem] = []
    failures: list[DeliveryFailure] = []
    again: list[_Pending] = []
    for pending in allowed:
        request, decision = pending.request, pending.decision
        got = fetched[decision.id]
        if (isinstance(got, _Fetched | _Bulk) and got.shielded
                and _shielding_unweighed(pending)):
            again.append(pending)
            continue
        try:
            if isinstance(got, _Bulk):
                item = bulk.deliver_in_parts(
                    rt, request, decision, parsed=got.parsed, version=got.version,
                    header=_header(request, decision, got.version), flow_run_id=flow_run_id,
                    run_part=run_part, progress=progress)
            else:
                item = _deliver_one(rt, request, decision, got, flow_run_id)
        except (DeliveryRejectedError, IdempotencyConflictError,
                IdentifiersInPseudonymisedFetchError, IdentifierLeakError) as exc:
            failures.append(_failure(request, decision, exc, True, flow_run_id))
            part.failed_permanent += 1
        except ReleaseRefusedError as exc:
            aside.append(SetAside(request_id=request.id, step="deliver", reason="release_refused",
                                  detail=exc.code, at=now, flow_run_id=flow_run_id))
        except DisclosureError as exc:
            failures.append(_failure(request, decision, exc, False, flow_run_id))
            part.failed_transient += 1
        except Exception as exc:  # one request must never stop the others
            failures.append(_failure(request, decision, exc, True, flow_run_id))
            part.failed_permanent += 1
        else:
            fault("delivered")  # the destination has it; the ledger does not know yet
            items.append(item)
            part.delivered += 1
            part.repeats += item.receipt.get("status") == "repeat"
            part.records += item.counts["records"]
            part.not_found += item.counts["not_found"]
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        record_deliveries(session=session, items=items)
        record_delivery_failures(session=session, failures=failures)
        record_set_aside(session=session, items=aside)
        part.to_review = _back_to_review(rt, session, again, flow_run_id=flow_run_id, at=now)
    fault("recorded")
    part.set_aside = [item.request_id for item in aside]
    for refused in aside:
        get_logger("delivery").warning("request_set_aside", request_id=refused.request_id,
                                       step=refused.step, reason=refused.reason,
                                       detail=refused.detail)
    return part


def _through_gate(rt: Runtime, chunk: Sequence[_Pending], *, flow_run_id: str | None,
                  at: datetime) -> tuple[list[_Pending], list[SetAside]]:
    """The releases of ``chunk`` the gate lets through, and the others set aside."""
    with Session(read_only(rt.ledger)) as session:
        verdicts = check_releases(session=session, releases=[
            Release(p.request.id, p.decision.id, tuple(p.decision.released)) for p in chunk])
    refused = [SetAside(request_id=p.request.id, step="deliver", reason="release_refused",
                        detail=str(verdicts[p.decision.id]), at=at, flow_run_id=flow_run_id)
               for p in chunk if verdicts[p.decision.id] is not None]
    return [p for p in chunk if verdicts[p.decision.id] is None], refused


def _shielding_unweighed(pending: _Pending) -> bool:
    """True unless a reviewer decided after a decision that named the shielded subject."""
    if pending.reviewed is None:
        return True
    return ReviewTrigger.SHIELDED_SUBJECT.value not in {
        t.get("code") for t in pending.reviewed.review_triggers}


def _back_to_review(rt: Runtime, session: Session, again: Sequence[_Pending], *,
                    flow_run_id: str | None, at: datetime) -> list[str]:
    """Record, for each request whose subject is shielded now, a new engine decision that sends
    it to review (the engine's assessment with the shielded-subject trigger); returns their ids."""
    items_by_table: dict[str, tuple[GroundTable, list[DecisionItem]]] = {}
    in_force = _in_force(session, [p.request.id for p in again])
    for pending in again:
        if in_force.get(pending.request.id) != pending.decision.id:
            continue  # decided again meanwhile (a concurrent delivery sent it to review)
        table = table_of(rt, pending.decision)
        parsed = parse_submission(pending.request, rt.ledger)
        decision = with_review_trigger(assess(parsed, Body(pending.request.requester_body),
                                              table), ReviewTrigger.SHIELDED_SUBJECT)
        items_by_table.setdefault(table.hash, (table, []))[1].append(DecisionItem(
            request_id=pending.request.id, decision=decision, decided_at=at,
            flow_run_id=flow_run_id, deadline=pending.decision.deadline))
    sent: list[str] = []
    for table, items in items_by_table.values():
        recorded, _ = record_decisions_apart(session=session, table=table, items=items,
                                             flow_run_id=flow_run_id)
        sent += [row.request_id for row in recorded if row.outcome == Outcome.NEEDS_REVIEW.value]
    return sent


def _in_force(session: Session, request_ids: Sequence[str]) -> dict[str, str]:
    """The id of each request's decision in force, its work-queue rows locked (PostgreSQL) so
    that two workers cannot both record the next decision."""
    if not request_ids:
        return {}
    locked = select(RequestStatus.request_id).where(  # type: ignore[call-overload]
        col(RequestStatus.request_id).in_(request_ids))
    if session.get_bind().dialect.name == "postgresql":
        locked = locked.with_for_update()
    session.execute(locked).all()
    latest: dict[str, tuple[int, str]] = {}
    for decision_id, request_id, sequence in session.execute(
            select(DecisionRow.id, DecisionRow.request_id,  # type: ignore[call-overload]
                   DecisionRow.sequence).where(col(DecisionRow.request_id).in_(request_ids))):
        if request_id not in latest or sequence > latest[request_id][0]:
            latest[request_id] = (sequence, decision_id)
    return {request_id: decision_id for request_id, (_, decision_id) in latest.items()}


@dataclass(frozen=True)
class _Fetched:
    version: GroundVersion
    result: FetchResult

    @property
    def shielded(self) -> bool:
        return bool(self.result.shielded)


@dataclass(frozen=True)
class _Bulk:
    """A bulk request ready to go out in parts: its subjects are not fetched here."""

    version: GroundVersion
    parsed: DisclosureRequest
    shielded: bool


def _bulk_ready(rt: Runtime, pending: _Pending) -> _Bulk | Exception:
    """What a bulk request needs before its first part goes: the ground version, and whether a
    subject is shielded now (asked of the register in one cheap query, before anything is sent,
    so a shielded subject sends the request back to review, not half delivered)."""
    request, decision = pending.request, pending.decision
    parsed = parse_submission(request, rt.ledger)
    if not isinstance(parsed, DisclosureRequest) or decision.ground_version is None:
        return ReleaseRefusedError("request_invalid")
    try:
        version = table_of(rt, decision).version(decision.ground_version)
    except DisclosureError as exc:
        return exc
    return _Bulk(version, parsed, bool(rt.register.shielded(parsed.subjects)))


def _header(request: RequestRow, decision: DecisionRow, version: GroundVersion,
            ) -> dict[str, Any]:
    """The ``disclosure`` part every document of a decision's delivery carries."""
    empty = FetchResult(records=[], not_found=[], shielded=[])
    header: dict[str, Any] = delivery_document(request, decision, version, empty)["disclosure"]
    return header


def _fetch_chunk(rt: Runtime, chunk: Sequence[_Pending],
                 ) -> dict[str, _Fetched | _Bulk | Exception]:
    """The register's records for each decision of a chunk, one fetch per kind of release.

    Decisions that release the same categories (to the same recipient, where the ground
    pseudonymises) share one fetch of all their subjects; each then gets its own subjects only.
    """
    out: dict[str, _Fetched | _Bulk | Exception] = {}
    groups: dict[tuple[tuple[str, ...], str | None],
                 list[tuple[DecisionRow, DisclosureRequest, GroundVersion]]] = {}
    for pending in chunk:
        request, decision = pending.request, pending.decision
        parsed = parse_submission(request, rt.ledger)
        if not isinstance(parsed, DisclosureRequest) or decision.ground_version is None:
            out[decision.id] = ReleaseRefusedError("request_invalid")
            continue
        try:
            version = table_of(rt, decision).version(decision.ground_version)
        except DisclosureError as exc:  # e.g. a snapshot missing: this request only
            out[decision.id] = exc
            continue
        key = (tuple(decision.released), request.partner_id if version.pseudonymise else None)
        groups.setdefault(key, []).append((decision, parsed, version))
    for (released, recipient), members in groups.items():
        subjects = list(dict.fromkeys(s for _, parsed, _ in members for s in parsed.subjects))
        code = rt.pseudonymizer.for_recipient(recipient) if recipient else None
        try:
            result = rt.register.fetch(subjects=subjects,
                                       categories=[Category(c) for c in released],
                                       pseudonymise=code)
        except RegisterUnavailableError:
            raise
        except DisclosureError as exc:
            out.update({decision.id: exc for decision, _, _ in members})
            continue
        by_subject = {_record_key(record): record for record in result.records}
        missing = set(result.not_found)
        shielded = set(result.shielded)
        for decision, parsed, version in members:
            keys = [(s, code(s) if code else f"{s.id_type.value}:{s.number}")
                    for s in parsed.subjects]
            out[decision.id] = _Fetched(version, FetchResult(
                records=[by_subject[k] for s, k in keys if s not in missing and k in by_subject],
                not_found=[s for s in parsed.subjects if s in missing],
                shielded=[s for s in parsed.subjects if s in shielded]))
    return out


def _record_key(record: dict[str, Any]) -> str:
    subject = record["subject"]
    if "pseudonym" in subject:
        return str(subject["pseudonym"])
    ((id_type, number),) = subject.items()
    return f"{id_type}:{number}"


def _deliver_one(rt: Runtime, request: RequestRow, decision: DecisionRow,
                 fetched: _Fetched | Exception, flow_run_id: str | None) -> DeliveryItem:
    if isinstance(fetched, Exception):
        raise fetched
    document = delivery_document(request, decision, fetched.version, fetched.result)
    refusal = document_refusal(document, decision_id=decision.id, released=decision.released)
    if refusal is not None:
        raise ReleaseRefusedError(refusal)
    key = delivery_key(decision.id)
    fault("delivering")
    try:
        receipt = rt.destination(request.partner_id).deliver(idempotency_key=key,
                                                             document=document)
    except IdempotencyConflictError as exc:
        # The partner holds a document under this decision's key already (delivered before a
        # crash, the register changed since): that was the delivery; record what is there.
        if exc.existing is None:
            raise
        receipt = exc.existing
    return DeliveryItem(
        request_id=request.id, decision_id=decision.id, partner_id=request.partner_id,
        destination=receipt.kind, receipt=receipt.to_dict(), delivered_at=receipt.delivered_at,
        flow_run_id=flow_run_id, released=tuple(decision.released),
        counts={"records": len(fetched.result.records),
                "not_found": len(fetched.result.not_found)})


def _failure(request: RequestRow, decision: DecisionRow, exc: Exception, permanent: bool,
             flow_run_id: str | None) -> DeliveryFailure:
    get_logger("delivery").warning("delivery_failed", request_id=request.id,
                                   partner_id=request.partner_id, error=type(exc).__name__,
                                   permanent=permanent)
    return DeliveryFailure(request_id=request.id, decision_id=decision.id,
                           partner_id=request.partner_id, error=type(exc).__name__,
                           failed_at=datetime.now(UTC), permanent=permanent,
                           flow_run_id=flow_run_id)

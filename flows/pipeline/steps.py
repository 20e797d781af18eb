"""The work of the pipeline, as plain functions of a :class:`~flows.runtime.Runtime`.

Prefect tasks (:mod:`flows.pipeline.tasks`) wrap these; they hand each other request ids and counts,
never personal data. Every step starts from what the ledger recorded, so a run that crashed and
runs again carries on: a request decided is not decided again, a decision delivered is not
delivered again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from connectors.dropoff import DropFile, Entry
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
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.decision import Decision
from legal_bases.errors import DisclosureError, FieldError
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest, InvalidRequest, read_request_text
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReviewTrigger
from records.db import read_only
from records.deliveries import (
    DeliveryFailure,
    DeliveryItem,
    delivered,
    delivery_key,
    record_deliveries,
    record_delivery_failures,
)
from records.errors import ReferenceConflictError, ReleaseRefusedError
from records.ledger import (
    ENGINE,
    DecisionItem,
    SetAside,
    load_table_snapshot,
    received_on,
    record_decisions_apart,
    record_set_aside,
    record_submission,
)
from records.models import AuditEvent, DecisionRow, RequestRow, RequestStatus
from records.release import RELEASING, Release, check_releases, document_refusal
from records.replay import parse_recorded
from records.reviews import has_event, record_review_event
from records.vocabulary import Channel, RequestState


def chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def parse_submission(row: RequestRow) -> DisclosureRequest | InvalidRequest:
    """A recorded submission read again exactly as at intake (see ``records.replay``)."""
    return parse_recorded(row)


# -- decide -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decided:
    """Where a batch went: ids to deliver, to review, rejected, and set aside (ids only)."""

    deliver: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)


def _requests_in(session: Session, ids: Sequence[str]) -> list[tuple[RequestRow, str]]:
    found: list[tuple[RequestRow, str]] = []
    for chunk in chunks(ids, 500):
        found += [(row, state) for row, state in session.execute(
            select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .where(col(RequestRow.id).in_(chunk))).all()]
    return found


def decide_requests(rt: Runtime, request_ids: Sequence[str], *, flow_run_id: str | None,
                    ) -> Decided:
    """Validate, assess and record the decisions of the claimed requests not yet decided.

    A submission recorded as invalid is rejected ``invalid_request`` with its recorded errors,
    whatever its text reads as (:func:`parse_submission`). A decision that would release data
    about a shielded subject goes to review instead. No request can stop the others: one that
    cannot be assessed or recorded is set aside (``failed``, with a ``request_set_aside`` event)
    and the rest are decided. The decisions are on the record (hash-chained) before this
    returns: nothing is delivered before its decision is written.
    """
    log = get_logger("dispatcher")
    now = datetime.now(UTC)
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        rows = _requests_in(session, request_ids)
        waiting = [row for row, state in rows
                   if state in (RequestState.RECEIVED.value, RequestState.INVALID.value)]
        already = [row.id for row, state in rows if state == RequestState.DECIDED.value]
        parsed: dict[str, DisclosureRequest | InvalidRequest] = {}
        decisions: dict[str, Decision] = {}
        aside: list[SetAside] = []
        for row in waiting:
            try:
                parsed[row.id] = parse_submission(row)
                decisions[row.id] = assess(parsed[row.id], Body(row.requester_body), rt.table)
            except Exception as exc:  # one submission must never stop the batch
                aside.append(SetAside(request_id=row.id, step="decide", reason="not_assessable",
                                      detail=f"it could not be read or assessed "
                                             f"({type(exc).__name__})",
                                      at=now, flow_run_id=flow_run_id))
        decisions = _send_shielded_to_review(rt, decisions, parsed)
        record_set_aside(session=session, items=aside)
        recorded, refused = record_decisions_apart(session=session, table=rt.table, items=[
            DecisionItem(request_id=rid, decision=d, decided_at=now, flow_run_id=flow_run_id)
            for rid, d in decisions.items()], flow_run_id=flow_run_id)
    outcomes = {row.request_id: row.outcome for row in recorded}
    outcome = Decided(
        deliver=already + [rid for rid, o in outcomes.items() if o in RELEASING],
        review=[rid for rid, o in outcomes.items() if o == Outcome.NEEDS_REVIEW.value],
        rejected=[rid for rid, o in outcomes.items() if o == Outcome.REJECTED.value],
        set_aside=[a.request_id for a in aside + refused])
    log.info("batch_decided", decided=len(outcomes), to_deliver=len(outcome.deliver),
             to_review=len(outcome.review), rejected=len(outcome.rejected),
             set_aside=len(outcome.set_aside))
    for item in aside + refused:
        log.warning("request_set_aside", request_id=item.request_id, step=item.step,
                    reason=item.reason)
    return outcome


def _send_shielded_to_review(rt: Runtime, decisions: dict[str, Decision],
                             parsed: dict[str, DisclosureRequest | InvalidRequest],
                             ) -> dict[str, Decision]:
    releasing = {rid: request for rid, request in parsed.items()
                 if isinstance(request, DisclosureRequest) and rid in decisions
                 and decisions[rid].outcome.value in RELEASING}
    subjects = list(dict.fromkeys(s for r in releasing.values() for s in r.subjects))
    if not subjects:
        return decisions
    shielded = rt.register.shielded(subjects)
    out = dict(decisions)
    for rid, request in releasing.items():
        if any(s in shielded for s in request.subjects):
            out[rid] = with_review_trigger(decisions[rid], ReviewTrigger.SHIELDED_SUBJECT)
    return out


# -- deliver ------------------------------------------------------------------------------------

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
        rows = [row for row, state in _requests_in(session, ids)
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
                     ) -> Delivered:
    """Fetch the released categories and deliver each decided request once, receipt recorded.

    Data leaves only through the gate (:mod:`records.release`): the request was accepted as
    valid, the decision in force releases exactly what is sent, and its event is on the chain —
    checked in the ledger before the register is read, and the document held against the
    decision before it goes out; a release the gate refuses is set aside. A decision that would
    release data about a subject shielded since (no reviewer weighed the shielding) goes back to
    review instead. A destination that refuses for good fails the request (an operator acts);
    any other delivery failure leaves it decided, and the next sweep tries again. If the
    register is unreachable the step raises (the task retries): nothing half-fetched goes out.
    The register is read once per chunk and kind of release, not once per request.
    """
    log = get_logger("delivery")
    pending, skipped = _deliverable(rt, request_ids)
    total = Delivered(skipped=skipped)
    for start in range(0, len(pending), limits.DELIVERY_RECORD_CHUNK):
        part = _deliver_chunk(rt, pending[start:start + limits.DELIVERY_RECORD_CHUNK],
                              flow_run_id)
        total.add(part)
    counts = {k: v for k, v in vars(total).items() if not isinstance(v, list)}
    log.info("batch_delivered", **counts, to_review=len(total.to_review),
             set_aside=len(total.set_aside))
    return total


def _deliver_chunk(rt: Runtime, chunk: Sequence[_Pending], flow_run_id: str | None,
                   ) -> Delivered:
    part = Delivered()
    now = datetime.now(UTC)
    allowed, aside = _through_gate(rt, chunk, flow_run_id=flow_run_id, at=now)
    fetched = _fetch_chunk(rt, allowed)
    fault("fetched")
    items: list[DeliveryItem] = []
    failures: list[DeliveryFailure] = []
    again: list[_Pending] = []
    for pending in allowed:
        request, decision = pending.request, pending.decision
        got = fetched[decision.id]
        if isinstance(got, _Fetched) and got.result.shielded and _shielding_unweighed(pending):
            again.append(pending)
            continue
        try:
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
        parsed = parse_submission(pending.request)
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


def _fetch_chunk(rt: Runtime, chunk: Sequence[_Pending],
                 ) -> dict[str, _Fetched | Exception]:
    """The register's records for each decision of a chunk, one fetch per kind of release.

    Decisions that release the same categories (to the same recipient, where the ground
    pseudonymises) share one fetch of all their subjects; each then gets its own subjects only.
    """
    out: dict[str, _Fetched | Exception] = {}
    groups: dict[tuple[tuple[str, ...], str | None],
                 list[tuple[DecisionRow, DisclosureRequest, GroundVersion]]] = {}
    for pending in chunk:
        request, decision = pending.request, pending.decision
        parsed = parse_submission(request)
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


# -- take in drop-off files ----------------------------------------------------------------------

@dataclass(frozen=True)
class TakenIn:
    """What one drop file held: the request ids recorded, and how many were valid."""

    file: str
    partner_id: str
    request_ids: list[str]
    valid: int
    invalid: int
    accepted: bool


def _entry_request(entry: Entry, received_at: datetime,
                   ) -> tuple[str, DisclosureRequest | InvalidRequest]:
    if entry.too_large:
        return (f"(an entry of more than {limits.MAX_REQUEST_BYTES} bytes; the file is kept)",
                InvalidRequest((FieldError("", "too_large", "the request is larger than "
                                           f"{limits.MAX_REQUEST_BYTES} bytes"),)))
    if entry.bad_encoding is not None:
        return (f"(not UTF-8; undecodable bytes replaced) {entry.text}",
                InvalidRequest((FieldError("", "bad_encoding", "not UTF-8 text (at byte "
                                           f"{entry.bad_encoding})"),)))
    return entry.text, read_request_text(entry.text, received_on=received_on(received_at))


def take_in_file(rt: Runtime, drop: DropFile, *, flow_run_id: str | None = None) -> TakenIn:
    """Record every request in a drop file (valid or not), then file it away with a report."""
    log = get_logger("dropoff")
    partner = rt.partners.get(drop.partner_id)
    name = drop.path.name
    if partner is None:
        rt.dropbox.file_away(drop, accepted=False, report={
            "file": name, "sha256": drop.sha256, "error": "unknown_partner",
            "message": f"no partner {drop.partner_id!r} is configured; nothing was taken in"})
        log.warning("dropoff_unknown_partner", partner_id=drop.partner_id)
        return TakenIn(name, drop.partner_id, [], 0, 0, accepted=False)
    lines: list[dict[str, Any]] = []
    entries = list(rt.dropbox.entries(drop))
    with Session(rt.ledger, expire_on_commit=False) as session:
        for start in range(0, len(entries), 200):
            with session.begin():
                for entry in entries[start:start + 200]:
                    lines.append(_take_in_entry(rt, session, drop, partner.body, entry,
                                                flow_run_id=flow_run_id))
    valid = sum(1 for line in lines if line["valid"])
    report = {"file": name, "sha256": drop.sha256, "partner_id": drop.partner_id,
              "taken_in_at": datetime.now(UTC).isoformat(), "requests": len(lines),
              "valid": valid, "invalid": len(lines) - valid, "entries": lines}
    if not lines:
        report["error"] = "no_requests"
    rt.dropbox.file_away(drop, accepted=valid > 0, report=report)
    log.info("dropoff_taken_in", partner_id=drop.partner_id, file_sha256=drop.sha256,
             valid=valid, invalid=len(lines) - valid)
    return TakenIn(name, drop.partner_id, [line["request_id"] for line in lines], valid,
                   len(lines) - valid, accepted=valid > 0)


def _take_in_entry(rt: Runtime, session: Session, drop: DropFile, body: Body,
                   entry: Entry, *, flow_run_id: str | None) -> dict[str, Any]:
    received_at = datetime.now(UTC)
    raw_text, parsed = _entry_request(entry, received_at)
    common: dict[str, Any] = {
        "session": session, "partner_id": drop.partner_id, "requester_body": body,
        "channel": Channel.DROPOFF, "raw_body": raw_text, "received_at": received_at,
        "pseudonymizer": rt.pseudonymizer, "flow_run_id": flow_run_id,
        "intake_key": f"dropoff:{drop.partner_id}:{drop.sha256}:{entry.line}"}
    try:
        row = record_submission(parsed=parsed, **common)
    except ReferenceConflictError as exc:
        conflict = FieldError("reference", "reference_conflict",
                              f"already used by request {exc.existing_request_id} with "
                              "another body")
        row = record_submission(parsed=InvalidRequest((conflict,)), **common)
    return {"line": entry.line, "request_id": row.id, "reference": row.reference,
            "valid": row.valid, "errors": row.validation_errors}


# -- review runs ----------------------------------------------------------------------------------

REVIEW_RUN_STARTED = "review_run_started"


@dataclass(frozen=True)
class UnderReview:
    """The engine decision a request's review answers: its id and sequence (ids only)."""

    request_id: str
    decision_id: str
    sequence: int


def under_review(rt: Runtime, request_ids: Sequence[str]) -> list[UnderReview]:
    """For each request waiting for a reviewer, the engine decision that sent it there."""
    found: dict[str, UnderReview] = {}
    with Session(rt.ledger) as session:
        for chunk in chunks(request_ids, 500):
            for decision_id, request_id, sequence in session.execute(
                    select(DecisionRow.id, DecisionRow.request_id,  # type: ignore[call-overload]
                           DecisionRow.sequence)
                    .where(col(DecisionRow.request_id).in_(chunk),
                           col(DecisionRow.decided_by) == ENGINE,
                           col(DecisionRow.outcome) == Outcome.NEEDS_REVIEW.value)):
                held = found.get(request_id)
                if held is None or sequence > held.sequence:
                    found[request_id] = UnderReview(request_id, decision_id, sequence)
    return [found[r] for r in request_ids if r in found]


def record_review_started(rt: Runtime, review: UnderReview, review_run_id: str, *,
                          flow_run_id: str | None) -> None:
    """Put on the record which flow run holds the review of an engine decision."""
    with Session(rt.ledger) as session, session.begin():
        record_review_event(session=session, request_id=review.request_id,
                            kind=REVIEW_RUN_STARTED, now=datetime.now(UTC),
                            payload={"review_run_id": review_run_id,
                                     "decision_id": review.decision_id},
                            flow_run_id=flow_run_id)


def reviews_without_run(rt: Runtime) -> list[str]:
    """Requests waiting for a reviewer whose review run (for the engine decision that sent
    them there) was never started. A ``review_run_started`` event without a decision id (written
    before 0.4.0) stands for the request's first decision."""
    with Session(rt.ledger) as session:
        waiting = list(session.execute(
            select(RequestStatus.request_id).where(  # type: ignore[call-overload]
                col(RequestStatus.state).in_([RequestState.AWAITING_REVIEW.value,
                                              RequestState.ESCALATED.value]))).scalars())
        started: dict[str, set[str | None]] = {}
        for chunk in chunks(waiting, 500):
            for request_id, payload in session.execute(
                    select(AuditEvent.request_id, AuditEvent.payload)  # type: ignore[call-overload]
                    .where(col(AuditEvent.kind) == REVIEW_RUN_STARTED,
                           col(AuditEvent.request_id).in_(chunk))):
                started.setdefault(request_id, set()).add(
                    payload.get("decision_id") if isinstance(payload, dict) else None)
    missing = []
    for review in under_review(rt, waiting):
        named = started.get(review.request_id, set())
        if review.decision_id not in named and not (review.sequence == 1 and None in named):
            missing.append(review.request_id)
    return missing


# -- deadlines ------------------------------------------------------------------------------------

def today() -> date:
    """Today in the Netherlands: the calendar deadlines are counted in."""
    return received_on(datetime.now(UTC))


@dataclass(frozen=True)
class Overdue:
    """A request at or past its deadline that is not finished (ids and dates only)."""

    request_id: str
    partner_id: str
    reference: str | None
    state: str
    deadline: Any


UNFINISHED = (RequestState.RECEIVED.value, RequestState.INVALID.value,
              RequestState.DECIDED.value, RequestState.AWAITING_REVIEW.value,
              RequestState.ESCALATED.value)


def overdue(rt: Runtime, *, on: Any) -> list[Overdue]:
    """Unfinished requests whose deadline is ``on`` or earlier, oldest deadline first."""
    with Session(rt.ledger) as session:
        rows = session.execute(
            select(RequestRow.id, RequestRow.partner_id,  # type: ignore[call-overload]
                   RequestRow.reference, RequestStatus.state, DecisionRow.deadline)
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .join(DecisionRow, col(DecisionRow.request_id) == col(RequestRow.id))
            .where(col(DecisionRow.sequence) == 1, col(DecisionRow.deadline) <= on,
                   col(RequestStatus.state).in_(UNFINISHED))
            .order_by(col(DecisionRow.deadline))).all()
    return [Overdue(*row) for row in rows]


def escalate_reviews(rt: Runtime, *, on: Any, flow_run_id: str | None) -> dict[str, list[str]]:
    """Mark reviews that reach their deadline today as overdue, and escalate those past it.

    Each happens once per request, on the record (an audit event; escalation also moves the
    request to ``escalated``, where it stays decidable: a review is never approved by default).
    Returns the request ids newly overdue and newly escalated.
    """
    out: dict[str, list[str]] = {"overdue": [], "escalated": []}
    waiting = [o for o in overdue(rt, on=on) if o.state in (RequestState.AWAITING_REVIEW.value,
                                                           RequestState.ESCALATED.value)]
    now = datetime.now(UTC)
    with Session(rt.ledger) as session, session.begin():
        for item in waiting:
            payload = {"deadline": item.deadline.isoformat()}
            if not has_event(session=session, request_id=item.request_id, kind="review_overdue"):
                record_review_event(session=session, request_id=item.request_id,
                                    kind="review_overdue", now=now, payload=payload,
                                    flow_run_id=flow_run_id)
                out["overdue"].append(item.request_id)
            if item.deadline < on and not has_event(
                    session=session, request_id=item.request_id, kind="review_escalated"):
                record_review_event(session=session, request_id=item.request_id,
                                    kind="review_escalated", now=now, payload=payload,
                                    state=RequestState.ESCALATED.value, flow_run_id=flow_run_id)
                out["escalated"].append(item.request_id)
    log = get_logger("review")
    for request_id in out["escalated"]:
        log.warning("review_escalated", request_id=request_id)
    return out

"""The audit trail as a hash chain: append events in order, verify that none was altered.

Each event's ``hash`` is sha256 over the previous event's hash and the canonical JSON of the
event's own fields (:func:`event_hash`, the one definition used by append and verify); the first
event follows :data:`GENESIS_HASH`. ``prev_hash`` is unique in the database, so two events can
never claim the same predecessor: the chain cannot fork, even under a bug.

Appenders serialise on the chain head: on PostgreSQL with a transaction-scoped advisory lock, on
SQLite because every write transaction begins IMMEDIATE (:mod:`records.db`). The lock is held
until the caller's transaction ends, so keep those transactions short.

What the chain proves: any change, deletion, insertion or reordering of stored events shows up in
:func:`verify_chain` — unless the whole tail from that point was rewritten with fresh hashes, which
is why the report carries the head hash, to be written down outside the database (anchoring).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from legal_bases.table import canonical_json, sha256
from records.errors import LedgerError
from records.models import AuditEvent
from records.timestamps import iso, utc

#: The ``prev_hash`` of the first event.
GENESIS_HASH = "0" * 64
#: PostgreSQL advisory lock key that serialises appenders ("LEDG" and 1).
CHAIN_LOCK_KEY = 0x4C454447_00000001

_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An audit event to append: what happened, when, by whom, about which request.

    ``payload`` must be plain JSON data (it is stored and hashed as such) and must hold no
    personal data: ids, outcomes, categories, counts and pseudonyms only.
    """

    kind: str
    occurred_at: datetime
    actor: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    flow_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of :func:`verify_chain`.

    ``problem`` is ``hash_mismatch`` (an event's content or hash was altered),
    ``prev_hash_mismatch`` (an event does not follow the one before it: deleted, inserted or
    reordered events) or ``seq_gap`` (a sequence number is missing or out of order), for the
    first broken event ``broken_seq``. ``head_hash`` is the hash of the last event checked.
    """

    ok: bool
    events_checked: int
    head_seq: int | None
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None
    detail: str | None = None


def event_hash(*, prev_hash: str, seq: int, id: str, occurred_at: datetime, kind: str,
               request_id: str | None, actor: str, flow_run_id: str | None,
               payload: Mapping[str, Any]) -> str:
    """The hash of an event: sha256 over ``prev_hash`` + the canonical JSON of its other fields."""
    body = {
        "seq": seq,
        "id": id,
        "occurred_at": iso(occurred_at),
        "kind": kind,
        "request_id": request_id,
        "actor": actor,
        "flow_run_id": flow_run_id,
        "payload": payload,
    }
    return sha256(prev_hash + canonical_json(body))


def _plain_json(payload: Mapping[str, Any], kind: str) -> dict[str, Any]:
    try:
        data = json.loads(canonical_json(dict(payload)))
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"the payload of a {kind} event must be plain JSON data: {exc}") from exc
    assert isinstance(data, dict)
    return data


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})


def chain_head(*, session: Session) -> tuple[int, str]:
    """The last event's seq and hash, or ``(0, GENESIS_HASH)`` for an empty chain."""
    row = session.execute(
        select(_EVENTS.c.seq, _EVENTS.c.hash).order_by(_EVENTS.c.seq.desc()).limit(1)).first()
    return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))


def append_events(*, session: Session, events: Sequence[NewEvent]) -> list[AuditEvent]:
    """Append ``events`` in order to the chain, in the caller's transaction.

    Takes the chain lock, reads the head and links each event to the one before it. Nothing is
    committed here: the events become part of the record when the caller commits, together with
    whatever they account for.
    """
    return [AuditEvent(**row) for row in _append(session, events)]


def append_event_rows(*, session: Session, events: Sequence[NewEvent]) -> None:
    """:func:`append_events` for batches whose caller needs no ``AuditEvent`` back (building
    them is a third of the cost of recording a batch of submissions)."""
    _append(session, events)


def _append(session: Session, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
    if not events:
        return []
    session.flush()
    _lock_chain(session)
    seq, prev_hash = chain_head(session=session)
    rows: list[dict[str, Any]] = []
    for event in events:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq,
            "id": str(uuid.uuid4()),
            "occurred_at": utc(event.occurred_at, name="occurred_at"),
            "kind": event.kind,
            "request_id": event.request_id,
            "actor": event.actor,
            "flow_run_id": event.flow_run_id,
            "payload": _plain_json(event.payload, event.kind),
        }
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = event_hash(**row)
        rows.append(row)
    session.execute(insert(_EVENTS), rows)
    return rows


def verify_chain(*, session: Session, batch_size: int = 2000) -> ChainReport:
    """Recompute the whole chain from the genesis and report the first break, if any."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    head_seq: int | None = None
    result = session.execute(
        select(_EVENTS).order_by(_EVENTS.c.seq).execution_options(yield_per=batch_size))
    try:
        for row in result.mappings():
            seq = int(row["seq"])
            problem: tuple[str, str] | None = None
            if seq != expected_seq:
                problem = ("seq_gap", f"expected seq {expected_seq}, found {seq}")
            elif row["prev_hash"] != prev_hash:
                problem = ("prev_hash_mismatch",
                           "prev_hash does not equal the hash of the event before it")
            elif event_hash(**{k: row[k] for k in _HASHED}) != row["hash"]:
                problem = ("hash_mismatch", "the stored hash does not match the event's content")
            if problem is not None:
                return ChainReport(ok=False, events_checked=checked, head_seq=head_seq,
                                   head_hash=prev_hash, broken_seq=seq, problem=problem[0],
                                   detail=problem[1])
            checked += 1
            expected_seq, prev_hash, head_seq = seq + 1, row["hash"], seq
    finally:
        result.close()
    return ChainReport(ok=True, events_checked=checked, head_seq=head_seq, head_hash=prev_hash)


_HASHED = ("prev_hash", "seq", "id", "occurred_at", "kind", "request_id", "actor", "flow_run_id",
           "payload")

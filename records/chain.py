"""The audit trail as a keyed hash chain: append events in order, verify that none was altered.

Each event's ``hash`` is an HMAC-SHA256 under a chain key (:mod:`records.chain_keys`) over the
previous event's hash and the canonical JSON of the event's own fields, the key's id among them
(:func:`event_hash`, the one definition used by append and verify); the first event follows
:data:`GENESIS_HASH`. ``prev_hash`` is unique in the database, so two events can never claim the
same predecessor: the chain cannot fork, even under a bug.

The key is bound to the ledger's engine (:func:`records.db.make_engine`), never stored in the
database: whoever can write to the database but does not hold the key cannot alter, insert or
delete an event and re-link the chain behind it. A rotation is on the chain: when the current key
differs from the one that sealed the head, the next append first writes a ``chain_key_rotated``
event, sealed with the new key and carrying an HMAC under the old one (``handover``). Events a
ledger recorded before the chain was keyed have no key id and a plain sha256; they may only come
before the first keyed event.

Appenders serialise on the chain head: on PostgreSQL with a transaction-scoped advisory lock, on
SQLite because every write transaction begins IMMEDIATE (:mod:`records.db`). The lock is held
until the caller's transaction ends, so keep those transactions short.

What the chain proves, and what it does not: see :class:`ChainWalk` and the README's reliability
section (a tail cut off is found only against a checkpoint kept outside the database).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from legal_bases.table import canonical_json, sha256
from records.chain_keys import ChainKey, ChainKeys
from records.errors import ChainKeyError, LedgerError
from records.models import AuditEvent
from records.timestamps import iso, utc

#: The ``prev_hash`` of the first event.
GENESIS_HASH = "0" * 64
#: PostgreSQL advisory lock key that serialises appenders ("LEDG" and 1).
CHAIN_LOCK_KEY = 0x4C454447_00000001
#: The engine execution option that carries the chain's key ring (records.db.make_engine).
CHAIN_KEYS_OPTION = "disclosure_chain_keys"
#: The event a key rotation writes first, sealed with the new key.
KEY_ROTATED = "chain_key_rotated"

_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
#: The columns an event's hash covers, besides ``prev_hash``.
HASHED = ("seq", "id", "occurred_at", "kind", "request_id", "actor", "flow_run_id", "payload",
          "key_id")


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
    """The result of :func:`verify_chain`: ``ok`` and the first break, if any.

    ``problem`` is one of :data:`LINK_PROBLEMS` for the first broken event ``broken_seq``.
    ``head_hash`` is the hash of the last event checked.
    """

    ok: bool
    events_checked: int
    head_seq: int | None
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None
    detail: str | None = None


#: What can be wrong with one link of the chain.
LINK_PROBLEMS: Mapping[str, str] = {
    "seq_gap": "a sequence number is missing or out of order (events deleted or reordered)",
    "prev_hash_mismatch": "the event does not follow the one before it (events deleted, "
                          "inserted or reordered, or the event before it rewritten)",
    "hash_mismatch": "the event's content or seal was altered (or sealed without the key)",
    "unknown_key": "the event names a chain key that is not in the key ring: it cannot be "
                   "verified (configure the retired key) or was forged",
    "unkeyed_event": "an event without a chain key where the key ring allows none (after the "
                     "events written before the chain was keyed): written by someone without "
                     "the key, or the chain re-hashed without it",
    "key_changed_without_rotation": "the event is sealed with another key than the one before "
                                    "it, without a valid chain_key_rotated event",
}


def event_hash(*, prev_hash: str, seq: int, id: str, occurred_at: datetime, kind: str,
               request_id: str | None, actor: str, flow_run_id: str | None,
               payload: Mapping[str, Any], key_id: str | None = None,
               key: ChainKey | None = None) -> str:
    """The hash of an event: the HMAC-SHA256 under ``key`` (whose id must be ``key_id``) of
    ``prev_hash`` + the canonical JSON of its other fields; without a key id, the plain sha256 of
    a ledger written before the chain was keyed."""
    body: dict[str, Any] = {
        "seq": seq,
        "id": id,
        "occurred_at": iso(occurred_at),
        "kind": kind,
        "request_id": request_id,
        "actor": actor,
        "flow_run_id": flow_run_id,
        "payload": payload,
    }
    if key_id is None:
        return sha256(prev_hash + canonical_json(body))
    if key is None or key.key_id != key_id:
        raise ChainKeyError(f"the event is sealed with chain key {key_id}, which is not given")
    body["key_id"] = key_id
    return key.seal(prev_hash + canonical_json(body))


def handover(old: ChainKey, *, prev_hash: str, new_key_id: str) -> str:
    """The old key's proof, in a rotation event, that it handed the chain to ``new_key_id``."""
    return old.seal(f"chain-key-handover|{prev_hash}|{new_key_id}")


def keys_of(session: Session | Connection) -> ChainKeys | None:
    """The key ring bound to the session's (or connection's) engine, or None."""
    connection = session.connection() if isinstance(session, Session) else session
    keys = connection.get_execution_options().get(CHAIN_KEYS_OPTION)
    return keys if isinstance(keys, ChainKeys) else None


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
    seq, head, _ = _head(session)
    return seq, head


def _head(session: Session) -> tuple[int, str, str | None]:
    row = session.execute(select(_EVENTS.c.seq, _EVENTS.c.hash, _EVENTS.c.key_id)
                          .order_by(_EVENTS.c.seq.desc()).limit(1)).first()
    return (0, GENESIS_HASH, None) if row is None else (int(row.seq), str(row.hash), row.key_id)


def last_unkeyed(*, session: Session) -> int:
    """The sequence number of the last event without a chain key (0: none)."""
    found = session.execute(select(func.max(_EVENTS.c.seq))
                            .where(_EVENTS.c.key_id.is_(None))).scalar_one_or_none()
    return int(found or 0)


def check_head_key(*, session: Session, keys: ChainKeys) -> None:
    """Raise :class:`ChainKeyError` unless the key that sealed the head is in ``keys`` (so the
    next append can hand over to the current key): checked when the ledger is opened, so a
    missing retired key stops the engine at start, not at its first write."""
    _, _, head_key = _head(session)
    if head_key is not None and keys.get(head_key) is None:
        raise ChainKeyError(f"the chain's last event is sealed with key {head_key}, which is not "
                            f"in the key ring ({', '.join(keys.ids)}): add it as a retired key")


def append_events(*, session: Session, events: Sequence[NewEvent]) -> list[AuditEvent]:
    """Append ``events`` in order to the chain, in the caller's transaction.

    Takes the chain lock, reads the head and links each event to the one before it, sealed with
    the current chain key (after a ``chain_key_rotated`` event if the key changed). Nothing is
    committed here: the events become part of the record when the caller commits, together with
    whatever they account for.
    """
    return [AuditEvent(**row) for row in _append(session, events)]


def append_event_rows(*, session: Session, events: Sequence[NewEvent]) -> None:
    """:func:`append_events` for batches whose caller needs no ``AuditEvent`` back (building
    them is a third of the cost of recording a batch of submissions)."""
    _append(session, events)


def _append(session: Session, events: Sequence[NewEvent], *,
            rotating: bool = False) -> list[dict[str, Any]]:
    if not events:
        return []
    keys = keys_of(session)
    if keys is None:
        raise ChainKeyError("this ledger engine has no chain key: open the ledger with "
                            "records.db.open_ledger (or make_engine(..., chain_keys=...))")
    key = keys.current
    session.flush()
    _lock_chain(session)
    seq, prev_hash, head_key = _head(session)
    todo = list(events)
    if head_key is None and seq > keys.unkeyed_until:
        raise ChainKeyError(f"the chain's last event (seq {seq}) has no key, and the key ring "
                            f"allows unkeyed events up to seq {keys.unkeyed_until} only: a "
                            "ledger from before the keyed chain needs 'unkeyed-until:<seq>' in "
                            "its key ring; otherwise the chain was re-hashed without the key")
    if seq > 0 and head_key != key.key_id and not rotating:
        todo.insert(0, _rotation(keys, head_key, prev_hash))
    rows: list[dict[str, Any]] = []
    for event in todo:
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
            "key_id": key.key_id,
        }
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = event_hash(**row, key=key)
        rows.append(row)
    session.execute(insert(_EVENTS), rows)
    return rows


def record_rotation(*, session: Session) -> bool:
    """Put a key rotation on the chain now (it would otherwise come with the next event):
    True if a ``chain_key_rotated`` event was appended, False if the head is already sealed with
    the current key or the chain is empty."""
    keys = keys_of(session)
    if keys is None:
        raise ChainKeyError("this ledger engine has no chain key")
    _lock_chain(session)
    seq, prev_hash, head_key = _head(session)
    if seq == 0 or head_key == keys.current.key_id:
        return False
    _append(session, [_rotation(keys, head_key, prev_hash)], rotating=True)
    return True


def _rotation(keys: ChainKeys, head_key: str | None, prev_hash: str) -> NewEvent:
    """The ``chain_key_rotated`` event from the head's key to the current one."""
    new = keys.current.key_id
    payload: dict[str, Any] = {"from_key_id": head_key, "to_key_id": new, "handover": None}
    if head_key is not None:
        old = keys.get(head_key)
        if old is None:
            raise ChainKeyError(f"the chain's last event is sealed with key {head_key}, which is "
                                "not in the key ring: add it as a retired key")
        payload["handover"] = handover(old, prev_hash=prev_hash, new_key_id=new)
    return NewEvent(kind=KEY_ROTATED, occurred_at=datetime.now(UTC), actor="engine",
                    payload=payload)


@dataclass
class ChainWalk:
    """Checks the links of the chain one event at a time, in order (:meth:`step`).

    Holds what a link depends on — the expected seq, the previous hash and key — and reports
    each broken link as ``(code, detail)`` (:data:`LINK_PROBLEMS`), carrying on from what is
    stored so that one break is reported once. Counts the unkeyed events it met.
    """

    keys: ChainKeys | None
    expected_seq: int = 1
    prev_hash: str = GENESIS_HASH
    key_id: str | None = None
    keyed: bool = False
    unkeyed: int = 0

    def step(self, row: Any) -> tuple[str, str] | None:
        """Check one event (anything with the event's columns as attributes)."""
        try:
            return self._check(row)
        finally:
            self.expected_seq, self.prev_hash = int(row.seq) + 1, str(row.hash)
            self.key_id = row.key_id
            self.keyed = self.keyed or row.key_id is not None
            self.unkeyed += row.key_id is None

    def _check(self, row: Any) -> tuple[str, str] | None:
        seq = int(row.seq)
        if seq != self.expected_seq:
            return "seq_gap", f"expected seq {self.expected_seq}, found seq {seq}"
        if row.prev_hash != self.prev_hash:
            return "prev_hash_mismatch", "prev_hash does not equal the hash of the event before it"
        if row.key_id is None:
            if self.keyed:
                return "unkeyed_event", "an event without a chain key after keyed events"
            until = self.keys.unkeyed_until if self.keys is not None else 0
            if seq > until:
                return ("unkeyed_event", f"an event without a chain key, where the key ring "
                        f"allows unkeyed events up to seq {until} only")
            key = None
        else:
            key = self.keys.get(row.key_id) if self.keys is not None else None
            if key is None:
                return "unknown_key", f"sealed with chain key {row.key_id}, not in the key ring"
        fields = {name: getattr(row, name) for name in HASHED}
        if event_hash(prev_hash=row.prev_hash, key=key, **fields) != row.hash:
            return "hash_mismatch", "the stored hash does not match the event's content"
        if seq > 1 and self.keyed and row.key_id != self.key_id:
            return self._rotation(row)
        return None

    def _rotation(self, row: Any) -> tuple[str, str] | None:
        payload = row.payload if isinstance(row.payload, Mapping) else {}
        if (row.kind != KEY_ROTATED or payload.get("from_key_id") != self.key_id
                or payload.get("to_key_id") != row.key_id):
            return ("key_changed_without_rotation",
                    f"sealed with key {row.key_id} after key {self.key_id}, and it is not their "
                    "chain_key_rotated event")
        old = self.keys.get(self.key_id) if self.keys is not None else None
        if old is None:
            return "unknown_key", f"the rotation's old key {self.key_id} is not in the key ring"
        given = payload.get("handover")
        if not isinstance(given, str) or not old.verifies(
                f"chain-key-handover|{row.prev_hash}|{row.key_id}", given):
            return ("key_changed_without_rotation", f"the rotation to key {row.key_id} carries no "
                    f"valid handover by key {self.key_id}")
        return None


def is_sealed(row: Any, keys: ChainKeys | None) -> bool:
    """Whether one stored event (its columns as attributes) carries a valid seal: sealed with a
    key of ``keys``, or one of the events written before the chain was keyed. Its place in the
    chain is :func:`verify_chain`'s business; this says only that whoever wrote it held the key
    — what the engine asks before it trusts a row the event records."""
    if keys is None:
        return False
    if row.key_id is None:
        key = None
        if int(row.seq) > keys.unkeyed_until:
            return False
    else:
        key = keys.get(row.key_id)
        if key is None:
            return False
    fields = {name: getattr(row, name) for name in HASHED}
    return bool(event_hash(prev_hash=row.prev_hash, key=key, **fields) == row.hash)


def sealed_events(*, session: Session | Connection, kind: str,
                  request_ids: Sequence[str] | None = None) -> list[Any]:
    """The events of ``kind`` (about ``request_ids``, if given) that carry a valid seal under
    the session's key ring, in chain order; events that do not are left out."""
    keys = keys_of(session)
    query = select(_EVENTS).where(_EVENTS.c.kind == kind).order_by(_EVENTS.c.seq)
    if request_ids is not None:
        query = query.where(_EVENTS.c.request_id.in_(list(request_ids)))
    return [row for row in session.execute(query) if is_sealed(row, keys)]


def verify_chain(*, session: Session, batch_size: int = 2000) -> ChainReport:
    """Recompute the whole chain from the genesis and report the first break, if any."""
    walk = ChainWalk(keys_of(session))
    checked, head_seq = 0, None
    result = session.execute(
        select(_EVENTS).order_by(_EVENTS.c.seq).execution_options(yield_per=batch_size))
    try:
        for row in result:
            prev_hash = walk.prev_hash
            problem = walk.step(row)
            if problem is not None:
                return ChainReport(ok=False, events_checked=checked, head_seq=head_seq,
                                   head_hash=prev_hash, broken_seq=int(row.seq),
                                   problem=problem[0], detail=problem[1])
            checked += 1
            head_seq = int(row.seq)
    finally:
        result.close()
    return ChainReport(ok=True, events_checked=checked, head_seq=head_seq,
                       head_hash=walk.prev_hash)

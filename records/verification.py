"""Verification of the whole record: the hash chain, the table snapshots, and every row of the
record against the audit event that recorded it.

The chain (:mod:`records.chain`) proves that the events were not changed, deleted, inserted or
reordered. The rows beside it — requests, their subjects, decisions, deliveries, review answers,
table snapshots — are guarded by triggers, but someone with rights on the database can drop those
and edit a row. Each of those rows was recorded together with an event that states what was
recorded (ids, outcomes, categories, hashes), so :func:`verify_record` holds every row against its
event and every event against its row:

* the chain: every event follows the one before it and hashes to its stored hash; every break
  is reported, the first one also as :attr:`RecordReport.first_break`. Against an anchor written
  down earlier (``expect_head``) the chain must still hold that event with that hash, which is
  what catches a tail cut off or rewritten with fresh hashes;
* the table snapshots: each content hashes to its hash, each ``table_snapshot_stored`` event has
  its snapshot and the other way round, and no decision refers to a snapshot that is missing;
* ``requests`` (the raw body hashes to ``body_hash``; the subjects' pseudonyms give the event's
  ``subjects_digest``), ``decisions``, ``deliveries`` and ``review_answers``: each row has its
  event and agrees with it field by field, each event has its row;
* ``request_status``, the one mutable table, agrees with the state the chain derives. It is a
  projection, not the record, so a disagreement is a warning and does not fail the verification.

It streams: one ordered pass over the events, then one pass over each table, in batches of
:data:`~legal_bases.limits.VERIFY_BATCH_SIZE` rows. Between them it holds, per row id, only the
seq of the event that recorded the row and a 16-byte fingerprint of what that event says about it
— never payloads or bodies — and it reads an event again only to explain a problem it lists.
Problems carry codes (:data:`PROBLEM_CODES`), ids, sequence numbers, field names and vocabulary
values only — never personal data, so a report can be shared with anyone who checks the record.

For a consistent result while the engine keeps writing, read through :func:`snapshot_reader`:
one snapshot of the database for all passes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, Table, not_, select
from sqlalchemy.orm import Session

from legal_bases.errors import DisclosureError
from legal_bases.limits import (
    CHECKPOINT_STALE_HOURS,
    VERIFY_BATCH_SIZE,
    VERIFY_PROBLEMS_LISTED,
)
from legal_bases.table import canonical_json, sha256, table_from_snapshot
from legal_bases.vocabulary import Outcome
from records import data_keys, event_rows
from records.api_keys import KEY_ISSUED, KEY_REVOKED, ApiKeyRevocation, ApiKeyRow, bound_hash
from records.chain import ChainWalk, keys_of
from records.checkpoints import FoundCheckpoints, checkpoint_problem
from records.db import read_only
from records.errors import DataKeyError
from records.ledger import received_on
from records.legacy_sealing import REQUESTS_SEALED, PendingSealing
from records.models import (
    AuditEvent,
    DecisionRow,
    DeliveryRow,
    RequestRow,
    RequestStatus,
    RequestSubject,
    TableSnapshot,
)
from records.pseudonym import subjects_digest
from records.retention import DONE
from records.reviews import (
    ENROLLED,
    REMOVED,
    ReviewAnswerRow,
    ReviewerRemoval,
    ReviewerRow,
    motivation_digest,
    sealed_secret_digest,
)
from records.verification_report import RecordCounts, RecordProblem, RecordReport
from records.vocabulary import EventKind

_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_DELIVERIES: Table = DeliveryRow.__table__  # type: ignore[attr-defined]
_ANSWERS: Table = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
_SNAPSHOTS: Table = TableSnapshot.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
_REVIEWERS: Table = ReviewerRow.__table__  # type: ignore[attr-defined]
_REMOVALS: Table = ReviewerRemoval.__table__  # type: ignore[attr-defined]
_KEYS: Table = ApiKeyRow.__table__  # type: ignore[attr-defined]
_REVOCATIONS: Table = ApiKeyRevocation.__table__  # type: ignore[attr-defined]
_ACTORS = frozenset({ENROLLED, REMOVED, KEY_ISSUED, KEY_REVOKED})
_DATA_KEYS: Table = data_keys.DATA_KEYS
_PENDING: Table = PendingSealing.__table__  # type: ignore[attr-defined]
#: The states in which a request may be shredded.
SHREDDABLE_STATES = frozenset(DONE)


def _same_body(key: data_keys.DataKey, plain: str, body_hash: str) -> bool:
    """Whether an opened raw body gives its body hash (keyed; plain for a ledger sealed later)."""
    try:
        basis = canonical_json(json.loads(plain))
    except (ValueError, RecursionError):
        basis = plain
    return data_keys.same_body(key, body_hash, basis)

_RELEASING = (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value)
#: Outcomes that act on a request: release data or send it to a reviewer.
_ACTING = (*_RELEASING, Outcome.NEEDS_REVIEW.value)

def snapshot_reader(engine: Engine) -> Engine:
    """``engine`` set up to read one consistent snapshot per transaction, for a verification
    while others write: SQLite reads in a deferred transaction (one WAL snapshot, and no write
    lock held), PostgreSQL in a ``REPEATABLE READ`` transaction."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return read_only(engine)


def verify_record(*, session: Session, batch_size: int = VERIFY_BATCH_SIZE,
                  expect_head: tuple[int, str] | None = None,
                  checkpoints: FoundCheckpoints | None = None, now: datetime | None = None,
                  problems_listed: int = VERIFY_PROBLEMS_LISTED) -> RecordReport:
    """Verify the chain, the snapshots and every row of the record against its event.

    ``expect_head`` is an anchor ``(seq, hash)`` written down earlier: the chain must still hold
    the event ``seq`` with that ``hash``. ``checkpoints`` are the signed checkpoints found in the
    checkpoint folder (:func:`records.checkpoints.read_checkpoints`): each must carry the chain
    key's seal and be held by the chain like an anchor; the newest must not be older than
    :data:`~legal_bases.limits.CHECKPOINT_STALE_HOURS` at ``now``. Reads only; streams every
    table in batches of ``batch_size`` rows.
    """
    verifier = _Verifier(session, batch_size, expect_head, problems_listed)
    verifier.checkpoints(checkpoints, now or datetime.now(UTC))
    return verifier.run()


@dataclass
class _Expected:
    """What the events say about the rows, keyed by row id: the event's seq and a fingerprint.

    ``requests`` also keeps the subject count and ``subjects_digest`` of the event (set to None
    once the subjects were checked); ``states`` is the state each request's latest event left.
    """

    requests: dict[str, tuple[int, bytes, Any, Any]] = field(default_factory=dict)
    decisions: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    deliveries: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: the categories each delivery's event says it carried (events from 0.4.0 on say so)
    delivered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: who may act, as the events say: reviewer id -> digest of the sealed secret (None before
    #: 0.4.0); removed reviewers; key id -> (partner, hash or None); revoked keys
    enrolled: dict[str, str | None] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    issued: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    snapshots: dict[str, tuple[int, Any, Any]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    #: request id -> seq of its request_shredded event (its data key and subjects are gone)
    shredded: dict[str, int] = field(default_factory=dict)
    #: answer key -> (digest of the clear motivation, of the sealed one) for the answers of
    #: before 0.8.0 sealed afterwards, as the requests_sealed events say
    resealed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: request id -> sha256 of its body as sealed afterwards (requests of before 0.8.0)
    resealed_bodies: dict[str, str] = field(default_factory=dict)


def _answer_key(request_id: Any, seq: Any) -> str:
    return f"{request_id}#{seq}"


class _Verifier:
    """One verification run: the passes, and the problems they find (listed up to a cap)."""

    def __init__(self, session: Session, batch_size: int, expect_head: tuple[int, str] | None,
                 problems_listed: int) -> None:
        self.session = session
        self.vault = data_keys.vault_of(session)
        self.batch_size = batch_size
        self.expect_head = expect_head
        self.listed = problems_listed
        self.problems: list[RecordProblem] = []
        self.breaks = 0
        self.warnings = 0
        self.first_break: RecordProblem | None = None
        self.anchor_ok: bool | None = None if expect_head is None else False
        self.counts: dict[str, int] = {}
        self.expected = _Expected()
        #: seq -> (hash, what it comes from, problem code if the chain does not hold it)
        self.anchors: dict[int, list[tuple[str, str, str]]] = {}
        if expect_head is not None:
            self.anchors.setdefault(expect_head[0], []).append(
                (expect_head[1], "the anchored event", "anchor"))
        self.checkpoints_held = 0
        self.freshness: tuple[str, datetime | None, datetime] | None = None
        self._category_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def checkpoints(self, found: FoundCheckpoints | None, now: datetime) -> None:
        """Take the checkpoints of the folder as anchors, once their seals are checked."""
        if found is None:
            return
        keys = keys_of(self.session)
        for name, reason in found.unreadable:
            self._found("checkpoint_unreadable", "checkpoints", f"{name}: {reason}")
        for name, checkpoint in found.checkpoints:
            problem = checkpoint_problem(checkpoint, keys)
            if problem is not None:
                code = ("checkpoint_unverifiable" if "not in the key ring" in problem
                        else "checkpoint_forged")
                self._found(code, "checkpoints", f"{name}: {problem}", seq=checkpoint.seq)
                continue
            self.anchors.setdefault(checkpoint.seq, []).append(
                (checkpoint.hash, f"checkpoint {name}", "checkpoint"))
            self.checkpoints_held += 1
        self.freshness = (found.folder, max((c.written_at for _, c in found.checkpoints),
                                            default=None), now)

    def _fresh(self) -> None:
        """Warn when a chain with events has no checkpoint, or only old ones."""
        if self.freshness is None:
            return
        folder, newest, now = self.freshness
        if newest is None:
            self._found("no_checkpoint", "checkpoints", f"{folder} holds no checkpoint: a tail "
                        "cut off the chain would not be found", warning=True)
        elif now - newest > timedelta(hours=CHECKPOINT_STALE_HOURS):
            self._found("checkpoint_stale", "checkpoints", f"the newest checkpoint was written "
                        f"{newest.isoformat(timespec='seconds')}: is the nightly verification "
                        "running?", warning=True)

    def run(self) -> RecordReport:
        head_seq, head_hash = self._chain()
        if head_seq:
            self._fresh()
        snapshots = self._snapshots()
        self._subjects()
        self._requests()
        self._decisions(snapshots)
        self._deliveries()
        self._releases()
        self._actors()
        self._answers()
        self._status()
        return RecordReport(
            ok=self.breaks == 0, counts=RecordCounts(**self.counts), head_seq=head_seq,
            head_hash=head_hash, first_break=self.first_break, expected_head=self.expect_head,
            anchor_ok=self.anchor_ok, problems=tuple(self.problems), breaks=self.breaks,
            warnings=self.warnings, checkpoints=self.checkpoints_held)

    # -- bookkeeping

    def _found(self, code: str, table: str, detail: str | Callable[[], str], *,
               row_id: str | None = None, seq: int | None = None,
               warning: bool = False) -> RecordProblem | None:
        """Count a problem; list it while the list has room. ``detail`` may be a function, so a
        costly detail is worked out only for problems that are listed."""
        if warning:
            self.warnings += 1
        else:
            self.breaks += 1
        if len(self.problems) >= self.listed:
            return None
        problem = RecordProblem(code=code, table=table,
                                detail=detail if isinstance(detail, str) else detail(),
                                row_id=row_id, seq=seq, warning=warning)
        self.problems.append(problem)
        return problem

    def _stream(self, table: Table, columns: Sequence[str],
                order_by: Sequence[str]) -> Iterator[Any]:
        """The rows of ``table`` (only ``columns``), in order, fetched ``batch_size`` at a time."""
        query = (select(*[table.c[c] for c in columns])
                 .order_by(*[table.c[c] for c in order_by])
                 .execution_options(yield_per=self.batch_size))
        result = self.session.execute(query)
        count = 0
        try:
            for batch in result.partitions():
                count += len(batch)
                yield from batch
        finally:
            result.close()
            self.counts[table.name] = count

    # -- the chain

    def _chain(self) -> tuple[int | None, str]:
        """Walk the events in order: check each link, remember what each says about its row."""
        walk = ChainWalk(keys_of(self.session))
        head_seq: int | None = None
        for row in self._stream(_EVENTS, event_rows.EVENT_COLUMNS, ("seq",)):
            seq = int(row.seq)
            problem = walk.step(row)
            if problem is not None:
                self._chain_break(problem[0], f"{problem[1]} (a {row.kind} event)", seq)
            for anchored_hash, what, kind in self.anchors.pop(seq, []):
                held = row.hash == anchored_hash
                if kind == "anchor":
                    self.anchor_ok = held
                if not held:
                    self._chain_break(f"{kind}_mismatch", f"{what} has another hash now: the "
                                      "chain was rewritten from here or before", seq)
            # the walk carries on from what is stored, so a break is reported once
            head_seq = seq
            self._remember(row)
        if walk.unkeyed:
            self._found("unkeyed_events", "audit_events", f"{walk.unkeyed} event(s) from before "
                        "the chain was keyed carry a plain sha256: only a checkpoint or anchor "
                        "written down outside the database protects them", warning=True)
        for seq, anchored in sorted(self.anchors.items()):
            for _, what, kind in anchored:
                self._chain_break(f"{kind}_missing", f"the chain ends at seq {head_seq or 0}, "
                                  f"before {what} at seq {seq}: events were cut off", seq)
        return head_seq, walk.prev_hash

    def _chain_break(self, code: str, detail: str, seq: int) -> None:
        problem = self._found(code, "audit_events", detail, seq=seq)
        if self.first_break is None:
            self.first_break = problem or RecordProblem(code, "audit_events", detail, seq=seq)

    def _remember(self, event: Any) -> None:
        """Note what an event says about the row it records and the state it leaves."""
        payload = event_rows.payload(event)
        kind, seq, request_id = event.kind, int(event.seq), event.request_id
        state = payload.get("state")
        if request_id is not None and isinstance(state, str):
            self.expected.states[request_id] = sys.intern(state)
        expected = self.expected
        if kind in (EventKind.REQUEST_RECEIVED.value, EventKind.REQUEST_INVALID.value):
            key = self._key(request_id, "request_id", event, expected.requests)
            if key is not None:
                received = kind == EventKind.REQUEST_RECEIVED.value
                expected.requests[key] = (
                    seq, event_rows.fingerprint(event_rows.request_from_event(event, payload)),
                    payload.get("subject_count") if received else 0,
                    payload.get("subjects_digest") if received else None)
        elif kind == EventKind.REQUEST_SHREDDED.value and request_id is not None:
            expected.shredded[request_id] = seq
            self._shredding(event, payload, request_id)
        elif kind == REQUESTS_SEALED:
            resealed, bodies = payload.get("resealed"), payload.get("bodies")
            if isinstance(resealed, dict):
                expected.resealed.update(
                    (k, (v[0], v[1])) for k, v in resealed.items()
                    if isinstance(v, list) and len(v) == 2)
            if isinstance(bodies, dict):
                expected.resealed_bodies.update(bodies)
        elif kind == EventKind.DECISION_RECORDED.value:
            key = self._key(payload.get("decision_id"), "decision_id", event, expected.decisions)
            if key is not None:
                expected.decisions[key] = (seq, event_rows.fingerprint(
                    event_rows.decision_from_event(event, payload)))
        elif kind == EventKind.DELIVERY_RECORDED.value:
            key = self._key(payload.get("delivery_id"), "delivery_id", event,
                            expected.deliveries)
            if key is not None:
                expected.deliveries[key] = (seq, event_rows.fingerprint(
                    event_rows.delivery_from_event(event, payload)))
                released = payload.get("released")
                if isinstance(released, list):
                    expected.delivered[key] = self._categories(released)
        elif kind == event_rows.REVIEW_ANSWER_RECORDED:
            answer = payload.get("seq")
            if request_id is not None and isinstance(answer, int):
                key = self._key(_answer_key(request_id, answer), "request and answer seq", event,
                                expected.answers)
            else:
                key = self._key(None, "request and answer seq", event, expected.answers)
            if key is not None:
                expected.answers[key] = (seq, event_rows.fingerprint(
                    event_rows.answer_from_event(event, payload)))
        elif kind in _ACTORS:
            self._actor(kind, payload)
        elif kind == EventKind.TABLE_SNAPSHOT_STORED.value:
            key = self._key(payload.get("table_hash"), "table_hash", event, expected.snapshots)
            if key is not None:
                expected.snapshots[key] = (seq, event_rows.frozen(payload.get("grounds")),
                                           event_rows.frozen(payload.get("ground_versions")))

    def _shredding(self, event: Any, payload: Mapping[str, Any], request_id: str) -> None:
        """A shredding must follow the request's being done, and its term's end."""
        state = self.expected.states.get(request_id)
        if state not in SHREDDABLE_STATES:
            self._found("shredded_while_not_done", "audit_events", f"request {request_id} "
                        f"was shredded while {state or 'without a state'}", seq=int(event.seq))
        ended = payload.get("term_ended")
        on = received_on(event.occurred_at).isoformat()
        if not isinstance(ended, str) or ended > on:
            self._found("shredded_before_term", "audit_events", f"request {request_id} was "
                        f"shredded on {on}, its term ending {ended}", seq=int(event.seq))

    def _actor(self, kind: str, payload: Mapping[str, Any]) -> None:
        expected = self.expected
        if kind == ENROLLED:
            expected.enrolled[str(payload.get("reviewer_id"))] = payload.get(
                "sealed_secret_sha256")
        elif kind == REMOVED:
            expected.removed.add(str(payload.get("reviewer_id")))
        elif kind == KEY_ISSUED:
            expected.issued[str(payload.get("key_id"))] = (payload.get("partner_id"),
                                                           payload.get("key_hash_sha256"))
        else:
            expected.revoked.add(str(payload.get("key_id")))

    def _actors(self) -> None:
        """Reviewers and API keys against the events that made, removed and revoked them."""
        expected = self.expected
        for row in self.session.execute(select(_REVIEWERS.c.id, _REVIEWERS.c.totp_secret_sealed)):
            digest = expected.enrolled.get(row.id, "missing")
            if digest == "missing" or digest not in (None, sealed_secret_digest(
                    row.totp_secret_sealed)):
                self._found("reviewer_without_event", "reviewers", "no reviewer_enrolled event "
                            "enrolled this reviewer with this secret", row_id=row.id)
        self._both_ways(_REMOVALS.c.reviewer_id, expected.removed, "removal", REMOVED)
        for key in self.session.execute(
                select(_KEYS.c.key_id, _KEYS.c.partner_id, _KEYS.c.key_hash)):
            partner_id, bound = expected.issued.get(key.key_id, (None, None))
            if partner_id != key.partner_id or bound not in (None, bound_hash(key.key_hash)):
                self._found("api_key_without_event", "api_keys", f"no api_key_issued event "
                            f"issued this key to {key.partner_id}", row_id=key.key_id)
        self._both_ways(_REVOCATIONS.c.key_id, expected.revoked, "revocation", KEY_REVOKED)

    def _both_ways(self, column: Any, recorded: set[str], name: str, kind: str) -> None:
        """Rows that stop someone (a removal, a revocation) against their events, both ways:
        a row without its event, and an event whose row was deleted (which would undo it)."""
        rows = set(self.session.execute(select(column)).scalars())
        table = column.table.name
        for row_id in sorted(rows - recorded):
            self._found(f"{name}_without_event", table, f"no {kind} event", row_id=row_id)
        for row_id in sorted(recorded - rows):
            self._found(f"event_without_{name}", table, f"the {name} its {kind} event records "
                        "is missing", row_id=row_id)

    def _categories(self, values: Sequence[Any]) -> tuple[str, ...]:
        """``values`` as a sorted tuple, one shared object per distinct set (few exist)."""
        found = tuple(sorted(str(v) for v in values))
        return self._category_sets.setdefault(found, found)

    def _key(self, key: Any, name: str, event: Any,
             seen: Mapping[str, tuple[Any, ...]]) -> str | None:
        """The id of the row an event records, if it names one that no earlier event named."""
        seq = int(event.seq)
        if not isinstance(key, str):
            self._found("malformed_event", "audit_events", f"a {event.kind} event without "
                        f"its {name}", seq=seq)
            return None
        if key in seen:
            self._found("duplicate_event", "audit_events", f"a second {event.kind} event for "
                        f"the same {name} (the first is seq {seen[key][0]})", seq=seq)
            return None
        return key

    def _event(self, seq: int) -> Any:
        """One event, read again (only to explain a problem that will be listed)."""
        columns = [_EVENTS.c[c] for c in event_rows.EVENT_COLUMNS]
        return self.session.execute(select(*columns).where(_EVENTS.c.seq == seq)).one()

    # -- the rows

    def _snapshots(self) -> set[str]:
        """Check every snapshot's content against its hash and its event; return the hashes."""
        hashes: set[str] = set()
        expected = self.expected.snapshots
        for row in self._stream(_SNAPSHOTS, ("hash", "content"), ("hash",)):
            hashes.add(row.hash)
            event = expected.pop(row.hash, None)
            if sha256(row.content) != row.hash:
                self._found("snapshot_altered", "table_snapshots", "the content does not hash "
                            "to the snapshot's hash: it was altered", row_id=row.hash)
                continue
            if event is None:
                self._found("snapshot_without_event", "table_snapshots",
                            "no table_snapshot_stored event records this snapshot",
                            row_id=row.hash)
                continue
            try:
                table = table_from_snapshot(row.content, expected_hash=row.hash)
            except DisclosureError as exc:
                self._found("snapshot_altered", "table_snapshots",
                            f"the content is not a valid table of grounds: {exc}",
                            row_id=row.hash)
                continue
            seq, grounds, versions = event
            stored = (tuple(sorted(table.grounds)),
                      tuple(sorted(v.id for g in table for v in g.versions)))
            if stored != (grounds, versions):
                self._found("snapshot_mismatch", "table_snapshots", "the grounds or versions "
                            f"differ from those its event (seq {seq}) lists", row_id=row.hash)
        for table_hash, (seq, _grounds, _versions) in expected.items():
            self._found("event_without_snapshot", "audit_events",
                        f"the snapshot {table_hash} this event stored is missing", seq=seq)
        return hashes

    def _with_keys(self, table: Table, columns: Sequence[str],
                   order_by: Sequence[str]) -> Iterator[Any]:
        """The rows of ``table`` keyed by ``request_id`` or ``id``, each with its request's
        wrapped data key (``kek_id``, ``wrapped``; None once shredded), in order."""
        own = table.c.request_id if "request_id" in table.c else table.c.id
        query = (select(*(table.c[c] for c in columns), _DATA_KEYS.c.kek_id,
                        _DATA_KEYS.c.wrapped)
                 .select_from(table.outerjoin(_DATA_KEYS, _DATA_KEYS.c.request_id == own))
                 .order_by(*(table.c[c] for c in order_by))
                 .execution_options(yield_per=self.batch_size))
        count = 0
        for row in self.session.execute(query):
            count += 1
            yield row
        self.counts[table.name] = count

    def _data_key(self, request_id: str, row: Any) -> data_keys.DataKey | str | None:
        """The request's data key from a row of :meth:`_with_keys`; None if it has none; the
        reason as text if its wrapped key does not open."""
        if row.wrapped is None:
            return None
        try:
            return self.vault.unwrap(request_id, row.kek_id, row.wrapped)
        except DataKeyError as exc:
            return str(exc)

    def _subjects(self) -> None:
        """Hold each request's subjects (pseudonyms) against the count and digest of its event;
        a shredded request has none left."""
        current: Any = None
        pseudonyms: list[str] = []
        for row in self._with_keys(_SUBJECTS, ("request_id", "pseudonym"),
                                   ("request_id", "position")):
            if current is None or row.request_id != current.request_id:
                if current is not None:
                    self._check_subjects(current, pseudonyms)
                current, pseudonyms = row, []
            pseudonyms.append(row.pseudonym)
        if current is not None:
            self._check_subjects(current, pseudonyms)

    def _check_subjects(self, row: Any, pseudonyms: list[str]) -> None:
        request_id = row.request_id
        entry = self.expected.requests.get(request_id)
        if request_id in self.expected.shredded:
            self._found("subjects_after_shredding", "request_subjects", f"{len(pseudonyms)} "
                        "subject row(s) of a request shredded under retention (event seq "
                        f"{self.expected.shredded[request_id]})", row_id=request_id)
        if entry is None:
            return  # a request without its event: reported with the request
        seq, fingerprint, count, digest = entry
        self.expected.requests[request_id] = (seq, fingerprint, None, None)
        if count != len(pseudonyms):
            self._found("subjects_mismatch", "request_subjects", f"{len(pseudonyms)} subject "
                        f"row(s); the request's event (seq {seq}) records {count}",
                        row_id=request_id)
            return
        key = self._data_key(request_id, row)
        if subjects_digest(pseudonyms) == digest:
            return  # the plain digest of a request recorded before 0.8.0
        if not isinstance(key, data_keys.DataKey):
            return  # a key gone or not unwrapping is reported with the request: unchecked
        if data_keys.subjects_digest(key, pseudonyms) == digest:
            return
        self._found("subjects_mismatch", "request_subjects", "the subjects' pseudonyms do "
                    f"not give the subjects_digest of the request's event (seq {seq})",
                    row_id=request_id)

    def _requests(self) -> None:
        expected, shredded = self.expected.requests, self.expected.shredded
        columns = ("id", "partner_id", "requester_body", "channel", "reference", "received_at",
                   "raw_body", "body_hash", "valid", "validation_errors", "legal_basis",
                   "purpose", "reference_date", "due_date", "subject_count", "correlation_id")
        pending = set(self.session.execute(select(_PENDING.c.request_id)).scalars())
        for row in self._with_keys(_REQUESTS, columns, ("id",)):
            self._raw_body(row, shredded.get(row.id), row.id in pending)
            entry = expected.pop(row.id, None)
            if entry is not None and entry[2] and row.id not in shredded:
                # subjects the event counts, none were found
                self._found("subjects_mismatch", "request_subjects", "no subject rows; the "
                            f"request's event (seq {entry[0]}) records {entry[2]}",
                            row_id=row.id)
            self._compare(event_rows.REQUEST, row.id, self._request_as_recorded(row, pending),
                          None if entry is None else entry[:2])
        self._orphans(event_rows.REQUEST, expected)

    def _request_as_recorded(self, row: Any, pending: set[str]) -> Any:
        """A request as its event recorded it: the event of a request of before 0.8.0 did not
        commit to the sealed body (it was sealed afterwards, as a requests_sealed event says,
        or is still to be sealed)."""
        resealed = self.expected.resealed_bodies.get(row.id)
        if row.id in pending or (resealed is not None and resealed == sha256(row.raw_body)):
            return SimpleNamespace(**{**row._mapping, "sealed_body_sha256": None})
        return row

    def _raw_body(self, row: Any, shredded_seq: int | None, pending: bool) -> None:
        """The raw body against the body hash: opened with the request's data key (or as stored,
        for a submission recorded in clear before 0.8.0 and not sealed yet); once shredded, the
        key must be gone and the body still sealed."""
        key = self._data_key(row.id, row)
        if not data_keys.is_sealed(row.raw_body) and not pending:
            self._found("raw_body_altered", "requests", "the raw body is stored in clear, not "
                        "sealed (and not a submission of before 0.8.0 still to be sealed)",
                        row_id=row.id)
            return
        if shredded_seq is not None:
            if row.wrapped is not None:
                self._found("shredding_incomplete", "data_keys", "the request's data key is "
                            f"still held, although it was shredded (event seq {shredded_seq})",
                            row_id=row.id)
            return
        if not data_keys.is_sealed(row.raw_body):
            if event_rows.body_digest(row.raw_body) != row.body_hash:
                self._found("raw_body_altered", "requests", "the raw body as stored does not "
                            "hash to the request's body_hash", row_id=row.id)
            return
        if key is None:
            self._found("data_key_missing", "data_keys", "the request's data key is gone and "
                        "no request_shredded event says it was shredded", row_id=row.id)
            return
        if isinstance(key, str):
            self._found("data_key_unusable", "data_keys", key, row_id=row.id)
            return
        try:
            plain = key.open(data_keys.RAW_BODY, row.raw_body)
        except DataKeyError:
            plain = None
        if plain is None or not _same_body(key, plain, row.body_hash):
            self._found("raw_body_altered", "requests", "the raw body as stored does not open "
                        "with its data key or does not hash to the request's body_hash",
                        row_id=row.id)

    def _decisions(self, snapshots: set[str]) -> None:
        expected = self.expected.decisions
        columns = ("id", "request_id", "sequence", "outcome", "released", "withheld", "reasons",
                   "review_triggers", "proposal", "ground_id", "ground_version", "table_hash",
                   "decided_by", "decided_at", "flow_run_id", "deadline", "supersedes")
        for row in self._stream(_DECISIONS, columns, ("id",)):
            if row.table_hash not in snapshots:
                self._found("snapshot_missing", "decisions", f"the decision was read from table "
                            f"{row.table_hash}, whose snapshot is missing", row_id=row.id)
            self._compare(event_rows.DECISION, row.id, row, expected.pop(row.id, None))
        self._orphans(event_rows.DECISION, expected)

    def _deliveries(self) -> None:
        expected = self.expected.deliveries
        columns = ("id", "request_id", "decision_id", "partner_id", "destination", "status",
                   "receipt", "delivered_at", "flow_run_id")
        for row in self._stream(_DELIVERIES, columns, ("id",)):
            self._compare(event_rows.DELIVERY, row.id, row, expected.pop(row.id, None))
        self._orphans(event_rows.DELIVERY, expected)

    def _releases(self) -> None:
        """What left against what was decided and accepted: nothing for a refused submission,
        only what the decision in force at the time released (DESIGN.md section 10)."""
        requests, decisions, deliveries = _REQUESTS.c, _DECISIONS.c, _DELIVERIES.c
        for row in self.session.execute(
                select(decisions.id, decisions.request_id, decisions.outcome)
                .join(_REQUESTS, requests.id == decisions.request_id)
                .where(not_(requests.valid), decisions.outcome.in_(_ACTING))
                .order_by(decisions.id)):
            self._found("release_for_invalid_request", "decisions", f"decided {row.outcome} on "
                        f"request {row.request_id}, which was recorded as invalid",
                        row_id=row.id)
        later = _DECISIONS.alias("later")
        superseded = (select(later.c.id).where(
            later.c.request_id == decisions.request_id, later.c.sequence > decisions.sequence,
            later.c.decided_at <= deliveries.delivered_at).limit(1).scalar_subquery())
        query = (select(deliveries.id, deliveries.request_id, requests.valid, decisions.id,
                        decisions.outcome, decisions.released, superseded)
                 .join(_DECISIONS, decisions.id == deliveries.decision_id)
                 .join(_REQUESTS, requests.id == deliveries.request_id)
                 .order_by(deliveries.id).execution_options(yield_per=self.batch_size))
        delivered = self.expected.delivered
        for delivery_id, request_id, valid, decision_id, outcome, released, later_id in (
                self.session.execute(query)):
            if not valid:
                self._found("delivery_for_invalid_request", "deliveries", f"request {request_id} "
                            "was recorded as invalid, yet this delivery was made for it",
                            row_id=delivery_id)
            if outcome not in _RELEASING:
                self._found("delivery_not_releasing", "deliveries", f"its decision {decision_id} "
                            f"is {outcome}", row_id=delivery_id)
            if later_id is not None:
                self._found("delivery_of_superseded_decision", "deliveries", f"its decision "
                            f"{decision_id} was replaced by decision {later_id} before the "
                            "delivery", row_id=delivery_id)
            carried = delivered.get(delivery_id)
            if carried is not None and carried != self._categories(released or []):
                self._found("delivery_categories_differ", "deliveries", f"carried "
                            f"{', '.join(carried) or 'nothing'}; decision {decision_id} released "
                            f"{', '.join(sorted(released or [])) or 'nothing'}",
                            row_id=delivery_id)

    def _answers(self) -> None:
        expected = self.expected.answers
        columns = ("request_id", "seq", "reviewer_id", "role", "verdict", "categories",
                   "motivation", "accepted", "step", "refusal_code", "answered_at",
                   "flow_run_id")
        for row in self._with_keys(_ANSWERS, columns, ("request_id", "seq")):
            key = _answer_key(row.request_id, row.seq)
            event = expected.pop(key, None)
            self._compare(event_rows.ANSWER, key, self._answer_as_recorded(row, event), event)
        self._orphans(event_rows.ANSWER, expected)

    def _answer_as_recorded(self, row: Any, event: tuple[int, bytes] | None) -> Any:
        """An answer as its event recorded it. An answer of before 0.8.0 was sealed afterwards
        (records.legacy_sealing) while its event holds the sha256 of the motivation in clear;
        the sealed ``requests_sealed`` event names both digests, so such a row is held against
        its event with the clear text's digest, whether or not its key still exists."""
        if event is None or not data_keys.is_sealed(row.motivation):
            return row
        resealed = self.expected.resealed.get(_answer_key(row.request_id, row.seq))
        if resealed is None or resealed[1] != motivation_digest(row.motivation):
            return row
        return SimpleNamespace(**{**row._mapping, "motivation_digest": resealed[0]})

    def _compare(self, kind: event_rows.RowKind, row_id: str, row: Any,
                 event: tuple[int, bytes] | None) -> None:
        name = kind.name.replace("_", " ")
        if event is None:
            self._found(f"{kind.name}_without_event", kind.table,
                        f"no {kind.event_kind} event records this {name}", row_id=row_id)
            return
        seq, fingerprint = event
        values = kind.from_row(row)
        if event_rows.fingerprint(values) != fingerprint:
            def detail() -> str:
                event = self._event(seq)
                recorded = kind.from_event(event, event_rows.payload(event))
                found = event_rows.differences(kind.fields, values, recorded)
                return f"disagrees with its event on {found}"
            self._found(f"{kind.name}_mismatch", kind.table, detail, row_id=row_id, seq=seq)

    def _orphans(self, kind: event_rows.RowKind, expected: Mapping[str, tuple[Any, ...]]) -> None:
        name = kind.name.replace("_", " ")
        for row_id, entry in expected.items():
            self._found(f"event_without_{kind.name}", "audit_events", f"the {name} {row_id} "
                        f"this {kind.event_kind} event records is missing", seq=entry[0])

    def _status(self) -> None:
        """The projection against the chain: disagreements are warnings, not breaks."""
        states = self.expected.states
        for row in self._stream(_STATUS, ("request_id", "state"), ("request_id",)):
            derived = states.pop(row.request_id, None)
            if derived is None:
                self._found("status_without_events", "request_status", "the request's events "
                            "carry no state", row_id=row.request_id, warning=True)
            elif row.state != derived:
                self._found("status_mismatch", "request_status", f"state {row.state}, the chain "
                            f"says {derived}", row_id=row.request_id, warning=True)
        for request_id, derived in states.items():
            self._found("status_missing", "request_status", f"no row; the chain says {derived}",
                        row_id=request_id, warning=True)

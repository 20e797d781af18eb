"""Seal what a ledger recorded in clear before 0.8.0, so that retention can shred it too.

Migration 0007 lists every request recorded until then in ``pending_sealing``. When the ledger
is next opened with its KEK ring (:func:`records.db.open_ledger`), each of them gets a data key,
its raw body and its reviewers' motivations are sealed with it, and its subjects get their positions
for the Logboek — in batches, each one transaction with a ``requests_sealed`` event
(ids and counts), which also takes the batch off the list. A run cut off part-way leaves every
request either sealed and off the list or untouched and on it.

These are the only UPDATEs the record ever sees: the append-only triggers of ``requests`` and
``review_answers`` are lifted inside the batch's transaction and put back before it commits.
What stays as it was: the body hash and subjects digest their events committed to are plain
sha256 (the keyed digests came with 0.8.0), so a shredded request of before 0.8.0 keeps those
digests on the chain (README: Retention).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Engine,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from legal_bases import limits
from legal_bases.table import sha256
from records import chain, data_keys
from records.chain import NewEvent
from records.models import RequestRow, RequestSubject
from records.retention import purge_deleted
from records.reviews import ReviewAnswerRow, motivation_digest

#: The event of one sealed batch.
REQUESTS_SEALED = "requests_sealed"


_PENDING: Table = data_keys.PENDING_SEALING
PendingSealing = data_keys.PendingSealing
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_ANSWERS: Table = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
_GUARDED = ("requests", "review_answers")


def pending(engine: Engine) -> bool:
    """Whether any request still waits to be sealed (one index probe)."""
    with Session(engine) as session:
        return session.execute(select(_PENDING.c.request_id).limit(1)).first() is not None


def seal_pending(engine: Engine, *, batch_size: int = limits.SHRED_BATCH_SIZE) -> int:
    """Seal every request on the list, ``batch_size`` per transaction; how many were sealed."""
    sealed = 0
    while True:
        with Session(engine) as session, session.begin():
            ids = list(session.execute(select(_PENDING.c.request_id)
                                       .order_by(_PENDING.c.request_id)
                                       .limit(batch_size)).scalars())
            if not ids:
                break
            sealed += _seal(session, ids)
    if sealed:
        purge_deleted(engine)  # the clear text the rows held, out of the files too
    return sealed


def _seal(session: Session, ids: list[str]) -> int:
    vault = data_keys.vault_of(session)
    held = set(session.execute(select(data_keys.DATA_KEYS.c.request_id)
                               .where(data_keys.DATA_KEYS.c.request_id.in_(ids))).scalars())
    rows = session.execute(select(_REQUESTS.c.id, _REQUESTS.c.raw_body, _REQUESTS.c.received_at)
                           .where(_REQUESTS.c.id.in_(ids))).all()
    keys: list[dict[str, object]] = []
    bodies: list[tuple[str, str]] = []
    motivations: list[tuple[str, int, str, str]] = []
    subjects: dict[str, list[tuple[str, str]]] = {}
    for subject in session.execute(select(_SUBJECTS.c.request_id, _SUBJECTS.c.id_type,
                                          _SUBJECTS.c.pseudonym)
                                   .where(_SUBJECTS.c.request_id.in_(ids))
                                   .order_by(_SUBJECTS.c.request_id, _SUBJECTS.c.position)):
        subjects.setdefault(subject.request_id, []).append((subject.id_type, subject.pseudonym))
    answers: dict[str, list[tuple[int, str]]] = {}
    for answer in session.execute(select(_ANSWERS.c.request_id, _ANSWERS.c.seq,
                                         _ANSWERS.c.motivation)
                                  .where(_ANSWERS.c.request_id.in_(ids))):
        answers.setdefault(answer.request_id, []).append((answer.seq, answer.motivation))
    for row in rows:
        if row.id in held or data_keys.is_sealed(row.raw_body):
            continue  # sealed already (a run cut off after its commit)
        key, key_row = vault.new_key(row.id)
        keys.append(key_row)
        bodies.append((row.id, key.seal(data_keys.RAW_BODY, row.raw_body)))
        for seq, clear in answers.get(row.id, []):
            if not data_keys.is_sealed(clear):
                motivations.append((row.id, seq, clear, key.seal(data_keys.MOTIVATION, clear)))
    _lift_guards(session)
    for request_id, sealed in bodies:
        session.execute(update(_REQUESTS).where(_REQUESTS.c.id == request_id)
                        .values(raw_body=sealed))
    for request_id, seq, _, sealed in motivations:
        session.execute(update(_ANSWERS).where(_ANSWERS.c.request_id == request_id,
                                               _ANSWERS.c.seq == seq).values(motivation=sealed))
    _restore_guards(session)
    if keys:
        session.execute(insert(data_keys.DATA_KEYS), keys)
    session.execute(delete(_PENDING).where(_PENDING.c.request_id.in_(ids)))
    chain.append_event_rows(session=session, events=[NewEvent(
        kind=REQUESTS_SEALED, occurred_at=datetime.now(UTC), actor="engine", payload={
            "requests": len(bodies), "motivations": len(motivations),
            "first": ids[0], "last": ids[-1],
            # each answer's motivation: the digest its event committed to (of the clear text)
            # and the digest of the sealed text that replaced it, so the answer stays
            # verifiable once the key is gone
            "resealed": {f"{request_id}#{seq}": [motivation_digest(clear),
                                                 motivation_digest(sealed)]
                         for request_id, seq, clear, sealed in motivations},
            # each body as sealed now: its request's event (of before) did not commit to it
            "bodies": {request_id: sha256(sealed) for request_id, sealed in bodies}})])
    return len(bodies)


def _lift_guards(session: Session) -> None:
    if session.get_bind().dialect.name == "sqlite":
        for table in _GUARDED:
            session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
    else:
        for table in _GUARDED:
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))


def _restore_guards(session: Session) -> None:
    if session.get_bind().dialect.name == "sqlite":
        for table in _GUARDED:
            session.execute(text(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN SELECT "
                f"RAISE(ABORT, '{table} is append-only: UPDATE refused'); END"))
    else:
        for table in _GUARDED:
            session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only"))


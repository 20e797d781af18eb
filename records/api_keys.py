"""The intake API's keys, in the ledger: issued and revoked, never changed (insert-only tables).

A key looks like ``dk_<key id>_<secret>``: ``dk`` (disclosure key), 16 hex digits of key id
(public: it names the key in logs, audit events and ``disclosure partners list``) and 43
characters of base64url secret (:data:`~legal_bases.limits.API_KEY_SECRET_BYTES` random bytes).
It is shown once, when issued. The ledger keeps only its sha256 (the whole key, so the hash is
bound to its id): a random 256-bit secret needs no slow password hash, so checking a key is one
primary-key lookup and one constant-time comparison, microseconds.

``api_keys`` holds one row per issued key; ``api_key_revocations`` one row per revoked key. A key
is valid while it has no revocation row, so revoking is an insert, effective for the very next
request (nothing caches a key). Issuing and revoking are audit events in the hash chain
(``api_key_issued``, ``api_key_revoked``), naming the partner and the key id, never the secret or
its hash. A partner may hold several unrevoked keys (at most
:data:`~legal_bases.limits.MAX_ACTIVE_API_KEYS`), so a key is rotated without a gap: issue the
new one, switch, revoke the old one.

The partners themselves are configuration (``connectors/partners.py``); this module knows them
only by id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Column, ForeignKey, String, Table, bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from legal_bases import limits
from records import chain
from records.chain import NewEvent
from records.errors import LedgerError
from records.models import ACTOR_LENGTH, HASH_LENGTH, PARTNER_ID_LENGTH, add_length_checks
from records.timestamps import UTCDateTime, utc

#: Every key starts with this, then ``_``, the key id, ``_`` and the secret.
KEY_PREFIX = "dk"
KEY_ID_LENGTH = 16
REASON_LENGTH = 200
#: The tables of this module; both insert-only, guarded by triggers (migration 0003).
API_KEY_TABLES = ("api_keys", "api_key_revocations")
#: Audit event kinds (snake_case facts).
KEY_ISSUED = "api_key_issued"
KEY_REVOKED = "api_key_revoked"

_SECRET_CHARS = -(-limits.API_KEY_SECRET_BYTES * 4 // 3)  # base64url without padding
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{{KEY_ID_LENGTH}}})"
                  rf"_([A-Za-z0-9_-]{{{_SECRET_CHARS}}})$")
_ISSUE_ATTEMPTS = 5


class ApiKeyRow(SQLModel, table=True):
    """One issued API key (insert-only): whose it is, the sha256 of the key, when and by whom."""

    __tablename__ = "api_keys"

    key_id: str = Field(sa_column=Column(String(KEY_ID_LENGTH), primary_key=True))
    partner_id: str = Field(sa_column=Column(String(PARTNER_ID_LENGTH), nullable=False,
                                             index=True))
    key_hash: str = Field(sa_column=Column(String(HASH_LENGTH), nullable=False))
    issued_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    issued_by: str = Field(sa_column=Column(String(ACTOR_LENGTH), nullable=False))


class ApiKeyRevocation(SQLModel, table=True):
    """The revocation of one key (insert-only; a key is revoked once, for good)."""

    __tablename__ = "api_key_revocations"

    key_id: str = Field(sa_column=Column(
        String(KEY_ID_LENGTH), ForeignKey("api_keys.key_id", name="fk_api_key_revocations_key_id"),
        primary_key=True))
    revoked_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_by: str = Field(sa_column=Column(String(ACTOR_LENGTH), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(String(REASON_LENGTH)))


_KEYS: Table = ApiKeyRow.__table__  # type: ignore[attr-defined]
_REVOCATIONS: Table = ApiKeyRevocation.__table__  # type: ignore[attr-defined]


for _table in (_KEYS, _REVOCATIONS):
    add_length_checks(_table)


# -- errors ----------------------------------------------------------------------------------------

class ApiKeyError(LedgerError):
    """Raised when an API key cannot be issued or revoked as asked."""


class TooManyKeysError(ApiKeyError):
    """Raised when a partner already holds the most unrevoked keys it may hold."""

    def __init__(self, partner_id: str, active: int) -> None:
        self.partner_id = partner_id
        self.active = active
        super().__init__(f"partner {partner_id!r} already holds {active} unrevoked key(s), the "
                         f"most allowed ({limits.MAX_ACTIVE_API_KEYS}); revoke one first")


class UnknownApiKeyError(ApiKeyError):
    """Raised when a key id names no unrevoked key of the partner."""

    def __init__(self, partner_id: str, key_id: str) -> None:
        self.partner_id = partner_id
        self.key_id = key_id
        super().__init__(f"partner {partner_id!r} has no unrevoked key {key_id!r}")


# -- keys ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just issued: ``key`` is the only copy of the secret there will ever be."""

    key_id: str
    partner_id: str
    issued_at: datetime
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the ledger knows of a key: never the key, nor its hash."""

    key_id: str
    partner_id: str
    issued_at: datetime
    issued_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The result of checking a presented key: its partner, or why it was refused.

    ``problem`` is ``malformed``, ``unknown``, ``revoked`` or ``mismatch`` (a known key id with
    the wrong secret); the caller answers all of them alike and logs which it was.
    """

    key_id: str | None
    partner_id: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.partner_id is not None


def key_hash(key: str) -> str:
    """The stored form of a key: sha256 of the whole key, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, or None (no lookup for anything else)."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def new_key() -> tuple[str, str]:
    """A fresh key id and key, from the operating system's random source."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    secret = secrets.token_urlsafe(limits.API_KEY_SECRET_BYTES)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"


def issue_key(*, session: Session, partner_id: str, issued_at: datetime,
              issued_by: str) -> IssuedKey:
    """Issue a new key to ``partner_id`` and record the ``api_key_issued`` event.

    Raises :class:`TooManyKeysError` if the partner holds the most unrevoked keys already.
    Nothing is committed here; the key is valid once the caller commits.
    """
    at = utc(issued_at, name="issued_at")
    active = len([k for k in keys_of(session=session, partner_id=partner_id) if k.active])
    if active >= limits.MAX_ACTIVE_API_KEYS:
        raise TooManyKeysError(partner_id, active)
    for attempt in range(_ISSUE_ATTEMPTS):
        key_id, key = new_key()
        try:
            with session.begin_nested():
                session.execute(_KEYS.insert().values(
                    key_id=key_id, partner_id=partner_id, key_hash=key_hash(key),
                    issued_at=at, issued_by=issued_by))
                chain.append_events(session=session, events=[NewEvent(
                    kind=KEY_ISSUED, occurred_at=at, actor=issued_by,
                    payload={"partner_id": partner_id, "key_id": key_id,
                             "key_hash_sha256": bound_hash(key_hash(key))})])
        except IntegrityError:  # a key id drawn twice (2^-64): draw again
            if attempt == _ISSUE_ATTEMPTS - 1:
                raise
            continue
        return IssuedKey(key_id=key_id, partner_id=partner_id, issued_at=at, key=key)
    raise ApiKeyError("no free key id found")  # pragma: no cover - the loop returns or raises


def bound_hash(stored_hash: str) -> str:
    """What a key's ``api_key_issued`` event says of its stored hash (a digest of it: the event
    binds the row to the key without carrying the hash itself)."""
    return hashlib.sha256(f"api-key|{stored_hash}".encode()).hexdigest()


def revoke_keys(*, session: Session, partner_id: str, key_ids: Sequence[str] | None,
                revoked_at: datetime, revoked_by: str, reason: str | None = None) -> list[str]:
    """Revoke the partner's keys named (``None``: all its unrevoked keys); return their ids.

    Raises :class:`UnknownApiKeyError` for an id that is not an unrevoked key of this partner
    (and revokes nothing then). Each revocation is an ``api_key_revoked`` audit event.
    """
    at = utc(revoked_at, name="revoked_at")
    active = {k.key_id for k in keys_of(session=session, partner_id=partner_id) if k.active}
    if key_ids is None:
        chosen = sorted(active)
    else:
        chosen = list(dict.fromkeys(key_ids))
        for key_id in chosen:
            if key_id not in active:
                raise UnknownApiKeyError(partner_id, key_id)
    if not chosen:
        return []
    short_reason = reason[:REASON_LENGTH] if reason else None
    with session.begin_nested():
        session.execute(_REVOCATIONS.insert(), [
            {"key_id": key_id, "revoked_at": at, "revoked_by": revoked_by,
             "reason": short_reason} for key_id in chosen])
        chain.append_events(session=session, events=[NewEvent(
            kind=KEY_REVOKED, occurred_at=at, actor=revoked_by,
            payload={"partner_id": partner_id, "key_id": key_id, "reason": short_reason})
            for key_id in chosen])
    return chosen


def keys_of(*, session: Session | Connection, partner_id: str | None = None) -> list[KeyInfo]:
    """Every key issued (to ``partner_id``, or to anyone), oldest first, with its revocation."""
    query = (select(_KEYS.c.key_id, _KEYS.c.partner_id, _KEYS.c.issued_at, _KEYS.c.issued_by,
                    _REVOCATIONS.c.revoked_at, _REVOCATIONS.c.revoked_by)
             .select_from(_KEYS.outerjoin(_REVOCATIONS,
                                          _REVOCATIONS.c.key_id == _KEYS.c.key_id))
             .order_by(_KEYS.c.issued_at, _KEYS.c.key_id))
    if partner_id is not None:
        query = query.where(_KEYS.c.partner_id == partner_id)
    return [KeyInfo(key_id=row.key_id, partner_id=row.partner_id, issued_at=row.issued_at,
                    issued_by=row.issued_by, revoked_at=row.revoked_at,
                    revoked_by=row.revoked_by)
            for row in session.execute(query)]


def active_key_counts(*, session: Session | Connection) -> dict[str, int]:
    """How many unrevoked keys each partner holds (partners without any are left out)."""
    query = (select(_KEYS.c.partner_id, func.count())
             .select_from(_KEYS.outerjoin(_REVOCATIONS,
                                          _REVOCATIONS.c.key_id == _KEYS.c.key_id))
             .where(_REVOCATIONS.c.key_id.is_(None))
             .group_by(_KEYS.c.partner_id))
    return {row[0]: int(row[1]) for row in session.execute(query)}


def judge_key(key: str, key_id: str, found: tuple[str, str, bool] | None) -> KeyCheck:
    """The check of ``key`` given what the ledger holds for its id: ``(partner id, key hash,
    revoked)``, or None if nothing. The hash is compared in constant time."""
    if found is None:
        return KeyCheck(key_id, problem="unknown")
    partner_id, stored_hash, revoked = found
    if not hmac.compare_digest(stored_hash, key_hash(key)):
        return KeyCheck(key_id, problem="mismatch")
    if revoked:
        return KeyCheck(key_id, problem="revoked")
    return KeyCheck(key_id, partner_id=partner_id)


def verify_key(*, connection: Session | Connection, key: str) -> KeyCheck:
    """Check a presented key: valid if issued, unrevoked and genuine — as the record has it.

    The key's row must be backed by its ``api_key_issued`` event, sealed with the chain key (for
    keys issued since 0.4.0 the event carries the key's hash too), so a row written into the
    database without the key issues nothing; a key is revoked by its revocation row or by a
    sealed ``api_key_revoked`` event, so deleting the row does not bring it back. A primary-key
    lookup and two look-ups of the (few) key events by kind. A malformed key is refused without
    touching the database.
    """
    key_id = key_id_of(key)
    if key_id is None:
        return KeyCheck(None, problem="malformed")
    row = connection.execute(_VERIFY, {"key_id": key_id}).first()
    if row is None:
        return judge_key(key, key_id, None)
    issued = [e.payload for e in chain.sealed_events(session=connection, kind=KEY_ISSUED)
              if e.payload.get("key_id") == key_id]
    if not issued or issued[-1].get("partner_id") != row.partner_id or (
            issued[-1].get("key_hash_sha256") not in (None, bound_hash(row.key_hash))):
        return KeyCheck(key_id, problem="not_on_record")
    revoked = row.revoked is not None or any(
        e.payload.get("key_id") == key_id
        for e in chain.sealed_events(session=connection, kind=KEY_REVOKED))
    return judge_key(key, key_id, (row.partner_id, row.key_hash, revoked))


_VERIFY = (select(_KEYS.c.partner_id, _KEYS.c.key_hash, _REVOCATIONS.c.key_id.label("revoked"))
           .select_from(_KEYS.outerjoin(_REVOCATIONS, _REVOCATIONS.c.key_id == _KEYS.c.key_id))
           .where(_KEYS.c.key_id == bindparam("key_id")))


def revoked_among(*, session: Session | Connection, key_ids: Sequence[str]) -> set[str]:
    """Which of ``key_ids`` are revoked (in the caller's transaction, so the answer holds for
    whatever that transaction records)."""
    wanted = sorted(set(key_ids))
    if not wanted:
        return set()
    found = {str(k) for k in session.execute(
        select(_REVOCATIONS.c.key_id).where(_REVOCATIONS.c.key_id.in_(wanted))).scalars()}
    # a revocation whose row was deleted still holds: its sealed event says so
    return found | {str(e.payload.get("key_id"))
                    for e in chain.sealed_events(session=session, kind=KEY_REVOKED)
                    if e.payload.get("key_id") in wanted}

"""Per-request data keys: the ledger's personal data is encrypted, and destroyed with its key.

Every submission gets a data key of its own (32 random bytes) when it is recorded. What the
ledger holds about a person is sealed with it — the raw submission as received and the
reviewers' motivations — by AES-256-GCM (``cryptography``), bound to the request and the field
it belongs to, so a sealed value cannot be moved to another request or column. The keyed digests
that the audit chain commits to (the body hash, the subjects digest, a motivation's digest) are
HMACs under the same key, so once it is gone they no longer confirm a guessed number either.

A data key is stored only *wrapped*: encrypted under a key-encryption key (KEK) that lives
outside the database — ``DISCLOSURE_DATA_KEK``, a Prefect Secret block named by
``DISCLOSURE_DATA_KEK_BLOCK``, or the embedded default, the file ``<data_dir>/data.keks`` (made
on first use, mode 0600). The ring has the format of the chain's (:mod:`records.chain_keys`):
``<kek id>:<hex secret>`` per line, the last one current; retired KEKs unwrap the keys they
wrapped.

``data_keys`` is the one table of the record from which rows are deleted: destroying a request's
row is **crypto-shredding** it (:mod:`records.retention`). The audit chain keeps what stays —
ids, ground, outcome, categories, counts, and the ciphertexts' keyed digests — and a
``request_shredded`` event says when and why the key went. A backup taken before the shredding
still holds the wrapped key; it opens only with the KEK, so whoever restores such a backup must
shred again (``disclosure retention run``) before anything else reads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    ForeignKey,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from legal_bases.table import sha256
from records.chain_keys import ChainKey, ChainKeys
from records.errors import DataKeyError
from records.models import ID_LENGTH, KEY_ID_LENGTH, add_length_checks
from records.timestamps import UTCDateTime

#: The engine execution option that carries the KEK ring (records.db.make_engine).
DATA_KEKS_OPTION = "disclosure_data_keks"
#: Bytes of a data key.
DATA_KEY_BYTES = 32
#: Bytes of an AES-GCM nonce (random per sealed value).
NONCE_BYTES = 12
#: How a sealed value starts: the format's version.
SEALED_PREFIX = "enc1:"
#: Characters of a wrapped key as stored (base64 of nonce + key + tag, with the prefix).
WRAPPED_LENGTH = 96

#: Fields that are sealed, by the column they are stored in (the AEAD's associated data).
RAW_BODY = "requests.raw_body"
MOTIVATION = "review_answers.motivation"


class DataKeyRow(SQLModel, table=True):
    """A request's data key, wrapped by a KEK (deleted when the request is shredded)."""

    __tablename__ = "data_keys"

    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_data_keys_request_id"),
        primary_key=True))
    kek_id: str = Field(sa_column=Column(String(KEY_ID_LENGTH), nullable=False))
    wrapped: str = Field(sa_column=Column(String(WRAPPED_LENGTH), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class PendingSealing(SQLModel, table=True):
    """A request recorded in clear before 0.8.0, still to be sealed (deleted once sealed,
    :mod:`records.legacy_sealing`): the only request whose raw body may be read in clear."""

    __tablename__ = "pending_sealing"

    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_pending_sealing_request_id"),
        primary_key=True))


for _table in ("data_keys", "pending_sealing"):
    add_length_checks(SQLModel.metadata.tables[_table])

DATA_KEYS: Table = DataKeyRow.__table__  # type: ignore[attr-defined]
PENDING_SEALING: Table = PendingSealing.__table__  # type: ignore[attr-defined]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


class DataKey:
    """One request's data key: seals and opens its fields, makes its keyed digests."""

    __slots__ = ("_aead", "_secret", "request_id")

    def __init__(self, request_id: str, secret: bytes) -> None:
        if len(secret) != DATA_KEY_BYTES:
            raise DataKeyError(f"a data key is {DATA_KEY_BYTES} bytes")
        self.request_id = request_id
        self._secret = secret
        self._aead = AESGCM(secret)

    def seal(self, field: str, text: str) -> str:
        """``text`` encrypted and authenticated, bound to this request and ``field``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8"), self._bound(field))
        return SEALED_PREFIX + _b64(nonce + sealed)

    def open(self, field: str, sealed: str) -> str:
        """The text of a value :meth:`seal` made for this request and ``field``;
        :class:`DataKeyError` if it was altered, moved or sealed under another key."""
        if not is_sealed(sealed):
            raise DataKeyError(f"{field} of request {self.request_id} is not sealed")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX):])
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._bound(field))
        except (InvalidTag, ValueError):
            raise DataKeyError(f"{field} of request {self.request_id} does not open with its "
                               "data key: altered, moved from another request, or not sealed "
                               "by this ledger") from None
        return plain.decode("utf-8")

    def digest(self, label: str, text: str) -> str:
        """HMAC-SHA256 of ``label`` and ``text`` under this key, in hex: a digest the chain may
        keep, which confirms nothing once the key is destroyed."""
        return hmac.new(self._secret, f"{label}|{text}".encode(), hashlib.sha256).hexdigest()

    @property
    def secret(self) -> bytes:
        """The key's bytes (for rewrapping it under another KEK; never log or store them)."""
        return self._secret

    def _bound(self, field: str) -> bytes:
        return f"{self.request_id}|{field}".encode()

    def __repr__(self) -> str:
        return f"DataKey({self.request_id!r}, <secret hidden>)"


def is_sealed(value: str | None) -> bool:
    """Whether a stored value is sealed (a ledger from before 0.8.0 may hold clear text)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


@dataclass(frozen=True)
class Vault:
    """The KEK ring: wraps new data keys with the current KEK, unwraps with any of the ring."""

    keks: ChainKeys
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def _cipher(self, kek: ChainKey) -> AESGCM:
        """The AES-GCM of a KEK, made once (a KEK may be longer than AES takes: the AES key is
        derived from all of it)."""
        cipher = self._ciphers.get(kek.key_id)
        if cipher is None:
            cipher = self._ciphers[kek.key_id] = AESGCM(hmac.new(
                kek.secret, b"disclosure data-key wrapping", hashlib.sha256).digest())
        return cipher

    def new_key(self, request_id: str, *, now: datetime | None = None,
                ) -> tuple[DataKey, dict[str, Any]]:
        """A fresh data key for ``request_id`` and its ``data_keys`` row."""
        secret = os.urandom(DATA_KEY_BYTES)
        return DataKey(request_id, secret), self.wrap_row(
            {"request_id": request_id}, f"data-key|{request_id}", secret, now)

    def wrap_row(self, ident: dict[str, Any], bound: str, secret: bytes,
                 now: datetime | None) -> dict[str, Any]:
        """The row of a key ``secret`` wrapped by the current KEK, bound to ``bound``."""
        kek = self.keks.current
        nonce = os.urandom(NONCE_BYTES)
        wrapped = self._cipher(kek).encrypt(nonce, secret, bound.encode())
        return ident | {"kek_id": kek.key_id, "wrapped": _b64(nonce + wrapped),
                        "created_at": now or datetime.now(UTC)}

    def unwrap(self, request_id: str, kek_id: str, wrapped: str) -> DataKey:
        """The data key of ``request_id`` from its ``data_keys`` row."""
        return DataKey(request_id, self._unwrap(kek_id, wrapped, f"data-key|{request_id}"))

    def _unwrap(self, kek_id: str, wrapped: str, bound: str) -> bytes:
        kek = self.keks.get(kek_id)
        if kek is None:
            raise DataKeyError(f"a data key is wrapped by KEK {kek_id}, which is not in the KEK "
                               f"ring ({', '.join(self.keks.ids)}): add it as a retired KEK")
        try:
            raw = base64.urlsafe_b64decode(wrapped)
            return self._cipher(kek).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound.encode())
        except (InvalidTag, ValueError):
            what, ident = bound.split("|", maxsplit=1)
            raise DataKeyError(f"the wrapped {what} of {ident} does not open with KEK "
                               f"{kek_id}: altered or moved") from None

    def __repr__(self) -> str:
        return f"Vault(current={self.keks.current.key_id!r}, keks={len(self.keks.ids)})"


def vault_of(session: Session | Connection) -> Vault:
    """The vault bound to the session's engine; :class:`DataKeyError` if there is none."""
    connection = session.connection() if isinstance(session, Session) else session
    vault = connection.get_execution_options().get(DATA_KEKS_OPTION)
    if not isinstance(vault, Vault):
        raise DataKeyError("this ledger engine has no key-encryption key: open the ledger with "
                           "records.db.open_ledger (or make_engine(..., data_keks=...))")
    return vault


def keys_for(session: Session | Connection, request_ids: Iterable[str]) -> dict[str, DataKey]:
    """The data keys of ``request_ids`` that still exist (a shredded request has none)."""
    wanted = list(dict.fromkeys(request_ids))
    if not wanted:
        return {}
    vault = vault_of(session)
    found: dict[str, DataKey] = {}
    for start in range(0, len(wanted), 500):
        for row in session.execute(select(DATA_KEYS.c.request_id, DATA_KEYS.c.kek_id,
                                          DATA_KEYS.c.wrapped)
                                   .where(DATA_KEYS.c.request_id.in_(wanted[start:start + 500]))):
            found[row.request_id] = vault.unwrap(row.request_id, row.kek_id, row.wrapped)
    return found


def key_for(session: Session | Connection, request_id: str) -> DataKey | None:
    """The data key of one request, or None once it is shredded."""
    return keys_for(session, [request_id]).get(request_id)


def open_field(key: DataKey | None, field: str, stored: str, *,
               pending: bool = False) -> str | None:
    """A stored field's text: opened with ``key``; None if it is sealed and its key is gone
    (shredded). Clear text is read only for a request of before 0.8.0 still to be sealed
    (``pending``): anywhere else it was written there by someone, and
    :class:`DataKeyError` says so."""
    if not is_sealed(stored):
        if pending:
            return stored
        raise DataKeyError(f"{field} is stored in clear, not sealed: altered (or a ledger of "
                           "before 0.8.0 not yet opened with its KEK)")
    return None if key is None else key.open(field, stored)


def is_pending(session: Session | Connection, request_id: str) -> bool:
    """Whether a request of before 0.8.0 still waits to be sealed (its text is in clear)."""
    return session.execute(select(PENDING_SEALING.c.request_id).where(
        PENDING_SEALING.c.request_id == request_id)).first() is not None


# --- what intake seals ----------------------------------------------------------------------

#: Labels of the keyed digests the chain keeps.
BODY_DIGEST = "body"
SUBJECTS_DIGEST = "subjects"
MOTIVATION_DIGEST = "motivation"


def body_digest(key: DataKey, basis: str) -> str:
    """The body hash of a sealed submission: keyed, over its canonical JSON (or its text)."""
    return key.digest(BODY_DIGEST, basis)


def subjects_digest(key: DataKey, pseudonyms: Iterable[str]) -> str:
    """The keyed digest of a request's subjects: over the sorted pseudonyms, one a line."""
    return key.digest(SUBJECTS_DIGEST, "\n".join(sorted(pseudonyms)))


def motivation_digest(key: DataKey, motivation: str) -> str:
    """The keyed digest of a reviewer's motivation (free text)."""
    return key.digest(MOTIVATION_DIGEST, motivation)


def same_body(key: DataKey | None, stored_hash: str, basis: str) -> bool:
    """Whether a submission whose canonical text is ``basis`` says what the recorded one with
    ``stored_hash`` said: under its data key, or (a submission recorded before 0.8.0) the plain
    sha256. A shredded request (no key) is never the same: its body can no longer be known."""
    return sha256(basis) == stored_hash or (
        key is not None and body_digest(key, basis) == stored_hash)


def wrapped_keys(session: Session | Connection,
                 request_ids: Sequence[str]) -> Mapping[str, str]:
    """The stored (wrapped) keys of ``request_ids``, as text: for tests that look for them in
    the database's bytes after shredding."""
    return {row.request_id: row.wrapped for row in session.execute(
        select(DATA_KEYS.c.request_id, DATA_KEYS.c.wrapped)
        .where(DATA_KEYS.c.request_id.in_(list(request_ids))))}


# --- KEK rotation --------------------------------------------------------------------------------

def keys_by_kek(session: Session | Connection) -> dict[str, int]:
    """How many data keys each KEK wraps (to know when a retired KEK has nothing left to open
    and may be destroyed)."""
    return {kek_id: int(count) for kek_id, count in session.execute(
        select(DATA_KEYS.c.kek_id, func.count()).group_by(DATA_KEYS.c.kek_id))}


def rewrap(session: Session, *, batch_size: int = 1000) -> int:
    """Wrap up to ``batch_size`` data keys that another KEK than the current one wraps under the
    current one, in the caller's transaction; how many were rewrapped. The key itself does not
    change, so nothing sealed with it does; the row is replaced (deleted and inserted: the
    table refuses UPDATE)."""
    vault = vault_of(session)
    current = vault.keks.current.key_id
    done = 0
    rows = session.execute(select(DATA_KEYS).where(DATA_KEYS.c.kek_id != current)
                           .limit(batch_size)).all()
    for row in rows:
        key = vault.unwrap(row.request_id, row.kek_id, row.wrapped)
        fresh = vault.wrap_row({"request_id": row.request_id}, f"data-key|{row.request_id}",
                           key.secret, row.created_at)
        session.execute(delete(DATA_KEYS).where(DATA_KEYS.c.request_id == row.request_id))
        session.execute(insert(DATA_KEYS), [fresh])
        done += 1
    return done

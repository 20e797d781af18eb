"""The keys that seal the audit chain, kept outside the database.

Each audit event's hash is an HMAC-SHA256 under a chain key (:mod:`records.chain`), so someone
who can write to the ledger's database but does not hold the key cannot rewrite an event and
re-link the chain behind it. A key ring holds the current key, which seals new events, and the
retired keys, which are only read to verify the events they sealed; each key has an id, which
every event names. Rotating means adding a new key at the end of the ring: the next event the
engine appends is a ``chain_key_rotated`` event, sealed with the new key and carrying a proof
(an HMAC under the old key) that whoever held the old key handed over.

A key ring is text: one ``<key id>:<hex secret>`` per line (or separated by commas), the last one
current. A ledger that recorded events before its chain was keyed (0.3.0) says how many in its
ring, ``unkeyed-until:<seq>``: those events keep their plain sha256, and an unkeyed event after
that sequence number is a forgery (someone "downgrading" the chain to re-hash it without the
key). The key file of the embedded set-up writes that line itself when it is made for such a
ledger; with ``DISCLOSURE_CHAIN_KEY`` or a block the operator adds it at the upgrade.

The ring comes from ``DISCLOSURE_CHAIN_KEY``, a Prefect Secret block named by
``DISCLOSURE_CHAIN_KEY_BLOCK`` (read by the flows, :func:`flows.runtime.chain_keys`), or — the
embedded default — the file ``<data_dir>/chain.keys``, made with one fresh key (mode 0600) on
first use. Never in the database, never in a flow parameter or a log line: only key ids appear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from records.errors import ChainKeyError

#: Bytes of a generated key, and the fewest a configured key may have.
CHAIN_KEY_BYTES = 32
#: The key ring entry that says how many events were written before the chain was keyed.
UNKEYED_UNTIL = "unkeyed-until"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


@dataclass(frozen=True, slots=True)
class ChainKey:
    """One chain key: its id (on every event it seals) and its secret (never shown)."""

    key_id: str
    secret: bytes = field(repr=False)

    def seal(self, message: str) -> str:
        """The HMAC-SHA256 of ``message`` (UTF-8) under this key, in hex."""
        return hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def verifies(self, message: str, mac: str) -> bool:
        """Whether ``mac`` is this key's seal of ``message`` (compared in constant time)."""
        return hmac.compare_digest(self.seal(message), mac)


@dataclass(frozen=True, slots=True)
class ChainKeys:
    """A key ring: the ``current`` key seals new events; ``retired`` keys verify old ones."""

    current: ChainKey
    retired: tuple[ChainKey, ...] = ()
    #: the last sequence number an event without a key may have (written before keying)
    unkeyed_until: int = 0

    def get(self, key_id: str | None) -> ChainKey | None:
        """The key with this id, or None."""
        for key in (self.current, *self.retired):
            if key.key_id == key_id:
                return key
        return None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in (*self.retired, self.current))

    def __repr__(self) -> str:
        return (f"ChainKeys(current={self.current.key_id!r}, retired={len(self.retired)}, "
                f"unkeyed_until={self.unkeyed_until})")


def parse_keyring(text: str, where: str) -> ChainKeys:
    """A key ring from its text (see the module docstring); :class:`ChainKeyError` names
    ``where`` and the entry's position, never a secret."""
    entries = [e.strip() for e in re.split(r"[\n,]", text) if e.strip()]
    if not entries:
        raise ChainKeyError(f"{where}: no chain key (one '<key id>:<hex secret>' per line)")
    keys: list[ChainKey] = []
    unkeyed_until = 0
    for number, entry in enumerate(entries, start=1):
        key_id, colon, secret = entry.partition(":")
        if key_id == UNKEYED_UNTIL:
            if not (secret.isascii() and secret.isdigit()):
                raise ChainKeyError(f"{where}: entry {number}: {UNKEYED_UNTIL} takes a sequence "
                                    "number")
            unkeyed_until = int(secret)
            continue
        if not colon:
            raise ChainKeyError(f"{where}: entry {number} is not '<key id>:<hex secret>'")
        if not _ID.match(key_id):
            raise ChainKeyError(f"{where}: entry {number}: the key id must be 1-32 of "
                                "A-Z a-z 0-9 . _ - (a letter or digit first)")
        try:
            raw = bytes.fromhex(secret)
        except ValueError:
            raise ChainKeyError(f"{where}: entry {number} ({key_id}): the secret must be "
                                "hexadecimal") from None
        if len(raw) < CHAIN_KEY_BYTES:
            raise ChainKeyError(f"{where}: entry {number} ({key_id}): the secret must be at "
                                f"least {CHAIN_KEY_BYTES} bytes ({2 * CHAIN_KEY_BYTES} hex "
                                "digits)")
        if any(k.key_id == key_id for k in keys):
            raise ChainKeyError(f"{where}: the key id {key_id} appears twice")
        keys.append(ChainKey(key_id, raw))
    if not keys:
        raise ChainKeyError(f"{where}: no chain key (one '<key id>:<hex secret>' per line)")
    return ChainKeys(current=keys[-1], retired=tuple(keys[:-1]), unkeyed_until=unkeyed_until)


def new_key_entry(now: datetime | None = None) -> str:
    """A fresh key ring entry: an id from the date and a random suffix, and 32 random bytes."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"k{day}-{secrets.token_hex(3)}:{secrets.token_hex(CHAIN_KEY_BYTES)}"

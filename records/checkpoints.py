"""Signed checkpoints of the audit chain's head, kept outside the ledger.

The keyed chain (:mod:`records.chain`) stops anyone without the chain key from rewriting an
event; it cannot stop someone with rights on the database from cutting the chain's tail off (with
the rows the cut events recorded): what remains is a shorter chain that is still valid. A
checkpoint is the head — sequence number and hash — at a moment, sealed with the chain key
(HMAC-SHA256) and written *outside* the ledger: a file in the checkpoint folder
(``DISCLOSURE_CHECKPOINT_DIR``) and, from the nightly verification, a Prefect artifact. ``audit
verify`` reads every checkpoint in the folder by itself and requires the chain to still hold each
one's event with that hash; a tail cut off or rewritten behind a checkpoint is then found.

A checkpoint file is plain JSON (ids and hashes only)::

    {"seq": 1234, "hash": "…", "key_id": "k20261206-3f2a1c", "written_at": "2026-12-06T03:30:00Z",
     "events": 1234, "signature": "…"}

Files are named ``checkpoint-<seq>-<UTC time>.json`` and written atomically; the engine never
deletes one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from legal_bases.table import canonical_json
from records.chain_keys import ChainKeys
from records.errors import LedgerError
from records.timestamps import iso, utc

#: How checkpoint files are named (``checkpoint-<seq>-<time>.json``).
FILE_PREFIX = "checkpoint-"
#: Largest checkpoint file read, in bytes (a real one is about 300).
MAX_CHECKPOINT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's head at ``written_at``, sealed with chain key ``key_id``."""

    seq: int
    hash: str
    key_id: str
    written_at: datetime
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "key_id": self.key_id,
                "written_at": iso(self.written_at), "events": self.seq,
                "signature": self.signature}

    @property
    def anchor(self) -> str:
        """The head as ``audit verify --expect-head`` takes it: ``SEQ:HASH``."""
        return f"{self.seq}:{self.hash}"


def _message(seq: int, head_hash: str, key_id: str, written_at: datetime) -> str:
    return "chain-checkpoint|" + canonical_json(
        {"seq": seq, "hash": head_hash, "key_id": key_id, "written_at": iso(written_at)})


def seal_checkpoint(*, keys: ChainKeys, seq: int, head_hash: str, now: datetime) -> Checkpoint:
    """A checkpoint of the head ``(seq, head_hash)`` — the head a verification found intact —
    sealed with the current chain key."""
    at = utc(now, name="now")
    key = keys.current
    return Checkpoint(seq, head_hash, key.key_id, at,
                      key.seal(_message(seq, head_hash, key.key_id, at)))


def checkpoint_problem(checkpoint: Checkpoint, keys: ChainKeys | None) -> str | None:
    """None if ``checkpoint`` carries a valid seal of a key in ``keys``, else why not."""
    key = keys.get(checkpoint.key_id) if keys is not None else None
    if key is None:
        return (f"sealed with chain key {checkpoint.key_id}, which is not in the key ring: it "
                "cannot be checked")
    message = _message(checkpoint.seq, checkpoint.hash, checkpoint.key_id, checkpoint.written_at)
    if not key.verifies(message, checkpoint.signature):
        return "its signature is not the chain key's seal of its content: forged or altered"
    return None


def write_checkpoint(checkpoint: Checkpoint, folder: Path) -> Path:
    """Write ``checkpoint`` into ``folder`` (made if missing), atomically; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = checkpoint.written_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{FILE_PREFIX}{checkpoint.seq:012d}-{stamp}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(checkpoint.to_dict(), indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


@dataclass(frozen=True, slots=True)
class FoundCheckpoints:
    """What a checkpoint folder holds: the checkpoints that read, the files that do not."""

    checkpoints: tuple[tuple[str, Checkpoint], ...]
    unreadable: tuple[tuple[str, str], ...]
    folder: str


def read_checkpoints(folder: Path) -> FoundCheckpoints:
    """Every ``checkpoint-*.json`` in ``folder``, oldest sequence first (a missing folder holds
    none). A file that does not read as a checkpoint is listed with why."""
    found: list[tuple[str, Checkpoint]] = []
    unreadable: list[tuple[str, str]] = []
    paths = sorted(folder.glob(f"{FILE_PREFIX}*.json")) if folder.is_dir() else []
    for path in paths:
        try:
            if path.stat().st_size > MAX_CHECKPOINT_BYTES:
                raise ValueError("larger than a checkpoint")
            found.append((path.name, _parse(json.loads(path.read_text("utf-8")))))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError,
                LedgerError) as exc:
            unreadable.append((path.name, str(exc) if isinstance(exc, ValueError)
                               else type(exc).__name__))
    found.sort(key=lambda item: item[1].seq)
    return FoundCheckpoints(tuple(found), tuple(unreadable), str(folder))


def _parse(data: Mapping[str, Any]) -> Checkpoint:
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    seq, head_hash, key_id = data["seq"], data["hash"], data["key_id"]
    signature, written = data["signature"], data["written_at"]
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0
            and isinstance(head_hash, str) and isinstance(key_id, str)
            and isinstance(signature, str) and isinstance(written, str)):
        raise ValueError("a field has the wrong type")
    return Checkpoint(seq, head_hash, key_id, utc(datetime.fromisoformat(written)), signature)

"""Table snapshots: the table of grounds each decision was taken under, stored once by its hash
and read back for replay and for deliveries decided under an earlier table."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from legal_bases.table import GroundTable, table_from_snapshot
from records import chain
from records.chain import NewEvent
from records.errors import (
    SnapshotMissingError,
)
from records.ledger import ENGINE
from records.models import (
    TableSnapshot,
)
from records.timestamps import utc
from records.vocabulary import EventKind

_SNAPSHOTS: Table = TableSnapshot.__table__  # type: ignore[attr-defined]


def store_table_snapshot(*, session: Session, table: GroundTable, used_at: datetime | None = None,
                         actor: str = ENGINE) -> str:
    """Store the table's canonical snapshot unless the ledger has it; return its hash.

    The first time a table is stored, the audit event ``table_snapshot_stored`` records it.
    ``used_at`` (default now) becomes the snapshot's ``first_used_at``.
    """
    if _snapshot_exists(session, table.hash):
        return table.hash
    at = utc(used_at, name="used_at") if used_at is not None else datetime.now(UTC)
    insert_ = postgresql.insert if session.get_bind().dialect.name == "postgresql" else (
        sqlite.insert)
    statement = (insert_(_SNAPSHOTS)
                 .values(hash=table.hash, content=table.snapshot, first_used_at=at)
                 .on_conflict_do_nothing(index_elements=["hash"])
                 .returning(_SNAPSHOTS.c.hash))
    with session.begin_nested():
        if session.execute(statement).scalar_one_or_none() is not None:
            chain.append_events(session=session, events=[NewEvent(
                kind=EventKind.TABLE_SNAPSHOT_STORED.value, occurred_at=at, actor=actor,
                payload={"table_hash": table.hash,
                         "grounds": sorted(table.grounds),
                         "ground_versions": sorted(v.id for g in table for v in g.versions)})])
    return table.hash


def _snapshot_exists(session: Session, table_hash: str) -> bool:
    found = session.execute(
        select(_SNAPSHOTS.c.hash).where(_SNAPSHOTS.c.hash == table_hash)).first()
    return found is not None


def load_table_snapshot(*, session: Session, table_hash: str) -> GroundTable:
    """The table of grounds a decision was read from, rebuilt from its stored snapshot.

    Raises :class:`SnapshotMissingError` if the ledger has no snapshot with that hash.
    """
    content = session.execute(
        select(_SNAPSHOTS.c.content).where(_SNAPSHOTS.c.hash == table_hash)).scalar_one_or_none()
    if content is None:
        raise SnapshotMissingError(table_hash)
    return table_from_snapshot(content, expected_hash=table_hash)



"""UTC-aware timestamps: one column type that stores UTC and always gives back aware values."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from records.errors import LedgerError


def utc(value: datetime, *, name: str = "timestamp") -> datetime:
    """``value`` in UTC; a naive datetime is refused rather than guessed at."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{name} must be timezone-aware, got the naive {value.isoformat()}")
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """The one text form of a timestamp in hashes and payloads: UTC, microseconds, ``+00:00``."""
    return utc(value).isoformat(timespec="microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, UTC text on SQLite; read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        # SQLite has no time zones: store the UTC wall time, re-attach UTC when reading.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

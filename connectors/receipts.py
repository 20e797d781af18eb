"""What a destination hands back for one delivery: where it went, which bytes, when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ReceiptStatus(StrEnum):
    """Whether a delivery wrote something new or found it already delivered."""

    DELIVERED = "delivered"
    REPEAT = "repeat"


@dataclass(frozen=True, slots=True)
class Receipt:
    """The record of one delivery: where, which bytes (sha256, size), when, the receiver's word.

    ``detail`` holds what the destination kind adds (HTTP status code, receiver's receipt id,
    attempts); every value in it is JSON-serialisable.
    """

    kind: str
    location: str
    idempotency_key: str
    sha256: str
    size: int
    status: ReceiptStatus
    delivered_at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The receipt as JSON-ready values (``delivered_at`` as ISO 8601 in UTC)."""
        return {
            "kind": self.kind,
            "location": self.location,
            "idempotency_key": self.idempotency_key,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status.value,
            "delivered_at": self.delivered_at.astimezone(UTC).isoformat(),
            "detail": dict(self.detail),
        }

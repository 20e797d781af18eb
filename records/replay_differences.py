"""A decision in the shape its ``decisions`` row records it, and the fields in which two such
decisions differ: everything replay compares (:data:`COMPARED`), or against today's table only
the substance (:data:`SUBSTANCE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import Row

from legal_bases.decision import Decision

#: A row of a Core select (SQLAlchemy 2.1 types rows by their columns).
LedgerRow: TypeAlias = Row[*tuple[Any, ...]]
#: The fields of a decision replay compares, in the order differences are named.
COMPARED = ("outcome", "released", "withheld", "reason_codes", "reason_citations",
            "reason_categories", "review_triggers", "review_trigger_citations", "proposal",
            "ground_id", "ground_version", "table_hash")
#: What still counts against today's table (the rest differs whenever the table was edited).
SUBSTANCE = ("outcome", "released", "withheld", "reason_codes", "reason_categories",
             "review_triggers", "proposal", "ground_id")


@dataclass(frozen=True, slots=True)
class Difference:
    """One field in which the replayed decision differs from the recorded one."""

    field: str
    recorded: Any
    replayed: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "recorded": self.recorded, "replayed": self.replayed}


def recorded_decision(row: LedgerRow) -> dict[str, Any]:
    """A ``decisions`` row as the dictionary replay compares."""
    return {"outcome": row.outcome, "released": list(row.released),
            "withheld": list(row.withheld), "reasons": list(row.reasons),
            "review_triggers": list(row.review_triggers), "proposal": row.proposal,
            "ground_id": row.ground_id, "ground_version": row.ground_version,
            "table_hash": row.table_hash}


def as_recorded(decision: Decision) -> dict[str, Any]:
    """A decision in the shape its row records it."""
    return {"outcome": decision.outcome.value,
            "released": [c.value for c in decision.released],
            "withheld": [c.value for c in decision.withheld],
            "reasons": [r.to_dict() for r in decision.reasons],
            "review_triggers": [r.to_dict() for r in decision.review_triggers],
            "proposal": decision.proposal.to_dict() if decision.proposal else None,
            "ground_id": decision.ground_id, "ground_version": decision.ground_version,
            "table_hash": decision.table_hash}


def aspects(decision: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a decision (see :data:`COMPARED`)."""
    reasons, triggers = decision["reasons"], decision["review_triggers"]
    return {
        "outcome": decision["outcome"], "released": decision["released"],
        "withheld": decision["withheld"],
        "reason_codes": [r["code"] for r in reasons],
        "reason_citations": [[r["code"], r["citation"]] for r in reasons],
        "reason_categories": [[r["code"], r.get("categories", [])] for r in reasons],
        "review_triggers": [t["code"] for t in triggers],
        "review_trigger_citations": [[t["code"], t["citation"]] for t in triggers],
        "proposal": decision["proposal"], "ground_id": decision["ground_id"],
        "ground_version": decision["ground_version"], "table_hash": decision["table_hash"],
    }


def compare(recorded: dict[str, Any], replayed: dict[str, Any], *,
            fields: Sequence[str] = COMPARED) -> tuple[Difference, ...]:
    """The fields (of ``fields``) in which two decisions, in their recorded shape, differ."""
    was, now = aspects(recorded), aspects(replayed)
    return tuple(Difference(name, was[name], now[name]) for name in fields
                 if was[name] != now[name])


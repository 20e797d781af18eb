"""The totals of a replay of many requests: counted as the replays stream by (:class:`Tally`),
with the ones that do not agree kept for the report (:class:`Summary`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from legal_bases.table import GroundTable
from legal_bases.vocabulary import Outcome
from records.replay_results import Replay, ReplayStatus


@dataclass(frozen=True, slots=True)
class Summary:
    """The totals of a replay of many requests, and the ones that did not agree."""

    first: date | None
    last: date | None
    against: str | None  # the hash of today's table, with --against-current
    requests: int
    agrees: int
    differs: int
    cannot_replay: int
    undecided: int
    reviewed: int
    review_checks_failed: int
    tables: tuple[tuple[str, int], ...]  # (table hash, requests replayed against it)
    not_agreeing: tuple[Replay, ...] = field(repr=False)
    #: shredded under retention: their recorded decision held against its table snapshot
    shredded: int = 0

    @property
    def replayed(self) -> int:
        return self.agrees + self.differs

    @property
    def all_agree(self) -> bool:
        return self.differs == 0 and self.cannot_replay == 0

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None,
                "against": self.against, "requests": self.requests, "agrees": self.agrees,
                "differs": self.differs, "cannot_replay": self.cannot_replay,
                "undecided": self.undecided, "shredded": self.shredded,
                "reviewed": self.reviewed,
                "review_checks_failed": self.review_checks_failed,
                "tables": [{"table_hash": h, "requests": n} for h, n in self.tables]}


@dataclass
class Tally:
    """Counts replays as they stream by and keeps the ones that do not agree."""

    first: date | None = None
    last: date | None = None
    against: str | None = None
    counts: dict[ReplayStatus, int] = field(default_factory=lambda: dict.fromkeys(ReplayStatus, 0))
    reviewed: int = 0
    review_checks_failed: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    not_agreeing: list[Replay] = field(default_factory=list)

    def add(self, replay: Replay) -> None:
        self.counts[replay.status] += 1
        if replay.review is not None and replay.review.decisions and (
                replay.recorded_outcome == Outcome.NEEDS_REVIEW.value):
            self.reviewed += 1
            self.review_checks_failed += not replay.review.ok
        if replay.replay_table_hash is not None:
            self.tables[replay.replay_table_hash] = self.tables.get(
                replay.replay_table_hash, 0) + 1
        if replay.status in (ReplayStatus.DIFFERS, ReplayStatus.CANNOT_REPLAY):
            self.not_agreeing.append(replay)

    def summary(self) -> Summary:
        return Summary(
            first=self.first, last=self.last, against=self.against,
            requests=sum(self.counts.values()), agrees=self.counts[ReplayStatus.AGREES],
            differs=self.counts[ReplayStatus.DIFFERS],
            cannot_replay=self.counts[ReplayStatus.CANNOT_REPLAY],
            undecided=self.counts[ReplayStatus.UNDECIDED],
            shredded=self.counts[ReplayStatus.SHREDDED], reviewed=self.reviewed,
            review_checks_failed=self.review_checks_failed,
            tables=tuple(sorted(self.tables.items(), key=lambda item: -item[1])),
            not_agreeing=tuple(self.not_agreeing))


def summarise(replays: Iterable[Replay], *, first: date | None = None, last: date | None = None,
              against: GroundTable | None = None) -> Summary:
    """The totals of ``replays`` (consumed as they come)."""
    tally = Tally(first=first, last=last, against=against.hash if against else None)
    for replay in replays:
        tally.add(replay)
    return tally.summary()

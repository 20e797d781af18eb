"""A year's distinct subjects for the transparency report, frozen on the chain before the first
of its requests is shredded (:mod:`records.retention`), and read back by the report
(:mod:`records.statistics`): counts only, in a sealed ``subject_counts_frozen`` event, so that
nothing that stays after shredding ties a shredded request's subjects to anyone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from records import chain
from records.vocabulary import EventKind


def year_periods(year: int) -> list[str]:
    """The periods whose distinct subjects a frozen year keeps: the year, its quarters, its
    months (every period the report can be asked for)."""
    return [str(year), *(f"{year}-Q{q}" for q in range(1, 5)),
            *(f"{year}-{m:02d}" for m in range(1, 13))]


def frozen_years(session: Session) -> dict[int, dict[str, Any]]:
    """The frozen distinct counts by year, from the sealed ``subject_counts_frozen`` events."""
    found: dict[int, dict[str, Any]] = {}
    for event in chain.sealed_events(session=session,
                                     kind=EventKind.SUBJECT_COUNTS_FROZEN.value):
        payload = event.payload
        if isinstance(payload.get("year"), int) and isinstance(payload.get("periods"), dict):
            found.setdefault(payload["year"], payload["periods"])
    return found


def apply_frozen(session: Session, report: Any) -> None:
    """Take the distinct subjects of the parts (and the period) of a frozen year from its
    frozen counts: requests of it may be shredded, and their pseudonyms gone. ``report`` is a
    :class:`records.statistics.Report` (this module is below it: the report imports it)."""
    if not report.frozen:
        return
    years = frozen_years(session)
    for part in report.parts:
        frozen = years.get(int(part.label[:4]), {}).get(part.label)
        if frozen is None:
            continue
        counts = {(body, ground, outcome): n for body, ground, outcome, n in frozen["cells"]}
        for (label, body, ground, outcome), tally in report.cells.items():
            if label == part.label:
                tally.subjects_affected = counts.get((body, ground, outcome), 0)
        report.part_totals[part.label].subjects_affected = frozen["total"]
    whole = years.get(int(report.period.label[:4]), {}).get(report.period.label)
    if whole is not None:
        report.body_affected = dict(whole["bodies"])
        report.total.subjects_affected = whole["total"]

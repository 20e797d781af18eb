"""How a review run is named and tagged, so a reviewer finds a case in the Prefect UI's lists.

The name carries the partner's reference, the ground and the deadline
(``OM-2026-0042 · sv-126nd · due 2026-12-20``); the tags are what the Runs page filters on:
``review``, ``ground:<id>``, ``body:<requesting body>``, ``due:<ISO week>``, ``step:first`` or
``step:second`` (four eyes) while it waits and ``step:decided`` once decided, and
``escalated`` once the deadline has passed. No subject: the
reference is the partner's own text, so anything in it shaped like a BSN or an onderwijsnummer
is masked, and it is cut to one short line.
"""

from __future__ import annotations

import re
from datetime import date

from legal_bases.identifiers import mask_identifier_shapes

REVIEW_TAG = "review"
ESCALATED_TAG = "escalated"
#: The longest reference shown in a run name (the whole reference is on the case page).
NAME_REFERENCE_CHARS = 40
_SPACE = re.compile(r"\s+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown_reference(reference: str | None) -> str:
    """A partner's reference as a run name or tag may show it: one line, masked, short."""
    text = _SPACE.sub(" ", _UNPRINTABLE.sub(" ", reference or "")).strip()
    text = mask_identifier_shapes(text)
    if len(text) > NAME_REFERENCE_CHARS:
        text = text[:NAME_REFERENCE_CHARS - 1] + "…"
    return text or "(no reference)"


def due_week(deadline: date) -> str:
    """The ISO week a deadline falls in, as ``2026-W51``."""
    year, week, _ = deadline.isocalendar()
    return f"{year}-W{week:02d}"


def review_run_name(*, reference: str | None, ground_id: str | None,
                    deadline: date | None) -> str:
    """``<reference> · <ground> · due <date>``: which case a review run is, at a glance."""
    due = f"due {deadline.isoformat()}" if deadline is not None else "no deadline"
    return f"{shown_reference(reference)} · {ground_id or 'no ground'} · {due}"


def review_run_tags(*, ground_id: str | None, body: str, deadline: date | None,
                    step: str = "first", escalated: bool = False) -> list[str]:
    """The tags of a review run (sorted; the same facts give the same tags)."""
    tags = {REVIEW_TAG, f"body:{body}", f"step:{step}"}
    if ground_id:
        tags.add(f"ground:{ground_id}")
    if deadline is not None:
        tags.add(f"due:{due_week(deadline)}")
    if escalated:
        tags.add(ESCALATED_TAG)
    return sorted(tags)

"""``disclosure logboek export``, said: one Logboek Dataverwerkingen record as one line of JSON
Lines.

Keys sorted, no spaces, non-ASCII kept: the same record is always the same bytes, so the same
ledger exports the same file. The records themselves: :mod:`records.logboek`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def json_line(record: Mapping[str, Any]) -> str:
    """``record`` as one line of JSON Lines, its newline included."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"

"""Fault injection points: where the fault suite (``tests/faults/``) kills or breaks a worker.

The pipeline calls :func:`fault` at the places a crash matters — after a claim, after the
decisions are recorded, after the register was read, just before a document is handed to a
destination, after the destination answered and before the receipt is recorded. Nothing happens
unless the environment variable ``DISCLOSURE_FAULTS`` names the point, which only the fault
suite sets, in the worker processes it starts::

    DISCLOSURE_FAULTS="delivered:kill@2,fetched:raise"

``point:action`` with the action ``kill`` (SIGKILL this process: no ``finally``, no Prefect
state, exactly what a power cut or the OOM killer does), ``killonce`` (the same, but only in the
first process of the data folder to get there: it leaves a marker file ``.fault-<point>`` in
``DISCLOSURE_DATA_DIR``), ``raise`` (an :class:`InjectedFaultError`) or ``sleep<seconds>``;
``@n`` acts on the n-th time the point is reached (default the first), counted per process. A
point costs one dictionary look-up when no fault is configured.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from functools import cache
from pathlib import Path

from legal_bases.errors import DisclosureError

ENVIRONMENT = "DISCLOSURE_FAULTS"
#: The points the pipeline offers, in the order a request passes them.
POINTS = ("claimed", "decided", "fetched", "part_delivered", "delivering", "delivered",
          "recorded", "review_taken", "shredded")

_hits: Counter[str] = Counter()


class InjectedFaultError(DisclosureError):
    """Raised at a fault point configured to ``raise`` (only under the fault suite)."""


@cache
def _configured() -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for item in filter(None, (p.strip() for p in os.environ.get(ENVIRONMENT, "").split(","))):
        point, _, rest = item.partition(":")
        action, _, nth = (rest or "kill").partition("@")
        if point not in POINTS:
            raise ValueError(f"{ENVIRONMENT}: unknown fault point {point!r} (one of {POINTS})")
        found[point] = (action, int(nth) if nth else 1)
    return found


def fault(point: str) -> None:
    """Act on ``point`` as ``DISCLOSURE_FAULTS`` says (see the module docstring)."""
    configured = _configured()
    if point not in configured:
        return
    action, nth = configured[point]
    _hits[point] += 1
    if _hits[point] != nth:
        return
    if action == "kill" or (action == "killonce" and _first_to(point)):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise InjectedFaultError(f"fault injected at {point}")
    elif action.startswith("sleep"):
        time.sleep(float(action.removeprefix("sleep") or 1))


def _first_to(point: str) -> bool:
    marker = Path(os.environ.get("DISCLOSURE_DATA_DIR", "var")) / f".fault-{point}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True

"""A worker's claims while it works: renewed in the background, released when it stops.

Claims are short leases (:mod:`records.queue`): the dispatcher renews its own every
:data:`~legal_bases.limits.CLAIM_RENEW_SECONDS` from a background thread, so a batch that takes
minutes keeps its requests, while a worker that dies stops renewing and its requests are taken
over within a lease (at once by a worker on the same host). A run that Prefect reports crashed or
cancelled releases its claims in its state hook.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlmodel import Session

from flows.logs import get_logger
from legal_bases import limits
from records.queue import release_claims_of, renew_claims


class ClaimKeeper:
    """Renews ``worker``'s claims every ``every`` seconds until the ``with`` block ends."""

    def __init__(self, engine: Any, worker: str, *, lease: timedelta,
                 every: float = limits.CLAIM_RENEW_SECONDS) -> None:
        self.engine = engine
        self.worker = worker
        self.lease = lease
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
        self.renewals = 0

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with Session(self.engine) as session, session.begin():
                    renew_claims(session=session, worker=self.worker, lease=self.lease,
                                 now=datetime.now(UTC))
                self.renewals += 1
            except Exception as exc:  # the lease may lapse; idempotent delivery covers that
                get_logger("dispatcher").warning("claims_not_renewed",
                                                 error=type(exc).__name__)


def release_run_claims(engine: Any, run_id: str) -> int:
    """Release the claims of flow run ``run_id`` (its state hook, when it crashed or was
    cancelled); returns how many."""
    with Session(engine) as session, session.begin():
        return release_claims_of(session=session, run_id=run_id)

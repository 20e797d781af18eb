"""What stands behind the intake API's routes: its numbers, its dependencies and their work.

:class:`IntakeService` holds the ledger engine (and a read-only view of it), the partners, the
table of grounds, the rate limiter, the authenticator, the dispatcher's nudger and the one
ledger writer (:mod:`connectors.group_commit`); the routes identify the caller and record
submissions through it, and turn what goes wrong into problem answers
(:class:`~connectors.intake_problems.ApiError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from connectors.credentials import Authenticator, Identity, Refusal
from connectors.group_commit import GroupCommitWriter, LedgerUnavailableError
from connectors.intake_problems import ApiError, unauthenticated
from connectors.nudge import Nudger
from connectors.partner_file import PartnerSource
from connectors.rate_limit import RateLimiter
from legal_bases import limits
from legal_bases.table import GroundTable
from records.db import read_only
from records.pseudonym import Pseudonymizer
from records.submissions import Recorded, Submission


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The numbers the API runs with; the defaults are the project's limits."""

    rate_per_second: float = limits.API_RATE_PER_SECOND
    rate_burst: int = limits.API_RATE_BURST
    max_body_bytes: int = limits.MAX_REQUEST_BYTES
    inline_body_bytes: int = limits.INTAKE_INLINE_BODY_BYTES
    batch_size: int = limits.INTAKE_BATCH_SIZE
    queue_size: int = limits.INTAKE_QUEUE_SIZE
    write_timeout: float = limits.INTAKE_WRITE_TIMEOUT_SECONDS
    retry_after: int = limits.INTAKE_RETRY_AFTER_SECONDS
    nudge_interval: float = limits.NUDGE_WINDOW_SECONDS
    #: ``https://host`` partners reach the API at (added to the OpenAPI document's servers).
    public_url: str | None = None
    #: ``info.contact`` of the OpenAPI document (name, email, url); None: the placeholders of
    #: :data:`connectors.intake_openapi.DEFAULT_CONTACT`.
    contact: dict[str, str] | None = None


class IntakeService:
    """The API's dependencies and the work of its routes."""

    def __init__(self, *, engine: Engine, partners: PartnerSource, pseudonymizer: Pseudonymizer,
                 table: GroundTable, nudge: Callable[[], object], config: ApiConfig) -> None:
        self.engine = engine
        self.reads = read_only(engine)
        self.partners = partners
        self.table = table
        self.config = config
        self.nudger = Nudger(nudge, interval=config.nudge_interval)
        self.writer = GroupCommitWriter(engine=engine, pseudonymizer=pseudonymizer,
                                        batch_size=config.batch_size,
                                        queue_size=config.queue_size,
                                        on_written=self.nudger.poke)
        self.limiter = RateLimiter(rate=config.rate_per_second, burst=config.rate_burst)
        self.authenticator = Authenticator(engine=engine, partners=partners)

    def start(self) -> None:
        self.nudger.start()
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()
        self.nudger.stop()

    def unavailable(self, what: str) -> ApiError:
        return ApiError(503, "ledger_unavailable", f"{what}; send the same request again later "
                        "(the same reference is safe to repeat)",
                        headers={"Retry-After": str(self.config.retry_after)})

    def identify(self, request: Request, *, submitting: bool = False) -> Identity:
        """The caller's partner, rate-limited; raises :class:`ApiError` 401, 429 or 503.

        ``submitting``: the key's revocation is checked by the transaction that records the
        submission (see :mod:`connectors.credentials`).
        """
        try:
            found = self.authenticator.authenticate(
                authorization=request.headers.get("authorization"), scope=request.scope,
                revocation_by_writer=submitting)
        except LedgerUnavailableError:
            raise self.unavailable("the ledger cannot check credentials now") from None
        if isinstance(found, Refusal):
            raise unauthenticated(request, found)
        request.state.partner_id = found.partner.id
        verdict = self.limiter.take(found.partner.id)
        if not verdict.allowed:
            raise ApiError(429, "rate_limited",
                           f"more than {self.limiter.rate:g} requests per second (burst "
                           f"{self.limiter.burst}); retry after {verdict.retry_after} s",
                           headers={"Retry-After": str(verdict.retry_after)})
        return found

    async def record(self, submission: Submission) -> Recorded:
        """Queue a submission for the ledger and wait until it is committed."""
        try:
            return await self.writer.record(submission, timeout=self.config.write_timeout)
        except TimeoutError:
            raise self.unavailable("the ledger did not answer in time") from None
        except LedgerUnavailableError:
            raise self.unavailable("the ledger could not record the request") from None

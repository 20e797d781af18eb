"""Per-partner rate limiting of the intake API: one token bucket per partner, in this process.

A partner may make ``rate`` requests per second, sustained, and ``burst`` at once. The buckets
live in the API process (one worker, DESIGN.md section 9 and the README): several API processes
would each allow the full rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from legal_bases import limits


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request may go ahead; if not, after how many whole seconds it may."""

    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """Token buckets by partner id; :meth:`take` spends one token or says when to come back."""

    def __init__(self, *, rate: float = limits.API_RATE_PER_SECOND,
                 burst: int = limits.API_RATE_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # partner -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, partner_id: str) -> Verdict:
        """Spend one of the partner's tokens, if it has one."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(partner_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[partner_id] = (tokens - 1.0, now)
                return Verdict(True)
            self._buckets[partner_id] = (tokens, now)
        return Verdict(False, max(1, math.ceil((1.0 - tokens) / self.rate)))

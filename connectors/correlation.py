"""The correlation id of an API call: W3C Trace Context's trace id, honoured if the caller sent one.

A caller that sends a valid ``traceparent`` (``00-<32 hex trace id>-<16 hex parent id>-<2 hex
flags>``) keeps its trace id as the correlation id, so our ledger row, our log lines and its own
traces meet. Otherwise a caller-chosen ``X-Correlation-ID`` of 1 to 64 safe characters is used
as it is, and else a fresh trace id is drawn. Every answer carries the id back in
``X-Correlation-ID`` and in a ``traceparent`` naming our own span in the same trace.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class Correlation:
    """The correlation id of one call and the ``traceparent`` our answer carries."""

    correlation_id: str
    trace_id: str
    span_id: str
    flags: str
    from_caller: bool

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """The trace id and flags of a valid ``traceparent`` header, or None.

    Version ``ff`` and all-zero ids are invalid; a version above ``00`` may carry more fields,
    version ``00`` may not (W3C Trace Context, section 3.2).
    """
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or (
            parent_id == _ZERO_SPAN):
        return None
    return trace_id, flags


def _random_hex(digits: int) -> str:
    # Trace ids need to be unique, not secret (W3C Trace Context, section 6): no system call.
    return f"{random.getrandbits(digits * 4):0{digits}x}"


def correlate(traceparent: str | None, correlation_id: str | None) -> Correlation:
    """The correlation of a call from its ``traceparent`` and ``X-Correlation-ID`` headers."""
    span_id = _random_hex(16)
    parsed = parse_traceparent(traceparent)
    if parsed is not None:
        trace_id, flags = parsed
        return Correlation(trace_id, trace_id, span_id, flags, from_caller=True)
    trace_id = _random_hex(32)
    if correlation_id and _CORRELATION_ID.match(correlation_id):
        return Correlation(correlation_id, trace_id, span_id, "00", from_caller=True)
    return Correlation(trace_id, trace_id, span_id, "00", from_caller=False)

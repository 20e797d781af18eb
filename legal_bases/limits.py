"""Every number the project states as a limit, in one place."""

from __future__ import annotations

#: Most data subjects one request may name. Bulk requests above a ground's ``auto_limit`` go to
#: review; above this cap they are refused as invalid.
MAX_SUBJECTS_PER_REQUEST = 100_000

#: Longest partner reference (the idempotency key) and case reference, in characters.
MAX_REFERENCE_LENGTH = 64
MAX_CASE_REFERENCE_LENGTH = 128

#: Most authorisations one request may carry.
MAX_AUTHORISATIONS = 10

#: Default automatic limit and response time of a ground version when its file does not say.
DEFAULT_AUTO_LIMIT = 1000
DEFAULT_RESPONSE_DAYS = 28

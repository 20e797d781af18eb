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

#: The pipeline (DESIGN.md section 2): how many requests one dispatcher claim takes, how long a
#: claim holds before another worker may take the request over, how many deliveries are recorded
#: per transaction, and how often the sweepers run.
DISPATCH_BATCH_SIZE = 500
CLAIM_LEASE_SECONDS = 600
DELIVERY_RECORD_CHUNK = 100
DROPOFF_FILES_PER_TASK = 100
DISPATCH_SWEEP_SECONDS = 30
DROPOFF_SWEEP_SECONDS = 15
#: Nudges of the dispatcher within this many seconds share one flow run.
NUDGE_WINDOW_SECONDS = 5

#: Largest single request a drop-off file line or an API body may hold, in bytes. A request with
#: MAX_SUBJECTS_PER_REQUEST subjects is about 2.2 MB.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

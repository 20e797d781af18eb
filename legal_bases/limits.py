"""Every number the project states as a limit, in one place."""

from __future__ import annotations

#: Most data subjects one request may name. Bulk requests above a ground's ``auto_limit`` go to
#: review; above this cap they are refused as invalid.
MAX_SUBJECTS_PER_REQUEST = 100_000

#: Longest partner reference (the idempotency key) and case reference, in characters.
MAX_REFERENCE_LENGTH = 64
MAX_CASE_REFERENCE_LENGTH = 128
#: Longest ground id and purpose slug (the request schema and the ledger's columns agree).
MAX_SLUG_LENGTH = 64

#: Most authorisations one request may carry.
MAX_AUTHORISATIONS = 10

#: Default automatic limit and response time of a ground version when its file does not say.
DEFAULT_AUTO_LIMIT = 1000
DEFAULT_RESPONSE_DAYS = 28

#: The pipeline (DESIGN.md section 2): how many requests one dispatcher claim takes, how long a
#: claim holds before another worker may take the request over (a working worker renews it every
#: CLAIM_RENEW_SECONDS; a crashed one stops, so its requests are taken over within the lease —
#: at once on its own host, where a dead process is seen), how many deliveries are recorded per
#: transaction, and how often the sweepers run.
DISPATCH_BATCH_SIZE = 500
CLAIM_LEASE_SECONDS = 30
CLAIM_RENEW_SECONDS = 10
DELIVERY_RECORD_CHUNK = 100
#: A request with more subjects than this is delivered in parts of this many subjects, each
#: fetched and sent on its own, with a manifest last (flows/pipeline/bulk.py).
BULK_PART_SUBJECTS = 10_000
DROPOFF_FILES_PER_TASK = 100
#: The sweepers' schedules are a slow safety net, counted from SWEEP_ANCHOR (so a restart adds no
#: run): the watch starts them as soon as there is work. A quiet day: 24 dispatcher runs, 12
#: drop-off runs and the nightly verification (README: Idle).
DISPATCH_SWEEP_SECONDS = 3600
DROPOFF_SWEEP_SECONDS = 7200
SWEEP_ANCHOR = "2026-01-01T00:00:00+00:00"
#: The watch (flows/watch.py): how often it looks at the ledger's work queue and the drop
#: folders (and ``serve``'s runner asks Prefect for the runs it is to start); how long after
#: starting a sweeper for some work it starts it again if the very same work is still there
#: (twice as long each further time, up to that sweeper's interval); how long a run of a sweeper
#: that is due, pending or running counts as taking the work (an older one may hang on a host
#: that died); how long it waits after the ledger or Prefect could not be reached.
WATCH_SECONDS = 1.0
WATCH_RETRY_SECONDS = 60
WATCH_RUN_FRESH_SECONDS = 60
WATCH_ERROR_RETRY_SECONDS = 10
#: Nudges of the dispatcher within this many seconds share one flow run.
NUDGE_WINDOW_SECONDS = 5

#: Largest single request a drop-off file line or an API body may hold, in bytes. A request with
#: MAX_SUBJECTS_PER_REQUEST subjects is about 2.2 MB.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

#: Legal review (DESIGN.md section 6): the shortest written motivation a reviewer may give, and
#: how many time steps of 30 s either side of now a one-time code (RFC 6238) may come from.
MIN_MOTIVATION_CHARS = 20
MAX_MOTIVATION_CHARS = 4000
TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOTP_DRIFT_STEPS = 1
#: How many masked subject identifiers the reviewer's form lists before it only counts.
REVIEW_FORM_SUBJECTS_SHOWN = 20

#: The intake API (connectors/intake_api.py). Each partner may make API_RATE_PER_SECOND requests
#: per second, sustained, and API_RATE_BURST at once (a token bucket per partner in each API
#: process); beyond that it gets 429 with Retry-After. GET /v1/requests lists API_PAGE_SIZE
#: requests per page unless asked for up to API_MAX_PAGE_SIZE.
API_RATE_PER_SECOND = 100
API_RATE_BURST = 200
API_PAGE_SIZE = 50
API_MAX_PAGE_SIZE = 500
#: Bytes of randomness in an API key's secret (256 bits), and most unrevoked keys per partner
#: (enough to rotate without a gap).
API_KEY_SECRET_BYTES = 32
MAX_ACTIVE_API_KEYS = 5
#: Group commit of the intake API: most submissions recorded in one ledger transaction, most
#: waiting for the writer (more get 503), how long a submission waits for its transaction before
#: the partner gets 503, and the Retry-After of a 503.
INTAKE_BATCH_SIZE = 256
INTAKE_QUEUE_SIZE = 4096
INTAKE_WRITE_TIMEOUT_SECONDS = 10
INTAKE_RETRY_AFTER_SECONDS = 5
#: Bodies up to this size are parsed and validated on the event loop; larger ones in a thread.
INTAKE_INLINE_BODY_BYTES = 64 * 1024

#: Deepest nesting of arrays and objects an API body may have (a request needs four levels).
MAX_JSON_DEPTH = 32
#: HTTPS deliveries (connectors/destinations.py): seconds to connect and to wait for an answer.
DELIVERY_CONNECT_TIMEOUT_SECONDS = 5.0
DELIVERY_READ_TIMEOUT_SECONDS = 30.0
#: File-drop deliveries are written in a staging folder outside the partners' folders first; a
#: staged file older than this (its writer died) is removed by the next dispatcher run.
STAGING_MAX_AGE_SECONDS = 60
#: The local Prefect server (flows/local_prefect.py): seconds it may take to start, one health
#: probe may take, and a stopped process may take to exit before it is killed.
PREFECT_START_TIMEOUT_SECONDS = 120
PREFECT_HEALTH_TIMEOUT_SECONDS = 2
PROCESS_STOP_TIMEOUT_SECONDS = 20

#: Transparency reports (records/statistics.py, flows/audit/report.py): the median time to
#: decision is given in days with this many decimals (3: about a minute and a half), and the
#: statistics query streams this many requests at a time.
REPORT_DAYS_DECIMALS = 3
REPORT_FETCH_ROWS = 2000

#: Audit exports (issue #6: inzage, Logboek Dataverwerkingen). Longest processing activity URI
#: (legal_bases/accountability.yaml); request ids per IN (...) list when inzage and the export
#: read the rows of many requests; delivery rows the export fetches from the ledger at a time.
MAX_URI_LENGTH = 2048
AUDIT_IN_CHUNK = 500
LOGBOEK_FETCH_ROWS = 1000
#: Logboek Dataverwerkingen (legal-reference.md 4.1): a trace id has 16 bytes, a span id 8.
LDV_TRACE_ID_BYTES = 16
LDV_SPAN_ID_BYTES = 8

#: Verification of the record (``disclosure audit verify``): rows read per batch from each table,
#: and how many problems the report lists one by one (all of them are counted).
VERIFY_BATCH_SIZE = 1000
VERIFY_PROBLEMS_LISTED = 100

#: Replay (records/replay.py): requests read and replayed per batch of queries, and the most rows
#: the replay flow's table artifact holds (the requests that do not agree come first).
REPLAY_BATCH_SIZE = 500
REPLAY_ARTIFACT_MAX_ROWS = 1000

#: The timeline (flows/timeline.py): how many seconds a ledger event may lie outside its flow
#: run's running interval before it is flagged (the flow process's clock and the Prefect server's
#: differ a little), how long one Prefect API call may take, how many log lines are read per
#: flow run (in pages of TIMELINE_LOG_PAGE, Prefect's own page limit), and how many characters
#: of a detail the text table shows (--json shows all).
TIMELINE_CLOCK_TOLERANCE_SECONDS = 5
TIMELINE_PREFECT_TIMEOUT_SECONDS = 10
TIMELINE_MAX_LOG_LINES = 10_000
TIMELINE_LOG_PAGE = 200
TIMELINE_DETAIL_CHARS = 160
#: A request still undecided this many seconds after receipt is flagged by the timeline (the
#: dispatcher sweeps every DISPATCH_SWEEP_SECONDS; an hour leaves room for a large backlog).
TIMELINE_DECIDED_WITHIN_SECONDS = 3600

#: The scheduled verification of the record (flow verify-record): every night at this time
#: (cron, Europe/Amsterdam), and how many of its problems the run's artifact lists.
VERIFY_CRON = "30 3 * * *"
VERIFY_ARTIFACT_PROBLEMS = 50
#: Checkpoints of the chain head (records/checkpoints.py): ``audit verify`` warns when the newest
#: one in the checkpoint folder is older than this many hours (the nightly run writes one a day).
CHECKPOINT_STALE_HOURS = 36

#: Retention (records/retention.py): the terms themselves are data, per ground, in
#: legal_bases/accountability.yaml. How many requests one shredding transaction takes; how many
#: days a file-drop
#: delivery stays in a partner's outbox when the partner does not mark it collected (setting
#: DISCLOSURE_OUTBOX_KEEP_DAYS), and a drop-off file once filed away (DISCLOSURE_DROPOFF_KEEP_DAYS;
#: the ledger holds what it said, sealed); and when the retention flow runs (cron,
#: Europe/Amsterdam, before the nightly verification).
SHRED_BATCH_SIZE = 200
OUTBOX_KEEP_DAYS = 30
DROPOFF_KEEP_DAYS = 30
RETENTION_CRON = "30 2 * * *"

#: The ledger's string columns (records/models.py, records/reviews.py), in characters. Every
#: value a row takes from outside (a partner, a reviewer, a receiver) is held against its column's
#: length before it is written (records.models.overlong); what does not fit is refused or set
#: aside with the column named, never left to fail a shared transaction.
COLUMN_ID_LENGTH = 36  # a uuid4 in its canonical text form
COLUMN_HASH_LENGTH = 64  # a sha256 or HMAC-SHA256 in hex
COLUMN_PARTNER_ID_LENGTH = 64
COLUMN_BODY_LENGTH = 32
COLUMN_CHANNEL_LENGTH = 16
COLUMN_GROUND_VERSION_LENGTH = 128
COLUMN_CORRELATION_ID_LENGTH = 128
COLUMN_INTAKE_KEY_LENGTH = 200  # "dropoff:<partner>:<sha256 of the file>:<line>" and the like
COLUMN_ID_TYPE_LENGTH = 16
COLUMN_OUTCOME_LENGTH = 32
COLUMN_ACTOR_LENGTH = 128  # "engine", a partner id, or the reviewers: "anna+bram"
COLUMN_FLOW_RUN_ID_LENGTH = 64
COLUMN_DESTINATION_LENGTH = 512
COLUMN_IDEMPOTENCY_KEY_LENGTH = 128
COLUMN_STATUS_LENGTH = 32
COLUMN_KIND_LENGTH = 64
COLUMN_KEY_ID_LENGTH = 32  # the id of the key an audit event is sealed with
#: Reviewers: the id, name and role columns, and the longest id enrolment accepts (two ids and a
#: "+" must fit an actor column: the ``decided_by`` of a four-eyes decision).
COLUMN_REVIEWER_ID_LENGTH = 64
COLUMN_NAME_LENGTH = 200
COLUMN_ROLE_LENGTH = 64
MAX_REVIEWER_ID_LENGTH = (COLUMN_ACTOR_LENGTH - 1) // 2

"""The slugs of the ledger: intake channels, request states and audit event kinds."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """How a submission reached the engine."""

    CLI = "cli"
    API = "api"
    DROPOFF = "dropoff"


class RequestState(StrEnum):
    """Where a request stands in the work queue (the ``request_status`` projection).

    Each state is the ``state`` that the latest state-changing audit event of the request carries
    in its payload, so the projection can always be rebuilt from the chain.
    """

    RECEIVED = "received"
    INVALID = "invalid"
    DECIDED = "decided"  # approved or partially approved: to be fetched and delivered
    REJECTED = "rejected"  # decided, nothing to deliver
    AWAITING_REVIEW = "awaiting_review"
    ESCALATED = "escalated"  # awaiting review past its deadline: escalated, still decidable
    DELIVERED = "delivered"
    # For good: the destination refused the delivery, or the request was set aside (a value
    # that cannot be recorded, a release the gate refused); its last event says why. An
    # operator acts.
    FAILED = "failed"


class EventKind(StrEnum):
    """The kind of an audit event: a snake_case fact, in the past tense."""

    REQUEST_RECEIVED = "request_received"
    REQUEST_INVALID = "request_invalid"
    DECISION_RECORDED = "decision_recorded"
    TABLE_SNAPSHOT_STORED = "table_snapshot_stored"
    DELIVERY_RECORDED = "delivery_recorded"
    DELIVERY_FAILED = "delivery_failed"
    # a request the pipeline cannot carry further without a person: why, at which step (codes)
    REQUEST_SET_ASIDE = "request_set_aside"
    # somebody looked a person up to answer an inzage (AVG art. 15): on the record, by pseudonym
    INZAGE_ANSWERED = "inzage_answered"
    # retention (records/retention.py): a request's term ended and its data key, subjects'
    # pseudonyms and sealed fields became unreadable; ids and counts only
    REQUEST_SHREDDED = "request_shredded"
    # a year's distinct subjects for the transparency report, frozen (counts only) before the
    # first of its requests is shredded
    SUBJECT_COUNTS_FROZEN = "subject_counts_frozen"
    # file-drop deliveries removed from a partner's outbox (collected, or kept long enough)
    OUTBOX_CLEANED = "outbox_cleaned"
    # drop-off files filed away long enough removed (the ledger holds what they said, sealed)
    DROPOFF_FILES_REMOVED = "dropoff_files_removed"

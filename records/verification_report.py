"""What a verification of the record reports: the problem codes and what they mean, each
problem found, the counts checked, and the report as a whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from records.chain import LINK_PROBLEMS

#: What each problem code means; a report names the code, this says it in words.
PROBLEM_CODES: Mapping[str, str] = {
    # the chain
    **LINK_PROBLEMS,
    "unkeyed_events": "events from before the chain was keyed (a plain sha256) are in the chain "
                      "(warning)",
    "anchor_mismatch": "the event at the anchored sequence number no longer has the anchored "
                       "hash (the chain was rewritten from there)",
    "anchor_missing": "the chain no longer reaches the anchored event (its tail was cut off)",
    "checkpoint_mismatch": "the event at a checkpoint's sequence number no longer has the "
                           "checkpoint's hash (the chain was rewritten from there)",
    "checkpoint_missing": "the chain no longer reaches a checkpoint's event (its tail was cut "
                          "off)",
    "checkpoint_forged": "a checkpoint's signature is not the chain key's seal of it",
    "checkpoint_unverifiable": "a checkpoint is sealed with a key that is not in the key ring",
    "checkpoint_unreadable": "a file in the checkpoint folder does not read as a checkpoint",
    "no_checkpoint": "the checkpoint folder holds no checkpoint (warning)",
    "checkpoint_stale": "the newest checkpoint is older than the nightly run would leave it "
                        "(warning)",
    # events that cannot stand for a row
    "malformed_event": "an event lacks the id of the row it records",
    "duplicate_event": "a second event claims to record the same row",
    # table snapshots
    "snapshot_altered": "a table snapshot's content does not hash to its hash",
    "snapshot_missing": "a decision refers to a table snapshot the ledger does not hold",
    "snapshot_without_event": "a table snapshot has no table_snapshot_stored event",
    "event_without_snapshot": "a table_snapshot_stored event's snapshot is missing",
    "snapshot_mismatch": "a table snapshot disagrees with its table_snapshot_stored event",
    # requests and their subjects
    "raw_body_altered": "a request's raw body does not hash to its recorded body_hash",
    "request_without_event": "a request has no request_received or request_invalid event",
    "event_without_request": "a request_received or request_invalid event's request is missing",
    "request_mismatch": "a request row disagrees with its event",
    "subjects_mismatch": "a request's subjects (pseudonyms) disagree with its event",
    # retention: data keys and shredding
    "data_key_missing": "a request's data key is gone without a request_shredded event",
    "data_key_unusable": "a request's data key does not open with the KEK ring",
    "shredding_incomplete": "a request shredded under retention still has its data key",
    "subjects_after_shredding": "a request shredded under retention still has subject rows",
    "shredded_while_not_done": "a request was shredded while it waited for a decision, a "
                               "reviewer or a delivery",
    "shredded_before_term": "a request was shredded before its retention term ended",
    # decisions, deliveries, review answers
    "decision_without_event": "a decision has no decision_recorded event",
    "event_without_decision": "a decision_recorded event's decision is missing",
    "decision_mismatch": "a decision row disagrees with its decision_recorded event",
    "delivery_without_event": "a delivery has no delivery_recorded event",
    "event_without_delivery": "a delivery_recorded event's delivery is missing",
    "delivery_mismatch": "a delivery row disagrees with its delivery_recorded event",
    "review_answer_without_event": "a review answer has no review_answer_recorded event",
    "event_without_review_answer": "a review_answer_recorded event's answer is missing",
    "review_answer_mismatch": "a review answer disagrees with its review_answer_recorded event",
    # what was released, against what was decided and accepted
    "release_for_invalid_request": "a decision releases data on (or sends to review) a "
                                   "submission recorded as invalid: the intake refused it",
    "delivery_for_invalid_request": "a delivery was made for a submission recorded as invalid",
    "delivery_not_releasing": "a delivery carries out a decision that releases nothing",
    "delivery_of_superseded_decision": "a delivery carries out a decision that a later decision "
                                       "had replaced before the delivery was made",
    "delivery_categories_differ": "a delivery's event records other categories than its "
                                  "decision released",
    # who may act: reviewers and API keys, against their events
    "reviewer_without_event": "a reviewer row has no reviewer_enrolled event (or its secret is "
                              "not the one enrolled): written outside the engine",
    "removal_without_event": "a reviewer removal has no reviewer_removed event",
    "event_without_removal": "a reviewer_removed event's removal row is missing (the reviewer "
                             "would be able to decide again)",
    "api_key_without_event": "an API key row has no api_key_issued event for its partner (and "
                             "hash): written outside the engine",
    "revocation_without_event": "an API key revocation has no api_key_revoked event",
    "event_without_revocation": "an api_key_revoked event's revocation row is missing (the key "
                                "would work again)",
    # the projection (warnings)
    "status_mismatch": "request_status disagrees with the state the chain derives (warning)",
    "status_missing": "a request the chain knows has no request_status row (warning)",
    "status_without_events": "a request_status row for a request without state events (warning)",
}



@dataclass(frozen=True, slots=True)
class RecordProblem:
    """One thing found wrong: a ``code`` (see :data:`PROBLEM_CODES`), the ``table`` it was found
    in, the row's id or the event's ``seq``, and a plain-English ``detail``.

    ``warning`` problems (the ``request_status`` projection) do not fail the verification.
    """

    code: str
    table: str
    detail: str
    row_id: str | None = None
    seq: int | None = None
    warning: bool = False

    @property
    def where(self) -> str:
        """Where it was found, e.g. ``decisions 3f2c…`` or ``audit_events seq 17``."""
        parts = [self.table]
        if self.row_id is not None:
            parts.append(self.row_id)
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RecordCounts:
    """How many rows of each table were checked."""

    audit_events: int = 0
    table_snapshots: int = 0
    requests: int = 0
    request_subjects: int = 0
    decisions: int = 0
    deliveries: int = 0
    review_answers: int = 0
    request_status: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RecordReport:
    """The result of :func:`verify_record`.

    ``ok`` is true when nothing but warnings was found. ``head_seq``/``head_hash`` are the last
    event of the chain as stored (``head_hash`` is the genesis hash for an empty chain): write
    them down outside the database, and pass them as ``expect_head`` next time. ``first_break``
    is the first broken link of the chain, if any. ``anchor_ok`` says whether the chain still
    holds ``expected_head`` unchanged (None when no anchor was given). ``problems`` lists the first
    :data:`~legal_bases.limits.VERIFY_PROBLEMS_LISTED` problems found; ``breaks`` and
    ``warnings`` count all of them.
    """

    ok: bool
    counts: RecordCounts
    head_seq: int | None
    head_hash: str
    first_break: RecordProblem | None
    expected_head: tuple[int, str] | None
    anchor_ok: bool | None
    problems: tuple[RecordProblem, ...]
    breaks: int
    warnings: int
    #: how many checkpoints from the checkpoint folder carried a valid seal and were checked
    checkpoints: int = 0

    @property
    def chain_ok(self) -> bool:
        """Whether the hash chain itself is unbroken (and reaches the anchor, if one was given)."""
        return self.first_break is None

    @property
    def problems_left_out(self) -> int:
        """How many problems were counted but not listed."""
        return self.breaks + self.warnings - len(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chain_ok": self.chain_ok,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "expected_head": (None if self.expected_head is None else
                              {"seq": self.expected_head[0], "hash": self.expected_head[1]}),
            "anchor_ok": self.anchor_ok,
            "checkpoints": self.checkpoints,
            "checked": self.counts.to_dict(),
            "breaks": self.breaks,
            "warnings": self.warnings,
            "first_break": None if self.first_break is None else self.first_break.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "problems_left_out": self.problems_left_out,
        }

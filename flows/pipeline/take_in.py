"""Taking in drop-off files: each line of a partner's file recorded as a submission, the file
filed away once every line is on the record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from connectors.dropoff import DropFile, Entry
from flows.logs import get_logger
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.errors import FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest, read_request_text
from legal_bases.vocabulary import Body
from records.errors import ReferenceConflictError
from records.ledger import (
    received_on,
    record_submission,
)
from records.vocabulary import Channel


@dataclass(frozen=True)
class TakenIn:
    """What one drop file held: the request ids recorded, and how many were valid."""

    file: str
    partner_id: str
    request_ids: list[str]
    valid: int
    invalid: int
    accepted: bool


def _entry_request(entry: Entry, received_at: datetime,
                   ) -> tuple[str, DisclosureRequest | InvalidRequest]:
    if entry.too_large:
        return (f"(an entry of more than {limits.MAX_REQUEST_BYTES} bytes; the file is kept)",
                InvalidRequest((FieldError("", "too_large", "the request is larger than "
                                           f"{limits.MAX_REQUEST_BYTES} bytes"),)))
    if entry.bad_encoding is not None:
        return (f"(not UTF-8; undecodable bytes replaced) {entry.text}",
                InvalidRequest((FieldError("", "bad_encoding", "not UTF-8 text (at byte "
                                           f"{entry.bad_encoding})"),)))
    return entry.text, read_request_text(entry.text, received_on=received_on(received_at))


def take_in_file(rt: Runtime, drop: DropFile, *, flow_run_id: str | None = None) -> TakenIn:
    """Record every request in a drop file (valid or not), then file it away with a report."""
    log = get_logger("dropoff")
    partner = rt.partners.get(drop.partner_id)
    name = drop.path.name
    if partner is None:
        rt.dropbox.file_away(drop, accepted=False, report={
            "file": name, "sha256": drop.sha256, "error": "unknown_partner",
            "message": f"no partner {drop.partner_id!r} is configured; nothing was taken in"})
        log.warning("dropoff_unknown_partner", partner_id=drop.partner_id)
        return TakenIn(name, drop.partner_id, [], 0, 0, accepted=False)
    lines: list[dict[str, Any]] = []
    entries = list(rt.dropbox.entries(drop))
    with Session(rt.ledger, expire_on_commit=False) as session:
        for start in range(0, len(entries), 200):
            with session.begin():
                for entry in entries[start:start + 200]:
                    lines.append(_take_in_entry(rt, session, drop, partner.body, entry,
                                                flow_run_id=flow_run_id))
    valid = sum(1 for line in lines if line["valid"])
    report = {"file": name, "sha256": drop.sha256, "partner_id": drop.partner_id,
              "taken_in_at": datetime.now(UTC).isoformat(), "requests": len(lines),
              "valid": valid, "invalid": len(lines) - valid, "entries": lines}
    if not lines:
        report["error"] = "no_requests"
    rt.dropbox.file_away(drop, accepted=valid > 0, report=report)
    log.info("dropoff_taken_in", partner_id=drop.partner_id, file_sha256=drop.sha256,
             valid=valid, invalid=len(lines) - valid)
    return TakenIn(name, drop.partner_id, [line["request_id"] for line in lines], valid,
                   len(lines) - valid, accepted=valid > 0)


def _take_in_entry(rt: Runtime, session: Session, drop: DropFile, body: Body,
                   entry: Entry, *, flow_run_id: str | None) -> dict[str, Any]:
    received_at = datetime.now(UTC)
    raw_text, parsed = _entry_request(entry, received_at)
    common: dict[str, Any] = {
        "session": session, "partner_id": drop.partner_id, "requester_body": body,
        "channel": Channel.DROPOFF, "raw_body": raw_text, "received_at": received_at,
        "pseudonymizer": rt.pseudonymizer, "flow_run_id": flow_run_id,
        "intake_key": f"dropoff:{drop.partner_id}:{drop.sha256}:{entry.line}"}
    try:
        row = record_submission(parsed=parsed, **common)
    except ReferenceConflictError as exc:
        conflict = FieldError("reference", "reference_conflict",
                              f"already used by request {exc.existing_request_id} with "
                              "another body")
        row = record_submission(parsed=InvalidRequest((conflict,)), **common)
    return {"line": entry.line, "request_id": row.id, "reference": row.reference,
            "valid": row.valid, "errors": row.validation_errors}

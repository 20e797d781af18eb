"""Delivering a bulk request in parts: chunked fetch, one document per part, a manifest last.

A request naming more than ``limits.BULK_PART_SUBJECTS`` subjects is not built as one document
in memory. Its subjects are cut into parts of that size — in the order of their pseudonyms
where the ground pseudonymises, so that which part a code is in says nothing about where its
number stood in the partner's list — and each part is fetched from the register and delivered
on its own, under the key ``delivery-<decision>-part-<n>``; then a **manifest** is delivered
under the decision's own delivery key (``delivery-<decision>``): every part's key, sha256, size
and counts, and the totals, so the receiver can check that it holds every part and nothing
else. The manifest's receipt is the delivery on the record (one per decision, as for any
request); the parts' receipts are in it.

A crash half-way resumes where it stopped: a part the destination already holds (a file drop
knows its files; see :meth:`connectors.destinations.Destination.held`) is not fetched or sent
again, and one it may hold (HTTPS) is sent again under the same key, which the receiver answers
with its first receipt. No subject is left out or sent twice: the parts are the same on every
attempt. Memory stays at about one part's records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from connectors.receipts import Receipt
from connectors.register import FetchResult
from flows.faults import fault
from flows.logs import get_logger
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest, Subject
from legal_bases.vocabulary import Category
from records.deliveries import DeliveryItem, delivery_key
from records.errors import ReleaseRefusedError
from records.models import DecisionRow, RequestRow
from records.release import document_refusal

_T = TypeVar("_T")
#: Runs one part's work; the pipeline's tasks run each part as a Prefect task of its own.
PartRunner = Callable[[Callable[[], _T], int], _T]
#: Told ``(parts done, parts in all)`` after each part (the progress artifact).
Progress = Callable[[int, int], None]


def is_bulk(request: RequestRow) -> bool:
    """Whether a request is delivered in parts (more subjects than one part holds)."""
    return (request.subject_count or 0) > limits.BULK_PART_SUBJECTS


def part_key(decision_id: str, number: int) -> str:
    """The idempotency key of part ``number`` (from 1) of a decision's delivery."""
    return f"{delivery_key(decision_id)}-part-{number:04d}"


@dataclass(frozen=True)
class PartReceipt:
    """What the manifest says of one part."""

    number: int
    idempotency_key: str
    sha256: str
    size: int
    subjects: int
    records: int
    not_found: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "idempotency_key": self.idempotency_key,
                "sha256": self.sha256, "size": self.size, "subjects": self.subjects,
                "records": self.records, "not_found": self.not_found}


def _run_directly(work: Callable[[], _T], _number: int) -> _T:
    return work()


def parts_of(rt: Runtime, request: RequestRow, parsed: DisclosureRequest,
             version: GroundVersion) -> list[list[Subject]]:
    """The request's subjects cut into parts, the same on every attempt."""
    subjects = list(parsed.subjects)
    if version.pseudonymise:
        code = rt.pseudonymizer.for_recipient(request.partner_id)
        subjects.sort(key=code)
    size = limits.BULK_PART_SUBJECTS
    return [subjects[i:i + size] for i in range(0, len(subjects), size)]


def deliver_in_parts(rt: Runtime, request: RequestRow, decision: DecisionRow, *,
                     parsed: DisclosureRequest, version: GroundVersion,
                     header: Mapping[str, Any], flow_run_id: str | None,
                     run_part: PartRunner[PartReceipt] | None = None,
                     progress: Progress | None = None) -> DeliveryItem:
    """Deliver a bulk request's released data in parts and then its manifest; the manifest's
    receipt is the delivery to record. Raises what a single delivery raises."""
    runner = run_part or _run_directly
    parts = parts_of(rt, request, parsed, version)
    destination = rt.destination(request.partner_id)
    code = rt.pseudonymizer.for_recipient(request.partner_id) if version.pseudonymise else None
    released = [Category(c) for c in decision.released]
    log = get_logger("delivery")
    done: list[PartReceipt] = []
    for number, subjects in enumerate(parts, 1):
        def one(number: int = number, subjects: list[Subject] = subjects) -> PartReceipt:
            key = part_key(decision.id, number)
            held = destination.held(key)
            if held is not None:  # delivered before a crash: not fetched or sent again
                return _held_part(number, key, held, len(subjects))
            result = rt.register.fetch(subjects=subjects, categories=released,
                                       pseudonymise=code)
            document = _part_document(header, version, result,
                                      part={"number": number, "of": len(parts),
                                            "subjects": len(subjects)})
            refusal = document_refusal(document, decision_id=decision.id,
                                       released=decision.released)
            if refusal is not None:
                raise ReleaseRefusedError(refusal)
            receipt = destination.deliver(idempotency_key=key, document=document)
            return PartReceipt(number, key, receipt.sha256, receipt.size, len(subjects),
                               len(result.records), len(result.not_found),
                               receipt.status.value)
        part = runner(one, number)
        done.append(part)
        log.info("bulk_part_delivered", part=number, parts=len(parts), subjects=part.subjects,
                 records=part.records, not_found=part.not_found, status=part.status)
        if progress is not None:
            progress(number, len(parts))
        fault("part_delivered")
    totals = {"subjects": sum(p.subjects for p in done),
              "records": sum(p.records for p in done),
              "not_found": sum(p.not_found for p in done)}
    manifest = {"disclosure": dict(header), "subjects_pseudonymised": version.pseudonymise,
                "manifest": {"parts": [p.to_dict() for p in done], "complete": True},
                "totals": totals}
    refusal = document_refusal(manifest, decision_id=decision.id, released=decision.released)
    if refusal is not None:
        raise ReleaseRefusedError(refusal)
    fault("delivering")
    receipt = destination.deliver(idempotency_key=delivery_key(decision.id), document=manifest)
    recorded = receipt.to_dict()
    recorded["detail"] = {**recorded["detail"], "parts": len(done)}
    return DeliveryItem(
        request_id=request.id, decision_id=decision.id, partner_id=request.partner_id,
        destination=receipt.kind, receipt=recorded, delivered_at=receipt.delivered_at,
        flow_run_id=flow_run_id, released=tuple(decision.released),
        counts={"records": totals["records"], "not_found": totals["not_found"]})


def _part_document(header: Mapping[str, Any], version: GroundVersion, result: FetchResult, *,
                   part: dict[str, int]) -> dict[str, Any]:
    records = result.records
    if version.pseudonymise:
        records = sorted(records, key=lambda r: str(r["subject"].get("pseudonym")))
        not_found: Any = {"count": len(result.not_found)}
    else:
        not_found = [{s.id_type.value: s.number} for s in result.not_found]
    return {"disclosure": dict(header), "subjects_pseudonymised": version.pseudonymise,
            "part": part,
            "records": records, "not_found": not_found}


def _held_part(number: int, key: str, held: tuple[Receipt, bytes], subjects: int,
               ) -> PartReceipt:
    _, body = held
    document = json.loads(body)
    not_found = document.get("not_found")
    missing = (not_found.get("count", 0) if isinstance(not_found, dict)
               else len(not_found or []))
    return PartReceipt(number, key, hashlib.sha256(body).hexdigest(), len(body), subjects,
                       len(document.get("records") or []), int(missing), "repeat")

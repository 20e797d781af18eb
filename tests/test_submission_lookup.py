"""The intake's look-up of references already accepted, on every ledger backend.

A batch of submissions is recorded as accepted, as a repeat (same partner, same reference, same
body) or as a conflict (same partner and reference, another body) — across batches and within
one. On PostgreSQL the look-up asks for the exact (partner, reference) pairs (one index probe
each, whatever the planner's statistics say); on SQLite for partners and references; both must
answer alike, and the chain must verify afterwards.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from legal_bases.request import read_request
from legal_bases.vocabulary import Body
from records.chain import verify_chain
from records.models import RequestRow
from records.pseudonym import Pseudonymizer
from records.submissions import Recording, Submission, record_submissions

BODY = {"legal_basis": "awr-55", "purpose": "belastingheffing", "case_reference": "FIN/2026/77",
        "subjects": [{"bsn": "111222333"}], "categories": ["personalia", "opleidingsgegevens"]}


def submission(partner: str, reference: str, **changes: Any) -> Submission:
    data = {"reference": reference, **BODY, **changes}
    now = datetime.now(UTC)
    return Submission(partner_id=partner, requester_body=Body("belastingdienst"),
                      raw_body=json.dumps(data), parsed=read_request(data, received_on=now.date()),
                      received_at=now, data=data)


def test_repeats_and_conflicts_across_and_within_batches(ledger_engine: Engine) -> None:
    pseudonymizer = Pseudonymizer(bytes(32))
    with Session(ledger_engine) as session, session.begin():
        first = record_submissions(session=session, pseudonymizer=pseudonymizer, submissions=[
            submission("a", "R1"), submission("b", "R1"), submission("a", "R2")])
    assert [r.recording for r in first] == [Recording.ACCEPTED] * 3
    with Session(ledger_engine) as session, session.begin():
        second = record_submissions(session=session, pseudonymizer=pseudonymizer, submissions=[
            submission("a", "R1"),                                 # the same again: a repeat
            submission("b", "R1", case_reference="OTHER"),         # another body: a conflict
            submission("a", "R3"), submission("a", "R3"),          # new, then its repeat
            submission("b", "R2"),                                 # b's R2 is new (a has one)
            submission("a", "R2", case_reference="OTHER2")])       # conflict with a's R2
    assert [r.recording for r in second] == [
        Recording.REPEAT, Recording.CONFLICT, Recording.ACCEPTED, Recording.REPEAT,
        Recording.ACCEPTED, Recording.CONFLICT]
    assert second[0].request_id == first[0].request_id
    assert second[1].existing_request_id == first[1].request_id
    assert second[5].existing_request_id == first[2].request_id
    assert second[3].request_id == second[2].request_id
    with Session(ledger_engine) as session:
        assert verify_chain(session=session).ok
        # 3 accepted, then 2 accepted and the 2 conflicts recorded as invalid; repeats are not
        assert session.execute(select(func.count()).select_from(RequestRow)).scalar_one() == 7

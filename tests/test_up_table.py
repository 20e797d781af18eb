"""The table ``disclosure up`` prints on a later start: the state in force, not the first decision.

``up`` prints one row per bundled example (partner, reference, ground, outcome, state, detail)
once each has settled. On a second ``up``, days later, a request that waited for a reviewer may
since have been reviewed and delivered, and another may still wait past its deadline
(escalated). The ledger here is written as the pipeline and the review flow write it
(``records``: the drop-off's intake key, the engine's decision, the reviewer's decision after
it, the delivery, the escalation), and the rows are read back as a person reads the table.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import TEST_CHAIN_KEY_RING
from sqlmodel import Session

from cli.up import example_files, outcome_lines, settled_outcomes
from flows.runtime import EXAMPLES_DIR, open_ledger
from legal_bases.assessment import assess
from legal_bases.request import DisclosureRequest, read_request
from legal_bases.review import reviewed_decision
from legal_bases.vocabulary import Body, Outcome
from records.decisions import DecisionItem, record_decisions
from records.deliveries import DeliveryItem, record_deliveries
from records.ledger import received_on, record_submission
from records.pseudonym import Pseudonymizer
from records.reviews import record_review_event
from records.settings import load_settings
from records.vocabulary import Channel, RequestState

KEY = bytes.fromhex("5a" * 32)
RECEIVED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
#: The examples of this test: reviewed and delivered since, delivered by the engine, waiting.
REVIEWED = "UTR-LP-2026-0203"  # wro-21 with gezondheid: a special category, four eyes
ENGINE = "BD-2026-000123"  # awr-55: approved by the engine
WAITING = "OM-MN-2026-1190"  # sv-126nd: always reviewed; still waiting past its deadline


def _bodies() -> dict[str, Body]:
    partners = yaml.safe_load((EXAMPLES_DIR / "partners.yaml").read_text("utf-8"))
    return {p["id"]: Body(p["body"]) for p in partners}


def _cells(line: str) -> list[str]:
    """A row of the table as a person reads it: the columns are two or more spaces apart."""
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def later_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ledger a second ``up`` finds; returns the table it prints."""
    for name in ("DISCLOSURE_DATABASE_URL", "DISCLOSURE_GROUNDS_DIR", "DISCLOSURE_PARTNERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    settings = load_settings()
    table = settings.ground_table()
    files = [f for f in example_files(EXAMPLES_DIR)
             if json.loads(f.path.read_text("utf-8"))["reference"] in (REVIEWED, ENGINE, WAITING)]
    bodies = _bodies()
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            for example in files:
                text = example.path.read_text("utf-8")
                parsed = read_request(json.loads(text), received_on=received_on(RECEIVED))
                assert isinstance(parsed, DisclosureRequest)
                body = bodies[example.partner_id]
                row = record_submission(
                    session=session, partner_id=example.partner_id, requester_body=body,
                    channel=Channel.DROPOFF, raw_body=text, parsed=parsed, received_at=RECEIVED,
                    pseudonymizer=Pseudonymizer(KEY), intake_key=example.intake_key)
                decision = assess(parsed, body, table)
                [first] = record_decisions(session=session, table=table, items=[DecisionItem(
                    request_id=row.id, decision=decision,
                    decided_at=RECEIVED + timedelta(seconds=5))])
                final = first
                if parsed.reference == REVIEWED:  # the reviewers approve the proposal
                    assert decision.outcome is Outcome.NEEDS_REVIEW
                    assert decision.proposal is not None
                    version = table.version(first.ground_version or "")
                    [final] = record_decisions(session=session, table=table, items=[DecisionItem(
                        request_id=row.id, decided_by="anna+ben",
                        decision=reviewed_decision(decision, version,
                                                   decision.proposal.released),
                        decided_at=RECEIVED + timedelta(days=2), deadline=first.deadline)])
                if parsed.reference == WAITING:
                    assert first.deadline is not None
                    record_review_event(session=session, request_id=row.id,
                                        kind="review_escalated",
                                        now=RECEIVED + timedelta(days=40),
                                        payload={"deadline": first.deadline.isoformat()},
                                        state=RequestState.ESCALATED.value)
                    continue
                record_deliveries(session=session, items=[DeliveryItem(
                    request_id=row.id, decision_id=final.id, partner_id=example.partner_id,
                    destination="file", receipt={}, released=tuple(final.released),
                    delivered_at=final.decided_at + timedelta(seconds=3))])
    finally:
        engine.dispose()
    outcomes = settled_outcomes(settings, files)
    assert outcomes is not None, "a reviewed, a delivered and an escalated request are settled"
    return outcome_lines(outcomes)


def test_a_request_reviewed_since_shows_the_reviewers_decision_and_its_delivery(
        later_start: list[str]) -> None:
    header, *rows = [_cells(line) for line in later_start]
    assert header == ["partner", "reference", "ground", "outcome", "state", "detail"]
    by_reference = {cells[1]: cells for cells in rows}
    assert sorted(by_reference) == sorted([REVIEWED, ENGINE, WAITING])
    partner, _, ground, outcome, state, detail = by_reference[REVIEWED]
    assert (partner, ground, outcome, state) == (
        "gemeente-utrecht", "wro-21", "approved", "delivered")
    assert detail == "released gezondheid, opleidingsgegevens, personalia (reviewed by anna+ben)"
    assert "review:" not in " ".join(by_reference[REVIEWED])


def test_the_engines_own_and_the_waiting_decisions_read_as_before(
        later_start: list[str]) -> None:
    by_reference = {cells[1]: cells for cells in map(_cells, later_start[1:])}
    assert by_reference[ENGINE][3:] == [
        "approved", "delivered", "released financiele_gegevens, personalia"]
    # still waiting, past its deadline: settled for `up` (a person must act), and said so
    assert by_reference[WAITING][3:] == ["needs_review", "escalated", "review: review_always"]

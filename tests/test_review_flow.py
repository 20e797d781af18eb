"""Legal review end to end, against a real ``prefect server`` and ``disclosure serve``.

Requests that need a person are recorded and decided by the dispatcher deployment; each gets a
``review-request`` run that suspends with the reviewer's form. The tests answer the form as a
reviewer's screen would, through the Prefect client (``resume_flow_run``), and check what the
issue asks: the server refuses input that breaks the form's schema and the run keeps waiting;
the flow refuses input that breaks the rules (unknown reviewer, wrong or reused code, a
motivation that is only padding, the same reviewer twice, a second reviewer widening) with the
message on top of the form opened again, records the refused answer and decides nothing; a
single reviewer or two (four eyes, for a special category) decide, and the decision is in the
ledger beside the engine's proposal, in the hash chain, and delivered once; a restart of both
servers while the review waits changes nothing; a review past its deadline is escalated (ledger
state, audit event, Prefect event, the automation's notification) and stays decidable; and no
subject's number reaches Prefect.

One system serves the whole module (starting a Prefect server costs some 15 s); every test has
requests of its own, recorded before the system starts, so their review runs start together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from review_support import (
    FINANCIAL_126ND,
    GEMEENTE,
    LEERPLICHT_HEALTH,
    OM,
    Answer,
    ReviewSystem,
    example,
    request_numbers,
    wait_for,
)

from flows.events import REVIEW_DECIDED, REVIEW_ESCALATED, REVIEW_NEEDED, REVIEW_OVERDUE
from flows.starts import NOTIFY

pytestmark = pytest.mark.slow

MOTIVATION = ("The vordering names this suspect; the financial data bear directly on the "
              "suspected fraud, the contact history does not.")
FOUR_EYES_FIRST = "Gezondheid is needed to judge the absence from school; the pupil is named."
FOUR_EYES_SECOND = "I confirm: the leerplichtambtenaar needs the health data for this case."

#: name -> (partner, request body). Every test uses its own requests.
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "breaches": (OM, example(FINANCIAL_126ND, reference="OM-T-BREACHES")),
    "padding": (OM, example(FINANCIAL_126ND, reference="OM-T-PADDING")),
    "reuse": (OM, example(FINANCIAL_126ND, reference="OM-T-REUSE")),
    "single": (OM, example(FINANCIAL_126ND, reference="OM-T-SINGLE")),
    "restart": (OM, example(FINANCIAL_126ND, reference="OM-T-RESTART")),
    "overdue": (OM, example(FINANCIAL_126ND, reference="OM-T-LATE",
                            reference_date="2026-01-01", due_date="2026-01-02")),
    "four_eyes": (GEMEENTE, example(LEERPLICHT_HEALTH, reference="UTR-T-FOUR-EYES")),
    "narrowed": (GEMEENTE, example(LEERPLICHT_HEALTH, reference="UTR-T-NARROWED")),
}
PROPOSAL_126ND = ["contacthistorie", "financiele_gegevens", "personalia"]
PROPOSAL_LEERPLICHT = ["gezondheid", "opleidingsgegevens", "personalia"]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewSystem]:
    """The engine with its servers, five reviewers, and every test's request waiting."""
    engine = ReviewSystem(tmp_path_factory.mktemp("review"))
    try:
        engine.enroll("anna", "Anna Jansen", "senior_jurist")
        engine.enroll("bram", "Bram de Vries", "jurist")
        engine.enroll("cees", "Cees Bakker", "privacy_officer")
        engine.enroll("dirk", "Dirk Visser", "jurist")
        engine.enroll("eva", "Eva Smit", "jurist")
        for name, (partner, body) in REQUESTS.items():
            engine.submit(name, partner, body)
        engine.start()
        engine.dispatch()
        engine.wait_states(list(engine.requests.values()), ("awaiting_review", "escalated"))
        yield engine
    finally:
        engine.close()


def waiting_run(system: ReviewSystem, name: str, n: int = 0) -> Any:
    """The review run of request ``name``, waiting on its form for answer ``n``."""
    return system.wait_form(system.review_run(system.requests[name]).id, n)


def assert_refused_and_waiting(system: ReviewSystem, name: str, run_id: Any, n: int,
                               code: str, message: str) -> str:
    """Answer ``n - 1`` was refused with ``code``: the run waits on form ``n`` with the message
    on top, the ledger has the refused answer and no new decision. Returns the description."""
    request_id = system.requests[name]
    run = system.wait_form(run_id, n)
    assert run.state.name == "Suspended"
    description, _ = system.form(run)
    assert description.startswith(f"> **Your last answer was not accepted:** {message}")
    answers = system.answers(request_id)
    assert len(answers) == n
    assert (answers[-1].accepted, answers[-1].refusal_code) == (False, code)
    assert [d.sequence for d in system.decisions(request_id)] == [1]
    assert system.state(request_id) in ("awaiting_review", "escalated")
    return description


# -- the server checks the form's schema ----------------------------------------------------------

def test_the_form_offers_what_the_ground_allows_and_tells_the_reviewer_the_case(
        system: ReviewSystem) -> None:
    run = waiting_run(system, "breaches")
    assert run.state.name == "Suspended"
    assert run.state.state_details.run_input_keyset == {
        "description": "suspended-review-0-description",
        "response": "suspended-review-0-response",
        "schema": "suspended-review-0-schema"}
    description, schema = system.form(run)
    props = schema["properties"]
    assert set(schema["required"]) == {"decision", "motivation", "reviewer_id", "code"}
    assert props["decision"]["enum"] == ["approve", "approve_partially", "reject"]
    assert sorted(props["categories"]["items"]["enum"]) == PROPOSAL_126ND
    assert props["motivation"]["minLength"] == 20
    assert props["code"]["pattern"] == "^[0-9]{6}$"
    assert description.startswith("### Request `OM-T-BREACHES` from Openbaar Ministerie")
    assert "`sv-126nd`" in description
    assert "- `review_always` — Wetboek van Strafvordering art. 126nd lid 1" in description
    assert "**The engine proposes to release:** contacthistorie, financiele_gegevens, " \
        "personalia" in description
    assert "bsn ******487" in description  # masked: the last three digits only


@pytest.mark.parametrize(("change", "reason"), [
    ({"decision": "maybe"}, "'maybe' is not one of"),
    ({"categories": ["gezondheid"]}, "'gezondheid' is not one of"),
    ({"motivation": "Too short."}, "is too short"),
    ({"code": "12345"}, "does not match"),
    ({"reviewer_id": None}, "reviewer_id"),
], ids=["decision", "category-outside-ground", "short-motivation", "code-shape", "no-reviewer"])
def test_schema_invalid_input_is_refused_by_the_server_and_the_run_keeps_waiting(
        system: ReviewSystem, change: dict[str, Any], reason: str) -> None:
    run = waiting_run(system, "breaches")
    anna = system.reviewers["anna"]
    answer = Answer("approve", MOTIVATION, "anna", anna.wrong_code()).to_input() | change
    answer = {k: v for k, v in answer.items() if v is not None}
    with pytest.raises(RuntimeError, match="Cannot resume this run") as refused:
        system.resume(run.id, answer)
    assert reason in str(refused.value)
    again = system.read_run(run.id)
    assert again.state.name == "Suspended"
    assert again.state.state_details.run_input_keyset["schema"] == "suspended-review-0-schema"
    assert system.answers(system.requests["breaches"]) == []


# -- the flow checks the rules, refuses, and asks again ------------------------------------------

def test_rule_breaches_are_refused_with_the_reason_on_top_of_the_form_again(
        system: ReviewSystem) -> None:
    """Two runs side by side: on ``breaches`` an unknown reviewer, then a code that decided
    another request a moment before; on ``padding`` a wrong code, a motivation that passes the
    schema's length but is only padding, and a partial approval without categories. Each
    refusal opens the form again."""
    breaches, padding, reuse = (system.requests[n] for n in ("breaches", "padding", "reuse"))
    run, padded_run, other = (waiting_run(system, n) for n in ("breaches", "padding", "reuse"))
    anna, bram, cees, eva = (system.reviewers[r] for r in ("anna", "bram", "cees", "eva"))

    code = eva.code()
    system.answer_all([
        (breaches, run.id, Answer("approve", MOTIVATION, "zoe", "123456")),
        (padding, padded_run.id, Answer("approve", MOTIVATION, "anna", anna.wrong_code())),
        (reuse, other.id, Answer("reject", MOTIVATION, "eva", code))])
    assert [(a.accepted, a.step) for a in system.answers(reuse)] == [(True, "single")]
    assert_refused_and_waiting(system, "breaches", run.id, 1, "unknown_reviewer",
                               "that reviewer id is not enrolled")
    assert_refused_and_waiting(system, "padding", padded_run.id, 1, "wrong_code",
                               "the one-time code is not the current one")

    padded = "   ok" + " " * 30  # past the schema's minLength, but no motivation
    system.answer_all([
        (breaches, run.id, Answer("reject", MOTIVATION, "eva", code)),  # counted once already
        (padding, padded_run.id, Answer("approve", padded, "bram", bram.code()))])
    description = assert_refused_and_waiting(system, "breaches", run.id, 2, "code_reused",
                                             "that one-time code was used before")
    assert "### Request `OM-T-BREACHES`" in description  # the case is still shown below it
    assert_refused_and_waiting(system, "padding", padded_run.id, 2, "motivation_too_short",
                               "write a motivation of at least 20 characters")

    # approve_partially with no category selected (the UI then sends no categories field)
    system.answer_all([(padding, padded_run.id,
                        Answer("approve_partially", MOTIVATION, "cees", cees.code()))])
    assert_refused_and_waiting(system, "padding", padded_run.id, 3, "no_categories",
                               "approve_partially needs the categories to release")

    assert [(a.reviewer_id, a.refusal_code) for a in system.answers(breaches)] == [
        ("zoe", "unknown_reviewer"), ("eva", "code_reused")]
    assert [(a.reviewer_id, a.refusal_code) for a in system.answers(padding)] == [
        ("anna", "wrong_code"), ("bram", "motivation_too_short"), ("cees", "no_categories")]
    assert len(system.audit(padding, "review_answer_recorded")) == 3
    for run_id, waits in ((run.id, 3), (padded_run.id, 4)):
        states = system.states(run_id)
        assert states.count("Suspended") == waits
        assert not {"Failed", "Crashed"} & set(states)
    assert system.wait_final(other.id).state.is_completed()
    assert system.state(reuse) == "rejected"
    assert [d.decided_by for d in system.decisions(reuse)] == ["engine", "eva"]


# -- deciding ---------------------------------------------------------------------------------

def test_a_single_reviewer_narrows_and_the_decision_is_recorded_then_delivered(
        system: ReviewSystem) -> None:
    request_id = system.requests["single"]
    run = waiting_run(system, "single")
    bram = system.reviewers["bram"]
    resumed = datetime.now(UTC)
    system.resume(run.id, Answer("approve_partially", MOTIVATION, "bram", bram.code(),
                                 categories=["personalia", "financiele_gegevens"]))
    final = system.wait_final(run.id)
    assert final.state.is_completed(), final.state
    assert system.state(request_id) == "delivered"

    engine, reviewed = system.decisions(request_id)
    assert (engine.outcome, engine.decided_by) == ("needs_review", "engine")
    assert (reviewed.sequence, reviewed.outcome, reviewed.decided_by) == (
        2, "partially_approved", "bram")
    assert reviewed.proposal == engine.proposal  # the engine's proposal kept beside it
    assert sorted(engine.proposal["released"]) == PROPOSAL_126ND
    assert reviewed.released == ["financiele_gegevens", "personalia"]
    assert "contacthistorie" in reviewed.withheld
    by_reviewer = [r for r in reviewed.reasons if r["code"] == "withheld_by_reviewer"]
    assert [r["categories"] for r in by_reviewer] == [["contacthistorie"]]
    assert reviewed.flow_run_id == str(run.id)
    assert reviewed.ground_version == engine.ground_version

    (answer,) = system.answers(request_id)
    assert (answer.reviewer_id, answer.role, answer.step, answer.accepted) == (
        "bram", "jurist", "single", True)
    assert answer.motivation == MOTIVATION
    assert answer.answered_at <= reviewed.decided_at
    # the code counted as of the moment the Prefect server took the form, not when the run
    # got round to it
    (recorded,) = system.audit(request_id, "review_answer_recorded")
    submitted = datetime.fromisoformat(recorded.payload["submitted_at"])
    assert resumed - timedelta(seconds=5) <= submitted <= answer.answered_at

    (delivery,) = system.deliveries(request_id)
    assert delivery.decision_id == reviewed.id
    (document,) = system.delivery_files(OM, request_id)
    assert document["disclosure"]["decided_by"] == "bram"
    assert document["disclosure"]["released"] == ["financiele_gegevens", "personalia"]
    assert len(document["records"]) == 1
    for record in document["records"]:
        assert set(record) - {"subject"} == {"financiele_gegevens", "personalia"}

    kinds = [e.kind for e in system.audit(request_id)]  # the answer, the decision, then out
    assert [k for k in kinds if k in ("decision_recorded", "review_answer_recorded",
                                      "delivery_recorded")] == [
        "decision_recorded", "review_answer_recorded", "decision_recorded", "delivery_recorded"]
    assert system.chain_intact()
    decided = wait_for("the decided event", lambda: system.events(REVIEW_DECIDED, request_id))
    assert decided[0].payload["outcome"] == "partially_approved"
    assert decided[0].payload["reviewers"] == "bram"
    assert system.events(REVIEW_NEEDED, request_id)


def test_four_eyes_two_different_reviewers_confirm_or_narrow_and_never_widen(
        system: ReviewSystem) -> None:
    """Two leerplicht requests with health data, reviewed side by side: on ``four_eyes`` anna
    approves, answers again herself (refused), and bram narrows; on ``narrowed`` cees narrows,
    dirk tries to widen (the form does not offer it: the server refuses) and then confirms."""
    four, narrowed = system.requests["four_eyes"], system.requests["narrowed"]
    run_a, run_b = waiting_run(system, "four_eyes"), waiting_run(system, "narrowed")
    anna, bram, cees, dirk = (system.reviewers[r] for r in ("anna", "bram", "cees", "dirk"))
    description, _ = system.form(run_a)
    assert "`special_category` (gezondheid)" in description

    system.answer_all([
        (four, run_a.id, Answer("approve", FOUR_EYES_FIRST, "anna", anna.code())),
        (narrowed, run_b.id, Answer("approve_partially", FOUR_EYES_FIRST, "cees", cees.code(),
                                    categories=["personalia", "gezondheid"]))])
    for request_id, run, shown in (
            (four, run_a, "**First review** by Anna Jansen (senior_jurist): `approve` — "
                          "gezondheid, opleidingsgegevens, personalia"),
            (narrowed, run_b, "**First review** by Cees Bakker (privacy_officer): "
                              "`approve_partially` — gezondheid, personalia")):
        description, _ = system.form(system.wait_form(run.id, 1))
        assert description.startswith("### Request")  # nothing was refused
        assert "#### Four eyes: a special category would be released" in description
        assert shown in description
        assert f"> {FOUR_EYES_FIRST}" in description
        assert [a.step for a in system.answers(request_id)] == ["first"]
        assert [d.sequence for d in system.decisions(request_id)] == [1]
        assert system.state(request_id) == "awaiting_review"
        assert system.deliveries(request_id) == []

    # the second reviewer's form offers only what the first released: widening is refused
    # by the server's check of the form (the flow's own rule, wider_than_first, stays behind it)
    _, schema = system.form(system.wait_form(run_b.id, 1))
    assert sorted(schema["properties"]["categories"]["items"]["enum"]) == [
        "gezondheid", "personalia"]
    with pytest.raises(RuntimeError, match="'opleidingsgegevens' is not one of"):
        system.resume(run_b.id, Answer("approve_partially", FOUR_EYES_SECOND, "dirk",
                                       dirk.code(), categories=PROPOSAL_LEERPLICHT))
    system.answer_all([
        (four, run_a.id, Answer("approve", FOUR_EYES_FIRST, "anna", anna.code()))])
    description = assert_refused_and_waiting(
        system, "four_eyes", run_a.id, 2, "same_reviewer",
        "a special category needs a second reviewer who is not the first")
    assert "**First review** by Anna Jansen" in description  # still shown
    assert system.wait_form(run_b.id, 1).state.name == "Suspended"
    assert [a.step for a in system.answers(narrowed)] == ["first"]

    # bram narrows; dirk confirms: "approve" with no category selected, which the UI sends
    # without a categories field at all
    system.answer_all([
        (four, run_a.id, Answer("approve_partially", FOUR_EYES_SECOND, "bram", bram.code(),
                                categories=["personalia", "opleidingsgegevens"])),
        (narrowed, run_b.id, Answer("approve", FOUR_EYES_SECOND, "dirk", dirk.code()))])
    for request_id, run, decided_by, released in (
            (four, run_a, "anna+bram", ["opleidingsgegevens", "personalia"]),
            (narrowed, run_b, "cees+dirk", ["gezondheid", "personalia"])):
        last = system.answers(request_id)[-1]
        assert (last.accepted, last.step, last.refusal_code) == (True, "second", None)
        assert system.wait_final(run.id).state.is_completed()
        engine, reviewed = system.decisions(request_id)
        assert (reviewed.outcome, reviewed.decided_by) == ("partially_approved", decided_by)
        assert reviewed.released == released
        assert reviewed.proposal == engine.proposal
        assert [a.step for a in system.answers(request_id) if a.accepted] == ["first", "second"]
        assert len(system.deliveries(request_id)) == 1
        (document,) = system.delivery_files(GEMEENTE, request_id)
        assert document["disclosure"]["decided_by"] == decided_by
        assert all(set(r) - {"subject"} == set(released) for r in document["records"])
        assert system.state(request_id) == "delivered"
    assert system.chain_intact()


# -- a restart while the review waits ----------------------------------------------------------

def test_a_review_survives_a_restart_of_both_servers(system: ReviewSystem) -> None:
    request_id = system.requests["restart"]
    run = waiting_run(system, "restart")
    decided_before = [(d.id, d.decided_at) for d in system.decisions(request_id)]
    assert system.deliveries(request_id) == []  # nothing after the review has started
    system.stop()
    system.start()
    run = system.wait_form(run.id, 0)  # still waiting, on the same form
    cees = system.reviewers["cees"]
    system.resume(run.id, Answer("approve", MOTIVATION, "cees", cees.code()))
    final = system.wait_final(run.id)
    assert final.state.is_completed(), final.state
    decisions = system.decisions(request_id)
    assert [(d.id, d.decided_at) for d in decisions[:1]] == decided_before  # not decided again
    assert [d.decided_by for d in decisions] == ["engine", "cees"]
    assert len(system.answers(request_id)) == 1
    assert len(system.deliveries(request_id)) == 1
    assert len(system.delivery_files(OM, request_id)) == 1
    assert len(system.audit(request_id, "review_answer_recorded")) == 1
    assert system.state(request_id) == "delivered"


# -- the deadline ------------------------------------------------------------------------------

def test_a_review_past_its_deadline_is_escalated_notified_and_stays_decidable(
        system: ReviewSystem) -> None:
    request_id = system.requests["overdue"]
    run = waiting_run(system, "overdue")
    # the watch sees it past its deadline and starts the dispatcher, whose sweep escalates it
    wait_for("the sweeper to escalate", lambda: system.state(request_id) == "escalated")
    assert [d.sequence for d in system.decisions(request_id)] == [1]  # never approved by default
    assert system.decisions(request_id)[0].deadline.isoformat() == "2026-01-02"
    description, _ = system.form(run)
    assert "**Deadline:** 2026-01-02 (" in description
    assert "day(s) OVERDUE)" in description
    assert len(system.audit(request_id, "review_escalated")) == 1
    assert len(system.audit(request_id, "review_overdue")) == 1
    wait_for("the escalated event", lambda: system.events(REVIEW_ESCALATED, request_id))
    wait_for("the overdue event", lambda: system.events(REVIEW_OVERDUE, request_id))

    notified = wait_for("the automation's notify-escalation run",
                        lambda: system.runs_of(NOTIFY, request_id=request_id))
    assert len(notified) == 1
    assert notified[0].created_by is not None
    assert notified[0].created_by.type == "AUTOMATION"
    assert system.wait_final(notified[0].id).state.is_completed()
    assert {"event": "disclosure.review.escalated", "request_id": request_id} in (
        system.webhook.bodies)

    listed = subprocess.run(
        [str(Path(sys.executable).parent / "disclosure"), "overdue"], capture_output=True,
        text=True, timeout=60, check=False, cwd=system.root,
        env={k: v for k, v in os.environ.items()
             if not k.startswith(("DISCLOSURE_", "PREFECT_"))} | system.env)
    assert listed.returncode == 0, listed.stderr
    (line,) = [ln for ln in listed.stdout.splitlines() if ln.startswith(request_id)]
    assert line.split()[2:4] == ["OM-T-LATE", "escalated"]
    assert line.endswith("deadline 2026-01-02")

    bram = system.reviewers["bram"]
    system.resume(run.id, Answer("approve", MOTIVATION, "bram", bram.code()))
    assert system.wait_final(run.id).state.is_completed()
    assert [d.decided_by for d in system.decisions(request_id)] == ["engine", "bram"]
    assert system.state(request_id) == "delivered"
    assert len(system.audit(request_id, "review_escalated")) == 1


# -- privacy ----------------------------------------------------------------------------------

def test_no_subject_number_reaches_the_review_runs_or_the_events(system: ReviewSystem) -> None:
    numbers = request_numbers(*(body for _, body in REQUESTS.values()))
    runs = [system.review_run(request_id) for request_id in system.requests.values()]
    texts: list[str] = []
    for run in runs:
        texts += system.run_inputs(run.id)
        texts.append(str(run.parameters))
    logs = system.run_logs([run.id for run in runs])
    assert any(line.startswith("review_decided · ") for line in logs)  # the engine's lines
    texts += logs
    for request_id in system.requests.values():
        texts += [event.model_dump_json() for event in
                  system.events("disclosure.", request_id, prefix=True)]
    assert any("******487" in text for text in texts)  # the masked form is what is shown
    for number in numbers:
        assert not any(number in text for text in texts), number

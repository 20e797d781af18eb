"""The reviewer's desk, against a real ``prefect server`` and ``disclosure serve``.

What a legal reviewer meets before and around the form: review runs named and tagged for
people (reference, ground, deadline; no subject), the review queue (the ``review-queue``
artifact the dispatcher's sweep keeps current, and ``disclosure reviews``), the case page of
each review run (an artifact following every answer to the decision), the form asking for a
decision and for categories only where they matter, and a run log that says "Suspending" once
per form shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
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

from flows.review.case import case_key
from flows.review.form import plain
from flows.review.labels import due_week, review_run_name, review_run_tags, shown_reference
from flows.review.queue import QUEUE_KEY, queue_markdown, queue_rows, when
from records.review_queue import FirstAnswer, WaitingReview

pytestmark = pytest.mark.slow

MOTIVATION = "Gezondheid is needed to judge the absence from school; the pupil is named."
SECOND = "I confirm: the leerplichtambtenaar needs health and personalia, not the rest."
#: The subject of the 126nd example, written into a partner's reference.
SUBJECT = "321146487"

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "late": (OM, example(FINANCIAL_126ND, reference="OM-DESK-LATE",
                         reference_date="2026-01-01", due_date="2026-01-02")),
    "bsn_in_reference": (OM, example(FINANCIAL_126ND, reference=f"OM-{SUBJECT}-A")),
    "four_eyes": (GEMEENTE, example(LEERPLICHT_HEALTH, reference="UTR-DESK-FOUR-EYES")),
    "one_category": (OM, example(FINANCIAL_126ND, reference="OM-DESK-ONE",
                                 categories=["personalia"])),
}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewSystem]:
    engine = ReviewSystem(tmp_path_factory.mktemp("desk"))
    try:
        engine.enroll("bram", "Bram de Vries", "jurist")
        engine.enroll("cees", "Cees Bakker", "privacy_officer")
        for name, (partner, body) in REQUESTS.items():
            engine.submit(name, partner, body)
        engine.start()
        engine.dispatch()
        engine.wait_states(list(engine.requests.values()), ("awaiting_review", "escalated"))
        for name in REQUESTS:
            engine.wait_form(engine.review_run(engine.requests[name]).id, 0)
        engine.dispatch()  # the sweep: escalates the late one, publishes the queue
        yield engine
    finally:
        engine.close()


def deadline_of(system: ReviewSystem, name: str) -> date:
    (engine,) = system.decisions(system.requests[name])
    assert engine.deadline is not None
    return engine.deadline


# -- pure parts ----------------------------------------------------------------------------------

def test_a_run_name_shows_reference_ground_and_deadline_and_never_a_number_of_a_person() -> None:
    name = review_run_name(reference="OM-2026-0042", ground_id="sv-126nd",
                           deadline=date(2026, 12, 20))
    assert name == "OM-2026-0042 · sv-126nd · due 2026-12-20"
    for reference in (f"OM-{SUBJECT}-A", "about 321.146.487", "x 321 146 487\n", SUBJECT):
        shown = shown_reference(reference)
        assert not re.search(r"[0-9]([ .-]?[0-9]){8}", shown), shown
        assert "*********" in shown
    assert shown_reference("a\nb\tc\x00d") == "a b c d"
    assert len(shown_reference("R" * 64)) == 40
    assert shown_reference("OM-2026-000042") == "OM-2026-000042"  # not nine digits: kept
    assert review_run_tags(ground_id="wro-21", body="gemeente", deadline=date(2026, 12, 31),
                           step="second", escalated=True) == [
        "body:gemeente", "due:2026-W53", "escalated", "ground:wro-21", "review", "step:second"]
    assert due_week(date(2027, 1, 1)) == "2026-W53"


def test_the_queue_orders_by_deadline_and_marks_what_is_late() -> None:
    def waiting(request_id: str, deadline: date | None, state: str = "awaiting_review",
                first: FirstAnswer | None = None) -> WaitingReview:
        return WaitingReview(request_id, f"REF-{request_id}", "p", "gemeente", "wro-21",
                             received_at=None, deadline=deadline, state=state,  # type: ignore[arg-type]
                             decision_id="d", subject_count=1, first=first, refused_answers=0,
                             review_run_id=f"run-{request_id}")
    today = date(2026, 12, 6)
    rows = queue_rows([waiting("a", date(2026, 12, 1), "escalated"),
                       waiting("b", today), waiting("c", date(2026, 12, 7),
                                                    first=FirstAnswer("bram", "Bram", "jurist",
                                                                      "approve")),
                       waiting("d", None)], today)
    assert [(r.mark, r.when) for r in rows] == [
        ("ESCALATED", "5 days overdue"), ("OVERDUE", "due today"), ("", "1 day left"),
        ("", "no deadline")]
    assert rows[2].step == "second reviewer (first: Bram, jurist, approve)"
    markdown = queue_markdown(rows, today, "http://ui")
    assert markdown.startswith("# Review queue: 4 waiting (1 overdue, 1 escalated)")
    assert "(http://ui/runs/flow-run/run-a)" in markdown
    assert markdown.index("REF-a") < markdown.index("REF-b") < markdown.index("REF-c")
    assert "| **ESCALATED** 2026-12-01 (5 days overdue) | [REF-a](http://ui/runs/flow-run/run-a)" \
        in markdown
    assert when(date(2026, 12, 4), today) == "2 days overdue"
    assert queue_markdown([], today, None).endswith("*No review is waiting.*")


# -- on the real servers ---------------------------------------------------------------------------

def test_review_runs_are_named_and_tagged_for_people(system: ReviewSystem) -> None:
    names_and_tags = []
    for name, (partner, body) in REQUESTS.items():
        run = system.review_run(system.requests[name])
        deadline = deadline_of(system, name)
        reference = "OM-*********-A" if name == "bsn_in_reference" else body["reference"]
        assert run.name == f"{reference} · {body['legal_basis']} · due {deadline.isoformat()}"
        body_of = "gemeente" if partner == GEMEENTE else "openbaar_ministerie"
        assert {"review", f"ground:{body['legal_basis']}", f"body:{body_of}",
                f"due:{due_week(deadline)}"} <= set(run.tags), run.tags
        names_and_tags.append(run.name + " ".join(run.tags))
    seen = " ".join(names_and_tags)
    assert not any(number in seen for number in request_numbers(*(b for _, b in
                                                                 REQUESTS.values())))
    late = system.review_run(system.requests["late"])
    assert "escalated" in late.tags
    assert system.state(system.requests["late"]) == "escalated"


def test_the_review_queue_artifact_and_command_list_every_waiting_review(
        system: ReviewSystem) -> None:
    order = sorted(REQUESTS, key=lambda n: deadline_of(system, n))
    assert order[0] == "late"
    queue = wait_for("the review queue artifact", lambda: system.artifact(QUEUE_KEY))
    waiting = [n for n in order if system.state(system.requests[n]) in
               ("awaiting_review", "escalated")]
    assert queue.startswith(f"# Review queue: {len(waiting)} waiting (0 overdue, 1 escalated)")
    rows = [line for line in queue.splitlines() if re.match(r"\| (\*\*[A-Z]+\*\* )?20", line)]
    assert len(rows) == len(waiting)
    for line, name in zip(rows, waiting, strict=True):
        run = system.review_run(system.requests[name])
        assert f"({system.ui_url}/runs/flow-run/{run.id})" in line, line
    assert "**ESCALATED**" in rows[0]
    assert "[OM-DESK-LATE](" in rows[0]
    assert SUBJECT not in queue

    shown = system.disclosure("reviews")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    listed = [re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", line)[0]
              for line in lines[1:len(waiting) + 1]]
    assert "ESCALATED" in lines[1]
    assert listed == [system.requests[n] for n in waiting]
    assert lines[-1].startswith(f"{len(waiting)} review(s) waiting on ")
    assert lines[-1].endswith("0 overdue, 1 escalated. Open a review run, then Resume to decide.")
    assert SUBJECT not in shown.stdout


def test_the_case_page_follows_each_answer_and_the_queue_the_four_eyes_step(
        system: ReviewSystem) -> None:
    request_id = system.requests["four_eyes"]
    run = system.wait_form(system.review_run(request_id).id, 0)
    key = case_key(request_id, "UTR-DESK-FOUR-EYES")
    assert key == f"review-case-utr-desk-four-eyes-{request_id}"
    case = wait_for("the case page", lambda: system.artifact(key))
    assert case.startswith("**Status:** waiting for a reviewer")
    assert "### Request `UTR-DESK-FOUR-EYES` from Gemeente Utrecht" in case
    assert "*None yet.*" in case
    bram, cees = system.reviewers["bram"], system.reviewers["cees"]

    system.answer_all([(request_id, run.id, Answer("approve", MOTIVATION, "bram",
                                                   bram.wrong_code()))])
    system.wait_form(run.id, 1)
    case = wait_for("the refusal on the case page",
                    lambda: (c := system.artifact(key)) and "refused" in c and c)
    assert re.search(r"1\. .* · Bram de Vries \[bram\] \(jurist\) · `approve` · \*\*refused\*\*: "
                     r"the one-time code is not the current one", case), case

    system.answer_all([(request_id, run.id, Answer("approve", MOTIVATION, "bram", bram.code()))])
    system.wait_form(run.id, 2)
    assert "step:second" in system.read_run(run.id).tags
    case = wait_for("the first answer on the case page",
                    lambda: (c := system.artifact(key)) and "second reviewer" in c and c)
    assert case.startswith("**Status:** waiting for a second reviewer (four eyes)")
    assert ("`approve` — gezondheid, opleidingsgegevens, personalia · accepted as the first "
            "of two reviewers (motivation recorded)") in case
    assert MOTIVATION not in case  # motivations stay in the ledger
    system.dispatch()
    queue = wait_for("the queue with the second step",
                     lambda: (q := system.artifact(QUEUE_KEY)) and "UTR-DESK" in q
                     and "second reviewer" in q and q)
    assert "second reviewer (first: Bram de Vries, jurist, approve)" in queue

    system.answer_all([(request_id, run.id, Answer("approve_partially", SECOND, "cees",
                                                   cees.code(), ["gezondheid", "personalia"]))])
    final = system.wait_final(run.id)
    assert final.state is not None
    assert final.state.is_completed(), final.state
    assert system.state(request_id) == "delivered"
    case = system.artifact(key)
    assert case is not None
    assert case.startswith("**Status:** decided; the request is delivered")
    assert "`partially_approved` by bram+cees" in case
    assert "released: gezondheid, personalia; the request is now `delivered`." in case
    queue = system.artifact(QUEUE_KEY)
    assert queue is not None
    assert "UTR-DESK-FOUR-EYES" not in queue
    # one case card on the review run, updated in place: what it shows is the latest
    versions = system.artifact_versions(key)
    assert [(str(v.flow_run_id), v.data) for v in versions] == [(str(run.id), case)]
    # "Suspending flow run" once per form shown (three forms), not again on each resume
    logs = system.run_logs([run.id])
    assert sum("Suspending flow run" in line for line in logs) == 3, logs


def test_a_form_with_one_releasable_category_asks_for_a_decision_and_no_categories(
        system: ReviewSystem) -> None:
    request_id = system.requests["one_category"]
    run = system.wait_form(system.review_run(request_id).id, 0)
    _, schema = system.form(run)
    assert set(schema["required"]) == {"decision", "motivation", "reviewer_id", "code"}
    assert "default" not in schema["properties"]["decision"]
    assert "categories" not in schema["properties"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    bram = system.reviewers["bram"]
    system.resume(run.id, Answer("approve", "The vordering needs only the personalia here.",
                                 "bram", bram.code()))
    final = system.wait_final(run.id)
    assert final.state is not None
    assert final.state.is_completed(), final.state
    _, reviewed = system.decisions(request_id)
    assert (reviewed.outcome, reviewed.released) == ("approved", ["personalia"])


def test_a_partners_free_text_reaches_the_reviewer_as_text_not_as_markup() -> None:
    hostile = "see [the file](http://evil.example) <img src=x onerror=alert(1)> **now** `x`"
    shown = plain(hostile)
    assert shown.startswith("`")
    assert shown.endswith("`")
    assert shown.count("`") == 2  # one code span: nothing inside it is markup
    assert "http://evil.example" in shown

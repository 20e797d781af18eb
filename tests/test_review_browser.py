"""A legal reviewer walks from the review queue to a decided run, in the real Prefect UI.

Headless Chromium (Debian's ``chromium``, driven by Playwright; the browser Playwright would
download is never used) opens the UI that a real ``prefect server`` serves. For each decision
kind — approve, approve_partially with a narrowed set, reject — the reviewer opens the
``review-queue`` artifact on the Artifacts page, follows the link of the case to its review run
(named after the reference, ground and deadline), reads the case on the run's Artifacts tab,
opens Resume, chooses the decision in the form's drop-down (and the categories, for a partial
approval), signs with the one-time code and submits; the test then sees the decision in the
ledger, the delivery, and the decided case on the run page. One answer first carries a wrong
code: the engine refuses it and the dialog, opened again, starts with the refusal.

Every step leaves a screenshot in ``test-artifacts/review-browser/<kind>/`` (and a failing test
one of the page it failed on): the README's reviewer section describes what they show.

Skipped only where Chromium is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from review_support import FINANCIAL_126ND, OM, ReviewSystem, example, request_numbers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: decision kind -> the request its reviewer decides that way.
REQUESTS = {kind: example(FINANCIAL_126ND, reference=f"OM-BROWSER-{kind.upper()}")
            for kind in ("approve", "approve_partially", "reject")}
MOTIVATION = {
    "approve": "The vordering names this suspect; everything proposed bears on the case.",
    "approve_partially": "The vordering concerns suspected benefit fraud: personalia and "
                         "financial data are needed, the contact history is not.",
    "reject": "The vordering does not show why DUO's data would be needed for this case.",
}
NARROWED = ["financiele_gegevens", "personalia"]
#: Where the screenshots of the walk are kept (a test artifact of CI's run).
SHOTS = Path(__file__).parents[1] / "test-artifacts" / "review-browser"
#: Milliseconds the browser waits for an element (the UI on a busy two-core machine is slow).
UI_TIMEOUT_MS = 60_000
#: ... and for the UI to confirm a submitted form before checking whether it went through.
SUBMIT_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewSystem]:
    """The engine with its servers, one reviewer, and one request waiting for review."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian package `chromium`)")
    shutil.rmtree(SHOTS, ignore_errors=True)  # this run's screenshots only
    engine = ReviewSystem(tmp_path_factory.mktemp("browser"))
    try:
        engine.enroll("anna", "Anna Jansen", "senior_jurist")
        for kind, body in REQUESTS.items():
            engine.submit(kind, OM, body)
        engine.start()
        engine.dispatch()
        for kind in REQUESTS:
            engine.wait_form(engine.review_run(engine.requests[kind]).id, 0)
        engine.dispatch()  # the sweep publishes the queue with every run in it
        yield engine
    finally:
        engine.close()


@pytest.fixture
def page(system: ReviewSystem, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page of headless Chromium; a screenshot is taken if the test fails."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - after the skip

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(UI_TIMEOUT_MS)
            # the UI's failed API calls, in the captured output of a failing test
            tab.on("response", lambda r: print(f"UI API {r.request.method} {r.url}: {r.status}")
                   if "/api/" in r.url and r.status >= 400 else None)
            failed_before = request.session.testsfailed
            yield tab
            if request.session.testsfailed > failed_before:  # this test's call failed
                shot = SHOTS / f"failure-{request.node.name}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failing page: {shot}")
        finally:
            browser.close()


class ResumeDialog:
    """The "Resume Flow Run" dialog of a paused run, and the schema form inside it."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.card = page.locator(".p-modal__card").filter(has_text="Resume Flow Run")

    def open(self) -> ResumeDialog:
        self.page.get_by_role("button", name="Resume", exact=True).click()
        # the account above the form is loaded after the dialog opens: wait for its heading
        self.card.locator("article.markdown-renderer h3").first.wait_for()
        return self

    @property
    def description(self) -> str:
        return str(self.card.locator("article.markdown-renderer").first.inner_text())

    def field(self, label: str) -> Any:
        title = self.page.locator(".schema-form-property__label",
                                  has_text=re.compile(rf"^{re.escape(label)}"))
        return self.card.locator(".schema-form-property").filter(has=title).first

    def type(self, label: str, text: str) -> None:
        self.field(label).locator("textarea, input").first.fill(text)

    def choose(self, label: str, *options: str) -> None:
        """Pick ``options`` in a drop-down as a person can: a click on the control focuses it,
        Space opens its list, a click on each option picks it; a multi-select stays open, so
        Escape closes it. (In Debian's Chromium 156, headless and headful alike, a mouse click
        does not open any drop-down of the Prefect 3.9.1 UI, nor do synthetic pointer and
        mouse events; Space or the down arrow does. The README tells reviewers so.)"""
        control = self.field(label).locator("button.p-select-button__control")
        control.click()
        control.press("Space")
        for option in options:
            self.page.get_by_role("option", name=option, exact=True).click()
        self.page.keyboard.press("Escape")

    def chosen(self, label: str) -> str:
        return str(self.field(label).locator("button.p-select-button__control").inner_text())

    def submit(self, still_waiting: Callable[[], bool]) -> None:
        """Press Submit until the UI says the run resumed.

        The UI does not retry a request the server could not serve: a busy SQLite server
        answers 503 and the UI shows "Oops. Something went wrong." So, as a reviewer would,
        this submits again as long as the run still waits on the same form.
        """
        from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: PLC0415

        for _ in range(3):
            self.card.get_by_role("button", name="Submit").click()
            resumed = self.page.get_by_text("Flow run resumed").first
            try:
                resumed.wait_for(timeout=SUBMIT_TIMEOUT_MS)
            except PlaywrightTimeout:
                if still_waiting():
                    continue
            self.card.wait_for(state="hidden")
            return
        raise AssertionError("the UI did not resume the run after three submits")


def waits_on(system: ReviewSystem, run_id: Any, n: int) -> bool:
    """Whether the run still waits on its form for answer ``n``."""
    run = system.read_run(run_id)
    assert run.state is not None
    keyset = run.state.state_details.run_input_keyset or {}
    return run.state.is_paused() and keyset.get("schema") == f"suspended-review-{n}-schema"


class Walk:
    """The screenshots of one reviewer's walk, numbered in the order taken."""

    def __init__(self, page: Any, kind: str) -> None:
        self.page, self.folder, self.n = page, SHOTS / kind, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()

    def shot(self, what: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n}-{what}.png"), full_page=True)


def open_queue(system: ReviewSystem, page: Any) -> str:
    """Artifacts → review-queue → its latest version; returns the queue's text as shown."""
    page.goto(f"{system.ui_url}/artifacts")
    page.get_by_text("review-queue", exact=True).first.click()
    page.wait_for_url("**/artifacts/key/review-queue")
    page.locator("a[href*='/artifacts/artifact/']").first.click()  # the latest version
    queue = page.locator("article.markdown-renderer").filter(has=page.locator("table")).first
    queue.wait_for()
    return str(queue.inner_text())


def open_case(page: Any) -> Any:
    """On a run's page: the Artifacts tab → the case card → the case as rendered."""
    page.get_by_text("Artifacts", exact=True).first.click()
    cards = page.get_by_text(re.compile(r"^review-case-"))
    cards.first.wait_for()
    assert cards.count() == 1  # one case card, kept current
    cards.first.click()
    case = page.locator("article.markdown-renderer").filter(has_text="Status:").first
    case.wait_for()
    return case


@pytest.mark.parametrize("kind", ["approve_partially", "approve", "reject"])
def test_a_reviewer_goes_from_the_queue_to_a_decided_run(system: ReviewSystem, page: Any,
                                                         kind: str) -> None:
    request_id = system.requests[kind]
    reference = REQUESTS[kind]["reference"]
    anna = system.reviewers["anna"]
    run = system.wait_form(system.review_run(request_id).id, 0)
    walk = Walk(page, kind)

    # the queue: every waiting review, oldest deadline first, each with the run to open
    queue = open_queue(system, page)
    assert queue.startswith("Review queue:")
    assert reference in queue
    walk.shot("review-queue")
    link = page.locator("article.markdown-renderer a").filter(has_text=reference)
    assert link.count() == 1
    href = link.get_attribute("href")
    assert href == f"{system.ui_url}/runs/flow-run/{run.id}"
    page.goto(href)  # the link itself (the markdown renderer may open a new tab)

    # the run page: named for people, tagged, the case on its Artifacts tab
    header = page.locator(".page-heading").first
    header.get_by_text(f"{reference} · sv-126nd · due", exact=False).wait_for()
    assert run.name.startswith(f"{reference} · sv-126nd · due ")
    page.get_by_text("Suspended", exact=True).first.wait_for()
    for tag in ("review", "ground:sv-126nd", "body:openbaar_ministerie", "step:first"):
        page.get_by_text(tag, exact=True).first.wait_for()
    walk.shot("review-run")
    case = open_case(page)
    assert "waiting for a reviewer" in case.inner_text()
    assert "bsn ******487" in case.inner_text()
    walk.shot("case-page")
    page.goto(href)

    dialog = ResumeDialog(page).open()
    account = dialog.description
    assert f"Request {reference} from Openbaar Ministerie" in account
    assert "The engine proposes to release: contacthistorie, financiele_gegevens, personalia" \
        in account
    assert not any(number in page.content() for number in request_numbers(*REQUESTS.values()))
    seq = 0
    if kind == "approve_partially":
        # a wrong code: the engine refuses, and the form opens again with the reason on top
        dialog.choose("Decision", "approve_partially")
        dialog.choose("Categories to release", *NARROWED)
        dialog.type("Motivation", MOTIVATION[kind])
        dialog.type("Your reviewer id", "anna")
        dialog.type("One-time code", anna.wrong_code())
        dialog.submit(lambda: waits_on(system, run.id, 0))
        system.wait_form(run.id, 1)
        page.reload()
        dialog = ResumeDialog(page).open()
        assert dialog.description.startswith(
            "Your last answer was not accepted: the one-time code is not the current one")
        walk.shot("refused-answer-on-top")
        seq = 1

    dialog.choose("Decision", kind)
    assert dialog.chosen("Decision") == kind
    if kind == "approve_partially":
        dialog.choose("Categories to release", *NARROWED)
    dialog.type("Motivation", MOTIVATION[kind])
    dialog.type("Your reviewer id", "anna")
    dialog.type("One-time code", anna.code())
    walk.shot("form-filled-in")
    dialog.submit(lambda: waits_on(system, run.id, seq))

    final = system.wait_final(run.id)
    assert final.state is not None
    assert final.state.is_completed(), final.state
    page.reload()
    page.get_by_text("Completed", exact=True).first.wait_for()
    page.get_by_text(re.compile(r"^review_decided · outcome=")).first.wait_for()  # the log
    walk.shot("decided-run")

    answers = system.answers(request_id)
    assert [(a.reviewer_id, a.accepted, a.refusal_code) for a in answers] == (
        [("anna", False, "wrong_code")] * seq + [("anna", True, None)])
    assert answers[-1].motivation == MOTIVATION[kind]
    engine, reviewed = system.decisions(request_id)
    expected = {"approve": ("approved", ["contacthistorie", "financiele_gegevens",
                                         "personalia"]),
                "approve_partially": ("partially_approved", NARROWED),
                "reject": ("rejected", [])}[kind]
    assert (reviewed.outcome, reviewed.released) == expected
    assert reviewed.decided_by == "anna"
    assert reviewed.proposal == engine.proposal
    state = system.state(request_id)
    if kind == "reject":
        assert state == "rejected"
        assert system.delivery_files(OM, request_id) == []
    else:
        assert state == "delivered"
        (document,) = system.delivery_files(OM, request_id)
        assert document["disclosure"]["decided_by"] == "anna"
        for record in document["records"]:
            assert set(record) - {"subject"} == set(expected[1])

    # the case page now carries the decision
    decided = open_case(page)
    decided.get_by_text("Decision", exact=True).wait_for()
    assert f"`{expected[0]}` by anna" in decided.inner_text() or \
        f"{expected[0]} by anna" in decided.inner_text()
    walk.shot("decided-case-page")
    assert system.chain_intact()

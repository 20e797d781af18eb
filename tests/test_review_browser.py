"""A legal reviewer decides in the real Prefect UI, in a real browser.

Headless Chromium (Debian's ``chromium``, driven by Playwright; the browser Playwright would
download is never used) opens the UI that a real ``prefect server`` serves, finds the waiting
``review-request`` run on the runs page, opens the Resume dialog, and fills in the form the
engine put on the run. The first answer carries a wrong one-time code: the engine refuses it and
the same dialog, opened again, starts with the refusal. The second answer narrows the proposal
and is signed with the reviewer's current code; the test then sees the decision in the ledger
and the data delivered. On a failure a screenshot of the page is left in the test's tmp folder.

Skipped only where Chromium is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from review_support import FINANCIAL_126ND, OM, ReviewSystem, example, request_numbers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REQUEST = example(FINANCIAL_126ND, reference="OM-T-BROWSER")
MOTIVATION = ("The vordering concerns suspected benefit fraud: personalia and financial data "
              "are needed, the contact history is not.")
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
    engine = ReviewSystem(tmp_path_factory.mktemp("browser"))
    try:
        engine.enroll("anna", "Anna Jansen", "senior_jurist")
        engine.submit("browser", OM, REQUEST)
        engine.start()
        engine.dispatch()
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
                shot = tmp_path / "failure.png"
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
        """Pick ``options`` in a drop-down (the arrow key opens it; a click on the control
        only focuses it); a multi-select stays open, so Escape closes it."""
        self.field(label).locator("button.p-select-button__control").press("ArrowDown")
        for option in options:
            self.page.get_by_role("option", name=option, exact=True).click()
        self.page.keyboard.press("Escape")

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


def test_a_reviewer_decides_in_the_prefect_ui(system: ReviewSystem, page: Any) -> None:
    request_id = system.requests["browser"]
    anna = system.reviewers["anna"]
    run = system.wait_form(system.review_run(request_id).id, 0)

    # on the runs page the reviewer finds the suspended review-request run and opens it
    page.goto(f"{system.ui_url}/runs")
    waiting = page.locator(".state-list-item--paused").filter(has_text="review-request")
    waiting.first.wait_for()
    assert waiting.count() == 1
    link = waiting.locator("a.flow-run-bread-crumbs__flow-run-link")
    assert link.inner_text().strip() == run.name
    link.click()
    page.wait_for_url(f"**/runs/flow-run/{run.id}")
    page.get_by_text("Suspended", exact=True).first.wait_for()

    dialog = ResumeDialog(page).open()
    account = dialog.description
    assert "Request OM-T-BROWSER from Openbaar Ministerie" in account
    assert "bsn ******487" in account
    assert "The engine proposes to release: contacthistorie, financiele_gegevens, personalia" \
        in account
    assert not any(number in page.content() for number in request_numbers(REQUEST))

    # a wrong code: the engine refuses, and the form opens again with the reason on top
    dialog.type("Motivation", MOTIVATION)
    dialog.type("Your reviewer id", "anna")
    dialog.type("One-time code", anna.wrong_code())
    dialog.submit(lambda: waits_on(system, run.id, 0))
    system.wait_form(run.id, 1)
    page.reload()
    dialog = ResumeDialog(page).open()
    assert dialog.description.startswith(
        "Your last answer was not accepted: the one-time code is not the current one")
    assert "Request OM-T-BROWSER" in dialog.description

    # narrowed to two categories, signed with the current code
    dialog.choose("Decision", "approve_partially")
    dialog.choose("Categories to release", "personalia", "financiele_gegevens")
    dialog.type("Motivation", MOTIVATION)
    dialog.type("Your reviewer id", "anna")
    dialog.type("One-time code", anna.code())
    dialog.submit(lambda: waits_on(system, run.id, 1))

    final = system.wait_final(run.id)
    assert final.state is not None
    assert final.state.is_completed(), final.state
    page.reload()
    page.get_by_text("Completed", exact=True).first.wait_for()

    answers = system.answers(request_id)
    assert [(a.reviewer_id, a.accepted, a.refusal_code) for a in answers] == [
        ("anna", False, "wrong_code"), ("anna", True, None)]
    assert answers[1].motivation == MOTIVATION
    engine, reviewed = system.decisions(request_id)
    assert (reviewed.outcome, reviewed.decided_by) == ("partially_approved", "anna")
    assert reviewed.released == ["financiele_gegevens", "personalia"]
    assert reviewed.proposal == engine.proposal
    assert system.state(request_id) == "delivered"
    (document,) = system.delivery_files(OM, request_id)
    assert document["disclosure"]["decided_by"] == "anna"
    assert document["records"]
    for record in document["records"]:
        assert set(record) - {"subject"} == {"financiele_gegevens", "personalia"}
    assert system.chain_intact()

"""Replay (issue #6): recorded decisions re-derived from the ledger alone.

A generated history of a few hundred requests spans a change of the law: from 1 April 2026 the
engine used an amended table in which ``suwi-54-svb`` has a new version (it also releases
``financiele_gegevens``) and ``cbs-33`` is repealed. Every request must replay as agreeing
against the table recorded with it, both tables must have been used, and every reviewed request
must show its answers and pass the review checks. Tampered records — a decision the table does
not give, a reviewer's release wider than the proposal, an altered snapshot or submission — are
reported and make the command exit 1. ``--against-current`` with a table in which ``awr-55`` was
narrowed retroactively lists exactly the requests the test works out from the history's truths.
Replay writes nothing: the ledger's row counts, work-queue projection and chain head are the same
afterwards. The Prefect flow publishes its artifacts, which hold no subject number.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import TEST_CHAIN_KEY_RING, TEST_DATA_KEK_RING, ledger_on, sealed_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import (
    PREFECT_API_URL,
    temporary_settings,
)
from sqlalchemy import Engine, text
from sqlmodel import Session

from cli.main import main
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.decision import Decision, Reason
from legal_bases.request import DisclosureRequest, read_request
from legal_bases.review import reviewed_decision
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    Body,
    Category,
    Outcome,
    ReasonCode,
    ReviewTrigger,
)
from records.chain import verify_chain
from records.decisions import DecisionItem, record_decisions
from records.ledger import received_on, record_submission
from records.models import LEDGER_TABLES
from records.pseudonym import Pseudonymizer
from records.replay import replay_period, replay_request
from records.replay_results import ReplayStatus
from records.replay_summary import summarise
from records.reviews import ReviewAnswerRow, record_answer
from records.synthetic_history import MOTIVATION, History, Truth, write_history
from records.vocabulary import Channel

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
START = datetime(2026, 1, 5, tzinfo=UTC)
END = datetime(2026, 6, 25, tzinfo=UTC)
CHANGE_DAY = date(2026, 4, 1)
CHANGE = datetime(2026, 4, 1, tzinfo=AMSTERDAM)
FIRST_DAY, LAST_DAY = date(2026, 1, 1), date(2026, 6, 30)
PSEUDONYM_KEY = "cd" * 32
REQUESTS = 300
CHECKS = {"answers_follow_rules", "within_bounds", "re_derives", "four_eyes"}
BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


# -- tables of grounds -----------------------------------------------------------------------------

def ground_folder(source: Path, dest: Path,
                  edit: Callable[[dict[str, dict[str, Any]]], None]) -> Path:
    """A copy of the ground files in ``source`` with ``edit`` applied to the parsed documents."""
    shutil.copytree(source, dest)
    documents = {p.stem: yaml.safe_load(p.read_text("utf-8")) for p in dest.glob("*.yaml")}
    before = json.dumps(documents, sort_keys=True)
    edit(documents)
    assert json.dumps(documents, sort_keys=True) != before, "the edit changed nothing"
    for ground_id, document in documents.items():
        (dest / f"{ground_id}.yaml").write_text(yaml.safe_dump(document, sort_keys=False),
                                                "utf-8")
    return dest


def amend_svb_repeal_cbs(documents: dict[str, dict[str, Any]]) -> None:
    """From CHANGE_DAY suwi-54-svb also releases financiele_gegevens; cbs-33 is repealed."""
    last_day = (CHANGE_DAY - timedelta(days=1)).isoformat()
    svb = documents["suwi-54-svb"]["versions"]
    new = {k: v for k, v in svb[0].items() if k != "note"}
    new["valid_from"] = CHANGE_DAY.isoformat()
    new["categories"] = [*svb[0]["categories"], "financiele_gegevens"]
    svb[0]["valid_until"] = last_day
    svb.append(new)
    documents["cbs-33"]["versions"][0]["valid_until"] = last_day


def narrow_awr_retroactively(documents: dict[str, dict[str, Any]]) -> None:
    """awr-55 no longer releases financiele_gegevens, in every version (a retroactive change)."""
    for version in documents["awr-55"]["versions"]:
        version["categories"].remove("financiele_gegevens")


# -- the ledger with its history -------------------------------------------------------------------

@dataclass
class World:
    """A ledger holding a generated history decided under two tables, and a third "current" one."""

    engine: Engine
    history: History
    shipped: GroundTable
    amended: GroundTable
    current_dir: Path

    @property
    def truths(self) -> dict[str, Truth]:
        return {t.request_id: t for t in self.history.truths}

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def grounds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The amended table's folder and the retroactively changed "current" one."""
    base = tmp_path_factory.mktemp("grounds")
    amended = ground_folder(DEFAULT_GROUNDS_DIR, base / "amended", amend_svb_repeal_cbs)
    current = ground_folder(amended, base / "current", narrow_awr_retroactively)
    return amended, current


def write(engine: Engine, shipped: GroundTable, amended: GroundTable, requests: int,
          seed: int) -> History:
    return write_history(engine=engine, pseudonymizer=Pseudonymizer(bytes.fromhex(PSEUDONYM_KEY)),
                         tables=[(START, shipped), (CHANGE, amended)], requests=requests,
                         seed=seed, start=START, end=END)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          grounds: tuple[Path, Path]) -> Iterator[World]:
    """The history in a ledger on each backend, shared by the tests that only read it."""
    with ledger_on(request.param, request, tmp_path_factory.mktemp("ledger")) as engine:
        shipped, amended = load_table(), load_table(grounds[0])
        history = write(engine, shipped, amended, REQUESTS, seed=6)
        yield World(engine, history, shipped, amended, grounds[1])


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str, Path], None]:
    """Points the command line (and the flow) at a ledger and a folder of grounds."""
    def point(url: str, grounds_dir: Path) -> None:
        monkeypatch.setenv("DISCLOSURE_DATABASE_URL", url)
        monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
        monkeypatch.setenv("DISCLOSURE_DATA_KEK", TEST_DATA_KEK_RING)
        monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DISCLOSURE_GROUNDS_DIR", str(grounds_dir))
        monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    return point


def fingerprint(engine: Engine) -> dict[str, Any]:
    """What a replay must leave as it was: every table's row count, the work-queue projection
    and the audit chain's head."""
    with Session(engine) as session:
        counts = {t: session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                  for t in LEDGER_TABLES}
        status = sorted(tuple(str(v) for v in row) for row in session.execute(text(
            "SELECT request_id, state, updated_at, claimed_by, claimed_until "
            "FROM request_status")))
        chain = verify_chain(session=session)
    assert chain.ok
    return {"counts": counts, "status": status, "head": (chain.head_seq, chain.head_hash)}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["replay", *argv])
    return code, capsys.readouterr().out


PERIOD = ("--from", FIRST_DAY.isoformat(), "--to", LAST_DAY.isoformat())


# -- agreement -------------------------------------------------------------------------------------

def test_every_recorded_decision_replays_as_agreeing(world: World) -> None:
    truths = world.truths
    # the history is what this test needs: a change of the law, reviews of every kind
    svb_outcomes = {(received_on(t.received_at) >= CHANGE_DAY, t.engine_outcome)
                    for t in truths.values() if t.ground == "suwi-54-svb" and t.valid}
    assert svb_outcomes == {(False, "partially_approved"), (True, "approved")}
    assert any(t.ground == "cbs-33" and t.engine_outcome == "rejected" for t in truths.values())
    assert any("+" in t.decided_by for t in truths.values())
    assert any(t.reviewed and "+" not in t.decided_by for t in truths.values())
    before = fingerprint(world.engine)

    replays = {r.request_id: r for r in replay_period(world.engine, first=FIRST_DAY,
                                                     last=LAST_DAY)}
    summary = summarise(replays.values())

    assert set(replays) == set(truths)
    assert [r for r in replays.values() if r.status is not ReplayStatus.AGREES] == []
    assert (summary.requests, summary.agrees, summary.differs, summary.cannot_replay) == (
        REQUESTS, REQUESTS, 0, 0)
    expected_tables = Counter(t.table_hash for t in truths.values())
    assert set(expected_tables) == {world.shipped.hash, world.amended.hash}
    assert dict(summary.tables) == dict(expected_tables)
    for request_id, truth in truths.items():
        replay = replays[request_id]
        assert replay.table_hash == replay.replay_table_hash == truth.table_hash
        assert replay.recorded_outcome == replay.replayed_outcome == truth.engine_outcome
        assert replay.partner_id == truth.partner_id
    assert fingerprint(world.engine) == before


def test_reviewed_requests_show_their_answers_and_pass_the_checks(world: World) -> None:
    replays = {r.request_id: r for r in replay_period(world.engine, first=FIRST_DAY,
                                                     last=LAST_DAY)}
    reviewed = [t for t in world.truths.values() if t.reviewed]
    pending = [t for t in world.truths.values() if t.review_pending]
    assert reviewed
    assert pending
    for truth in reviewed:
        review = replays[truth.request_id].review
        assert review is not None, truth.request_id
        assert review.proposal is not None
        assert not review.pending
        assert {c.name for c in review.checks} == CHECKS
        assert [c for c in review.checks if not c.ok] == []
        [decision] = review.decisions
        assert (decision.outcome, decision.released, decision.decided_by) == (
            truth.outcome, truth.released, truth.decided_by)
        deciders = truth.decided_by.split("+")
        assert [a.reviewer_id for a in review.answers] == deciders
        assert all(a.accepted and a.motivation == MOTIVATION for a in review.answers)
        assert all(set(a.categories) <= set(review.proposal["released"])
                   for a in review.answers)
        if any(Category(c) in SPECIAL_CATEGORIES for c in truth.released):
            assert [a.step for a in review.answers] == ["first", "second"]
            assert len(set(deciders)) == 2
        else:
            assert [a.step for a in review.answers] == ["single"]
    for truth in pending:
        review = replays[truth.request_id].review
        assert review is not None
        assert review.pending
        assert review.decisions == ()
        assert review.answers == ()
        assert review.ok


def test_one_request_gives_the_full_account(world: World, cli_env: Callable[[str, Path], None],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(world.url, world.current_dir)
    truth = next(t for t in world.truths.values() if "+" in t.decided_by)
    table = world.shipped if truth.table_hash == world.shipped.hash else world.amended
    assert truth.ground is not None
    version = table.resolve(truth.ground, on=received_on(truth.received_at))
    before = fingerprint(world.engine)

    code, out = run_cli(capsys, truth.request_id)

    assert code == 0
    first, second = truth.decided_by.split("+")
    for expected in (truth.request_id, truth.partner_id, truth.body.value, version.id,
                     version.citation.short, truth.table_hash,
                     received_on(truth.received_at).isoformat(), "AGREES", "review",
                     f"{first} (jurist)", f"{second} (jurist)", f"motivation: {MOTIVATION}",
                     f"approved by {truth.decided_by}", "four_eyes", "re_derives",
                     "within_bounds"):
        assert expected in out, expected
    assert "FAIL" not in out
    assert not any(s.number in out for s in truth.subjects)

    code, out = run_cli(capsys, truth.request_id, "--json")
    data = json.loads(out)
    assert code == 0
    assert data["status"] == "agrees"
    assert (data["ground_id"], data["ground_version"], data["table_hash"]) == (
        truth.ground, version.id, truth.table_hash)
    assert [(a["reviewer_id"], a["step"], a["accepted"]) for a in data["review"]["answers"]] == [
        (first, "first", True), (second, "second", True)]
    assert data["review"]["ok"] is True
    assert fingerprint(world.engine) == before


def test_a_period_on_the_command_line(world: World, cli_env: Callable[[str, Path], None],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(world.url, world.current_dir)
    code, out = run_cli(capsys, *PERIOD)
    assert code == 0
    assert f"Replay of {REQUESTS} request(s)" in out
    assert world.shipped.hash in out
    assert world.amended.hash in out
    assert "every recorded decision re-derives" in out
    code, out = run_cli(capsys, *PERIOD, "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["summary"]["agrees"], data["requests"]) == (REQUESTS, [])
    # a single day: only the requests received on it (Europe/Amsterdam)
    day = received_on(world.history.truths[0].received_at)
    code, out = run_cli(capsys, "--from", day.isoformat(), "--json")
    assert json.loads(out)["summary"]["requests"] == sum(
        1 for t in world.history.truths if received_on(t.received_at) == day)


def test_against_current_lists_exactly_the_requests_a_change_affects(
        world: World, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(world.url, world.current_dir)
    # awr-55 lost financiele_gegevens: every valid tax request asking for it releases less now
    expected = {t.request_id for t in world.truths.values()
                if t.ground == "awr-55" and t.valid and t.body is Body.BELASTINGDIENST
                and "financiele_gegevens" in t.requested}
    assert expected
    before = fingerprint(world.engine)

    code, out = run_cli(capsys, *PERIOD, "--against-current", "--json")

    data = json.loads(out)
    assert code == 0  # the differences are the finding
    assert data["summary"]["against"] == load_table(world.current_dir).hash
    assert {r["request_id"] for r in data["requests"]} == expected
    assert all(r["status"] == "differs" and "released" in {d["field"] for d in r["differences"]}
               for r in data["requests"])
    assert data["summary"]["differs"] == len(expected)
    code, out = run_cli(capsys, *PERIOD, "--against-current")
    listed = {line.split()[2] for line in out.splitlines() if line.startswith("WOULD CHANGE")}
    assert listed == expected
    assert f"{len(expected)} request(s) would now be decided differently" in out
    assert fingerprint(world.engine) == before


def test_usage_errors(world: World, cli_env: Callable[[str, Path], None],
                      capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(world.url, world.current_dir)
    for argv in ([], ["some-id", "--from", "2026-01-01"], ["--from", "2026-02-01", "--to",
                                                         "2026-01-01"], ["some-id", "--publish"]):
        with pytest.raises(SystemExit) as exc:
            main(["replay", *argv])
        assert exc.value.code == 2, argv
    # an unknown request id is a usage error, as for status and timeline: exit 2, not the 1 of
    # a decision that does not re-derive
    assert main(["replay", "no-such-request"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "disclosure: no request 'no-such-request' in the ledger" in err
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["replay", *PERIOD, "--publish"]) == 2
    assert "does not answer" in capsys.readouterr().err


# -- tampering -------------------------------------------------------------------------------------

def _submit(session: Session, body: dict[str, Any], requester: Body, partner: str,
            received_at: datetime) -> tuple[str, DisclosureRequest]:
    parsed = read_request(body, received_on=received_on(received_at))
    assert isinstance(parsed, DisclosureRequest)
    row = record_submission(session=session, partner_id=partner, requester_body=requester,
                            channel=Channel.API, raw_body=json.dumps(body), parsed=parsed,
                            received_at=received_at,
                            pseudonymizer=Pseudonymizer(bytes.fromhex(PSEUDONYM_KEY)))
    return row.id, parsed


@pytest.fixture
def small_world(ledger_engine: Engine, grounds: tuple[Path, Path]) -> World:
    shipped, amended = load_table(), load_table(grounds[0])
    history = write(ledger_engine, shipped, amended, 120, seed=7)
    return World(ledger_engine, history, shipped, amended, grounds[1])


@pytest.mark.parametrize("ledger_engine", ["sqlite", "postgresql"], indirect=True)
def test_a_decision_the_table_does_not_give_is_reported(
        small_world: World, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    world, table = small_world, small_world.shipped
    person = world.history.persons[0]
    at = datetime(2026, 2, 10, 9, tzinfo=UTC)
    with Session(world.engine) as session, session.begin():
        # a tax request without the case reference awr-55 requires, recorded as approved
        fabricated_id, parsed = _submit(session, {
            "reference": "FAKE-1", "legal_basis": "awr-55", "purpose": "belastingheffing",
            "subjects": [{person.id_type.value: person.number}],
            "categories": ["personalia"]}, Body.BELASTINGDIENST, "belastingdienst-test", at)
        assert assess(parsed, Body.BELASTINGDIENST, table).outcome is Outcome.REJECTED
        version = table.resolve("awr-55", on=at.date())
        fabricated = Decision(
            Outcome.APPROVED, Body.BELASTINGDIENST, table.hash,
            (Reason(ReasonCode.GROUND_APPLIES, version.citation, (Category.PERSONALIA,)),),
            released=(Category.PERSONALIA,), ground_id="awr-55", ground_version=version.id,
            subject_count=1)
        # and a second "engine" decision on a request the engine rejected, releasing data
        rejected = next(t for t in world.history.truths
                        if t.engine_outcome == "rejected" and t.valid
                        and t.table_hash == table.hash)
        record_decisions(session=session, table=table, items=[
            DecisionItem(request_id=fabricated_id, decision=fabricated, decided_at=at),
            DecisionItem(request_id=rejected.request_id,
                         decision=fabricated, decided_at=rejected.decided_at + timedelta(days=1))])

    replay = replay_request(world.engine, fabricated_id)
    assert replay is not None
    assert replay.status is ReplayStatus.DIFFERS
    assert {"outcome", "released", "reason_codes"} <= {d.field for d in replay.differences}
    second = replay_request(world.engine, rejected.request_id)
    assert second is not None
    assert second.status is ReplayStatus.DIFFERS
    assert second.differences == ()  # the engine's own decision re-derives ...
    assert second.review is not None  # ... but the decision after it is explained by nothing
    assert [c.name for c in second.review.checks if not c.ok] == ["explained"]

    cli_env(world.url, world.current_dir)
    before = fingerprint(world.engine)
    code, out = run_cli(capsys, *PERIOD, "--json")
    data = json.loads(out)
    assert code == 1
    assert {r["request_id"] for r in data["requests"]} == {fabricated_id, rejected.request_id}
    assert data["summary"]["agrees"] == len(world.history.truths) - 1
    code, out = run_cli(capsys, fabricated_id)
    assert code == 1
    assert "DIFFERS" in out
    assert fingerprint(world.engine) == before


@pytest.mark.parametrize("ledger_engine", ["sqlite", "postgresql"], indirect=True)
def test_a_reviewer_release_wider_than_the_proposal_is_out_of_bounds(
        small_world: World, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    world, table = small_world, small_world.amended
    person = world.history.persons[1]
    at = datetime(2026, 5, 4, 10, tzinfo=UTC)
    with Session(world.engine) as session, session.begin():
        request_id, parsed = _submit(session, {
            "reference": "WIDE-1", "legal_basis": "wro-21", "purpose": "leerplicht",
            "subjects": [{person.id_type.value: person.number}],
            "categories": ["gezondheid", "opleidingsgegevens"]}, Body.GEMEENTE,
            "gemeente-utrecht-test", at)
        engine_decision = assess(parsed, Body.GEMEENTE, table)
        assert engine_decision.outcome is Outcome.NEEDS_REVIEW
        [engine_row] = record_decisions(session=session, table=table, items=[
            DecisionItem(request_id=request_id, decision=engine_decision, decided_at=at)])
        wider = ("financiele_gegevens", "gezondheid", "opleidingsgegevens")
        for seq, (reviewer, step) in enumerate((("jurist-a", "first"), ("jurist-b", "second"))):
            record_answer(session=session, answer=ReviewAnswerRow(
                request_id=request_id, seq=seq, reviewer_id=reviewer, role="jurist",
                verdict="approve_partially", categories=list(wider), motivation=MOTIVATION,
                accepted=True, step=step, answered_at=at + timedelta(hours=seq + 1)))
        version = table.version(engine_row.ground_version or "")
        record_decisions(session=session, table=table, items=[DecisionItem(
            request_id=request_id, decided_by="jurist-a+jurist-b",
            decided_at=at + timedelta(hours=3), deadline=engine_row.deadline,
            decision=reviewed_decision(engine_decision, version,
                                       tuple(Category(c) for c in wider)))])

    replay = replay_request(world.engine, request_id)
    assert replay is not None
    assert replay.status is ReplayStatus.DIFFERS
    assert replay.differences == ()  # the engine's proposal itself re-derives
    assert replay.review is not None
    failed = {c.name: c.detail for c in replay.review.checks if not c.ok}
    assert set(failed) == {"answers_follow_rules", "within_bounds", "re_derives", "four_eyes"}
    assert "financiele_gegevens beyond the engine's proposal" in failed["within_bounds"]
    assert "category_not_allowed" in failed["answers_follow_rules"]

    cli_env(world.url, world.current_dir)
    code, out = run_cli(capsys, request_id)
    assert code == 1
    assert "FAIL  within_bounds" in out
    code, out = run_cli(capsys, *PERIOD)
    assert code == 1
    assert any(line.startswith("DIFFERS") and request_id in line and "review:within_bounds"
               in line for line in out.splitlines())


@pytest.mark.parametrize("ledger_engine", ["sqlite"], indirect=True)
def test_an_altered_snapshot_or_submission_cannot_be_replayed(
        small_world: World, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    world = small_world
    valid, resealed = [t for t in world.history.truths
                       if t.valid and t.table_hash == world.amended.hash][:2]
    # in clear text, as an intruder could write it, and sealed under the request's own data key,
    # as an insider holding the KEK could
    forged = sealed_for(world.engine, resealed.request_id, '{"reference": 1}')
    with world.engine.begin() as connection:  # what an intruder with database access could do
        connection.execute(text("DROP TRIGGER table_snapshots_no_update"))
        connection.execute(text("DROP TRIGGER requests_no_update"))
        connection.execute(text("UPDATE table_snapshots SET content = replace(content, :a, :b) "
                                "WHERE hash = :h"), {"a": '"auto_limit":1000',
                                                     "b": '"auto_limit":999',
                                                     "h": world.shipped.hash})
        connection.execute(text("UPDATE requests SET raw_body = :body WHERE id = :id"),
                           {"body": '{"reference": 1}', "id": valid.request_id})
        connection.execute(text("UPDATE requests SET raw_body = :body WHERE id = :id"),
                           {"body": forged, "id": resealed.request_id})

    replays = {r.request_id: r for r in replay_period(world.engine, first=FIRST_DAY,
                                                     last=LAST_DAY)}
    cannot = {i for i, r in replays.items() if r.status is ReplayStatus.CANNOT_REPLAY}
    on_shipped = {t.request_id for t in world.history.truths if t.table_hash == world.shipped.hash}
    assert cannot == on_shipped | {valid.request_id, resealed.request_id}
    assert all("snapshot" in (replays[i].problem or "") for i in on_shipped)
    # clear text where a sealed body belongs is refused as such; a resealed forgery opens, and
    # no longer reads as the request it was recorded as
    assert "stored in clear, not sealed: altered" in (replays[valid.request_id].problem or "")
    assert "no longer reads" in (replays[resealed.request_id].problem or "")
    cli_env(world.url, world.current_dir)
    code, out = run_cli(capsys, *PERIOD)
    assert code == 1
    assert f"CANNOT REPLAY {valid.request_id}" in " ".join(out.split())
    assert f"CANNOT REPLAY {resealed.request_id}" in " ".join(out.split())


@pytest.mark.parametrize("ledger_engine", ["sqlite"], indirect=True)
def test_a_missing_snapshot_cannot_be_replayed(
        ledger_engine: Engine, shipped_table: GroundTable, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2026, 3, 2, 8, tzinfo=UTC)
    with Session(ledger_engine) as session, session.begin():
        request_id, parsed = _submit(session, {
            "reference": "GONE-1", "legal_basis": "wro-20", "purpose": "onderwijsadministratie",
            "subjects": [{"bsn": "725763863"}], "categories": ["personalia"]},
            Body.ONDERWIJSINSTELLING, "school-test", at)
        record_decisions(session=session, table=shipped_table, items=[DecisionItem(
            request_id=request_id, decision=assess(parsed, Body.ONDERWIJSINSTELLING,
                                                   shipped_table), decided_at=at)])
    ledger_engine.dispose()
    database = ledger_engine.url.database
    assert database is not None
    with closing(sqlite3.connect(database)) as raw:  # foreign keys off, as an intruder's would be
        raw.execute("DROP TRIGGER table_snapshots_no_delete")
        raw.execute("DELETE FROM table_snapshots")
        raw.commit()

    replay = replay_request(ledger_engine, request_id)
    assert replay is not None
    assert replay.status is ReplayStatus.CANNOT_REPLAY
    assert replay.problem == (f"the ledger has no snapshot of table {shipped_table.hash} the "
                              "decision was recorded with")
    cli_env(ledger_engine.url.render_as_string(hide_password=False), DEFAULT_GROUNDS_DIR)
    code, out = run_cli(capsys, request_id)
    assert code == 1
    assert "CANNOT REPLAY: the ledger has no snapshot" in out


@pytest.mark.parametrize("ledger_engine", ["sqlite"], indirect=True)
def test_a_shielded_subject_is_taken_from_the_record(
        ledger_engine: Engine, shipped_table: GroundTable, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2026, 3, 2, 8, tzinfo=UTC)
    with Session(ledger_engine) as session, session.begin():
        request_id, parsed = _submit(session, {
            "reference": "SHIELD-1", "legal_basis": "awr-55", "purpose": "belastingheffing",
            "subjects": [{"bsn": "725763863"}], "categories": ["personalia"],
            "case_reference": "FIN/1"}, Body.BELASTINGDIENST, "belastingdienst-test", at)
        # the register said the subject is shielded: the dispatcher sent it to review
        decision = with_review_trigger(assess(parsed, Body.BELASTINGDIENST, shipped_table),
                                       ReviewTrigger.SHIELDED_SUBJECT)
        record_decisions(session=session, table=shipped_table, items=[
            DecisionItem(request_id=request_id, decision=decision, decided_at=at)])

    replay = replay_request(ledger_engine, request_id)
    assert replay is not None
    assert replay.status is ReplayStatus.AGREES
    assert replay.recorded_outcome == replay.replayed_outcome == "needs_review"
    assert replay.review is not None
    assert replay.review.pending
    cli_env(ledger_engine.url.render_as_string(hide_password=False), DEFAULT_GROUNDS_DIR)
    code, out = run_cli(capsys, request_id)
    assert code == 0
    assert ("note: review trigger shielded_subject taken from the recorded decision" in
            " ".join(out.split()))
    assert "725763863" not in out


# -- the Prefect flow ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect(prefect_harness: None) -> None:
    """The Prefect test server (tests/conftest.py)."""


def _published(run_id: str) -> tuple[Any, dict[str, Any], str]:
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_type = {a.type: a for a in artifacts}
    assert set(by_type) == {"markdown", "table"}
    dump = json.dumps([run.model_dump(mode="json"), *(a.model_dump(mode="json")
                                                      for a in artifacts)])
    table = by_type["table"].data
    return run, {"markdown": by_type["markdown"].data,
                 "table": json.loads(table) if isinstance(table, str) else table}, dump


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_replay_flow_publishes_its_artifacts(
        world: World, prefect: None, cli_env: Callable[[str, Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(world.url, world.current_dir)
    before = fingerprint(world.engine)
    numbers = {s.number for s in world.history.persons}

    code, out = run_cli(capsys, *PERIOD, "--publish", "--json")
    result = json.loads(out)
    assert code == 0
    run, published, dump = _published(result["flow_run_id"])
    assert run.state is not None
    assert run.state.is_completed()
    assert run.parameters == {"date_from": FIRST_DAY.isoformat(),
                              "date_to": LAST_DAY.isoformat(), "against_current": False}
    rows = published["table"]
    assert {r["request_id"] for r in rows} == set(world.truths)
    assert all(r["agrees"] is True for r in rows)
    assert set(rows[0]) == {"request_id", "partner", "ground", "version", "recorded_outcome",
                            "replayed_outcome", "agrees"}
    assert f"| agree | {REQUESTS} |" in published["markdown"]
    assert world.amended.hash in published["markdown"]
    assert not any(n in dump for n in numbers)

    expected = {t.request_id for t in world.truths.values()
                if t.ground == "awr-55" and t.valid and t.body is Body.BELASTINGDIENST
                and "financiele_gegevens" in t.requested}
    code, out = run_cli(capsys, *PERIOD, "--publish", "--against-current")
    assert code == 0
    found = re.search(r"of flow run ([0-9a-f-]{36})", out)
    assert found is not None, out
    run_id = found.group(1)
    run, published, dump = _published(run_id)
    rows = published["table"]
    assert {r["request_id"] for r in rows[:len(expected)]} == expected  # those first
    assert {r["request_id"] for r in rows if not r["agrees"]} == expected
    assert f"Requests that do not agree ({len(expected)})" in published["markdown"]
    assert not any(n in dump for n in numbers)
    assert fingerprint(world.engine) == before

"""The auditor's outputs read as a person reads them: ``replay``, ``timeline``, ``inzage`` and
``status`` on a small real history.

The history is made by the engine's own steps, without Prefect: requests recorded as the intake
records them, decided and delivered by the dispatcher's steps (``flows.pipeline.decide`` and
``deliver``) into file drops, reviews answered through the review flow's ``take_answer`` by
enrolled reviewers with their one-time codes — one answer refused for a wrong code, an
``approve`` with no categories ticked (as the form sends it), and four eyes on a special
category. Each command then runs as an auditor runs it (``cli.main.main``), and its output is
read: the numbers of a summary add up to the lines it lists, a reviewer shows with the role
they are enrolled with, an ``approve`` with what it released, an unknown request id gets the
same answer from every command, and an inzage is refused when its two numbers are not one
person's in the register.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pipeline_support as ps
import pytest
from conftest import TEST_CHAIN_KEY_RING, TEST_DATA_KEK_RING, ledger_on
from sqlalchemy import func, insert, select
from sqlmodel import Session, col

from cli.main import main
from connectors.partners import load_partners
from connectors.register import make_register_engine
from connectors.register_models import persons_table
from connectors.register_seed import ensure_register
from connectors.synthetic_people import generate_persons
from flows import events
from flows.pipeline import decide, deliver, review_runs
from flows.review.flow import load_review, take_answer
from flows.review.form import review_form
from flows.runtime import Runtime
from legal_bases.identifiers import random_bsn, random_onderwijsnummer
from legal_bases.request import Subject, read_request
from records import totp
from records.ledger import latest_decision, received_on, record_submission
from records.models import AuditEvent, DecisionRow, RequestRow, RequestSubject
from records.pseudonym import Pseudonymizer
from records.queue import claim_requests, release_claims
from records.replay_review import answer_releases
from records.reviews import enroll_reviewer
from records.settings import Settings, load_settings
from records.totp import SecretSeal
from records.vocabulary import Channel

EXAMPLES = Path(__file__).parents[1] / "examples"
#: README.md's words, with its line breaks as spaces.
README = " ".join((Path(__file__).parents[1] / "README.md").read_text("utf-8").split())
MOTIVATION = "Getoetst aan de vordering en de grondslag; de gegevens zijn nodig voor de zaak."
NINE_DIGITS = re.compile(r"(?<![0-9])[0-9]{9}(?![0-9])")
UNKNOWN_ID = "0b0b0b0b-0000-4000-8000-000000000000"


# -- the history --------------------------------------------------------------------------------

@dataclass
class World:
    """The ledger, the register and the settings of a small history, and what the test knows
    about it: the request ids by name, the reviewers' secrets, one person's two numbers."""

    rt: Runtime
    folder: Path
    ids: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    used: set[tuple[str, int]] = field(default_factory=set)  # (reviewer, code step) spent
    both: tuple[Subject, Subject] | None = None  # one person's BSN and onderwijsnummer

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    def submit(self, name: str, partner_id: str, body: dict[str, Any]) -> str:
        partner = load_partners(EXAMPLES / "partners.yaml").by_id(partner_id).body.value
        now = datetime.now(UTC)
        raw = json.dumps(body)
        with Session(self.rt.ledger, expire_on_commit=False) as session, session.begin():
            row = record_submission(
                session=session, partner_id=partner_id, requester_body=partner,
                channel=Channel.CLI, raw_body=raw,
                parsed=read_request(json.loads(raw), received_on=received_on(now)),
                received_at=now, pseudonymizer=self.rt.pseudonymizer)
        self.ids[name] = row.id
        return row.id

    def dispatch(self) -> decide.Decided:
        """One sweep of the dispatcher: claim what waits, decide it, deliver it."""
        with Session(self.rt.ledger) as session, session.begin():
            claimed = claim_requests(session=session, worker="test", limit=1000,
                                     lease=timedelta(minutes=1), now=datetime.now(UTC))
        try:
            decided = decide.decide_requests(self.rt, claimed, flow_run_id=None)
            deliver.deliver_requests(self.rt, decided.deliver, flow_run_id=None)
            return decided
        finally:
            with Session(self.rt.ledger) as session, session.begin():
                release_claims(session=session, worker="test", request_ids=claimed)

    def code(self, reviewer: str, *, wrong: bool = False) -> str:
        """A code the reviewer's authenticator app shows (each used once), or one it does not
        show anywhere near now."""
        now = totp.step_of(datetime.now(UTC).timestamp())
        secret = self.secrets[reviewer]
        if wrong:
            near = {totp.code_at(secret, now + d) for d in range(-3, 4)}
            return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919))
                        if c not in near)
        step = next(s for s in (now + 1, now) if (reviewer, s) not in self.used)
        self.used.add((reviewer, step))
        return totp.code_at(secret, step)

    def answer(self, name: str, reviewer: str, decision: str, *, wrong_code: bool = False,
               categories: list[str] | None = None) -> str:
        """A reviewer's answer on the request's form, taken as the review flow takes it."""
        review = load_review(self.rt, self.ids[name])
        assert review is not None
        form = review_form(review.proposal)(
            decision=decision, motivation=MOTIVATION, reviewer_id=reviewer,
            code=self.code(reviewer, wrong=wrong_code),
            **({"categories": categories} if categories is not None else {}))
        return take_answer(self.rt, review, form, flow_run_id=None)


def _unused_numbers(register_url: str) -> tuple[Subject, Subject]:
    """A BSN and an onderwijsnummer that neither the register nor the suite's subjects use."""
    taken = {s.number for s in ps.IN_REGISTER + ps.NOT_IN_REGISTER}
    engine = make_register_engine(register_url)
    with engine.connect() as connection:
        taken |= set(connection.execute(select(persons_table().c.number)).scalars())
    engine.dispose()
    rng = random.Random(2026)  # made-up numbers
    bsn = next(n for n in iter(lambda: random_bsn(rng), None) if n not in taken)
    onr = next(n for n in iter(lambda: random_onderwijsnummer(rng), None) if n not in taken)
    return Subject(ps.BSN, bsn), Subject(ps.ONR, onr)


def _register_one_person_with_both(register_url: str, bsn: Subject, onr: Subject) -> None:
    """Add a person to the register whose entry records both numbers as theirs."""
    [row] = generate_persons(persons=1, seed=99, include=[bsn])
    row |= {"person_id": 1_000_000, "shielded": False,
            "identificerende_nummers": {bsn.id_type.value: bsn.number,
                                        onr.id_type.value: onr.number}}
    engine = make_register_engine(register_url)
    with engine.begin() as connection:
        connection.execute(insert(persons_table()), [row])
    engine.dispose()


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("outputs")
    register_url = f"sqlite:///{folder / 'register.db'}"
    settings = load_settings(data_dir=folder / "data", pseudonym_key=ps.PSEUDONYM_KEY,
                             partners_file=EXAMPLES / "partners.yaml", register_url=register_url)
    register = make_register_engine(register_url)
    ensure_register(engine=register, persons=ps.REGISTER_PERSONS, seed=ps.REGISTER_SEED,
                    include=list(ps.IN_REGISTER))
    with ledger_on("sqlite", request, folder) as ledger, pytest.MonkeyPatch.context() as mp:
        # the review flow's Prefect events are signals for automations, not this test's subject:
        # kept here rather than sent (no Prefect server is started for them)
        emitted: list[str] = []
        mp.setattr(events, "emit", lambda event, request_id, **_: emitted.append(event))
        rt = Runtime(settings=settings, ledger=ledger, register_engine=register,
                     table=settings.ground_table(),
                     partners=load_partners(EXAMPLES / "partners.yaml"),
                     pseudonymizer=Pseudonymizer.from_settings(settings))
        world = World(rt, folder)
        try:
            _history(world, register_url)
            yield world
        finally:
            rt._http.close()
            register.dispose()


def _history(world: World, register_url: str) -> None:
    bsn, onr = world.both = _unused_numbers(register_url)
    _register_one_person_with_both(register_url, bsn, onr)
    seal = SecretSeal(world.settings.pseudonym_key_bytes())
    with Session(world.rt.ledger) as session, session.begin():
        for reviewer, name, role in (("anna", "Anna de Vries", "jurist"),
                                     ("bob", "Bob Jansen", "senior_jurist")):
            world.secrets[reviewer] = enroll_reviewer(
                session=session, reviewer_id=reviewer, name=name, role=role, seal=seal,
                now=datetime.now(UTC))
    world.submit("tax", "belastingdienst", ps.tax_request("BD-R-1"))
    world.submit("tax-both", "belastingdienst", ps.tax_request("BD-R-2", subjects=(bsn,)))
    world.submit("svb", "svb", ps.svb_request("SVB-R-1"))
    world.submit("svb-both", "svb", {**ps.svb_request("SVB-R-2"), "subjects": [ps.wire(onr)]})
    world.submit("uwv", "uwv", ps.uwv_on_tax_ground("UWV-R-1"))
    world.submit("om", "om-midden-nederland", {
        "reference": "OM-R-1", "legal_basis": "sv-126nd",
        "purpose": "strafrechtelijk_onderzoek", "subjects": [ps.wire(ps.PUPIL)],
        "categories": ["personalia", "contacthistorie"], "case_reference": "PARKET-1"})
    world.submit("leerplicht", "gemeente-utrecht", ps.leerplicht_with_health("UTR-R-1"))
    decided = world.dispatch()
    assert set(decided.review) == {world.ids["om"], world.ids["leerplicht"]}, decided
    for review in review_runs.under_review(world.rt, decided.review):
        review_runs.record_review_started(world.rt, review, str(uuid.uuid4()),
                                          flow_run_id=None)
    # the OM request: a wrong code first (refused), then an approve with nothing ticked
    assert world.answer("om", "anna", "approve", wrong_code=True) == "refused"
    assert world.answer("om", "anna", "approve") == "decided"
    # leerplicht with gezondheid: four eyes, both approve
    assert world.answer("leerplicht", "anna", "approve") == "first"
    assert world.answer("leerplicht", "bob", "approve") == "decided"
    world.dispatch()


# -- running the commands -----------------------------------------------------------------------

@dataclass
class Output:
    code: int
    out: str
    err: str


@pytest.fixture
def disclosure(world: World, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Callable[..., Output]:
    """Runs ``disclosure ARGS`` on the world's ledger and register."""
    for name, value in {"DISCLOSURE_DATABASE_URL": f"sqlite:///{world.folder / 'ledger.db'}",
                        "DISCLOSURE_CHAIN_KEY": TEST_CHAIN_KEY_RING,
                        "DISCLOSURE_DATA_KEK": TEST_DATA_KEK_RING,
                        "DISCLOSURE_DATA_DIR": str(world.settings.data_dir),
                        "DISCLOSURE_PSEUDONYM_KEY": ps.PSEUDONYM_KEY,
                        "DISCLOSURE_PARTNERS_FILE": str(EXAMPLES / "partners.yaml"),
                        "DISCLOSURE_REGISTER_URL": world.settings.resolved_register_url,
                        }.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> Output:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Output(code, captured.out, captured.err)
    return run


def proposal_of(world: World, name: str) -> list[str]:
    with Session(world.rt.ledger) as session:
        engine = session.execute(select(DecisionRow).where(
            col(DecisionRow.request_id) == world.ids[name],
            col(DecisionRow.sequence) == 1)).scalar_one()
    assert engine.proposal is not None
    return list(engine.proposal["released"])


def answer_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.lstrip().startswith("answer ")]


# -- replay ------------------------------------------------------------------------------------

def test_the_replay_summary_names_what_each_number_counts(
        world: World, disclosure: Callable[..., Output]) -> None:
    today = received_on(datetime.now(UTC)).isoformat()
    run = disclosure("replay", "--from", today)
    assert run.code == 0, run.out + run.err
    lines = run.out.splitlines()
    [tables] = [line for line in lines if "tables" in line]
    assert tables.split() == ["tables", "of", "grounds", "used", "1"]
    assert f"    table {world.rt.table.hash}: {len(world.ids)} request(s) replayed against it" in (
        lines)
    assert re.search(r"^  of which reviewed +2  \(decided by a legal reviewer; review checks "
                     r"failed: 0\)$", run.out, re.MULTILINE)


def test_a_refused_answer_shows_the_reviewers_enrolled_role_and_why(
        world: World, disclosure: Callable[..., Output]) -> None:
    run = disclosure("replay", world.ids["om"])
    refused, accepted = answer_lines(run.out)
    assert "anna (jurist)" in refused
    assert "refused (wrong_code: the one-time code is not the current one" in refused
    assert "anna (jurist)" in accepted
    assert "accepted" in accepted
    assert "role unknown" not in run.out
    [first, second] = json.loads(disclosure("replay", world.ids["om"], "--json").out)[
        "review"]["answers"]
    assert (first["role"], first["enrolled_role"], first["refusal_code"]) == (
        None, "jurist", "wrong_code")
    assert (second["role"], second["enrolled_role"]) == ("jurist", "jurist")

    timeline = disclosure("timeline", world.ids["om"], "--ledger-only", "--json")
    details = [r["detail"] for r in json.loads(timeline.out)["rows"]
               if r["what"] == "review answer"]
    assert details[0].startswith("#0 approve by anna (jurist): ")
    assert details[0].endswith("; refused: wrong_code")
    assert details[1].startswith("#1 approve by anna (jurist): ")
    assert not any("no role" in d for d in details)


def test_an_approve_shows_the_categories_it_released(
        world: World, disclosure: Callable[..., Output]) -> None:
    for name in ("om", "leerplicht"):
        proposal = ", ".join(proposal_of(world, name))
        run = disclosure("replay", world.ids[name])
        for line in answer_lines(run.out):
            assert f"approve: releases {proposal}  " in line or (
                f"approve: would release {proposal}  refused" in line), line
        assert "[—]" not in run.out
        answers = json.loads(disclosure("replay", world.ids[name], "--json").out)[
            "review"]["answers"]
        assert [a["categories"] for a in answers] == [[]] * len(answers)  # nothing ticked
        assert [a["releases"] for a in answers] == [proposal.split(", ")] * len(answers)
        timeline = json.loads(disclosure("timeline", world.ids[name], "--ledger-only",
                                         "--json").out)
        details = [r["detail"] for r in timeline["rows"] if r["what"] == "review answer"]
        assert details
        assert all(f": releases {proposal}; accepted" in d
                   or f": would release {proposal}; refused" in d for d in details), details
        assert not any("categories —" in d for d in details)


# -- an unknown request id ----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["status", UNKNOWN_ID], ["replay", UNKNOWN_ID], ["replay", UNKNOWN_ID, "--json"],
    ["timeline", UNKNOWN_ID], ["timeline", UNKNOWN_ID, "--json"],
    ["timeline", UNKNOWN_ID, "--ledger-only"]])
def test_an_unknown_request_id_gets_the_same_answer_from_every_command(
        argv: list[str], disclosure: Callable[..., Output]) -> None:
    run = disclosure(*argv)
    assert (run.code, run.out) == (2, "")
    assert run.err == (f"disclosure: no request '{UNKNOWN_ID}' in the ledger "
                       "(`disclosure status` lists the requests)\n")


# -- inzage: one person -------------------------------------------------------------------------

def _inzage_answers(world: World) -> int:
    with Session(world.rt.ledger) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent).where(
            col(AuditEvent.kind) == "inzage_answered")) or 0)


@pytest.mark.parametrize(("bsn", "onr", "problem"), [
    (ps.PUPIL, ps.SVB_CHILD,
     "the register holds the BSN and the onderwijsnummer as two different persons"),
    (ps.PUPIL, None, "the register knows the BSN, but not the onderwijsnummer given as the "
                     "same person's"),
    (None, ps.SVB_CHILD, "the register knows the onderwijsnummer, but not the BSN given as the "
                         "same person's"),
    (ps.ABSENT, None, "the register knows neither the BSN nor the onderwijsnummer"),
], ids=["two-persons", "only-bsn-known", "only-onderwijsnummer-known", "neither-known"])
def test_an_inzage_for_two_numbers_not_one_persons_is_refused(
        world: World, disclosure: Callable[..., Output], tmp_path: Path,
        bsn: Subject | None, onr: Subject | None, problem: str) -> None:
    assert world.both is not None
    unknown_bsn, unknown_onr = _unused_numbers(world.settings.resolved_register_url)
    given_bsn = bsn or unknown_bsn
    given_onr = onr or unknown_onr
    before = _inzage_answers(world)
    run = disclosure("inzage", "--bsn", given_bsn.number, "--onderwijsnummer",
                     given_onr.number, "--out", str(tmp_path / "out"))
    assert (run.code, run.out) == (2, "")
    assert run.err == (f"disclosure: an inzage concerns one person, but {problem}: establish "
                       "who the data subject is first, then ask with that person's number(s). "
                       "Nothing was written or recorded.\n")
    assert NINE_DIGITS.findall(run.err) == []
    assert not (tmp_path / "out").exists()
    assert _inzage_answers(world) == before


def test_an_inzage_for_one_persons_two_numbers_answers_for_that_person(
        world: World, disclosure: Callable[..., Output], tmp_path: Path) -> None:
    assert world.both is not None
    bsn, onr = world.both
    run = disclosure("inzage", "--bsn", bsn.number, "--onderwijsnummer", onr.number,
                     "--out", str(tmp_path / "out"))
    assert run.code == 0, run.err
    [subject_json] = [p for p in (tmp_path / "out").glob("inzage-*.json")
                      if "privacy-officer" not in p.name]
    document = json.loads(subject_json.read_text("utf-8"))
    found = {e["request_id"] for key in ("disclosures", "refused", "pending")
             for e in document[key]}
    assert found == {world.ids["tax-both"], world.ids["svb-both"]}


def test_an_inzage_for_two_numbers_needs_a_register_to_check_them(
        world: World, disclosure: Callable[..., Output], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.both is not None
    bsn, onr = world.both
    monkeypatch.setenv("DISCLOSURE_REGISTER_URL", f"sqlite:///{tmp_path / 'none.db'}")
    run = disclosure("inzage", "--bsn", bsn.number, "--onderwijsnummer", onr.number,
                     "--out", str(tmp_path / "out"))
    assert run.code == 1
    assert "cannot check that the BSN and the onderwijsnummer are one person's" in run.err
    assert not (tmp_path / "none.db").exists()
    assert not (tmp_path / "out").exists()


# -- each command read as a whole ---------------------------------------------------------------

def _reviewed(world: World) -> set[str]:
    with Session(world.rt.ledger) as session:
        return set(session.execute(select(col(DecisionRow.request_id)).where(
            col(DecisionRow.decided_by) != "engine")).scalars())


def test_replay_reads_consistently(world: World, disclosure: Callable[..., Output]) -> None:
    today = received_on(datetime.now(UTC)).isoformat()
    run = disclosure("replay", "--from", today, "--all")
    data = json.loads(disclosure("replay", "--from", today, "--json").out)["summary"]
    assert run.code == 0
    lines = run.out.splitlines()
    count = {m[1]: int(m[2]) for line in lines
             if (m := re.match(r"^  ([a-z ]+?) {2,}(\d+)$", line))}
    assert lines[0].startswith(f"Replay of {len(world.ids)} request(s) received {today}")
    # the four kinds add up to the requests in all, as in the JSON
    assert count["agree"] + count["differ"] + count["cannot replay"] + count[
        "not yet decided"] == count["requests in all"] == len(world.ids)
    assert (count["agree"], count["differ"], count["cannot replay"],
            count["not yet decided"]) == (data["agrees"], data["differs"],
                                          data["cannot_replay"], data["undecided"])
    # with --all, one line per request, each under its own word
    listed = [line for line in lines if line.split(" ", 1)[0] in {
        "AGREES", "DIFFERS", "CANNOT", "UNDECIDED"}]
    assert sorted(line.split()[1] for line in listed) == sorted(world.ids.values())
    assert sum(line.startswith("AGREES") for line in listed) == count["agree"]
    # the tables listed are as many as said, and count the requests replayed against them
    per_table = [int(m[1]) for line in lines
                 if (m := re.match(r"^    table [0-9a-f]{64}: (\d+) request\(s\)", line))]
    assert len(per_table) == count["tables of grounds used"]
    assert sum(per_table) == count["agree"] + count["differ"]
    reviewed = re.search(r"^  of which reviewed +(\d+)", run.out, re.MULTILINE)
    assert reviewed is not None
    assert int(reviewed[1]) == len(_reviewed(world)) == data["reviewed"]
    assert lines[-1] == "every recorded decision re-derives from its recorded table"

    # one reviewed request: README's account — the proposal and every answer (reviewer, role,
    # verdict, categories, motivation, accepted or refused and why), the four checks, and the
    # reviewers of decided_by
    run = disclosure("replay", world.ids["leerplicht"])
    assert run.code == 0
    assert "engine's proposal: release " + ", ".join(proposal_of(world, "leerplicht")) in run.out
    first, second = answer_lines(run.out)
    assert "anna (jurist)  approve: releases" in first
    assert first.endswith("step first  accepted")
    assert "bob (senior_jurist)  approve: releases" in second
    assert second.endswith("step second  accepted")
    assert run.out.count(f"motivation: {MOTIVATION}") == 2
    checks = re.findall(r"^  (ok  |FAIL)  (\w+):", run.out, re.MULTILINE)
    assert checks == [("ok  ", c) for c in ("answers_follow_rules", "within_bounds",
                                            "re_derives", "four_eyes")]
    assert "released by two reviewers, anna and bob" in run.out
    assert "approved by anna+bob" in run.out
    for phrase in ("the engine's proposal and every answer (reviewer, role",
                   "accepted or refused and why), with four checks", "(the ones in `decided_by`)",
                   "which add up to the requests in all, and of which reviewed",
                   "the tables of grounds used (each hash with the number of requests replayed "
                   "against it)"):
        assert phrase in README, phrase


def test_timeline_reads_consistently(world: World, disclosure: Callable[..., Output]) -> None:
    request_id = world.ids["om"]
    run = disclosure("timeline", request_id, "--ledger-only")
    data = json.loads(disclosure("timeline", request_id, "--ledger-only", "--json").out)
    assert run.code == 0  # README: exit 0 without flags
    assert data["flags"] == []
    assert run.out.rstrip().endswith("No flags: no expected step is missing in the ledger.")
    with Session(world.rt.ledger) as session:
        events = session.execute(select(AuditEvent).where(
            col(AuditEvent.request_id) == request_id)).scalars().all()
    # one row per ledger event, in time order, each on one line of the text
    assert len(data["rows"]) == len(events)
    assert [r["time"] for r in data["rows"]] == sorted(r["time"] for r in data["rows"])
    table = run.out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["flag", "time", "(UTC)", "source", "what", "actor", "run",
                                "detail"]
    assert [line.split()[0] for line in table[1:]] == [r["time"] for r in data["rows"]]
    # README's steps, in the order they happened
    assert [r["what"] for r in data["rows"]] == [
        "received", "assessed: needs review", "review run started", "review answer",
        "review answer", "decided (review)", "delivered"]
    assert ("received, decided, review run started, answers — reviewer and enrolled role, "
            "verdict, the categories it released or would have, accepted or refused with the "
            "refusal code —, reviewer's decision, delivered") in README
    reviewer_row = data["rows"][5]
    assert reviewer_row["actor"] == "anna"
    assert "reviewer(s) anna: approved" in reviewer_row["detail"]


def test_inzage_reads_consistently(world: World, disclosure: Callable[..., Output],
                                   tmp_path: Path) -> None:
    person = ps.PUPIL  # named by the gemeente (reviewed, delivered) and the OM (restricted)
    with Session(world.rt.ledger) as session:
        named = set(session.execute(select(col(RequestSubject.request_id)).where(
            col(RequestSubject.pseudonym) == world.rt.pseudonymizer.of(person))).scalars())
    assert named == {world.ids["leerplicht"], world.ids["om"]}
    out = tmp_path / "out"
    run = disclosure("inzage", "--bsn", person.number, "--out", str(out),
                     "--requested-by", "privacy-desk")
    assert run.code == 0, run.err
    summary = re.match(r"Inzage for BSN (\S+): (\d+) disclosure\(s\), (\d+) refused, (\d+) "
                       r"still being decided; (\d+) restricted request\(s\) for the privacy "
                       r"officer\.", run.out)
    assert summary is not None, run.out
    assert summary[1] == person.masked
    disclosures, refused, pending, restricted = map(int, summary.groups()[1:])
    assert disclosures + refused + pending + restricted == len(named)
    assert (disclosures, refused, pending, restricted) == (1, 0, 0, 1)
    # the files listed are the files written, named as README says
    listed = [Path(line.strip()) for line in run.out.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(out.iterdir())
    day = received_on(datetime.now(UTC)).isoformat()
    names = sorted(p.name for p in listed)
    assert [n.split("-", 4)[:4] for n in names] == [["inzage", *day.split("-")]] * 5
    assert sorted(Path(n).suffixes[-1] for n in names) == [".html", ".json", ".json", ".md",
                                                           ".md"]
    assert sum(n.endswith("-restricted-privacy-officer.md") for n in names) == 1
    assert sum(n.endswith("-restricted-privacy-officer.json") for n in names) == 1
    subject = json.loads(next(p for p in listed if p.suffix == ".json"
                              and "privacy-officer" not in p.name).read_text("utf-8"))
    officer = json.loads(next(p for p in listed if p.name.endswith(
        "privacy-officer.json")).read_text("utf-8"))
    assert subject["counts"] == {"disclosures": len(subject["disclosures"]),
                                 "refused": len(subject["refused"]),
                                 "pending": len(subject["pending"])} == {
        "disclosures": disclosures, "refused": refused, "pending": pending}
    assert [e["request_id"] for e in subject["disclosures"]] == [world.ids["leerplicht"]]
    assert [e["request_id"] for e in officer["restricted"]] == [world.ids["om"]]
    assert officer["count"] == restricted
    seq = re.search(r"On the record as audit event (\d+) \(inzage_answered, by privacy-desk\)\.",
                    run.out)
    assert seq is not None
    with Session(world.rt.ledger) as session:
        event = session.get(AuditEvent, int(seq[1]))
    assert event is not None
    assert (event.kind, event.actor) == ("inzage_answered", "privacy-desk")
    assert (event.payload["disclosures"], event.payload["restricted"]) == (1, 1)
    assert person.number not in run.out + run.err
    for words in ("inzage-<day>-<ref>.md", "…-restricted-privacy-officer.md/.json",
                  "inzage_answered"):
        assert words in README


def test_status_reads_consistently(world: World, disclosure: Callable[..., Output]) -> None:
    run = disclosure("status")
    assert run.code == 0
    table, total = run.out.rstrip("\n").split("\n\n")
    header, *rows = table.splitlines()
    assert header.split() == ["request", "partner", "reference", "state", "outcome", "deadline"]
    found = re.fullmatch(r"(\d+) request\(s\) in (.+)", total)
    assert found is not None
    assert int(found[1]) == len(rows) == len(world.ids)
    assert "ledger.db" in found[2]
    with Session(world.rt.ledger) as session:
        for line in rows:
            request_id, partner, reference, state, outcome, _deadline = line.split()
            request = session.get(RequestRow, request_id)
            assert request is not None
            decision = latest_decision(session=session, request_id=request_id)
            assert decision is not None
            assert (partner, reference, outcome) == (request.partner_id, request.reference,
                                                     decision.outcome)
            # the state follows from the outcome of the decision in force
            assert state == {"approved": "delivered", "partially_approved": "delivered",
                             "rejected": "rejected"}[outcome], line
    assert {line.split()[0] for line in rows} == set(world.ids.values())
    one = disclosure("status", world.ids["om"])
    assert (one.code, one.out.splitlines()[0].split()[0]) == (0, "request")
    assert [line.split()[0] for line in one.out.splitlines()[1:]] == [world.ids["om"]]
    assert "request(s) in" not in one.out
    assert "status [REQUEST]" in README


@dataclass(frozen=True)
class _Given:
    seq: int
    verdict: str
    categories: tuple[str, ...]
    accepted: bool
    step: str | None
    answered_at: datetime


def test_what_each_answer_released_follows_the_review_rules() -> None:
    """An approve releases the proposal, or as the second of four eyes what the first released
    (or what it ticked); a refused answer counts for nothing; a new proposal starts afresh."""
    at = [datetime(2026, 3, 1, 9, minute, tzinfo=UTC) for minute in range(10)]
    proposal = ("gezondheid", "opleidingsgegevens", "personalia")
    answers = [
        _Given(0, "approve_partially", ("personalia", "gezondheid"), False, None, at[1]),
        _Given(1, "approve_partially", ("personalia", "gezondheid"), True, "first", at[2]),
        _Given(2, "approve", (), False, None, at[3]),  # refused: the same reviewer, say
        _Given(3, "approve", (), True, "second", at[4]),
        _Given(4, "approve", (), True, "first", at[6]),  # the engine's second proposal
        _Given(5, "approve", ("personalia",), True, "second", at[7]),
        _Given(6, "reject", (), True, "single", at[8]),
    ]
    released = answer_releases(answers, [(at[0], proposal), (at[5], ("personalia",))])
    assert released == {0: ("gezondheid", "personalia"), 1: ("gezondheid", "personalia"),
                        2: ("gezondheid", "personalia"), 3: ("gezondheid", "personalia"),
                        4: ("personalia",), 5: ("personalia",), 6: ()}


# -- audit verify and the review queue ---------------------------------------------------------

def test_audit_verify_reads_consistently(world: World, disclosure: Callable[..., Output]) -> None:
    """Every count on the ``checked`` line is the number of rows the ledger holds; the head it
    tells the auditor to write down is the chain's last event; and ``--expect-head`` with that
    very anchor says so."""
    shown = disclosure("audit", "verify")
    assert shown.code == 0, shown.err
    with Session(world.rt.ledger) as session:
        def count(model: Any) -> int:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())
        last = session.execute(select(AuditEvent).order_by(col(AuditEvent.seq).desc())
                               .limit(1)).scalar_one()
        expected = (f"{count(AuditEvent)} audit events (hash chain), "
                    f"{count(RequestRow)} requests with {count(RequestSubject)} subjects, "
                    f"{count(DecisionRow)} decisions")
    checked = next(line for line in shown.out.splitlines() if line.startswith("  checked"))
    events, _, rest = expected.partition(", ")
    assert events in checked
    assert rest in checked
    assert f"  chain head  seq {last.seq} {last.hash}" in shown.out
    verdict = re.search(r"^Record intact(?: \((\d+) warning\(s\) below\))?\.$", shown.out, re.M)
    assert verdict is not None, shown.out
    warnings = [line for line in shown.out.splitlines() if line.startswith("  warning ")]
    assert len(warnings) == int(verdict.group(1) or 0)  # the warnings it announces are listed
    anchored = disclosure("audit", "verify", "--expect-head", f"{last.seq}:{last.hash}")
    assert anchored.code == 0, anchored.err
    assert f"anchor      seq {last.seq} {last.hash}: still in the chain, unchanged" in anchored.out
    assert "disclosure audit verify" in README
    assert "(`audit verify`, exit 0 intact, 1 broken)" in README


def test_the_review_queue_command_reads_consistently(world: World,
                                                     disclosure: Callable[..., Output]) -> None:
    """Every review of this history was decided: the queue says none waits, with the same
    words the README uses."""
    shown = disclosure("reviews")
    assert shown.code == 0, shown.err
    today = received_on(datetime.now(UTC)).isoformat()
    assert shown.out.splitlines() == [
        f"0 review(s) waiting on {today}: 0 overdue, 0 escalated. Open a review run, then "
        "Resume to decide."]
    assert "disclosure reviews" in README

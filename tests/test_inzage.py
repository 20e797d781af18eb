"""Inzage (AVG art. 15): a person gets exactly their own requests, and nobody else's.

A synthetic history (records.synthetic_history) is written into a ledger on SQLite and on
PostgreSQL; every expectation is computed from the history's truths, not by the code under test.
The criminal investigation requests (openbaar_ministerie: UAVG art. 41) must never reach the
person's own files and must all reach the privacy officer's.
"""

from __future__ import annotations

import html
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CHAIN_KEY_RING, ledger_on
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from cli.main import main
from legal_bases.accountability import load_accountability
from legal_bases.request import Subject
from legal_bases.table import GroundTable, load_table
from legal_bases.vocabulary import Body, Outcome, SubjectIdType
from records.errors import LedgerError
from records.inzage import EntryKind, find_requests
from records.ledger import RECEIPT_TIMEZONE
from records.models import AuditEvent
from records.pseudonym import Pseudonymizer
from records.synthetic_history import History, Truth, write_history
from records.verification import verify_record

KEY = bytes.fromhex("5a" * 32)
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
UAVG_41 = "Uitvoeringswet Algemene verordening gegevensbescherming art. 41 lid 1 onder d"
NINE_DIGITS = re.compile(r"(?<![0-9])[0-9]{9}(?![0-9])")


@dataclass
class Ledger:
    engine: Engine
    url: str
    history: History
    pseudonymizer: Pseudonymizer


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """300 requests about 60 persons, so that each person is named in several."""
    with ledger_on(request.param, request, tmp_path_factory.mktemp("inzage")) as engine:
        pseudonymizer = Pseudonymizer(KEY)
        history = write_history(engine=engine, pseudonymizer=pseudonymizer,
                                tables=[(START, load_table())], requests=300, seed=15,
                                start=START, end=END, persons=60)
        yield Ledger(engine, engine.url.render_as_string(hide_password=False), history,
                     pseudonymizer)


def restricted(truth: Truth) -> bool:
    """The synthetic history's prosecutor requests are the ones UAVG art. 41 keeps hidden."""
    return truth.body is Body.OPENBAAR_MINISTERIE


def expected_kind(truth: Truth) -> EntryKind:
    if truth.review_pending:
        return EntryKind.PENDING
    return EntryKind.DISCLOSURE if truth.released else EntryKind.REFUSED


def received_on(truth: Truth) -> str:
    return truth.received_at.astimezone(RECEIPT_TIMEZONE).date().isoformat()


def person_with(ledger: Ledger, *, id_type: SubjectIdType = SubjectIdType.BSN,
                restricted_too: bool = True) -> Subject:
    """The person of ``id_type`` named in the most requests (with a restricted one if asked)."""
    candidates = [p for p in ledger.history.persons if p.id_type is id_type
                  and (not restricted_too or any(restricted(t)
                                                 for t in ledger.history.about(p)))]
    return max(candidates, key=lambda p: len(ledger.history.about(p)))


def unnamed_bsn(ledger: Ledger) -> str:
    named = {p.number for p in ledger.history.persons}
    for n in range(100_000_000, 100_100_000):
        number = f"{n:09d}"
        weights = sum(int(d) * w for d, w in zip(number, (9, 8, 7, 6, 5, 4, 3, 2, -1),
                                                 strict=True))
        if weights % 11 == 0 and number not in named:
            return number
    raise AssertionError("no free BSN")


# -- records.inzage: the ledger query -------------------------------------------------------------

def test_every_person_gets_exactly_their_own_requests(ledger: Ledger,
                                                      shipped_table: GroundTable) -> None:
    accountability = load_accountability()
    with Session(ledger.engine) as session:
        for person in ledger.history.persons:
            truths = {t.request_id: t for t in ledger.history.about(person)}
            entries = find_requests(session=session, pseudonyms=[ledger.pseudonymizer.of(person)],
                                    table=shipped_table, accountability=accountability)
            assert [e.request_id for e in entries] == sorted(
                truths, key=lambda i: (truths[i].received_at, i))
            for entry in entries:
                truth = truths[entry.request_id]
                assert (entry.partner_id, entry.requester_body) == (truth.partner_id,
                                                                    truth.body.value)
                assert entry.claimed_ground == truth.ground
                assert entry.received_at == truth.received_at
                assert entry.id_types == (person.id_type.value,)
                assert entry.kind is expected_kind(truth)
                assert entry.restricted is restricted(truth)
                assert entry.decision is not None
                assert entry.decision.outcome == truth.outcome
                assert set(entry.decision.released) == set(truth.released)
                assert entry.decision.decided_at == truth.decided_at
                assert entry.decision.decided_by == truth.decided_by
                assert entry.decision.by_reviewer is (truth.reviewed and not truth.review_pending)
                assert bool(entry.deliveries) is truth.delivered
                if truth.delivered:
                    assert entry.state == "delivered"
                    assert all(d.delivered_at >= truth.decided_at for d in entry.deliveries)
                if entry.ground is not None:
                    assert entry.ground.ground_id == truth.ground
                    assert entry.ground.citation.url.startswith("https://wetten.overheid.nl/")
                    assert entry.ground.version_id.startswith(f"{truth.ground}@")


def test_one_persons_two_numbers_find_both_sets_of_requests(ledger: Ledger,
                                                           shipped_table: GroundTable) -> None:
    first = person_with(ledger)
    second = person_with(ledger, id_type=SubjectIdType.ONDERWIJSNUMMER, restricted_too=False)
    expected = {t.request_id for t in ledger.history.about(first) + ledger.history.about(second)}
    with Session(ledger.engine) as session:
        entries = find_requests(session=session,
                                pseudonyms=[ledger.pseudonymizer.of(first),
                                            ledger.pseudonymizer.of(second)],
                                table=shipped_table, accountability=load_accountability())
    assert {e.request_id for e in entries} == expected
    assert len(entries) == len(expected)


# -- the command and its files ---------------------------------------------------------------------

@dataclass
class Run:
    code: int
    out: str
    err: str
    files: dict[str, str]

    def name(self, suffix: str) -> str:
        """The one file ending in ``suffix`` (the subject's, unless the suffix names the
        officer's)."""
        [name] = [n for n in self.files if n.endswith(suffix)
                  and ("privacy-officer" in suffix or "privacy-officer" not in n)]
        return name

    def json(self, suffix: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.files[self.name(suffix)])
        return document

    def text(self, suffix: str) -> str:
        return self.files[self.name(suffix)]


def run_inzage(ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str], out: Path, *argv: str) -> Run:
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", ledger.url)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(out.parent / "data"))
    code = main(["--log-level", "INFO", "inzage", *argv, "--out", str(out)])
    captured = capsys.readouterr()
    files = ({p.name: p.read_text("utf-8") for p in sorted(out.iterdir())}
             if out.exists() else {})
    return Run(code, captured.out, captured.err, files)


def test_the_subject_files_hold_their_requests_and_the_officer_the_restricted_ones(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger)
    truths = {t.request_id: t for t in ledger.history.about(person)}
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", person.number)
    assert run.code == 0, run.err
    assert len(run.files) == 5
    subject = run.json(".json")
    officer = run.json("-restricted-privacy-officer.json")
    assert subject["subject"] == [{"type": "BSN", "number_masked": person.masked}]

    shown = {kind: [e["request_id"] for e in subject[key]]
             for kind, key in ((EntryKind.DISCLOSURE, "disclosures"),
                               (EntryKind.REFUSED, "refused"), (EntryKind.PENDING, "pending"))}
    for kind, ids in shown.items():
        assert set(ids) == {i for i, t in truths.items()
                            if not restricted(t) and expected_kind(t) is kind}, kind
    assert subject["counts"] == {"disclosures": len(shown[EntryKind.DISCLOSURE]),
                                 "refused": len(shown[EntryKind.REFUSED]),
                                 "pending": len(shown[EntryKind.PENDING])}
    hidden = {i for i, t in truths.items() if restricted(t)}
    assert hidden
    assert {e["request_id"] for e in officer["restricted"]} == hidden
    assert officer["count"] == len(hidden)
    for entry in officer["restricted"]:
        assert entry["restriction"]["text"] == UAVG_41
        assert entry["recipient"]["body"] == "openbaar_ministerie"
        assert entry["kind"] == expected_kind(truths[entry["request_id"]]).value

    # what each disclosure says equals the truth
    for entry in subject["disclosures"] + subject["refused"] + subject["pending"]:
        truth = truths[entry["request_id"]]
        assert entry["recipient"]["partner_id"] == truth.partner_id
        assert entry["recipient"]["body"] == truth.body.value
        assert entry["ground"]["id"] == truth.ground
        assert entry["categories_released"] == sorted(truth.released)
        assert entry["received_on"] == received_on(truth)
        assert datetime.fromisoformat(entry["decided_at"]) == truth.decided_at.replace(
            microsecond=0)
        assert bool(entry["delivered_at"]) is truth.delivered
        assert entry["decided_by"] == ("legal_reviewer" if truth.decided_by != "engine"
                                       else "engine")
    for entry in subject["disclosures"]:
        assert entry["ground"]["citation"]["url"].startswith("https://wetten.overheid.nl/")

    # the restricted requests are nowhere in the subject's files
    for name, text in run.files.items():
        if "privacy-officer" not in name:
            assert not any(i in text for i in hidden), name
            assert "openbaar_ministerie" not in text
            assert "Openbaar Ministerie" not in text
            assert "strafrechtelijk" not in text
    # the number is masked everywhere; stdout has paths and counts only
    assert all(person.number not in text for text in run.files.values())
    assert person.masked in run.out
    for anyone in ledger.history.persons:
        assert anyone.number not in run.out + run.err
    assert f"{len(hidden)} restricted request(s)" in run.out
    assert "restricted-privacy-officer.md" in run.out
    assert '"event": "inzage_answered"' in run.err  # the log line: counts only


def sections(markdown: str) -> list[str]:
    """The entries of a Markdown document: its level-3 sections, in order."""
    return markdown.split("\n### ")[1:]


def test_the_markdown_and_html_say_what_the_json_says(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger)
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", person.number)
    for suffix, md_suffix, html_suffix, keys in (
            (".json", ".md", ".html", ("disclosures", "refused", "pending")),
            ("-restricted-privacy-officer.json", "-restricted-privacy-officer.md", None,
             ("restricted",))):
        document = run.json(suffix)
        markdown = run.text(md_suffix)
        entries = [e for key in keys for e in document[key]]
        md_sections = sections(markdown)
        assert len(md_sections) == len(entries)
        html_text = html.unescape(run.text(html_suffix)) if html_suffix else None
        html_sections = (html_text.split("<h3>")[1:] if html_text else [None] * len(entries))
        assert len(html_sections) == len(entries)
        for entry, md, page in zip(entries, md_sections, html_sections, strict=True):
            facts = [entry["request_id"], entry["recipient"]["name"], entry["received_on"],
                     entry["purpose"], entry["ground"]["id"],
                     entry["decided_at"][:16].replace("T", " "),
                     *(at[:16].replace("T", " ") for at in entry["delivered_at"]),
                     f"Categories given | {', '.join(entry['categories_released']) or 'none'}",
                     f"Categories withheld | "
                     f"{', '.join(entry['categories_withheld']) or 'none'}"]
            if entry["ground"]["citation"]:
                facts += [entry["ground"]["citation"]["text"], entry["ground"]["citation"]["url"]]
            if "restriction" in entry:
                facts += [entry["restriction"]["text"], entry["reference"]]
            for fact in facts:
                assert fact in md, (fact, md)
                if page is not None:
                    assert fact.replace(" | ", "</th><td>") in page, (fact, page)
    counts = run.json(".json")["counts"]
    assert f"## Disclosures ({counts['disclosures']})" in run.text(".md")
    assert f"<h2>Refused requests ({counts['refused']})</h2>" in run.text(".html")
    page = run.text(".html")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert "<script" not in page
    assert "<link" not in page


def test_an_onderwijsnummer_finds_that_persons_requests(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger, id_type=SubjectIdType.ONDERWIJSNUMMER, restricted_too=False)
    truths = ledger.history.about(person)
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out",
                     "--onderwijsnummer", person.number)
    assert run.code == 0, run.err
    subject = run.json(".json")
    officer = run.json("-restricted-privacy-officer.json")
    found = {e["request_id"] for key in ("disclosures", "refused", "pending")
             for e in subject[key]} | {e["request_id"] for e in officer["restricted"]}
    assert found == {t.request_id for t in truths}
    assert subject["subject"] == [{"type": "onderwijsnummer", "number_masked": person.masked}]
    assert all(e["identifiers_named"] == ["onderwijsnummer"]
               for e in subject["disclosures"] + subject["refused"] + subject["pending"])
    assert person.number not in run.out + "".join(run.files.values())


def test_a_person_named_in_no_request_gets_a_document_saying_so(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    number = unnamed_bsn(ledger)
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", number)
    assert run.code == 0, run.err
    subject = run.json(".json")
    assert subject["counts"] == {"disclosures": 0, "refused": 0, "pending": 0}
    assert subject["disclosures"] == subject["refused"] == subject["pending"] == []
    for suffix in (".md", ".html"):
        assert "hold no request from another organisation that named you" in run.text(suffix)
    assert run.json("-restricted-privacy-officer.json")["restricted"] == []
    assert "0 disclosure(s), 0 refused, 0 still being decided; 0 restricted" in run.out
    assert number not in run.out + run.err + "".join(run.files.values())


@pytest.mark.parametrize(("argv", "message"), [
    (["--bsn", "123456789"], "--bsn is not a valid BSN: fails the elfproef"),
    (["--bsn", "12345"], "--bsn is not a valid BSN: must be exactly 9 digits"),
    (["--onderwijsnummer", "111222333"],
     "--onderwijsnummer is not a valid onderwijsnummer: must start with 10"),
    ([], "inzage needs --bsn or --onderwijsnummer"),
])
def test_an_invalid_number_is_a_usage_error_that_does_not_repeat_it(
        argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
    code = main(["inzage", *argv, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert out == ""
    assert not (tmp_path / "out").exists()
    assert NINE_DIGITS.findall(err) == []


def test_the_number_can_come_from_standard_input(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger, restricted_too=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(person.number + "\n"))
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", "-")
    assert run.code == 0, run.err
    total = sum(run.json(".json")["counts"].values()) + run.json(
        "-restricted-privacy-officer.json")["count"]
    assert total == len(ledger.history.about(person))
    assert sum(1 for t in ledger.history.about(person)
               if t.outcome == Outcome.NEEDS_REVIEW.value) == run.json(".json")["counts"][
        "pending"] + sum(1 for e in run.json("-restricted-privacy-officer.json")["restricted"]
                         if e["kind"] == "pending")


# -- the look-up itself is on the record ---------------------------------------------------------

def test_each_answer_is_on_the_record_by_pseudonym_and_counts(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger)
    before = _chain_head(ledger.engine)
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", person.number,
                     "--requested-by", "privacy-desk-7")
    assert run.code == 0, run.err
    with Session(ledger.engine) as session:
        [event] = session.scalars(select(AuditEvent).where(
            col(AuditEvent.kind) == "inzage_answered", col(AuditEvent.seq) > before)).all()
        report = verify_record(session=session)
    assert report.ok, report.problems
    subject = run.json(".json")
    officer = run.json("-restricted-privacy-officer.json")
    assert event.actor == "privacy-desk-7"
    assert event.request_id is None
    assert event.payload == {"subjects": [ledger.pseudonymizer.of(person)],
                             **subject["counts"], "restricted": officer["count"]}
    assert f"audit event {event.seq}" in run.out
    assert person.number not in json.dumps(event.payload)


def test_an_answer_that_cannot_be_recorded_is_not_given(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    def refused(**_: Any) -> int:
        raise LedgerError("the ledger refused the event")
    monkeypatch.setattr("cli.inzage.record_inzage", refused)
    person = person_with(ledger)
    before = _chain_head(ledger.engine)
    run = run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", person.number)
    assert run.code == 1
    assert "the ledger refused the event" in run.err
    assert run.files == {}
    assert _chain_head(ledger.engine) == before


def test_who_answers_must_fit_the_record(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    person = person_with(ledger)
    with pytest.raises(SystemExit) as exit_:
        run_inzage(ledger, monkeypatch, capsys, tmp_path / "out", "--bsn", person.number,
                   "--requested-by", "x" * 129)
    assert exit_.value.code == 2
    assert "--requested-by: must be 1 to 128 characters" in capsys.readouterr().err


def _chain_head(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.max(col(AuditEvent.seq)))) or 0)

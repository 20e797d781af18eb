"""The Logboek Dataverwerkingen export: one line per disclosed data subject, nothing more.

A synthetic history (records.synthetic_history) on SQLite and on PostgreSQL, plus a few
disclosures written by hand around the export's day boundaries and with the kinds of
correlation id the intake API records. Expectations come from the history's truths, the
``deliveries`` table read directly, and the accountability YAML read as plain YAML.
"""

from __future__ import annotations

import calendar
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEST_CHAIN_KEY_RING, ledger_on
from sqlalchemy import Engine, select
from sqlmodel import Session

from cli.logboek import write_lines
from cli.main import main
from legal_bases.accountability import (
    DEFAULT_ACCOUNTABILITY_FILE,
    Accountability,
    AccountabilityError,
    load_accountability,
)
from legal_bases.assessment import assess
from legal_bases.request import DisclosureRequest, Subject, read_request
from legal_bases.table import GroundTable, load_table
from legal_bases.vocabulary import Body, Category, SubjectIdType
from records import logboek
from records.decisions import DecisionItem, record_decisions
from records.deliveries import DeliveryItem, record_deliveries
from records.ledger import RECEIPT_TIMEZONE, received_on, record_submission
from records.logboek import logboek_records, service_resource
from records.models import DeliveryRow
from records.pseudonym import Pseudonymizer
from records.synthetic_history import History, write_history
from records.vocabulary import Channel

KEY = bytes.fromhex("3c" * 32)
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
UAVG_41 = "Uitvoeringswet Algemene verordening gegevensbescherming art. 41 lid 1 onder d"


@dataclass
class Ledger:
    engine: Engine
    url: str
    history: History
    pseudonymizer: Pseudonymizer
    #: the hand-written disclosures: name -> request id
    extra: dict[str, str] = field(default_factory=dict)


def disclose(engine: Engine, pseudonymizer: Pseudonymizer, table: GroundTable, *,
             reference: str, subjects: Sequence[Subject], delivered_at: datetime,
             correlation_id: str | None) -> str:
    """Write one approved toeslagen request, decided and delivered at ``delivered_at``."""
    raw = {"reference": reference, "legal_basis": "awir-38", "purpose": "toeslagen",
           "subjects": [{s.id_type.value: s.number} for s in subjects],
           "categories": ["personalia"]}
    received_at = delivered_at - timedelta(minutes=10)
    parsed = read_request(raw, received_on=received_on(received_at))
    assert isinstance(parsed, DisclosureRequest)
    with Session(engine) as session, session.begin():
        row = record_submission(session=session, partner_id="toeslagen-test",
                                requester_body=Body.TOESLAGEN, channel=Channel.API,
                                raw_body=json.dumps(raw), parsed=parsed, received_at=received_at,
                                pseudonymizer=pseudonymizer, correlation_id=correlation_id)
        [decision] = record_decisions(session=session, table=table, items=[DecisionItem(
            request_id=row.id, decision=assess(parsed, Body.TOESLAGEN, table),
            decided_at=received_at + timedelta(minutes=5))])
        record_deliveries(session=session, items=[DeliveryItem(
            request_id=row.id, decision_id=decision.id, partner_id="toeslagen-test",
            destination="file", receipt={}, delivered_at=delivered_at)])
        return row.id


#: Hand-written disclosures: (name, delivered at (UTC), correlation id, subjects from the pool).
#: In the Netherlands 2026-09-30 is CEST (+2) and 2026-10-31 CET (+1).
EXTRA = (
    ("last-ms-of-sep-30", datetime(2026, 9, 30, 21, 59, 59, 999000, tzinfo=UTC), CALLER_TRACE, 1),
    ("first-of-oct-1", datetime(2026, 9, 30, 22, 0, tzinfo=UTC),
     f"00-{TRACEPARENT_TRACE}-b7ad6b7169203331-01", 3),
    ("last-of-oct-31", datetime(2026, 10, 31, 22, 59, 59, tzinfo=UTC), "partner-call-77", 1),
    ("first-of-nov-1", datetime(2026, 10, 31, 23, 0, tzinfo=UTC), None, 1),
    ("zero-trace-in-oct", datetime(2026, 10, 10, 12, 0, tzinfo=UTC),
     "00-00000000000000000000000000000000-b7ad6b7169203331-01", 1),
)


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with ledger_on(request.param, request, tmp_path_factory.mktemp("logboek")) as engine:
        pseudonymizer = Pseudonymizer(KEY)
        table = load_table()
        history = write_history(engine=engine, pseudonymizer=pseudonymizer,
                                tables=[(START, table)], requests=300, seed=6, start=START,
                                end=END, persons=60)
        bsns = [p for p in history.persons if p.id_type is SubjectIdType.BSN]
        onderwijs = [p for p in history.persons if p.id_type is SubjectIdType.ONDERWIJSNUMMER]
        pool = [bsns[0], onderwijs[0], bsns[1]]
        extra = {name: disclose(engine, pseudonymizer, table, reference=f"EXTRA-{name}",
                                subjects=pool[:count], delivered_at=at, correlation_id=cid)
                 for name, at, cid, count in EXTRA}
        yield Ledger(engine, engine.url.render_as_string(hide_password=False), history,
                     pseudonymizer, extra)


def export(ledger: Ledger, start: date, end: date,
           accountability: Accountability | None = None) -> list[dict[str, Any]]:
    with Session(ledger.engine) as session:
        return list(logboek_records(session=session, start=start, end=end,
                                    table=load_table(),
                                    accountability=accountability or load_accountability(),
                                    resource=service_resource()))


def export_text(ledger: Ledger, start: date, end: date) -> str:
    out = io.StringIO()
    with Session(ledger.engine) as session:
        write_lines(logboek_records(session=session, start=start, end=end, table=load_table(),
                                    accountability=load_accountability(),
                                    resource=service_resource()), out)
    return out.getvalue()


def delivered_at(ledger: Ledger) -> dict[str, datetime]:
    """Each request's delivery time, straight from the ledger's deliveries table."""
    with Session(ledger.engine) as session:
        return {row.request_id: row.delivered_at for row in session.execute(
            select(DeliveryRow.request_id, DeliveryRow.delivered_at))}  # type: ignore[call-overload]


def ms(at: datetime) -> int:
    """Whole milliseconds since the epoch (the sub-millisecond part dropped)."""
    return calendar.timegm(at.utctimetuple()) * 1000 + at.microsecond // 1000


def raw_activities() -> dict[str, str]:
    """Each ground's processing activity, read from the accountability file as plain YAML."""
    document = yaml.safe_load(DEFAULT_ACCOUNTABILITY_FILE.read_text("utf-8"))
    return {g: e["processing_activity_id"] for g, e in document["grounds"].items()}


def parents_and_children(lines: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
    parents = [r for r in lines if "parent_span_id" not in r]
    children = [r for r in lines if "parent_span_id" in r]
    return parents, children


# -- what is exported ------------------------------------------------------------------------------

def test_one_line_per_disclosed_subject_and_one_per_disclosure(ledger: Ledger) -> None:
    lines = export(ledger, date(2026, 1, 1), date(2026, 9, 29))
    parents, children = parents_and_children(lines)
    delivered = [t for t in ledger.history.truths if t.delivered]
    assert len(delivered) > 100
    assert sorted(p["attributes"]["nl.duo.request_id"] for p in parents) == sorted(
        t.request_id for t in delivered)
    assert Counter((c["attributes"]["nl.duo.request_id"],
                    c["attributes"]["dpl.core.data_subject_id"]) for c in children) == Counter(
        (t.request_id, ledger.pseudonymizer.of(s)) for t in delivered for s in t.subjects)
    id_types = {(t.request_id, ledger.pseudonymizer.of(s)): s.id_type for t in delivered
                for s in t.subjects}
    for child in children:
        attributes = child["attributes"]
        id_type = id_types[attributes["nl.duo.request_id"], attributes["dpl.core.data_subject_id"]]
        assert attributes["dpl.core.data_subject_id_type"] == (
            "BSN" if id_type is SubjectIdType.BSN else "onderwijsnummer")
    for parent in parents:
        assert "dpl.core.data_subject_id" not in parent["attributes"]


def test_ids_have_the_standards_sizes_and_children_point_to_their_disclosure(
        ledger: Ledger) -> None:
    lines = export(ledger, date(2026, 1, 1), date(2026, 12, 31))
    spans = [r["span_id"] for r in lines]
    assert len(spans) == len(set(spans))
    assert all(HEX16.match(s) and s != "0" * 16 for s in spans)
    assert all(HEX32.match(r["trace_id"]) and r["trace_id"] != "0" * 32 for r in lines)
    by_span = {r["span_id"]: r for r in lines}
    current: dict[str, Any] | None = None
    for record in lines:  # each disclosure's line comes first, its subjects right after it
        if "parent_span_id" not in record:
            current = record
            continue
        assert current is not None
        assert record["parent_span_id"] == current["span_id"]
        assert by_span[record["parent_span_id"]] is current
        assert record["trace_id"] == current["trace_id"]
        assert record["attributes"]["nl.duo.request_id"] == current["attributes"][
            "nl.duo.request_id"]
    parents, _ = parents_and_children(lines)
    traces = [p["trace_id"] for p in parents]
    assert len(traces) == len(set(traces))  # one trace per request (one delivery each here)
    assert [p["end_time"] for p in parents] == sorted(p["end_time"] for p in parents)


def test_times_attributes_and_resource(ledger: Ledger) -> None:
    lines = export(ledger, date(2026, 1, 1), date(2026, 9, 29))
    truths = {t.request_id: t for t in ledger.history.truths}
    deliveries = delivered_at(ledger)
    activities = raw_activities()
    for record in lines:
        attributes = record["attributes"]
        truth = truths[attributes["nl.duo.request_id"]]
        assert record["start_time"] == ms(truth.decided_at)
        assert record["end_time"] == ms(deliveries[truth.request_id])
        assert record["start_time"] <= record["end_time"]
        assert record["status"] == "Ok"
        assert record["resource"]["attributes"]["service.name"] == "duo-disclosure-engine"
        assert record["resource"]["attributes"]["service.version"]
        assert attributes["dpl.core.processing_activity_id"] == activities[truth.ground or ""]
        assert attributes["nl.duo.ground_version"].startswith(f"{truth.ground}@")
        assert truth.ground in record["name"]
        if truth.body is Body.OPENBAAR_MINISTERIE:
            assert attributes["nl.duo.confidentiality"] == "Vertrouwelijk"
            assert attributes["nl.duo.restriction"] == UAVG_41
        else:
            assert attributes["nl.duo.confidentiality"] == "Normaal"
            assert "nl.duo.restriction" not in attributes
        assert set(attributes) <= {
            "dpl.core.processing_activity_id", "dpl.core.data_subject_id",
            "dpl.core.data_subject_id_type", "nl.duo.request_id", "nl.duo.decision_id",
            "nl.duo.delivery_id", "nl.duo.ground_version", "nl.duo.confidentiality",
            "nl.duo.restriction"}
    assert any(r["attributes"]["nl.duo.confidentiality"] == "Vertrouwelijk" for r in lines)


def test_no_number_and_no_category_appears_in_the_export(ledger: Ledger) -> None:
    text = export_text(ledger, date(2026, 1, 1), date(2026, 12, 31))
    assert text.count("\n") > 300
    for person in ledger.history.persons:
        assert person.number not in text
    for category in Category:
        assert category.value not in text
    assert "SYN-" not in text
    assert "EXTRA-" not in text


# -- the period ------------------------------------------------------------------------------------

def test_a_period_holds_the_deliveries_of_its_dutch_days(ledger: Ledger) -> None:
    start, end = date(2026, 2, 1), date(2026, 3, 31)
    deliveries = delivered_at(ledger)
    expected = {request_id for request_id, at in deliveries.items()
                if start <= at.astimezone(RECEIPT_TIMEZONE).date() <= end}
    parents, _ = parents_and_children(export(ledger, start, end))
    assert {p["attributes"]["nl.duo.request_id"] for p in parents} == expected
    assert expected


@pytest.mark.parametrize(("start", "end", "names"), [
    (date(2026, 9, 30), date(2026, 9, 30), {"last-ms-of-sep-30"}),
    (date(2026, 10, 1), date(2026, 10, 1), {"first-of-oct-1"}),
    (date(2026, 10, 1), date(2026, 10, 31),
     {"first-of-oct-1", "last-of-oct-31", "zero-trace-in-oct"}),
    (date(2026, 11, 1), date(2026, 11, 1), {"first-of-nov-1"}),
    (date(2026, 9, 30), date(2026, 11, 1), {n for n, *_ in EXTRA}),
    (date(2027, 1, 1), date(2027, 12, 31), set()),
])
def test_both_ends_of_the_period_are_included_to_the_millisecond(
        ledger: Ledger, start: date, end: date, names: set[str]) -> None:
    parents, children = parents_and_children(export(ledger, start, end))
    assert {p["attributes"]["nl.duo.request_id"] for p in parents} == {
        ledger.extra[n] for n in names}
    sizes = {n: count for n, _, _, count in EXTRA}
    assert len(children) == sum(sizes[n] for n in names)


def test_the_callers_trace_id_is_kept_and_otherwise_one_is_derived(ledger: Ledger) -> None:
    lines = export(ledger, date(2026, 9, 30), date(2026, 11, 1))
    trace = {r["attributes"]["nl.duo.request_id"]: r["trace_id"] for r in lines}
    assert trace[ledger.extra["last-ms-of-sep-30"]] == CALLER_TRACE
    assert trace[ledger.extra["first-of-oct-1"]] == TRACEPARENT_TRACE
    derived = [trace[ledger.extra[n]] for n in ("last-of-oct-31", "first-of-nov-1",
                                                "zero-trace-in-oct")]
    assert all(HEX32.match(t) for t in derived)
    assert len({*derived, CALLER_TRACE, TRACEPARENT_TRACE}) == 5
    _, children = parents_and_children(lines)
    three = [c for c in children
             if c["attributes"]["nl.duo.request_id"] == ledger.extra["first-of-oct-1"]]
    assert [c["attributes"]["dpl.core.data_subject_id_type"] for c in three] == [
        "BSN", "onderwijsnummer", "BSN"]  # in the request's order


# -- determinism, streaming and the command ----------------------------------------------------

def test_the_same_ledger_exports_the_same_bytes_in_any_batch_size(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    first = export_text(ledger, date(2026, 1, 1), date(2026, 12, 31))
    assert export_text(ledger, date(2026, 1, 1), date(2026, 12, 31)) == first
    monkeypatch.setattr(logboek, "LOGBOEK_FETCH_ROWS", 7)
    monkeypatch.setattr(logboek, "AUDIT_IN_CHUNK", 3)
    assert export_text(ledger, date(2026, 1, 1), date(2026, 12, 31)) == first


def test_the_command_writes_the_same_to_a_file_as_to_standard_output(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", ledger.url)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
    argv = ["logboek", "export", "--from", "2026-01-01", "--to", "2026-12-31"]
    assert main(["--log-level", "INFO", *argv]) == 0
    out, err = capsys.readouterr()
    assert out == export_text(ledger, date(2026, 1, 1), date(2026, 12, 31))
    assert '"event": "logboek_exported"' in err
    target = tmp_path / "logboek.jsonl"
    assert main([*argv, "--out", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert target.read_text("utf-8") == export_text(ledger, date(2026, 1, 1), date(2026, 12, 31))
    lines = target.read_text("utf-8").count("\n")
    assert f"{lines} line(s)" in err
    assert not list(tmp_path.glob("*.partial"))
    for person in ledger.history.persons:
        assert person.number not in err


def test_records_are_produced_lazily(ledger: Ledger) -> None:
    with Session(ledger.engine) as session:
        records = logboek_records(session=session, start=date(2026, 1, 1),
                                  end=date(2026, 12, 31), table=load_table(),
                                  accountability=load_accountability(),
                                  resource=service_resource())
        assert isinstance(records, Iterator)
        assert "trace_id" in next(records)


def test_a_delivered_ground_without_accountability_stops_the_export_before_any_line(
        ledger: Ledger) -> None:
    full = load_accountability()
    partial = Accountability(grounds={k: v for k, v in full.grounds.items() if k != "awir-38"},
                             source="test-accountability.yaml")
    with Session(ledger.engine) as session:
        records = logboek_records(session=session, start=date(2026, 1, 1),
                                  end=date(2026, 12, 31), table=load_table(),
                                  accountability=partial, resource=service_resource())
        with pytest.raises(AccountabilityError, match=r"grounds\.awir-38"):
            next(records)


def test_to_before_from_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(["logboek", "export", "--from", "2026-02-01", "--to", "2026-01-31"]) == 2
    assert "--to 2026-01-31 is before --from 2026-02-01" in capsys.readouterr().err

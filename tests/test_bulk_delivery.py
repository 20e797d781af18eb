"""A bulk request is delivered in parts with a manifest, and a crash half-way resumes.

The dispatcher's own steps (claim, decide, deliver) on a SQLite ledger and a SQL register, with
the part size made small (``limits.BULK_PART_SUBJECTS`` = 50) so that 233 subjects make five
parts. What the receiver gets is checked as a receiver would: every part named in the manifest
is there with the sha256 the manifest gives, the parts together hold each found subject exactly
once and the not-found ones are counted, and the manifest's totals add up. Then the delivery
is broken after its third part (the fault point ``part_delivered``): the next attempt fetches
and sends only the parts that were missing, and the end result is the same.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pipeline_support as ps
import pytest
from conftest import ledger_on
from sqlalchemy import select
from sqlmodel import Session

from connectors.partners import load_partners
from connectors.register import make_register_engine
from connectors.register_models import persons_table
from connectors.register_seed import ensure_register
from flows import faults
from flows.pipeline import bulk, decide, deliver
from flows.runtime import Runtime
from legal_bases import limits
from legal_bases.identifiers import random_bsn
from legal_bases.request import Subject, read_request
from records.chain import verify_chain
from records.ledger import received_on, record_submission
from records.models import DeliveryRow
from records.pseudonym import Pseudonymizer
from records.queue import claim_requests, release_claims
from records.settings import load_settings
from records.vocabulary import Channel

EXAMPLES = Path(__file__).parents[1] / "examples"
PART = 50
FOUND = 230
ABSENT = 3


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runtime, list[Subject]]]:
    monkeypatch.setattr(limits, "BULK_PART_SUBJECTS", PART)
    register_url = f"sqlite:///{tmp_path / 'register.db'}"
    settings = load_settings(data_dir=tmp_path / "data", pseudonym_key=ps.PSEUDONYM_KEY,
                             partners_file=EXAMPLES / "partners.yaml", register_url=register_url)
    register = make_register_engine(register_url)
    ensure_register(engine=register, persons=400, seed=7, include=[])
    with register.connect() as connection:
        table = persons_table()
        numbers = [n for n, t, shielded in connection.execute(
            select(table.c.number, table.c.id_type, table.c.shielded))
            if t == "bsn" and not shielded]  # a shielded subject sends it to review
    rng = random.Random(11)
    taken = set(numbers)
    absent = list(itertools.islice((n for n in iter(lambda: random_bsn(rng), None)
                                    if n not in taken), ABSENT))
    subjects = [Subject(ps.BSN, n) for n in numbers[:FOUND] + absent]
    with ledger_on("sqlite", request, tmp_path) as ledger:
        rt = Runtime(settings=settings, ledger=ledger, register_engine=register,
                     table=settings.ground_table(),
                     partners=load_partners(EXAMPLES / "partners.yaml"),
                     pseudonymizer=Pseudonymizer.from_settings(settings))
        try:
            yield rt, subjects
        finally:
            rt._http.close()
            register.dispose()


def submit(rt: Runtime, subjects: list[Subject]) -> str:
    body = ps.cbs_request("CBS-BULK-1", subjects=subjects)
    now = datetime.now(UTC)
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        row = record_submission(
            session=session, partner_id="cbs", requester_body="cbs", channel=Channel.CLI,
            raw_body=json.dumps(body), parsed=read_request(body, received_on=received_on(now)),
            received_at=now, pseudonymizer=rt.pseudonymizer)
    return row.id


def sweep(rt: Runtime, request_id: str) -> deliver.Delivered:
    with Session(rt.ledger) as session, session.begin():
        claimed = claim_requests(session=session, worker="test", limit=10,
                                 lease=timedelta(minutes=1), now=datetime.now(UTC))
    try:
        decided = decide.decide_requests(rt, claimed, flow_run_id=None)
        return deliver.deliver_requests(rt, decided.deliver or [request_id], flow_run_id=None)
    finally:
        with Session(rt.ledger) as session, session.begin():
            release_claims(session=session, worker="test", request_ids=claimed)


def received(rt: Runtime) -> tuple[dict[str, Any], list[dict[str, Any]], list[Path]]:
    """The manifest and the parts in the partner's folder, read as the receiver reads them."""
    folder = rt.settings.resolved_outbox_dir / "cbs"
    files = sorted(folder.glob("*.json"))
    (manifest_file,) = [f for f in files if "-part-" not in f.name]
    manifest = json.loads(manifest_file.read_bytes())
    parts = []
    for entry in manifest["manifest"]["parts"]:
        body = (folder / f"{entry['idempotency_key']}.json").read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        assert len(body) == entry["size"]
        parts.append(json.loads(body))
    return manifest, parts, files


def assert_complete(rt: Runtime, subjects: list[Subject]) -> None:
    manifest, parts, files = received(rt)
    assert len(files) == 1 + len(parts)  # the parts the manifest names and nothing else
    assert [p["part"]["number"] for p in parts] == list(range(1, len(parts) + 1))
    assert len(parts) == -(-len(subjects) // PART)
    sent = [r["subject"]["bsn"] for p in parts for r in p["records"]]
    assert sorted(sent) == sorted(s.number for s in subjects[:FOUND])  # each exactly once
    missing = [n["bsn"] for p in parts for n in p["not_found"]]
    assert sorted(missing) == sorted(s.number for s in subjects[FOUND:])
    assert manifest["totals"] == {"subjects": FOUND + ABSENT, "records": FOUND,
                                  "not_found": ABSENT}
    assert all(set(r) - {"subject"} == {"opleidingsgegevens"} for p in parts
               for r in p["records"])
    assert manifest["manifest"]["complete"] is True
    (row,) = ps.rows(rt.ledger, DeliveryRow)
    assert row.receipt["sha256"] == hashlib.sha256(
        (rt.settings.resolved_outbox_dir / "cbs" / f"{row.idempotency_key}.json").read_bytes()
    ).hexdigest()
    assert row.receipt["detail"]["parts"] == len(parts)
    with Session(rt.ledger) as session:
        assert verify_chain(session=session).ok


def test_a_bulk_request_goes_out_in_parts_with_a_manifest(
        world: tuple[Runtime, list[Subject]]) -> None:
    rt, subjects = world
    request_id = submit(rt, subjects)
    done = sweep(rt, request_id)
    assert (done.delivered, done.records, done.not_found) == (1, FOUND, ABSENT)
    assert ps.state_of(rt.ledger, request_id) == "delivered"
    assert_complete(rt, subjects)


def test_a_crash_after_three_parts_resumes_with_the_fourth(
        world: tuple[Runtime, list[Subject]], monkeypatch: pytest.MonkeyPatch) -> None:
    rt, subjects = world
    request_id = submit(rt, subjects)
    monkeypatch.setenv(faults.ENVIRONMENT, "part_delivered:raise@3")
    faults._configured.cache_clear()
    faults._hits.clear()
    try:
        first = sweep(rt, request_id)
    finally:
        monkeypatch.delenv(faults.ENVIRONMENT)
        faults._configured.cache_clear()
        faults._hits.clear()
    assert (first.delivered, first.failed_transient) == (0, 1)
    assert ps.state_of(rt.ledger, request_id) == "decided"  # the next sweep goes on
    folder = rt.settings.resolved_outbox_dir / "cbs"
    assert sorted(f.name for f in folder.glob("*.json")) == [
        f"{bulk.part_key(ps.decisions_of(rt.ledger, request_id)[0].id, n)}.json"
        for n in (1, 2, 3)]  # three parts, no manifest: the receiver knows it is incomplete
    before = {f.name: f.stat().st_mtime_ns for f in folder.glob("*.json")}

    fetched: list[int] = []
    register_class = type(rt.register)
    real_fetch = register_class.fetch
    monkeypatch.setattr(register_class, "fetch", lambda self, **kw: fetched.append(
        len(kw["subjects"])) or real_fetch(self, **kw))
    second = sweep(rt, request_id)
    assert second.delivered == 1
    assert fetched == [PART, len(subjects) - 4 * PART]  # only parts 4 and 5 were read again
    assert {f.name: f.stat().st_mtime_ns for f in folder.glob("*.json")
            if f.name in before} == before  # the parts delivered before were not rewritten
    assert ps.state_of(rt.ledger, request_id) == "delivered"
    assert_complete(rt, subjects)


def test_a_request_up_to_one_part_is_one_document_as_before(
        world: tuple[Runtime, list[Subject]]) -> None:
    rt, subjects = world
    request_id = submit(rt, subjects[:PART])
    sweep(rt, request_id)
    (row,) = ps.rows(rt.ledger, DeliveryRow)
    document = json.loads(Path(row.receipt["location"]).read_bytes())
    assert "manifest" not in document
    assert len(document["records"]) == PART

"""The keyed chain and its checkpoints: what an insider can and cannot rewrite.

Three attackers, as DESIGN.md section 11 has them: someone with rights on the database but not
the chain key (every rewrite is found at the event rewritten), someone who also holds the key
(found only against a checkpoint written outside the database), and a partner or bug that
never touches the database. Tampering switches the append-only triggers off and edits rows with
plain SQL, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CHAIN_KEYS, ledger_on
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlmodel import Session

from cli.main import main
from legal_bases.table import sha256
from records.chain import (
    GENESIS_HASH,
    NewEvent,
    append_events,
    event_hash,
    handover,
    record_rotation,
)
from records.chain_keys import ChainKey, ChainKeys, parse_keyring
from records.checkpoints import (
    read_checkpoints,
    seal_checkpoint,
    write_checkpoint,
)
from records.db import make_engine, migrate, open_ledger
from records.errors import ChainKeyError
from records.models import AuditEvent
from records.settings import load_settings
from records.verification import verify_record
from records.verification_report import PROBLEM_CODES, RecordReport

EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY_A = TEST_CHAIN_KEYS.current
KEY_B = ChainKey("test-key-2", bytes(range(32, 64)))
OUTSIDER = ChainKey(KEY_A.key_id, bytes(32))  # the right id, the wrong secret

BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ledger_on(request.param, request, tmp_path) as engine:
        yield engine


def keyed(engine: Engine, keys: ChainKeys) -> Engine:
    """The same database through another key ring."""
    return engine.execution_options(disclosure_chain_keys=keys)


def append(engine: Engine, count: int, start: int = 0) -> None:
    with Session(engine) as session, session.begin():
        append_events(session=session, events=[
            NewEvent("test_event", T0 + timedelta(seconds=n), "tester", {"n": n})
            for n in range(start, start + count)])


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(EVENTS).order_by(EVENTS.c.seq))
                .mappings()]


def tamper(engine: Engine, change: Callable[[Connection], object]) -> None:
    """Change rows with the append-only guards off (an attacker with database rights)."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for name in connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND "
                    "tbl_name = 'audit_events'").scalars().all():
                connection.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        change(connection)


def verify(engine: Engine, **options: Any) -> RecordReport:
    with Session(engine) as session:
        report = verify_record(session=session, **options)
    assert {p.code for p in report.problems} <= PROBLEM_CODES.keys()
    return report


def codes(report: RecordReport) -> list[tuple[str, int | None]]:
    return [(p.code, p.seq) for p in report.problems if not p.warning]


def resealed(row: dict[str, Any], key: ChainKey | None) -> str:
    fields = {k: v for k, v in row.items() if k != "hash"}
    if key is None:
        fields["key_id"] = None
    return event_hash(**fields, key=key)


# -- an insider without the key ---------------------------------------------------------------

def test_every_event_names_its_key_and_verifies(ledger: Engine) -> None:
    append(ledger, 4)
    stored = rows(ledger)
    assert {r["key_id"] for r in stored} == {KEY_A.key_id}
    assert stored[0]["prev_hash"] == GENESIS_HASH
    report = verify(ledger)
    assert report.ok
    assert codes(report) == []


@pytest.mark.parametrize("seal", ["sha256", "wrong_secret"])
def test_a_rewritten_event_resealed_without_the_key_is_found_where_it_was_rewritten(
        ledger: Engine, seal: str) -> None:
    """The 0.3.0 chain let anyone re-hash an altered event and its successors; now the seal
    of the altered event itself is wrong, whatever the attacker recomputes."""
    append(ledger, 5)
    stored = rows(ledger)
    forged = {**stored[2], "payload": {"n": 999}}
    if seal == "sha256":
        forged["hash"] = sha256(forged["prev_hash"] + "anything")
    else:
        forged["hash"] = resealed(forged, OUTSIDER)
    later = {**stored[3], "prev_hash": forged["hash"]}
    later["hash"] = resealed(later, OUTSIDER)

    def rewrite(connection: Connection) -> None:
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 3).values(
            payload=forged["payload"], hash=forged["hash"]))
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(
            prev_hash=later["prev_hash"], hash=later["hash"]))

    tamper(ledger, rewrite)
    report = verify(ledger)
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("hash_mismatch", 3)


def test_an_unkeyed_event_appended_by_an_insider_is_found(ledger: Engine) -> None:
    append(ledger, 3)
    last = rows(ledger)[-1]
    forged: dict[str, Any] = {
        "seq": 4, "id": str(uuid.uuid4()), "occurred_at": T0, "kind": "review_overdue",
        "request_id": None, "actor": "engine", "flow_run_id": None,
        "payload": {"deadline": "2026-12-01"}, "prev_hash": last["hash"], "key_id": None}
    forged["hash"] = resealed(forged, None)
    tamper(ledger, lambda c: c.execute(insert(EVENTS), [forged]))
    assert codes(verify(ledger)) == [("unkeyed_event", 4)]


def test_an_event_naming_an_unknown_key_is_found(ledger: Engine) -> None:
    append(ledger, 2)
    last = rows(ledger)[-1]
    stranger = ChainKey("someone-else", bytes(range(64, 96)))
    forged: dict[str, Any] = {
        "seq": 3, "id": str(uuid.uuid4()), "occurred_at": T0, "kind": "test_event",
        "request_id": None, "actor": "tester", "flow_run_id": None, "payload": {},
        "prev_hash": last["hash"], "key_id": stranger.key_id}
    forged["hash"] = event_hash(**forged, key=stranger)
    tamper(ledger, lambda c: c.execute(insert(EVENTS), [forged]))
    assert codes(verify(ledger)) == [("unknown_key", 3)]


def test_an_engine_without_a_key_ring_refuses_to_append(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    migrate(engine)
    with Session(engine) as session, session.begin(), pytest.raises(ChainKeyError):
        append_events(session=session, events=[NewEvent("test_event", T0, "tester")])
    engine.dispose()


# -- rotation ---------------------------------------------------------------------------------

def test_a_rotated_key_is_handed_over_on_the_chain(ledger: Engine) -> None:
    append(ledger, 3)
    ring = ChainKeys(current=KEY_B, retired=(KEY_A,))
    append(keyed(ledger, ring), 2, start=3)
    stored = rows(ledger)
    assert [(r["kind"], r["key_id"]) for r in stored[3:]] == [
        ("chain_key_rotated", KEY_B.key_id), ("test_event", KEY_B.key_id),
        ("test_event", KEY_B.key_id)]
    rotation = stored[3]["payload"]
    assert rotation["from_key_id"] == KEY_A.key_id
    assert rotation["handover"] == handover(KEY_A, prev_hash=stored[2]["hash"],
                                            new_key_id=KEY_B.key_id)
    assert verify(keyed(ledger, ring)).ok
    # without the retired key, its events cannot be verified
    assert ("unknown_key", 1) in codes(verify(keyed(ledger, ChainKeys(current=KEY_B))))


def test_a_key_change_without_a_handover_is_found(ledger: Engine) -> None:
    """Someone holding only the new key cannot splice it onto the chain: the rotation event
    needs the old key's handover."""
    append(ledger, 3)
    last = rows(ledger)[-1]
    forged: dict[str, Any] = {
        "seq": 4, "id": str(uuid.uuid4()), "occurred_at": T0, "kind": "chain_key_rotated",
        "request_id": None, "actor": "engine", "flow_run_id": None,
        "payload": {"from_key_id": KEY_A.key_id, "to_key_id": KEY_B.key_id,
                    "handover": "0" * 64},
        "prev_hash": last["hash"], "key_id": KEY_B.key_id}
    forged["hash"] = event_hash(**forged, key=KEY_B)
    tamper(ledger, lambda c: c.execute(insert(EVENTS), [forged]))
    ring = ChainKeys(current=KEY_B, retired=(KEY_A,))
    assert codes(verify(keyed(ledger, ring))) == [("key_changed_without_rotation", 4)]


def test_opening_a_ledger_whose_head_key_is_not_in_the_ring_fails_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", f"{KEY_A.key_id}:{KEY_A.secret.hex()}")
    settings = load_settings(data_dir=tmp_path)
    append(open_ledger(settings), 1)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", f"{KEY_B.key_id}:{KEY_B.secret.hex()}")
    with pytest.raises(ChainKeyError, match=KEY_A.key_id):
        open_ledger(load_settings(data_dir=tmp_path))
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", f"{KEY_A.key_id}:{KEY_A.secret.hex()},"
                                               f"{KEY_B.key_id}:{KEY_B.secret.hex()}")
    engine = open_ledger(load_settings(data_dir=tmp_path))
    with Session(engine) as session, session.begin():
        assert record_rotation(session=session)
    assert verify(engine).ok


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "no chain key"),
    ("k1", "is not '<key id>:<hex secret>'"),
    ("k1:" + "zz" * 32, "hexadecimal"),
    ("k1:abcd", "at least 32 bytes"),
    ("bad id:" + "ab" * 32, "key id"),
    (f"k1:{'ab' * 32}\nk1:{'cd' * 32}", "appears twice"),
])
def test_a_malformed_key_ring_is_refused_without_showing_a_secret(text: str,
                                                                   complaint: str) -> None:
    with pytest.raises(ChainKeyError, match=complaint) as refused:
        parse_keyring(text, "DISCLOSURE_CHAIN_KEY")
    assert "abab" not in str(refused.value)
    assert "cdcd" not in str(refused.value)


def legacy_events(count: int) -> list[dict[str, Any]]:
    """Events as 0.3.0 wrote them: a plain sha256, no key id."""
    rows, prev = [], GENESIS_HASH
    for n in range(count):
        row: dict[str, Any] = {
            "seq": n + 1, "id": str(uuid.uuid4()), "occurred_at": T0, "kind": "test_event",
            "request_id": None, "actor": "tester", "flow_run_id": None, "payload": {"n": n},
            "prev_hash": prev, "key_id": None}
        row["hash"] = prev = event_hash(**row)
        rows.append(row)
    return rows


def test_a_ledger_from_before_the_keyed_chain_goes_on_keyed(ledger: Engine) -> None:
    """0.3.0's events (a plain sha256, no key id) stay verifiable where the key ring says they
    came first (``unkeyed-until``); the first event appended after the upgrade is the rotation to
    a key, and from there on every event is sealed."""
    with ledger.begin() as connection:
        connection.execute(insert(EVENTS), legacy_events(3))
    with pytest.raises(ChainKeyError, match="unkeyed-until"):
        append(ledger, 1)  # a ring that does not know of them: no append
    assert codes(verify(ledger)) == [("unkeyed_event", seq) for seq in (1, 2, 3)]
    upgraded = keyed(ledger, ChainKeys(current=KEY_A, unkeyed_until=3))
    append(upgraded, 2, start=3)
    stored = rows(ledger)
    assert [(r["kind"], r["key_id"]) for r in stored] == [
        ("test_event", None)] * 3 + [("chain_key_rotated", KEY_A.key_id)] + [
        ("test_event", KEY_A.key_id)] * 2
    assert stored[3]["payload"] == {"from_key_id": None, "to_key_id": KEY_A.key_id,
                                    "handover": None}
    report = verify(upgraded)
    assert report.ok
    assert [p.code for p in report.problems if p.warning] == ["unkeyed_events"]


def test_the_key_file_made_for_a_0_3_ledger_says_which_events_came_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        if name != "DISCLOSURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    settings = load_settings(data_dir=tmp_path)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(insert(EVENTS), legacy_events(4))
    engine.dispose()
    opened = open_ledger(settings)  # the first open of the upgrade makes the key file
    assert settings.chain_key_file.read_text().splitlines()[0] == "unkeyed-until:4"
    append(opened, 1)
    assert verify(opened).ok
    assert main(["audit", "verify"]) == 0


def test_a_chain_re_hashed_without_the_key_is_found_however_far_back(ledger: Engine) -> None:
    """The "downgrade": an insider without the key deletes an event in the middle and re-hashes
    the whole chain as if it were written before the chain was keyed. The key ring knows there
    were no such events."""
    append(ledger, 6)
    stored = rows(ledger)
    kept = [r for r in stored if r["seq"] != 2]

    def downgrade(connection: Connection) -> None:
        connection.execute(delete(EVENTS))
        prev = GENESIS_HASH
        for seq, row in enumerate(kept, start=1):
            forged = {**row, "seq": seq, "prev_hash": prev, "key_id": None}
            forged["hash"] = prev = event_hash(**{k: v for k, v in forged.items()
                                                  if k != "hash"})
            connection.execute(insert(EVENTS), [forged])

    tamper(ledger, downgrade)
    report = verify(ledger)
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("unkeyed_event", 1)


# -- checkpoints --------------------------------------------------------------------------------

def checkpoint(engine: Engine, folder: Path, *, now: datetime | None = None) -> Path:
    report = verify(engine)
    assert report.ok
    assert report.head_seq is not None
    keys = ChainKeys(current=KEY_A)
    return write_checkpoint(seal_checkpoint(keys=keys, seq=report.head_seq,
                                            head_hash=report.head_hash,
                                            now=now or datetime.now(UTC)), folder)


def test_a_tail_cut_off_with_its_rows_is_found_against_a_checkpoint(ledger: Engine,
                                                                    tmp_path: Path) -> None:
    """Deleting the last events leaves a valid chain; only a checkpoint written outside the
    database shows that events are gone."""
    append(ledger, 5)
    written = checkpoint(ledger, tmp_path / "checkpoints")
    assert json.loads(written.read_text())["seq"] == 5
    tamper(ledger, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.seq >= 4)))
    assert verify(ledger).ok  # without the checkpoint nothing is wrong
    report = verify(ledger, checkpoints=read_checkpoints(tmp_path / "checkpoints"))
    assert codes(report) == [("checkpoint_missing", 5)]


def test_a_tail_rewritten_by_the_key_holder_is_found_against_a_checkpoint(
        ledger: Engine, tmp_path: Path) -> None:
    append(ledger, 4)
    checkpoint(ledger, tmp_path)
    stored = rows(ledger)

    def rewrite_from_third(connection: Connection) -> None:
        prev = stored[1]["hash"]
        for row in stored[2:]:
            forged = {**row, "prev_hash": prev, "payload": {"n": -1}}
            forged["hash"] = prev = event_hash(**{k: v for k, v in forged.items()
                                                  if k != "hash"}, key=KEY_A)
            connection.execute(update(EVENTS).where(EVENTS.c.seq == row["seq"]).values(
                payload=forged["payload"], prev_hash=forged["prev_hash"], hash=forged["hash"]))

    tamper(ledger, rewrite_from_third)
    assert verify(ledger).ok  # the key's holder sealed a consistent chain
    report = verify(ledger, checkpoints=read_checkpoints(tmp_path))
    assert codes(report) == [("checkpoint_mismatch", 4)]


def test_a_forged_or_unreadable_checkpoint_is_found(ledger: Engine, tmp_path: Path) -> None:
    append(ledger, 3)
    written = checkpoint(ledger, tmp_path)
    data = json.loads(written.read_text())
    (tmp_path / "checkpoint-forged.json").write_text(json.dumps({**data, "seq": 2}))
    stranger = {**data, "key_id": "someone-else"}
    (tmp_path / "checkpoint-stranger.json").write_text(json.dumps(stranger))
    (tmp_path / "checkpoint-garbage.json").write_text("not json")
    report = verify(ledger, checkpoints=read_checkpoints(tmp_path))
    assert sorted(p.code for p in report.problems) == [
        "checkpoint_forged", "checkpoint_unreadable", "checkpoint_unverifiable"]
    assert report.checkpoints == 1


def test_no_checkpoint_or_an_old_one_is_a_warning(ledger: Engine, tmp_path: Path) -> None:
    append(ledger, 2)
    empty = verify(ledger, checkpoints=read_checkpoints(tmp_path / "none"))
    assert empty.ok
    assert [p.code for p in empty.problems] == ["no_checkpoint"]
    checkpoint(ledger, tmp_path, now=datetime.now(UTC) - timedelta(days=3))
    old = verify(ledger, checkpoints=read_checkpoints(tmp_path))
    assert old.ok
    assert [p.code for p in old.problems] == ["checkpoint_stale"]


def test_the_commands_checkpoint_and_verify_against_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        if name != "DISCLOSURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    engine = open_ledger(load_settings())
    append(engine, 3)
    assert main(["audit", "checkpoint"]) == 0
    (written,) = (tmp_path / "var" / "checkpoints").glob("checkpoint-*.json")
    assert json.loads(written.read_text())["seq"] == 3
    assert main(["audit", "rotate-key"]) == 0
    assert len((tmp_path / "var" / "chain.keys").read_text().split()) == 2
    capsys.readouterr()
    assert main(["audit", "verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["checkpoints"], report["head"]["seq"]) == (True, 1, 4)
    tamper(engine, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.seq >= 3)))
    assert main(["audit", "verify"]) == 1
    assert "checkpoint_missing" in capsys.readouterr().out
    assert main(["audit", "checkpoint"]) == 1  # never a checkpoint of a broken record
    assert len(list((tmp_path / "var" / "checkpoints").glob("checkpoint-*.json"))) == 1

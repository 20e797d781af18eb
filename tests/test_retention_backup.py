"""Backups of the ledger and retention (issue #14): ``disclosure db backup|restore`` and the KEK
rotation (``disclosure retention rewrap``), as an operator runs them, on a SQLite ledger with a
synthetic history of 2026."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from sqlalchemy import Engine, select
from sqlmodel import Session
from test_retention import LONG_AFTER, database_bytes, done, shred_events

from cli.main import main
from flows.retention import apply_retention
from flows.runtime import open_ledger as flows_open_ledger
from legal_bases.accountability import load_accountability
from legal_bases.table import load_table
from records import data_keys
from records.db import open_ledger
from records.errors import DataKeyError
from records.ledger import get_request, raw_body_of
from records.models import AuditEvent, DeliveryRow
from records.pseudonym import Pseudonymizer
from records.retention import run_retention
from records.settings import load_settings
from records.synthetic_history import History, write_history
from records.verification import verify_record
from records.vocabulary import EventKind

#: The history is of early 2025: on the real clock, the shortest terms (one year from the final
#: decision: invalid submissions, requests refused under no known ground) have ended, so the
#: command line and the flow, which run on the real clock, have something to shred.
START = datetime(2025, 1, 6, 8, tzinfo=UTC)
END = datetime(2025, 3, 28, 17, tzinfo=UTC)
OLD_KEK = f"kek-old:{secrets.token_hex(32)}"
NEW_KEK = f"kek-new:{secrets.token_hex(32)}"


@dataclass
class Installation:
    folder: Path
    history: History

    @property
    def ledger_file(self) -> Path:
        return self.folder / "ledger.db"

    def open(self) -> Engine:
        return open_ledger(load_settings())


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installation]:
    """The embedded set-up in a folder of its own, its KEK ring in the environment."""
    for name in ("DISCLOSURE_DATABASE_URL", "DISCLOSURE_DATA_KEK_BLOCK",
                 "DISCLOSURE_CHAIN_KEY_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DISCLOSURE_DATA_KEK", OLD_KEK)
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        history = write_history(engine=engine, pseudonymizer=Pseudonymizer.from_settings(settings),
                                 tables=[(START, load_table())], requests=120, seed=2,
                                 start=START, end=END, persons=50, invalid_share=0.15)
    finally:
        engine.dispose()
    return Installation(tmp_path, history)


def readable(engine: Engine, request_id: str) -> bool:
    with Session(engine) as session:
        row = get_request(session=session, request_id=request_id)
        assert row is not None
        return raw_body_of(session=session, row=row) is not None


def intact(engine: Engine) -> bool:
    with Session(engine) as session:
        return verify_record(session=session).ok


def test_a_backup_taken_after_shredding_restores_intact_and_stays_unreadable(
        installation: Installation, capsys: pytest.CaptureFixture[str]) -> None:
    engine = installation.open()
    due = {t.request_id for t in installation.history.truths if done(t)}
    with Session(engine) as session:
        wrapped = data_keys.wrapped_keys(session, sorted(due))
    run_retention(engine, accountability=load_accountability(), now=LONG_AFTER)
    engine.dispose()
    backup = installation.folder / "backups" / "after.db"
    assert main(["db", "backup", str(backup)]) == 0
    assert backup.stat().st_mode & 0o777 == 0o600
    stored = database_bytes(backup)
    assert not [r for r in due if wrapped[r].encode() in stored]
    assert not [s.number for t in installation.history.truths for s in t.subjects
                if s.number.encode() in stored]

    installation.ledger_file.write_bytes(b"a ledger gone wrong")  # what a restore is for
    assert main(["db", "restore", str(backup)]) == 0
    out = capsys.readouterr().out
    assert "audit verify: intact" in out
    engine = installation.open()
    try:
        assert intact(engine)
        assert not any(readable(engine, r) for r in due)
        waiting = [t.request_id for t in installation.history.truths if not done(t)]
        assert waiting
        assert all(readable(engine, r) for r in waiting)
    finally:
        engine.dispose()
    assert (installation.folder / "ledger.db.replaced").read_bytes() == b"a ledger gone wrong"


def test_a_backup_older_than_a_shredding_is_shredded_again_when_restored(
        installation: Installation, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    backup = installation.folder / "before.db"
    assert main(["db", "backup", str(backup)]) == 0
    engine = installation.open()
    run = run_retention(engine, accountability=load_accountability(), now=LONG_AFTER)
    engine.dispose()
    assert run.shredded > 0
    # the restore's retention runs on the same (later) clock as the shredding did
    monkeypatch.setattr("cli.db.run_retention", lambda engine, **kw: run_retention(
        engine, **kw | {"now": LONG_AFTER}))
    assert main(["db", "restore", str(backup)]) == 0
    out = capsys.readouterr().out
    due = {t.request_id for t in installation.history.truths if done(t)}
    assert f"retention: {len(due)} request(s) past their term shredded again" in out
    engine = installation.open()
    try:
        assert intact(engine)
        assert not any(readable(engine, r) for r in due)
    finally:
        engine.dispose()


def test_once_its_kek_is_rotated_out_a_backup_taken_before_opens_no_more(
        installation: Installation, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    old_backup = installation.folder / "old.db"
    assert main(["db", "backup", str(old_backup)]) == 0
    some = installation.history.truths[0].request_id
    # a new KEK at the end of the ring becomes current; rewrap moves every key under it
    monkeypatch.setenv("DISCLOSURE_DATA_KEK", f"{OLD_KEK}\n{NEW_KEK}")
    assert main(["retention", "rewrap"]) == 0
    out = capsys.readouterr().out
    assert "nothing is wrapped by kek-old any more" in out
    # the old KEK destroyed: the ledger opens and reads with the new one alone ...
    monkeypatch.setenv("DISCLOSURE_DATA_KEK", NEW_KEK)
    engine = installation.open()
    try:
        assert intact(engine)
        assert readable(engine, some)
        with Session(engine) as session:
            assert set(data_keys.keys_by_kek(session)) == {"kek-new"}
    finally:
        engine.dispose()
    # ... while the backup taken before opens no more: none of its keys unwraps
    installation.ledger_file.unlink()
    old_backup.replace(installation.ledger_file)
    engine = installation.open()
    try:
        with pytest.raises(DataKeyError, match="kek-old, which is not in the KEK ring"):
            readable(engine, some)
        with Session(engine) as session:
            report = verify_record(session=session)
        assert not report.ok
        assert {p.code for p in report.problems} == {"data_key_unusable"}
    finally:
        engine.dispose()


def test_a_retention_run_killed_half_way_loses_nothing_and_shreds_nothing_early(
        installation: Installation) -> None:
    """SIGKILL after the second batch (no ``finally``, as a power cut): the two batches are
    shredded with their events, nothing else; the next run takes the rest, each once."""
    engine = installation.open()
    try:  # what is due today, on the real clock the command line runs on
        due = {d.request_id for d in run_retention(
            engine, accountability=load_accountability(), dry_run=True).due}
    finally:
        engine.dispose()
    assert len(due) > 10
    env = {**os.environ, "DISCLOSURE_FAULTS": "shredded:kill@2"}
    command = [sys.executable, "-m", "cli.main", "retention", "--batch-size", "5"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False, cwd=Path(__file__).resolve().parents[1])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    engine = installation.open()
    try:
        first = shred_events(engine)
        assert sum(first.values()) == 10
        assert set(first) <= due
        assert all(not readable(engine, r) for r in first)
        assert all(readable(engine, r) for r in due - set(first))
        assert intact(engine)
    finally:
        engine.dispose()
    again = subprocess.run(command[:-2], env=dict(os.environ), capture_output=True, text=True,
                           timeout=120, check=False, cwd=Path(__file__).resolve().parents[1])
    assert again.returncode == 0, again.stderr
    assert f"({len(due) - 10} now" in again.stdout
    engine = installation.open()
    try:
        assert shred_events(engine) == Counter(due)
        assert intact(engine)
    finally:
        engine.dispose()


def test_the_nightly_flow_shreds_cleans_the_outbox_and_reads_its_kek_from_a_secret_block(
        installation: Installation, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply-retention`` on a Prefect server, its KEK ring in a Prefect Secret block: what is
    due is shredded, the outbox is cleaned of collected and expired deliveries on the record
    (and only those), and the artifact says so with ids and counts only."""
    Secret(value=OLD_KEK).save("disclosure-kek-test", overwrite=True)
    monkeypatch.delenv("DISCLOSURE_DATA_KEK")
    monkeypatch.setenv("DISCLOSURE_DATA_KEK_BLOCK", "disclosure-kek-test")
    outbox = installation.folder / "outbox" / "belastingdienst"
    outbox.mkdir(parents=True)
    with Session(flows_open_ledger(load_settings())) as session:
        keys = list(session.execute(select(DeliveryRow.idempotency_key).limit(3)).scalars())
    collected, expired, fresh = (outbox / f"{k}.json" for k in keys)
    unrecorded = outbox / "delivery-not-on-the-record.json"
    for path in (collected, expired, fresh, unrecorded):
        path.write_text("{}")
    (outbox / f"{keys[0]}.collected").write_text("")
    old = time.time() - 40 * 86400
    for path in (expired, unrecorded):
        os.utime(path, (old, old))
    # drop-off files filed away: one 40 days ago (its report's time), one today
    processed = installation.folder / "dropoff" / "belastingdienst" / "processed"
    processed.mkdir(parents=True)
    for name in ("old.jsonl", "new.jsonl"):
        (processed / name).write_text('{"subjects": [{"bsn": "111222333"}]}\n')
        (processed / f"{name}.report.json").write_text("{}")
    os.utime(processed / "old.jsonl.report.json", (old, old))

    engine = flows_open_ledger(load_settings())
    try:  # what is due today, on the real clock the flow runs on
        due = {d.request_id for d in run_retention(
            engine, accountability=load_accountability(), dry_run=True).due}
    finally:
        engine.dispose()
    assert due
    state = apply_retention(return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["shredded"] == len(due)
    assert result["outbox_removed"] == 2
    assert result["dropoff_files_removed"] == 1
    assert sorted(p.name for p in processed.iterdir()) == [
        "new.jsonl", "new.jsonl.report.json", "old.jsonl.report.json"]
    assert sorted(p.name for p in outbox.iterdir()) == sorted([fresh.name, unrecorded.name])
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["retention"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    markdown = str(artifact.data)
    assert f"**{len(due)}** request(s) past their retention term were shredded" in markdown
    assert "Outbox: 2 file(s) were removed (1 collected, 1 kept 30 day(s) or more)" in markdown
    assert "Drop-off: 1 request file(s) filed away long enough were removed" in markdown
    assert not [s.number for t in installation.history.truths for s in t.subjects
                if s.number in markdown]
    engine = flows_open_ledger(load_settings())
    try:
        with Session(engine) as session:
            cleaned = session.execute(select(AuditEvent).where(
                AuditEvent.kind == EventKind.OUTBOX_CLEANED.value)).scalars().all()  # type: ignore[arg-type]
            [dropped] = session.execute(select(AuditEvent).where(
                AuditEvent.kind == EventKind.DROPOFF_FILES_REMOVED.value)).scalars().all()  # type: ignore[arg-type]
        assert sorted(e.payload["idempotency_key"] for e in cleaned) == sorted(keys[:2])
        assert dropped.payload == {"partner_id": "belastingdienst", "processed": 1}
        assert intact(engine)
    finally:
        engine.dispose()

"""Cleaning the file drop's outbox: collected or expired deliveries go, nothing else does."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connectors import outbox
from connectors.destinations import STAGING_FOLDER, FileDrop
from connectors.errors import ConnectorError, OutboxCleanupError
from connectors.outbox import (
    OutboxFile,
    Removal,
    delivery_key,
    outbox_files,
    sweep_outbox,
)
from legal_bases.errors import DisclosureError

NOW = datetime(2025, 3, 31, 12, 0, tzinfo=UTC)
KEEP_DAYS = 7
SECRET = '{"bsn":"111222333","surname":"Jansen"}\n'


def put(root: Path, partner: str, key: str, *, age: timedelta = timedelta(0),
        collected: bool = False) -> Path:
    """A delivered file ``<root>/<partner>/<key>.json`` that landed ``age`` before NOW."""
    folder = root / partner
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    path.write_text(SECRET, "utf-8")
    moment = (NOW - age).timestamp()
    os.utime(path, (moment, moment))
    if collected:
        (folder / f"{key}.collected").write_text("ok", "utf-8")
    return path


def recorded(*keys: str) -> Callable[[str], bool]:
    return lambda key: key in keys


def everything(key: str) -> bool:
    return True


def sweep(root: Path, *, is_recorded: Callable[[str], bool] = everything,
          dry_run: bool = False, now: datetime = NOW) -> list[Removal]:
    return sweep_outbox(root, now=now, keep_days=KEEP_DAYS, is_recorded=is_recorded,
                        dry_run=dry_run)


def names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


# -- listing --------------------------------------------------------------------------------------

def test_the_outbox_lists_every_partners_deliveries_sorted(tmp_path: Path) -> None:
    put(tmp_path, "gemeente-utrecht", "delivery-b", collected=True)
    put(tmp_path, "cbs", "delivery-z", age=timedelta(days=2))
    put(tmp_path, "gemeente-utrecht", "delivery-a")
    files = outbox_files(tmp_path)
    assert [(f.partner_id, f.key, f.collected) for f in files] == [
        ("cbs", "delivery-z", False),
        ("gemeente-utrecht", "delivery-a", False),
        ("gemeente-utrecht", "delivery-b", True),
    ]
    assert files[0].written_at == NOW - timedelta(days=2)
    assert files[0].written_at.tzinfo is UTC
    assert files[0].size == len(SECRET.encode())
    assert files[0].path == tmp_path / "cbs" / "delivery-z.json"


def test_a_root_that_does_not_exist_holds_nothing(tmp_path: Path) -> None:
    assert outbox_files(tmp_path / "nowhere") == []
    assert sweep(tmp_path / "nowhere") == []


def test_a_real_file_drop_delivery_is_found_under_its_key_and_partner(tmp_path: Path) -> None:
    receipt = FileDrop(tmp_path, "gemeente-utrecht").deliver(
        idempotency_key="delivery-0001", document={"bsn": "111222333"})
    (file,) = outbox_files(tmp_path)  # the staging folder FileDrop made is not listed
    assert (tmp_path / STAGING_FOLDER).is_dir()
    assert file == OutboxFile(partner_id="gemeente-utrecht", key="delivery-0001",
                              path=Path(receipt.location), written_at=file.written_at,
                              collected=False, size=receipt.size)
    assert abs(file.written_at - receipt.delivered_at) < timedelta(seconds=5)


def test_symlinks_staging_hidden_and_other_files_are_skipped_and_left(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "precious.json"
    target.write_text(SECRET, "utf-8")
    root = tmp_path / "outbox"
    old = timedelta(days=30)
    put(root, "cbs", "delivery-1", age=old)
    folder = root / "cbs"
    (folder / "delivery-link.json").symlink_to(target)
    (folder / "delivery-link.collected").write_text("", "utf-8")
    (folder / "delivery-dir.json").mkdir()
    (folder / ".delivery-2.json").write_text(SECRET, "utf-8")
    (folder / "notes.txt").write_text("x", "utf-8")
    (root / "linked-partner").symlink_to(elsewhere)
    put(root, STAGING_FOLDER, "delivery-3", age=old)
    put(root, ".hidden", "delivery-4", age=old)
    assert [f.key for f in outbox_files(root)] == ["delivery-1"]
    before = names(root) - {"cbs/delivery-1.json"}

    assert [r.key for r in sweep(root)] == ["delivery-1"]
    assert names(root) == before
    assert target.read_text("utf-8") == SECRET
    assert (folder / "delivery-link.json").is_symlink()


def test_a_bulk_part_belongs_to_its_manifests_delivery() -> None:
    assert delivery_key("delivery-abc-part-0001") == "delivery-abc"
    assert delivery_key("delivery-abc-part-12345") == "delivery-abc"
    assert delivery_key("delivery-abc") == "delivery-abc"
    assert delivery_key("delivery-abc-partial") == "delivery-abc-partial"
    assert delivery_key("delivery-abc-part-") == "delivery-abc-part-"


# -- what goes ------------------------------------------------------------------------------------

def test_a_collected_delivery_is_removed_with_its_marker(tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    put(tmp_path, "cbs", "delivery-2")
    removals = sweep(tmp_path)
    assert removals == [Removal(partner_id="cbs", key="delivery-1", reason="collected",
                                written_at=NOW, size=len(SECRET.encode()))]
    assert names(tmp_path) == {"cbs/delivery-2.json"}


def test_a_delivery_expires_at_exactly_keep_days_and_not_a_second_before(
        tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-old", age=timedelta(days=KEEP_DAYS))
    put(tmp_path, "cbs", "delivery-young", age=timedelta(days=KEEP_DAYS) - timedelta(seconds=1))
    assert [(r.key, r.reason) for r in sweep(tmp_path)] == [("delivery-old", "expired")]
    assert names(tmp_path) == {"cbs/delivery-young.json"}
    # a second later, it is due too
    assert [r.key for r in sweep(tmp_path, now=NOW + timedelta(seconds=1))] == ["delivery-young"]
    assert names(tmp_path) == set()


def test_a_delivery_not_on_the_record_is_never_touched(tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-1", age=timedelta(days=365))
    put(tmp_path, "cbs", "delivery-2", collected=True)
    put(tmp_path, "cbs", "delivery-3", age=timedelta(days=365))
    before = names(tmp_path)
    asked: list[str] = []

    def is_recorded(key: str) -> bool:
        asked.append(key)
        return key == "delivery-3"

    assert [r.key for r in sweep(tmp_path, is_recorded=is_recorded)] == ["delivery-3"]
    assert names(tmp_path) == before - {"cbs/delivery-3.json"}
    assert sorted(asked) == ["delivery-1", "delivery-2", "delivery-3"]


def test_bulk_parts_follow_their_manifests_record(tmp_path: Path) -> None:
    old = timedelta(days=30)
    # a bulk delivery on the record: parts and manifest go
    for key in ("delivery-a-part-0001", "delivery-a-part-0002", "delivery-a"):
        put(tmp_path, "cbs", key, age=old)
    # a bulk delivery half-way (parts delivered, manifest not recorded): nothing goes
    put(tmp_path, "cbs", "delivery-b-part-0001", age=old, collected=True)
    put(tmp_path, "cbs", "delivery-b-part-0002", age=old)
    asked: list[str] = []

    def is_recorded(key: str) -> bool:
        asked.append(key)
        return key == "delivery-a"

    removals = sweep(tmp_path, is_recorded=is_recorded)
    assert [r.key for r in removals] == ["delivery-a", "delivery-a-part-0001",
                                         "delivery-a-part-0002"]
    assert names(tmp_path) == {"cbs/delivery-b-part-0001.json",
                               "cbs/delivery-b-part-0001.collected",
                               "cbs/delivery-b-part-0002.json"}
    assert sorted(asked) == ["delivery-a", "delivery-b"]  # the ledger is asked once a delivery


def test_a_dry_run_touches_nothing_and_lists_what_the_real_run_removes(tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    put(tmp_path, "cbs", "delivery-2", age=timedelta(days=KEEP_DAYS))
    put(tmp_path, "cbs", "delivery-3")
    put(tmp_path, "rivm", "delivery-4", age=timedelta(days=90))
    (tmp_path / "rivm" / "delivery-5.collected").write_text("", "utf-8")  # a stale marker
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*")
              if p.is_file()}
    planned = sweep(tmp_path, dry_run=True)
    planned_again = sweep(tmp_path, dry_run=True)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*")
            if p.is_file()} == before
    assert planned == planned_again
    assert [(r.partner_id, r.key, r.reason) for r in planned] == [
        ("cbs", "delivery-1", "collected"), ("cbs", "delivery-2", "expired"),
        ("rivm", "delivery-4", "expired")]
    assert sweep(tmp_path) == planned
    assert names(tmp_path) == {"cbs/delivery-3.json"}


def test_a_sweep_is_idempotent(tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    put(tmp_path, "cbs", "delivery-2", age=timedelta(days=KEEP_DAYS + 1))
    put(tmp_path, "cbs", "delivery-3")
    assert len(sweep(tmp_path)) == 2
    after = names(tmp_path)
    assert sweep(tmp_path) == []
    assert names(tmp_path) == after == {"cbs/delivery-3.json"}


# -- crashes and races ----------------------------------------------------------------------------

def test_the_file_goes_before_its_marker_and_then_the_folder_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    steps: list[str] = []
    unlink = Path.unlink

    def recording_unlink(self: Path, missing_ok: bool = False) -> None:
        steps.append(f"unlink {self.name}")
        unlink(self, missing_ok)

    def recording_fsync(root: Path, folder: Path) -> None:
        steps.append(f"fsync {folder.name}")

    monkeypatch.setattr(Path, "unlink", recording_unlink)
    monkeypatch.setattr(outbox, "_fsync_folder", recording_fsync)
    sweep(tmp_path)
    assert steps == ["unlink delivery-1.json", "unlink delivery-1.collected", "fsync cbs"]


def test_a_crash_between_file_and_marker_leaves_a_marker_the_next_sweep_removes(
        tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-2")
    # what a crash after unlinking delivery-1.json but before its marker leaves
    (tmp_path / "cbs" / "delivery-1.collected").write_text("", "utf-8")
    with capture_logs() as logs:
        assert sweep(tmp_path) == []
    assert names(tmp_path) == {"cbs/delivery-2.json"}
    assert logs[-1]["stale_markers"] == 1


def test_a_file_the_partner_removed_itself_leaves_only_its_marker_to_clean(
        tmp_path: Path) -> None:
    path = put(tmp_path, "cbs", "delivery-1", collected=True)
    path.unlink()  # the partner took it away and left its marker
    assert outbox_files(tmp_path) == []
    assert sweep(tmp_path, is_recorded=recorded("delivery-1")) == []
    assert names(tmp_path) == set()


def test_a_file_that_vanishes_before_its_removal_was_collected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path, "cbs", "delivery-1", age=timedelta(days=KEEP_DAYS))
    listing = outbox.outbox_files

    def listing_then_partner_collects(root: Path) -> list[OutboxFile]:
        files = listing(root)
        for file in files:
            file.path.unlink()  # the partner collects it between listing and unlinking
        return files

    monkeypatch.setattr(outbox, "outbox_files", listing_then_partner_collects)
    removals = sweep(tmp_path)
    assert [(r.key, r.reason) for r in removals] == [("delivery-1", "collected")]
    assert names(tmp_path) == set()


def test_a_file_that_cannot_be_removed_raises_naming_its_path_after_earlier_removals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    put(tmp_path, "cbs", "delivery-2", collected=True)
    put(tmp_path, "cbs", "delivery-3", collected=True)
    unlink = Path.unlink

    def refusing_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == "delivery-2.json":
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refusing_unlink)
    with capture_logs() as logs, pytest.raises(OutboxCleanupError) as raised:
        sweep(tmp_path)
    assert isinstance(raised.value, ConnectorError)
    assert isinstance(raised.value, DisclosureError)
    assert raised.value.path == "cbs/delivery-2.json"
    assert str(raised.value) == ("the file-drop outbox could not clean cbs/delivery-2.json: "
                                 "Permission denied")
    assert str(tmp_path) not in str(raised.value)
    assert names(tmp_path) == {f"cbs/delivery-{n}.{s}" for n in (2, 3)
                               for s in ("json", "collected")}  # the first one stays removed
    assert logs[-1]["event"] == "outbox_sweep_failed"
    assert logs[-1]["removed"] == 1

    monkeypatch.setattr(Path, "unlink", unlink)
    assert [r.key for r in sweep(tmp_path)] == ["delivery-2", "delivery-3"]  # a rerun continues
    assert names(tmp_path) == set()


# -- arguments and the log ------------------------------------------------------------------------

@pytest.mark.parametrize("keep_days", [0, -1])
def test_keep_days_below_one_is_refused(tmp_path: Path, keep_days: int) -> None:
    path = put(tmp_path, "cbs", "delivery-1", age=timedelta(days=365), collected=True)
    with pytest.raises(ValueError, match="keep_days"):
        sweep_outbox(tmp_path, now=NOW, keep_days=keep_days, is_recorded=everything)
    assert path.exists()


def test_now_must_be_timezone_aware(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        sweep_outbox(tmp_path, now=NOW.replace(tzinfo=None), keep_days=KEEP_DAYS,
                     is_recorded=everything)


def test_the_log_has_counts_only(tmp_path: Path) -> None:
    put(tmp_path, "cbs", "delivery-1", collected=True)
    put(tmp_path, "cbs", "delivery-2", age=timedelta(days=KEEP_DAYS))
    with capture_logs() as logs:
        sweep(tmp_path)
    assert logs == [{"event": "outbox_swept", "log_level": "info", "collected": 1,
                     "expired": 1, "stale_markers": 0, "dry_run": False}]
    assert "111222333" not in repr(logs)

"""Cleaning a file drop's outbox: delivered files go once collected, or after a number of days.

A :class:`~connectors.destinations.FileDrop` writes each delivery as
``<root>/<partner_id>/<idempotency_key>.json`` (a bulk delivery as parts
``delivery-<decision>-part-<n>.json`` and a manifest ``delivery-<decision>.json``). Those files
hold personal data, so they do not stay there for ever: :func:`sweep_outbox` removes them.

**The collection convention.** A partner acknowledges a file by creating a **marker**
``<idempotency_key>.collected`` next to it (any content; a regular file, not a symlink). A
partner may instead remove the ``.json`` itself; then only a stale marker can be left, which the
sweep removes. What counts as a delivery file: a regular, non-hidden ``*.json`` file whose name
is a valid idempotency key, in a non-hidden partner folder. The staging folder ``.staging``,
hidden files and folders, symlinks (an outbox's symlink is not ours to delete: it is neither
followed nor removed) and anything that is not a regular file are left alone.

**What goes.** A file whose delivery is on the record — ``is_recorded(delivery_key(key))``, where
:func:`delivery_key` maps a bulk part to its manifest's key — is removed when it is collected
(marker present), or else once it is ``keep_days`` days old (by its mtime, the moment it
landed). A file whose delivery is not on the record (a bulk delivery half-way, a delivery whose
receipt is not recorded yet) is never touched, collected or not, however old.

**How.** The ``.json`` is unlinked first, then its marker, then the partner's folder is
fsynced: a crash in between leaves only a marker, which the next sweep removes as a stale marker
(a marker without its ``.json``; removed silently, not reported as a :class:`Removal`). A file
that is gone when the sweep comes to unlink it was taken by the partner meanwhile: it is
reported as collected. Any other failure (permission, say) raises
:class:`~connectors.errors.OutboxCleanupError` naming the path relative to the root; what was
removed before stays removed, and since the sweep is idempotent a rerun continues.

Nothing here reads a file's content. The log (``disclosure.connectors``) gets counts only.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

from connectors.destinations import STAGING_FOLDER, check_idempotency_key
from connectors.errors import InvalidIdempotencyKeyError, OutboxCleanupError

#: The suffix of a delivered file, and of the marker with which a partner says it collected one.
DELIVERY_SUFFIX = ".json"
COLLECTED_SUFFIX = ".collected"

#: Why a file was removed.
RemovalReason = Literal["collected", "expired"]

_PART = re.compile(r"^(?P<delivery>.+)-part-[0-9]+$")


@dataclass(frozen=True)
class OutboxFile:
    """One delivered file in a partner's folder (its name and metadata, never its content)."""

    partner_id: str
    #: The idempotency key it was delivered under: the file's stem.
    key: str
    path: Path
    #: When it landed (its mtime), in UTC.
    written_at: datetime
    #: Whether the partner left its ``<key>.collected`` marker.
    collected: bool
    size: int


@dataclass(frozen=True)
class Removal:
    """One delivered file the sweep removed (or, in a dry run, would remove)."""

    partner_id: str
    key: str
    reason: RemovalReason
    written_at: datetime
    size: int


def delivery_key(file_key: str) -> str:
    """The key under which the delivery a file belongs to is recorded in the ledger: a bulk
    part's ``delivery-<decision>-part-<n>`` belongs to ``delivery-<decision>`` (its manifest);
    any other key is its own."""
    match = _PART.match(file_key)
    return match["delivery"] if match else file_key


def outbox_files(root: Path) -> list[OutboxFile]:
    """Every delivered file in every partner folder under ``root``, sorted by partner and key.

    Skips the staging folder, hidden files and folders, symlinks and anything that is not a
    regular file (see the module's docstring). A root that does not exist holds nothing.
    """
    root = Path(root)
    found: list[OutboxFile] = []
    for partner_id, folder in _partner_folders(root):
        deliveries, markers = _scan(root, folder)
        for key, info in deliveries.items():
            found.append(OutboxFile(
                partner_id=partner_id, key=key, path=folder / f"{key}{DELIVERY_SUFFIX}",
                written_at=datetime.fromtimestamp(info.st_mtime, UTC),
                collected=key in markers, size=info.st_size))
    return sorted(found, key=lambda f: (f.partner_id, f.key))


def sweep_outbox(root: Path, *, now: datetime, keep_days: int,
                 is_recorded: Callable[[str], bool], dry_run: bool = False) -> list[Removal]:
    """Remove the delivered files under ``root`` that were collected, or are ``keep_days`` days
    old or older at ``now``, if their delivery is on the record (``is_recorded`` is asked with
    :func:`delivery_key` of the file's key); then remove stale markers. Returns what was removed,
    sorted by partner and key (stale markers are not listed).

    ``dry_run`` lists what would be removed and touches nothing. ``keep_days`` must be at least
    1 and ``now`` timezone-aware (:class:`ValueError` otherwise). Raises
    :class:`~connectors.errors.OutboxCleanupError` on the first file that cannot be removed.
    """
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 1:
        raise ValueError(f"keep_days must be a whole number of days, at least 1; "
                         f"got {keep_days!r}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    root = Path(root)
    keep = timedelta(days=keep_days)
    recorded: dict[str, bool] = {}  # the parts of a bulk delivery ask the ledger once
    removals: list[Removal] = []
    stale = 0
    log = structlog.get_logger("disclosure.connectors")
    try:
        for file in outbox_files(root):
            key = delivery_key(file.key)
            if key not in recorded:
                recorded[key] = bool(is_recorded(key))
            if not recorded[key]:
                continue
            reason: RemovalReason
            if file.collected:
                reason = "collected"
            elif now - file.written_at >= keep:
                reason = "expired"
            else:
                continue
            if not dry_run:
                reason = _remove(root, file, reason)
            removals.append(Removal(partner_id=file.partner_id, key=file.key, reason=reason,
                                    written_at=file.written_at, size=file.size))
        stale = _stale_markers(root, remove=not dry_run)
    except OutboxCleanupError:
        log.warning("outbox_sweep_failed", removed=len(removals))
        raise
    collected = sum(1 for r in removals if r.reason == "collected")
    log.info("outbox_swept", collected=collected, expired=len(removals) - collected,
             stale_markers=stale, dry_run=dry_run)
    return removals


# -- helpers ------------------------------------------------------------------------------------

def _partner_folders(root: Path) -> list[tuple[str, Path]]:
    """The non-hidden real folders directly under ``root`` (not the staging folder, no symlink)."""
    try:
        with os.scandir(root) as entries:
            return sorted((entry.name, Path(entry.path)) for entry in entries
                          if not entry.name.startswith(".") and entry.name != STAGING_FOLDER
                          and entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _failure(root, root, exc) from None


def _scan(root: Path, folder: Path) -> tuple[dict[str, os.stat_result], set[str]]:
    """The regular delivery files in ``folder`` by key (with their stat), and the keys of its
    regular marker files."""
    deliveries: dict[str, os.stat_result] = {}
    markers: set[str] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                suffix = next((s for s in (DELIVERY_SUFFIX, COLLECTED_SUFFIX)
                               if name.endswith(s)), None)
                if suffix is None or name.startswith("."):
                    continue
                key = name[:-len(suffix)]
                if not _is_key(key):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # gone since the listing
                if not stat.S_ISREG(info.st_mode):
                    continue
                if suffix == DELIVERY_SUFFIX:
                    deliveries[key] = info
                else:
                    markers.add(key)
    except FileNotFoundError:
        return {}, set()  # the folder went since the root was listed
    except OSError as exc:
        raise _failure(root, folder, exc) from None
    return deliveries, markers


def _remove(root: Path, file: OutboxFile, reason: RemovalReason) -> RemovalReason:
    """Unlink ``file``, then its marker, then fsync the folder; the reason it went (a file
    that is gone already was collected by the partner meanwhile)."""
    try:
        file.path.unlink()
    except FileNotFoundError:
        reason = "collected"
    except OSError as exc:
        raise _failure(root, file.path, exc) from None
    _remove_marker(root, file.path.with_name(f"{file.key}{COLLECTED_SUFFIX}"))
    _fsync_folder(root, file.path.parent)
    return reason


def _stale_markers(root: Path, *, remove: bool) -> int:
    """How many markers have no delivery file beside them; removes them if ``remove``."""
    count = 0
    for _, folder in _partner_folders(root):
        _, markers = _scan(root, folder)
        stale = [key for key in sorted(markers)
                 if not os.path.lexists(folder / f"{key}{DELIVERY_SUFFIX}")]
        count += len(stale)
        if remove and stale:
            for key in stale:
                _remove_marker(root, folder / f"{key}{COLLECTED_SUFFIX}")
            _fsync_folder(root, folder)
    return count


def _remove_marker(root: Path, marker: Path) -> None:
    """Unlink ``marker`` if it is a regular file (a symlink or folder is not ours to delete)."""
    try:
        if stat.S_ISREG(marker.lstat().st_mode):
            marker.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _failure(root, marker, exc) from None


def _fsync_folder(root: Path, folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return  # the partner's folder went meanwhile: nothing left in it to make durable
    except OSError as exc:
        raise _failure(root, folder, exc) from None
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _failure(root, folder, exc) from None
    finally:
        os.close(fd)


def _is_key(key: str) -> bool:
    with contextlib.suppress(InvalidIdempotencyKeyError):
        return check_idempotency_key(key) == key
    return False


def _failure(root: Path, path: Path, exc: OSError) -> OutboxCleanupError:
    """The project's error for ``exc`` on ``path``, named relative to ``root`` (ids, no data)."""
    try:
        where = path.relative_to(root).as_posix()
    except ValueError:
        where = path.name
    return OutboxCleanupError(path=where, reason=exc.strerror or type(exc).__name__)

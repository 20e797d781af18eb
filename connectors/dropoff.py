"""The folder drop-off: partners leave request files, the engine takes them in.

Layout, one folder per partner under the drop-off root::

    <root>/<partner_id>/<name>.json        one request (a JSON object)
    <root>/<partner_id>/<name>.jsonl       a batch: one request per line
    <root>/<partner_id>/processed/         files taken in, each with <name>.report.json
    <root>/<partner_id>/rejected/          files of which nothing could be taken in, with report

Partners write a file under a name starting with ``.`` or ending in ``.tmp``/``.part`` and rename
it when complete; such names are not read (a file written in place may be read half-written: its
partner's later lines then land in the moved file; the README tells partners so). A file whose
content changed while it was read is not moved (:class:`DropFileChangedError`): the next sweep
reads it again. A file is moved only after
every entry in it is on the record and its report is written beside its destination, so a run
that is stopped half-way finds the file again, and the ledger's intake key (the file's sha256
and the line) makes the second run record nothing twice. An entry that is not UTF-8 is recorded
with its undecodable bytes replaced, and refused (``bad_encoding``). What was received stays on
the record, sealed in the ledger; the filed-away file itself, which holds it in clear, is removed
by the retention run once it has been filed away for ``DISCLOSURE_DROPOFF_KEEP_DAYS`` days
(:meth:`DropBox.sweep_filed`); its report, which holds ids and codes, stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.errors import ConnectorError
from legal_bases import limits

PROCESSED = "processed"
REJECTED = "rejected"
SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True, slots=True)
class DropFile:
    """A file a partner left in its drop-off folder."""

    partner_id: str
    path: Path
    sha256: str

    @property
    def batch(self) -> bool:
        return self.path.suffix == ".jsonl"


@dataclass(frozen=True, slots=True)
class Entry:
    """One request in a drop file: its line (1 for a .json file) and its text."""

    line: int
    text: str
    too_large: bool = False
    #: the offset of the first byte that is not UTF-8 (``text`` has it replaced), or None
    bad_encoding: int | None = None


class DropFileChangedError(ConnectorError):
    """Raised when a drop file's content changed while it was taken in (its partner was still
    writing it): it is left where it is, for the next sweep."""


#: The longest file name most file systems take (a report is named after its file).
_NAME_MAX = 255


def _is_ready(path: Path) -> bool:
    name = path.name
    return (path.is_file() and path.suffix in SUFFIXES and not name.startswith(".")
            and not name.endswith((".tmp", ".part")))


def _digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class FiledAway:
    """A request file removed from a partner's processed/ or rejected/ folder."""

    partner_id: str
    folder: str  # processed or rejected
    name: str
    filed_at: datetime


class DropBox:
    """The drop-off root: lists waiting files, reads their entries, files them away."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sweep_filed(self, *, now: datetime, keep_days: int,
                    dry_run: bool = False) -> list[FiledAway]:
        """Remove the request files filed away (processed/ and rejected/) at least ``keep_days``
        days ago — the ledger holds what they said, sealed — and return them; their reports
        stay. The time a file was filed away is its report's (written just before the move),
        else the file's own. Symbolic links and anything not a regular file are left alone."""
        if keep_days < 1:
            raise ValueError("keep_days must be at least 1")
        cutoff = now.timestamp() - keep_days * 86400
        removed: list[FiledAway] = []
        if not self.root.is_dir():
            return removed
        for partner in sorted(p for p in self.root.iterdir()
                              if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
            for sub in (PROCESSED, REJECTED):
                folder = partner / sub
                if not folder.is_dir() or folder.is_symlink():
                    continue
                for path in sorted(folder.iterdir()):
                    if path.is_symlink() or not path.is_file() or path.suffix not in SUFFIXES \
                            or path.name.endswith(".report.json"):
                        continue
                    report = path.with_name(_fitted(path.name, ".report.json"))
                    filed = (report if report.is_file() else path).stat().st_mtime
                    if filed > cutoff:
                        continue
                    removed.append(FiledAway(partner.name, sub, path.name,
                                             datetime.fromtimestamp(filed, UTC)))
                    if not dry_run:
                        path.unlink(missing_ok=True)
        return removed

    def ensure_partner_folders(self, partner_ids: list[str]) -> None:
        """Make each partner's drop folder (and its processed/rejected folders)."""
        for partner_id in partner_ids:
            for sub in ("", PROCESSED, REJECTED):
                (self.root / partner_id / sub).mkdir(parents=True, exist_ok=True)

    def waiting(self) -> list[DropFile]:
        """Files ready to be taken in, oldest first, across every partner folder (not hidden,
        not temporary). A folder or file that cannot be read is skipped (and found again next
        time), never the end of the listing."""
        if not self.root.is_dir():
            return []
        found: list[tuple[float, DropFile]] = []
        for folder in sorted(self.root.iterdir()):
            try:
                if not folder.is_dir():
                    continue
                for path in folder.iterdir():
                    if _is_ready(path):
                        found.append((path.stat().st_mtime,
                                      DropFile(folder.name, path, _digest(path))))
            except OSError:
                continue
        return [drop for _, drop in sorted(found, key=lambda f: (f[0], str(f[1].path)))]

    @staticmethod
    def entries(drop: DropFile) -> Iterator[Entry]:
        """The requests in a file: the whole file, or each non-blank line of a batch."""
        if not drop.batch:
            size = drop.path.stat().st_size
            if size > limits.MAX_REQUEST_BYTES:
                yield Entry(1, "", too_large=True)
                return
            yield _entry(1, drop.path.read_bytes())
            return
        with drop.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if len(raw) > limits.MAX_REQUEST_BYTES:
                    yield Entry(number, "", too_large=True)
                    continue
                if raw.strip():
                    yield _entry(number, raw.strip())

    @staticmethod
    def file_away(drop: DropFile, *, accepted: bool, report: dict[str, Any]) -> Path:
        """Write the report, then move the file beside it (processed/ or rejected/)."""
        target_dir = drop.path.parent / (PROCESSED if accepted else REJECTED)
        target_dir.mkdir(parents=True, exist_ok=True)
        if _digest(drop.path) != drop.sha256:
            raise DropFileChangedError(f"a file of partner {drop.partner_id} changed while it "
                                       "was taken in; it is read again by the next sweep")
        target = target_dir / drop.path.name
        if target.exists():  # a partner reused a name: keep both
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = target_dir / _fitted(f"{drop.path.stem}.{stamp}", drop.path.suffix)
        report_path = target_dir / _fitted(target.name, ".report.json")
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".report-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=2, ensure_ascii=False))
        os.replace(tmp, report_path)
        os.replace(drop.path, target)
        return target


def _entry(line: int, raw: bytes) -> Entry:
    try:
        return Entry(line, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Entry(line, raw.decode("utf-8", errors="replace"), bad_encoding=exc.start)


def _fitted(stem: str, suffix: str) -> str:
    """``stem + suffix``, the stem shortened (with a digest of it, so two names stay apart)
    where the whole would be longer than a file name may be."""
    name = stem + suffix
    if len(name.encode("utf-8")) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(stem.encode("utf-8")).hexdigest()[:12]
    keep = stem.encode("utf-8")[:_NAME_MAX - len(suffix.encode("utf-8")) - 14]
    return f"{keep.decode('utf-8', errors='ignore')}-{digest}{suffix}"

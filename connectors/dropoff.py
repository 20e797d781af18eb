"""The folder drop-off: partners leave request files, the engine takes them in.

Layout, one folder per partner under the drop-off root::

    <root>/<partner_id>/<name>.json        one request (a JSON object)
    <root>/<partner_id>/<name>.jsonl       a batch: one request per line
    <root>/<partner_id>/processed/         files taken in, each with <name>.report.json
    <root>/<partner_id>/rejected/          files of which nothing could be taken in, with report

Partners write a file under a name starting with ``.`` or ending in ``.tmp``/``.part`` and rename
it when complete; such names are not read. A file is moved only after every entry in it is on
the record and its report is written beside its destination, so a run that is stopped half-way
finds the file again, and the ledger's intake key (the file's sha256 and the line) makes the
second run record nothing twice. Files are never deleted: what was received stays.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


class DropBox:
    """The drop-off root: lists waiting files, reads their entries, files them away."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_partner_folders(self, partner_ids: list[str]) -> None:
        """Make each partner's drop folder (and its processed/rejected folders)."""
        for partner_id in partner_ids:
            for sub in ("", PROCESSED, REJECTED):
                (self.root / partner_id / sub).mkdir(parents=True, exist_ok=True)

    def waiting(self) -> list[DropFile]:
        """Files ready to be taken in, oldest first, across every partner folder."""
        if not self.root.is_dir():
            return []
        found = [DropFile(folder.name, path, _digest(path))
                 for folder in sorted(self.root.iterdir()) if folder.is_dir()
                 for path in folder.iterdir() if _is_ready(path)]
        return sorted(found, key=lambda f: (f.path.stat().st_mtime, str(f.path)))

    @staticmethod
    def entries(drop: DropFile) -> Iterator[Entry]:
        """The requests in a file: the whole file, or each non-blank line of a batch."""
        if not drop.batch:
            size = drop.path.stat().st_size
            if size > limits.MAX_REQUEST_BYTES:
                yield Entry(1, "", too_large=True)
                return
            yield Entry(1, drop.path.read_bytes().decode("utf-8", errors="replace"))
            return
        with drop.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if len(raw) > limits.MAX_REQUEST_BYTES:
                    yield Entry(number, "", too_large=True)
                    continue
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    yield Entry(number, text)

    @staticmethod
    def file_away(drop: DropFile, *, accepted: bool, report: dict[str, Any]) -> Path:
        """Write the report, then move the file beside it (processed/ or rejected/)."""
        target_dir = drop.path.parent / (PROCESSED if accepted else REJECTED)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / drop.path.name
        if target.exists():  # a partner reused a name: keep both
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = target_dir / f"{drop.path.stem}.{stamp}{drop.path.suffix}"
        report_path = target.with_name(target.name + ".report.json")
        tmp = report_path.with_name("." + report_path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), "utf-8")
        os.replace(tmp, report_path)
        os.replace(drop.path, target)
        return target

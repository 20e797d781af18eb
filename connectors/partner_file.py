"""The partner configuration file as something that changes: adding a partner, noticing edits.

``disclosure partners add`` appends an entry to the YAML file (comments and the other entries
stay as they are) after checking the whole resulting file exactly as :func:`load_partners`
would; a file that would not load is never written. :class:`PartnerSource` gives the intake API
the current directory: it looks at the file's modification time at most once a second and
re-reads it when it changed, so a partner added (or removed) while the API runs is known within
a second. A file that fails to load leaves the last good directory in use (logged).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import yaml

from connectors.errors import PartnerConfigError, UnknownPartnerError
from connectors.partners import Partner, PartnerDirectory, load_partners, parse_partners
from legal_bases.errors import Problem
from legal_bases.validator import load_yaml

#: Seconds between looks at the partner file's modification time.
RECHECK_SECONDS = 1.0


class PartnerSource:
    """The partner directory from a file, re-read when the file changes (or a fixed one)."""

    def __init__(self, path: Path | None = None, *, directory: PartnerDirectory | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if path is None and directory is None:
            raise ValueError("a partner source needs a file or a directory")
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._stamp = self._mtime()
        self._directory = directory if directory is not None else load_partners(self._file())

    @classmethod
    def fixed(cls, directory: PartnerDirectory) -> PartnerSource:
        """A source that never changes (tests, or a directory built in code)."""
        return cls(None, directory=directory)

    def _file(self) -> Path:
        assert self.path is not None
        return self.path

    def _mtime(self) -> int | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    @property
    def directory(self) -> PartnerDirectory:
        """The current directory (re-read first if the file changed since the last look)."""
        if self.path is not None and self._clock() - self._checked >= RECHECK_SECONDS:
            self.refresh()
        return self._directory

    def refresh(self) -> None:
        """Re-read the file now if its modification time changed."""
        with self._lock:
            self._checked = self._clock()
            stamp = self._mtime()
            if stamp == self._stamp or self.path is None:
                return
            try:
                directory = load_partners(self.path)
            except PartnerConfigError as exc:
                structlog.get_logger("disclosure.api").error(
                    "partners_reload_failed", source=self.path, problems=len(exc.problems))
                self._stamp = stamp
                return
            self._directory, self._stamp = directory, stamp

    def get(self, partner_id: str) -> Partner | None:
        return self.directory.get(partner_id)

    def by_oin(self, oin: str) -> Partner | None:
        try:
            return self.directory.by_oin(oin)
        except UnknownPartnerError:
            return None


def partner_entry(*, partner_id: str, name: str, body: str, oin: str,
                  https_url: str | None = None) -> dict[str, Any]:
    """A partner's configuration entry as ``partners add`` writes it."""
    entry: dict[str, Any] = {"id": partner_id, "name": name, "body": body, "oin": oin}
    if https_url is not None:
        entry["delivery"] = {"kind": "https", "url": https_url}
    return entry


def append_partner(path: Path, entry: dict[str, Any]) -> Partner:
    """Append ``entry`` to the partner file at ``path`` (created if missing); return the partner.

    The whole resulting file is checked first; :class:`PartnerConfigError` names every problem
    (a duplicate id or OIN among them) and nothing is written. The file is replaced atomically,
    under an exclusive lock beside it, so two operators adding at once both get in.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            existing = path.read_text("utf-8") if path.exists() else ""
            if existing and not existing.endswith("\n"):
                existing += "\n"
            block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True,
                                   default_flow_style=False)
            text = existing + block
            try:
                document = load_yaml(text)
            except yaml.YAMLError as exc:
                message = f"is not valid YAML: {exc}".replace("\n", " ")
                raise PartnerConfigError([Problem(str(path), "(file)", message)]) from None
            partners, problems = parse_partners(document, file=str(path), base=path.parent)
            if problems:
                raise PartnerConfigError(problems)
            added = next((p for p in partners if p.id == entry["id"]), None)
            if added is None:
                raise PartnerConfigError([Problem(str(path), "(file)",
                                                  "the new entry did not load")])
            PartnerDirectory(partners, source=str(path))  # duplicates refused here as well
            _replace(path, text)
            return added
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

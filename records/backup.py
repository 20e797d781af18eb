"""Backups of the embedded ledger (SQLite), and restoring one.

A backup is a consistent copy taken while the engine runs (SQLite's online backup), written
only for its owner (0600). It holds what the ledger holds: sealed submissions, wrapped data
keys, the chain — never a key that opens them (the KEK ring, the chain key ring and the
pseudonym key live outside the database: back those up apart, and keep them apart).

What retention means for backups (README: Backups and retention):

* a request shredded before the backup was taken is unreadable in it, as in the ledger;
* a backup taken *before* a request was shredded still holds that request's wrapped data key.
  It opens only with the KEK that wrapped it; once that KEK is rotated out
  (``disclosure retention rewrap``) and destroyed, nothing in such a backup opens any more. And a
  ledger restored from it shreds again, at once, everything past its term
  (:func:`restore` runs the retention), before anything else reads it.

PostgreSQL ledgers are backed up with the database's own tools (``pg_dump``); the same holds.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import Engine

from records.errors import LedgerError


class BackupError(LedgerError):
    """Raised when a backup cannot be taken or restored (the reason names the file)."""


def sqlite_file(engine: Engine) -> Path:
    """The database file of a SQLite ledger; :class:`BackupError` for any other."""
    if engine.dialect.name != "sqlite" or not engine.url.database or \
            engine.url.database == ":memory:":
        raise BackupError("only a SQLite ledger in a file is backed up by this command; back up "
                          "a PostgreSQL ledger with pg_dump (README: Backups and retention)")
    return Path(engine.url.database)


def backup(engine: Engine, target: Path) -> Path:
    """Copy the ledger, consistently and while it runs, to ``target`` (which must not exist)."""
    source = sqlite_file(engine)
    if target.exists():
        raise BackupError(f"{target} exists: a backup never overwrites a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    os.close(fd)
    try:
        live, copy = sqlite3.connect(source), sqlite3.connect(tmp)
        try:
            live.backup(copy)
            # a file that stands alone: no write-ahead log beside it
            copy.execute("PRAGMA journal_mode = DELETE")
            ok = copy.execute("PRAGMA integrity_check").fetchone()
        finally:
            copy.close()
            live.close()
        if ok is None or ok[0] != "ok":
            raise BackupError(f"the copy of {source} does not pass SQLite's integrity check")
        os.chmod(tmp, 0o600)
        os.link(tmp, target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from exc
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            Path(leftover).unlink(missing_ok=True)
    return target


def restore_file(source: Path, target: Path) -> None:
    """Put the backup ``source`` in place as the ledger file ``target`` (the engine stopped):
    the file is checked first, and the ledger it replaces is kept beside it as
    ``<name>.replaced``."""
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as copy:
            ok = copy.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"{source} is not a SQLite ledger: {exc}") from exc
    if ok is None or ok[0] != "ok":
        raise BackupError(f"{source} does not pass SQLite's integrity check")
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = target.with_name(target.name + ".replaced")
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{target}{suffix}")
        if old.exists():
            old.replace(Path(f"{kept}{suffix}"))
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)

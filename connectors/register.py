"""The source register: where released data comes from (DESIGN.md section 2, "fetch").

:class:`SourceRegister` is the interface the flows use; :class:`SqlRegister` reads the synthetic
register database (:mod:`connectors.register_models`), :class:`InMemoryRegister` is the fake for
tests of other modules. Both build their records with the same function, so they answer alike.

What a fetch promises:

* one record per **found** subject, in the order the subjects were asked for (a subject named
  twice counts once); a subject the register does not hold is listed in ``not_found`` and is not
  an error of the whole request;
* each record holds ``subject`` and **only the requested categories** (a category the register
  holds nothing of for that person is there as ``null``); the SQL register does not even read the
  other categories' columns;
* with ``pseudonymise``, ``subject`` is ``{"pseudonym": <code>}`` and no record carries the
  subject's BSN or onderwijsnummer anywhere. ``identificerende_nummers`` cannot be asked for then:
  the fetch raises :class:`~connectors.errors.IdentifiersInPseudonymisedFetchError` rather than
  quietly withholding it, because a decision that releases numbers *and* pseudonymises is a
  mistake upstream that must surface. As a last line of defence every pseudonymised record is
  checked for its subject's number; if one is found the fetch fails and releases nothing.

Whether a subject is **shielded** is asked separately (:meth:`SourceRegister.shielded`) before the
fetch, since a shielded subject sends the request to review first; a fetch also reports which of
the found subjects are shielded.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from connectors.errors import (
    IdentifierLeakError,
    IdentifiersInPseudonymisedFetchError,
    RegisterUnavailableError,
)
from connectors.register_models import create_register_schema, persons_table
from connectors.synthetic_people import generate_persons
from legal_bases.request import Subject
from legal_bases.vocabulary import Category, SubjectIdType

__all__ = [
    "DEFAULT_REGISTER_URL",
    "FetchResult",
    "InMemoryRegister",
    "Pseudonymise",
    "SourceRegister",
    "SqlRegister",
    "create_register_schema",
    "make_register_engine",
]

#: Where the embedded default keeps the synthetic register (a database apart from the ledger).
DEFAULT_REGISTER_URL = "sqlite:///var/register.db"
#: Most subject numbers in one ``IN (...)`` list: under SQLite's oldest limit of 999 parameters
#: (PostgreSQL allows 65,535), so 10,000 subjects take a dozen queries on either.
REGISTER_QUERY_CHUNK = 900
#: Seconds a SQLite connection waits for a lock (the register is read while it may be seeded).
REGISTER_SQLITE_TIMEOUT_S = 30

_T = TypeVar("_T")

#: Turns a subject into the pseudonymous code a delivery carries instead of its number.
Pseudonymise = Callable[[Subject], str]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetch found: the records to deliver, and the subjects the register does not hold.

    Its repr shows counts only: the records are personal data.
    """

    records: list[dict[str, Any]] = field(repr=False)
    not_found: list[Subject]
    shielded: list[Subject] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (f"FetchResult(records={len(self.records)}, not_found={len(self.not_found)}, "
                f"shielded={len(self.shielded)})")


class SourceRegister(ABC):
    """A register of persons from which released categories are fetched."""

    @abstractmethod
    def shielded(self, subjects: Sequence[Subject]) -> set[Subject]:
        """Those of ``subjects`` whose register entry is shielded (their request goes to review)."""

    @abstractmethod
    def fetch(self, *, subjects: Sequence[Subject], categories: Sequence[Category],
              pseudonymise: Pseudonymise | None) -> FetchResult:
        """The records of ``subjects`` with only ``categories``; see the module docstring."""


# -- shared by the implementations --------------------------------------------------------------

def _unique(subjects: Iterable[Subject]) -> list[Subject]:
    return list(dict.fromkeys(subjects))


def _categories(categories: Iterable[Category | str],
                pseudonymise: Pseudonymise | None) -> list[Category]:
    wanted = list(dict.fromkeys(Category(c) for c in categories))
    if pseudonymise is not None and Category.IDENTIFICERENDE_NUMMERS in wanted:
        raise IdentifiersInPseudonymisedFetchError
    return wanted


def _record(subject: Subject, data: Mapping[str, Any] | RowMapping, categories: Sequence[Category],
            pseudonymise: Pseudonymise | None) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if pseudonymise is None:
        record["subject"] = {subject.id_type.value: subject.number}
    else:
        record["subject"] = {"pseudonym": pseudonymise(subject)}
    for category in categories:
        value = data.get(category.value)
        if pseudonymise is not None and value is not None and subject.number in json.dumps(value):
            raise IdentifierLeakError(category.value)
        record[category.value] = value
    return record


def _assemble(subjects: Sequence[Subject],
              lookup: Callable[[Subject], Mapping[str, Any] | RowMapping | None],
              categories: Sequence[Category], pseudonymise: Pseudonymise | None, *,
              backend: str) -> FetchResult:
    """The fetch result of both registers: a record per found subject (only ``categories``),
    the subjects not found, the found ones that are shielded; logged by counts."""
    records: list[dict[str, Any]] = []
    not_found: list[Subject] = []
    shielded: list[Subject] = []
    for subject in subjects:
        entry = lookup(subject)
        if entry is None:
            not_found.append(subject)
            continue
        records.append(_record(subject, entry, categories, pseudonymise))
        if entry["shielded"]:
            shielded.append(subject)
    result = FetchResult(records=records, not_found=not_found, shielded=shielded)
    _log_fetch(asked=len(subjects), result=result, categories=categories,
               pseudonymised=pseudonymise is not None, backend=backend)
    return result


def _log_fetch(*, asked: int, result: FetchResult, categories: Sequence[Category],
               pseudonymised: bool, backend: str) -> None:
    log = structlog.get_logger("disclosure.connectors")
    log.info("register_fetched", backend=backend, subjects=asked, found=len(result.records),
             not_found=len(result.not_found), shielded=len(result.shielded),
             categories=[c.value for c in categories], pseudonymised=pseudonymised)


# -- the SQL register ---------------------------------------------------------------------------

def make_register_engine(url: str = DEFAULT_REGISTER_URL, **engine_options: Any) -> Engine:
    """An engine for the register at ``url``: SQLite, or PostgreSQL (``postgresql://`` = psycopg 3).

    Query parameters are hidden from SQLAlchemy's error messages (``hide_parameters``): they are
    subjects' numbers. A SQLite file's folder is created; SQLite runs in WAL mode so fetches can
    read while the register is being seeded.
    """
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine_options.setdefault("hide_parameters", True)
    engine_options.setdefault("json_serializer", _compact_json)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False,
                                                     "timeout": REGISTER_SQLITE_TIMEOUT_S},
                               **engine_options)

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            finally:
                cursor.close()

        return engine
    if backend == "postgresql":
        engine_options.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **engine_options)
    raise ValueError(f"the register runs on SQLite or PostgreSQL, not {backend!r}")


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _guarded(work: Callable[[], _T]) -> _T:
    """Run ``work``; database failures become :class:`RegisterUnavailableError`, not chained.

    SQLAlchemy's message of a failed statement quotes its parameters (subjects' numbers) unless
    the engine hides them; chaining would put that text into every traceback that gets logged,
    so the new error is raised after the handler: neither its cause nor its context is set. The
    driver's first line is kept for operational errors (connection refused, no such table).
    """
    try:
        return work()
    except OperationalError as exc:
        lines = str(exc.orig).strip().splitlines() if exc.orig is not None else []
        reason = f"{type(exc.orig).__name__}: {lines[0][:200] if lines else ''}"
    except DBAPIError as exc:
        reason = type(exc.orig).__name__
    except SQLAlchemyError as exc:
        reason = type(exc).__name__
    raise RegisterUnavailableError(reason)


class SqlRegister(SourceRegister):
    """The register in SQLite or PostgreSQL, read in chunked queries of released columns only."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __repr__(self) -> str:
        return f"SqlRegister({self._engine.url.render_as_string(hide_password=True)})"

    def _chunks(self, subjects: Sequence[Subject]) -> Iterator[tuple[SubjectIdType, list[str]]]:
        by_type: dict[SubjectIdType, list[str]] = {}
        for subject in subjects:
            by_type.setdefault(subject.id_type, []).append(subject.number)
        for id_type, numbers in by_type.items():
            for start in range(0, len(numbers), REGISTER_QUERY_CHUNK):
                yield id_type, numbers[start:start + REGISTER_QUERY_CHUNK]

    def shielded(self, subjects: Sequence[Subject]) -> set[Subject]:
        table = persons_table()
        found: set[Subject] = set()

        def query() -> None:
            with self._engine.connect() as connection:
                for id_type, numbers in self._chunks(_unique(subjects)):
                    statement = (select(table.c.number)
                                 .where(table.c.id_type == id_type.value,
                                        table.c.number.in_(numbers), table.c.shielded.is_(True)))
                    found.update(Subject(id_type, n)
                                 for n in connection.execute(statement).scalars())

        _guarded(query)
        return found

    def fetch(self, *, subjects: Sequence[Subject], categories: Sequence[Category],
              pseudonymise: Pseudonymise | None) -> FetchResult:
        wanted = _categories(categories, pseudonymise)
        unique = _unique(subjects)
        table = persons_table()
        # Only the released categories' columns are read: the others never leave the database.
        columns = [table.c.number, table.c.shielded, *(table.c[c.value] for c in wanted)]
        rows: dict[tuple[SubjectIdType, str], RowMapping] = {}

        def query() -> None:
            with self._engine.connect() as connection:
                for id_type, numbers in self._chunks(unique):
                    statement = select(*columns).where(table.c.id_type == id_type.value,
                                                       table.c.number.in_(numbers))
                    for found in connection.execute(statement):
                        rows[(id_type, found.number)] = found._mapping

        _guarded(query)
        return _assemble(unique, lambda s: rows.get((s.id_type, s.number)), wanted,
                         pseudonymise, backend="sql")


# -- the fake -----------------------------------------------------------------------------------

class InMemoryRegister(SourceRegister):
    """A register held in a dict: the fake for tests of flows and other modules.

    Rows have the shape of the SQL table's (``id_type``, ``number``, ``shielded`` and one value per
    category slug); :meth:`generated` fills it from the same generator as the seeded database.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self._entries: dict[Subject, dict[str, Any]] = {}
        for row in rows:
            subject = Subject(SubjectIdType(row["id_type"]), row["number"])
            self._entries[subject] = {c.value: copy.deepcopy(row.get(c.value)) for c in Category}
            self._entries[subject]["shielded"] = bool(row.get("shielded", False))

    @classmethod
    def generated(cls, *, persons: int, seed: int,
                  include: Sequence[Subject] = ()) -> InMemoryRegister:
        """A fake register with the same persons :func:`~connectors.register_seed.seed_register`
        would put in a database for this ``seed``."""
        return cls(generate_persons(persons=persons, seed=seed, include=include))

    def add(self, subject: Subject, *, shielded: bool = False,
            data: Mapping[Category, dict[str, Any] | None] | None = None) -> None:
        """Put a person into the fake register (replacing one with the same identifier)."""
        entry: dict[str, Any] = {c.value: None for c in Category}
        for category, value in (data or {}).items():
            entry[Category(category).value] = copy.deepcopy(value)
        entry["shielded"] = shielded
        self._entries[subject] = entry

    def subjects(self) -> list[Subject]:
        """Every subject in the fake register, in the order they were added."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"InMemoryRegister(persons={len(self._entries)})"

    def shielded(self, subjects: Sequence[Subject]) -> set[Subject]:
        return {s for s in subjects if s in self._entries and self._entries[s]["shielded"]}

    def fetch(self, *, subjects: Sequence[Subject], categories: Sequence[Category],
              pseudonymise: Pseudonymise | None) -> FetchResult:
        wanted = _categories(categories, pseudonymise)
        unique = _unique(subjects)

        def lookup(subject: Subject) -> Mapping[str, Any] | None:
            entry = self._entries.get(subject)
            if entry is None:
                return None
            return {"shielded": entry["shielded"],
                    **{c.value: copy.deepcopy(entry[c.value]) for c in wanted}}

        return _assemble(unique, lookup, wanted, pseudonymise, backend="memory")

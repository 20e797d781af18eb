"""Seeding the synthetic register with generated persons (:mod:`connectors.synthetic_people`),
and the few queries the tests, benchmarks and ``disclosure up`` ask of it.

"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine, func, insert, select, text, update

from connectors.errors import RegisterError, RegisterNotEmptyError
from connectors.register_models import create_register_schema, persons_table
from connectors.synthetic_people import SEED_BATCH_SIZE, generate_persons
from legal_bases.request import Subject
from legal_bases.vocabulary import Category, SubjectIdType


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What :func:`seed_register` made: counts per kind of person, and how long it took."""

    seed: int
    persons: int
    bsn: int
    onderwijsnummer: int
    shielded: int
    with_nationaliteit: int
    with_gezondheid: int
    with_strafrechtelijke_gegevens: int
    seconds: float = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "persons": self.persons, "bsn": self.bsn,
                "onderwijsnummer": self.onderwijsnummer, "shielded": self.shielded,
                "with_nationaliteit": self.with_nationaliteit,
                "with_gezondheid": self.with_gezondheid,
                "with_strafrechtelijke_gegevens": self.with_strafrechtelijke_gegevens,
                "seconds": round(self.seconds, 3)}


# -- seeding a database -------------------------------------------------------------------------

def seed_register(*, engine: Engine, persons: int, seed: int, include: Sequence[Subject] = (),
                  replace: bool = False) -> SeedReport:
    """Fill the register at ``engine`` with ``persons`` synthetic people (:func:`generate_persons`).

    The schema must exist (:func:`connectors.register.create_register_schema`). A register that
    already holds persons is refused unless ``replace``, which deletes them first, in the same
    transaction. Rows go in with bulk inserts of :data:`SEED_BATCH_SIZE`.
    """
    log = structlog.get_logger("disclosure.connectors")
    if persons < 0:
        raise RegisterError("the number of persons must not be negative")
    table = persons_table()
    started = time.perf_counter()
    counts = {"bsn": 0, "onderwijsnummer": 0, "shielded": 0, "nationaliteit": 0,
              "gezondheid": 0, "strafrechtelijke_gegevens": 0}
    with engine.begin() as connection:
        existing = connection.execute(select(func.count()).select_from(table)).scalar_one()
        if existing and not replace:
            raise RegisterNotEmptyError(existing)
        if existing:
            connection.execute(table.delete())
        batch: list[dict[str, Any]] = []
        for row in generate_persons(persons=persons, seed=seed, include=include):
            counts[row["id_type"]] += 1
            counts["shielded"] += row["shielded"]
            for special in ("nationaliteit", "gezondheid", "strafrechtelijke_gegevens"):
                counts[special] += row[special] is not None
            batch.append(row)
            if len(batch) >= SEED_BATCH_SIZE:
                connection.execute(insert(table), batch)
                batch = []
        if batch:
            connection.execute(insert(table), batch)
        # Fresh statistics, so the planner uses the subject index for the IN lists of a fetch.
        connection.execute(text(f"ANALYZE {table.name}"))
    report = SeedReport(
        seed=seed, persons=persons, bsn=counts["bsn"], onderwijsnummer=counts["onderwijsnummer"],
        shielded=counts["shielded"], with_nationaliteit=counts["nationaliteit"],
        with_gezondheid=counts["gezondheid"],
        with_strafrechtelijke_gegevens=counts["strafrechtelijke_gegevens"],
        seconds=time.perf_counter() - started)
    log.info("register_seeded", **report.to_dict())
    return report


def sample_subjects(*, engine: Engine, count: int, seed: int,
                    shielded: bool | None = None) -> list[Subject]:
    """``count`` subjects of the register, picked reproducibly by ``seed`` (for examples, tests
    and benchmarks). ``shielded`` limits the pick to shielded (True) or unshielded (False) persons.
    Fewer come back if the register holds fewer.
    """
    table = persons_table()
    query = select(table.c.id_type, table.c.number).order_by(table.c.person_id)
    if shielded is not None:
        query = query.where(table.c.shielded.is_(shielded))
    with engine.connect() as connection:
        keys = [(row.id_type, row.number) for row in connection.execute(query)]
    rng = random.Random(seed)  # noqa: S311 - a reproducible pick, not a secret
    picked = rng.sample(keys, min(count, len(keys)))
    return [Subject(SubjectIdType(id_type), number) for id_type, number in picked]


def find_shielded(*, engine: Engine, limit: int = 10) -> list[Subject]:
    """Up to ``limit`` shielded subjects of the register, in register order."""
    table = persons_table()
    query = (select(table.c.id_type, table.c.number).where(table.c.shielded.is_(True))
             .order_by(table.c.person_id).limit(limit))
    with engine.connect() as connection:
        return [Subject(SubjectIdType(r.id_type), r.number) for r in connection.execute(query)]


def find_with_category(*, engine: Engine, category: Category, limit: int = 10) -> list[Subject]:
    """Up to ``limit`` subjects for whom the register holds ``category`` (a special one, say)."""
    table = persons_table()
    column = table.c[category.value]
    query = (select(table.c.id_type, table.c.number).where(column.is_not(None))
             .order_by(table.c.person_id).limit(limit))
    with engine.connect() as connection:
        return [Subject(SubjectIdType(r.id_type), r.number) for r in connection.execute(query)]


def count_persons(*, engine: Engine) -> int:
    """How many persons the register holds."""
    with engine.connect() as connection:
        return int(connection.execute(
            select(func.count()).select_from(persons_table())).scalar_one())


def ensure_register(*, engine: Engine, persons: int, seed: int,
                    include: Sequence[Subject] = ()) -> SeedReport | None:
    """Create the register's schema and seed it on first start; leave a filled register alone.

    Returns the seed report, or None when the register already held persons.
    """
    create_register_schema(engine)
    if count_persons(engine=engine):
        return None
    return seed_register(engine=engine, persons=persons, seed=seed, include=include)


def set_shielded(*, engine: Engine, subjects: Sequence[Subject], shielded: bool) -> int:
    """Mark ``subjects`` as shielded or not (the register is a source, not a record: this is how
    its administrators keep it true); returns how many persons were changed."""
    table = persons_table()
    changed = 0
    with engine.begin() as connection:
        for subject in dict.fromkeys(subjects):
            result = connection.execute(
                update(table).where(table.c.id_type == subject.id_type.value,
                                    table.c.number == subject.number)
                .values(shielded=shielded))
            changed += result.rowcount
    return changed

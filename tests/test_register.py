"""The synthetic source register: seeding, identifiers, fetching, pseudonymising, shielding.

Every register test runs on a SQLite file and on PostgreSQL (a fresh schema per test, dropped
afterwards); the in-memory fake is held to the same contract.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlmodel import SQLModel
from structlog.testing import capture_logs

from connectors.errors import (
    IdentifierLeakError,
    IdentifiersInPseudonymisedFetchError,
    RegisterError,
    RegisterNotEmptyError,
    RegisterUnavailableError,
)
from connectors.register import (
    FetchResult,
    InMemoryRegister,
    SourceRegister,
    SqlRegister,
    create_register_schema,
    make_register_engine,
)
from connectors.register_models import persons_table, register_metadata
from connectors.register_seed import (
    count_persons,
    find_shielded,
    find_with_category,
    sample_subjects,
    seed_register,
)
from connectors.synthetic_people import generate_persons, is_valid_iban
from legal_bases.errors import DisclosureError
from legal_bases.identifiers import is_valid_bsn, is_valid_onderwijsnummer
from legal_bases.request import Subject
from legal_bases.vocabulary import SPECIAL_CATEGORIES, Category, SubjectIdType
from records.pseudonym import Pseudonymizer

POSTGRES_URL = os.environ.get("DISCLOSURE_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SEED = 20261128
PERSONS = 1_200
ALL_BUT_NUMBERS = [c for c in Category if c is not Category.IDENTIFICERENDE_NUMMERS]


def _unknown_bsns(count: int, taken: set[str]) -> list[Subject]:
    """Valid BSNs that the register does not hold."""
    return _unknown(count, taken, SubjectIdType.BSN, start=900_000_000)


def _unknown(count: int, taken: set[str], id_type: SubjectIdType, *, start: int) -> list[Subject]:
    valid = is_valid_bsn if id_type is SubjectIdType.BSN else is_valid_onderwijsnummer
    found: list[Subject] = []
    candidate = start
    while len(found) < count:
        candidate += 1
        number = f"{candidate:09d}"
        if valid(number) and number not in taken:
            found.append(Subject(id_type, number))
    return found


# -- engines ------------------------------------------------------------------------------------

def _postgres_admin() -> Engine:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no PostgreSQL here"
        engine.dispose()
        reason = f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return engine


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL schema, dropped after the test."""
    admin = _postgres_admin()
    schema = f"register_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_register_engine(POSTGRES_URL,
                                  connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_register_engine(f"sqlite:///{tmp_path / 'register.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """An empty register database with its schema, on each backend in turn."""
    fixture = "sqlite_engine" if request.param == "sqlite" else "postgres_engine"
    engine: Engine = request.getfixturevalue(fixture)
    create_register_schema(engine)
    return engine


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    seed_register(engine=engine, persons=PERSONS, seed=SEED)
    return engine


@pytest.fixture(params=["sql", "memory"])
def register(request: pytest.FixtureRequest, seeded: Engine) -> SourceRegister:
    """The seeded register through SqlRegister, and the same persons in the in-memory fake."""
    if request.param == "sql":
        return SqlRegister(seeded)
    return InMemoryRegister.generated(persons=PERSONS, seed=SEED)


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(b"k" * 32)


def _rows(engine: Engine) -> list[dict[str, Any]]:
    table = persons_table()
    with engine.connect() as connection:
        return [dict(r._mapping) for r in
                connection.execute(select(table).order_by(table.c.person_id))]


# -- seeding ------------------------------------------------------------------------------------

def test_the_generator_makes_the_same_persons_for_the_same_seed() -> None:
    first = list(generate_persons(persons=300, seed=7))
    again = list(generate_persons(persons=300, seed=7))
    other = list(generate_persons(persons=300, seed=8))
    assert first == again
    assert [r["number"] for r in first] != [r["number"] for r in other]


def test_seeding_the_same_seed_twice_gives_identical_rows(engine: Engine) -> None:
    first_report = seed_register(engine=engine, persons=500, seed=SEED)
    first = _rows(engine)
    again_report = seed_register(engine=engine, persons=500, seed=SEED, replace=True)
    again = _rows(engine)
    assert first == again
    assert first_report == again_report
    # What the database holds is exactly what the generator made (JSON survives the round trip).
    assert first == list(generate_persons(persons=500, seed=SEED))


def test_a_filled_register_is_not_seeded_again_by_accident(seeded: Engine) -> None:
    with pytest.raises(RegisterNotEmptyError) as caught:
        seed_register(engine=seeded, persons=10, seed=1)
    assert isinstance(caught.value, DisclosureError)
    assert count_persons(engine=seeded) == PERSONS


def test_seeded_people_have_valid_unique_identifiers_and_ibans() -> None:
    rows = list(generate_persons(persons=5_000, seed=SEED))
    keys = [(r["id_type"], r["number"]) for r in rows]
    assert len(set(keys)) == len(keys)
    by_type = {t: [n for k, n in keys if k == t] for t in ("bsn", "onderwijsnummer")}
    assert all(is_valid_bsn(n) for n in by_type["bsn"])
    assert all(is_valid_onderwijsnummer(n) for n in by_type["onderwijsnummer"])
    assert 0.03 < len(by_type["onderwijsnummer"]) / len(rows) < 0.15
    for row in rows:
        assert row["identificerende_nummers"] == {row["id_type"]: row["number"]}
        finance = row["financiele_gegevens"]
        if finance is not None:
            assert re.fullmatch(r"NL[0-9]{2}[A-Z]{4}[0-9]{10}", finance["iban"])
            assert is_valid_iban(finance["iban"])
        assert row["personalia"]["surname"]
        assert re.fullmatch(r"[0-9]{4} [A-Z]{2}", row["personalia"]["address"]["postcode"])


def test_a_few_percent_are_shielded_or_have_special_category_data() -> None:
    rows = list(generate_persons(persons=5_000, seed=SEED))
    shares = {"shielded": sum(r["shielded"] for r in rows) / len(rows)}
    for category in SPECIAL_CATEGORIES:
        shares[category.value] = sum(r[category.value] is not None for r in rows) / len(rows)
    for name, share in shares.items():
        assert 0.005 < share < 0.08, name


def test_a_number_never_appears_outside_identificerende_nummers() -> None:
    for row in generate_persons(persons=3_000, seed=SEED):
        others = {c.value: row[c.value] for c in ALL_BUT_NUMBERS}
        assert row["number"] not in json.dumps(others)


def test_included_subjects_are_in_the_register(engine: Engine) -> None:
    wanted = [Subject(SubjectIdType.BSN, "111222333"),
              Subject(SubjectIdType.ONDERWIJSNUMMER, "102791163")]
    seed_register(engine=engine, persons=50, seed=SEED, include=wanted)
    result = SqlRegister(engine).fetch(subjects=wanted, categories=[Category.PERSONALIA],
                                       pseudonymise=None)
    assert result.not_found == []
    assert [r["subject"] for r in result.records] == [{"bsn": "111222333"},
                                                      {"onderwijsnummer": "102791163"}]


def test_an_invalid_included_subject_is_refused_without_naming_it() -> None:
    with pytest.raises(RegisterError) as caught:
        list(generate_persons(persons=5, seed=1,
                              include=[Subject(SubjectIdType.BSN, "123456789")]))
    assert "123456789" not in str(caught.value)


def test_the_register_has_its_own_metadata_not_the_ledgers() -> None:
    assert register_metadata is not SQLModel.metadata
    assert "register_persons" not in SQLModel.metadata.tables


# -- fetching -----------------------------------------------------------------------------------

def test_fetch_returns_exactly_the_requested_categories(register: SourceRegister,
                                                        seeded: Engine) -> None:
    subjects = sample_subjects(engine=seeded, count=40, seed=1)
    categories = [Category.OPLEIDINGSGEGEVENS, Category.FINANCIELE_GEGEVENS]
    result = register.fetch(subjects=subjects, categories=categories, pseudonymise=None)
    expected = {(r["id_type"], r["number"]): r
                for r in generate_persons(persons=PERSONS, seed=SEED)}
    assert len(result.records) == 40
    for subject, record in zip(subjects, result.records, strict=True):
        assert set(record) == {"subject", "opleidingsgegevens", "financiele_gegevens"}
        assert record["subject"] == {subject.id_type.value: subject.number}
        source = expected[(subject.id_type.value, subject.number)]
        assert record["opleidingsgegevens"] == source["opleidingsgegevens"]
        assert record["financiele_gegevens"] == source["financiele_gegevens"]


def test_fetch_returns_only_the_requested_subjects_in_order_once_each(
        register: SourceRegister, seeded: Engine) -> None:
    subjects = sample_subjects(engine=seeded, count=25, seed=2)
    asked = [*subjects, subjects[0], subjects[3]]
    result = register.fetch(subjects=asked, categories=[Category.PERSONALIA], pseudonymise=None)
    assert [r["subject"] for r in result.records] == [
        {s.id_type.value: s.number} for s in subjects]
    assert result.not_found == []


def test_a_subject_not_in_the_register_is_reported_not_found(register: SourceRegister,
                                                             seeded: Engine) -> None:
    known = sample_subjects(engine=seeded, count=5, seed=3)
    taken = {r["number"] for r in generate_persons(persons=PERSONS, seed=SEED)}
    unknown = _unknown_bsns(2, taken)
    onderwijs_unknown, = _unknown(1, taken, SubjectIdType.ONDERWIJSNUMMER, start=109_999_000)
    asked = [unknown[0], *known, onderwijs_unknown, unknown[1]]
    result = register.fetch(subjects=asked, categories=[Category.PERSONALIA], pseudonymise=None)
    assert result.not_found == [unknown[0], onderwijs_unknown, unknown[1]]
    assert [r["subject"] for r in result.records] == [{s.id_type.value: s.number} for s in known]
    nobody = register.fetch(subjects=unknown, categories=[Category.PERSONALIA],
                            pseudonymise=None)
    assert nobody.records == []
    assert nobody.not_found == unknown


def test_a_category_the_register_holds_nothing_of_is_null(register: SourceRegister,
                                                          seeded: Engine) -> None:
    with_health = find_with_category(engine=seeded, category=Category.GEZONDHEID, limit=3)
    others = sample_subjects(engine=seeded, count=60, seed=4)
    result = register.fetch(subjects=[*with_health, *others], categories=[Category.GEZONDHEID],
                            pseudonymise=None)
    values = [r["gezondheid"] for r in result.records]
    assert all(v is not None for v in values[:3])
    assert None in values[3:]


def test_a_pseudonymised_fetch_carries_no_identifier_anywhere(
        register: SourceRegister, seeded: Engine, pseudonymizer: Pseudonymizer) -> None:
    subjects = sample_subjects(engine=seeded, count=300, seed=5)
    subjects += find_with_category(engine=seeded, category=Category.STRAFRECHTELIJKE_GEGEVENS)
    result = register.fetch(subjects=subjects, categories=ALL_BUT_NUMBERS,
                            pseudonymise=pseudonymizer.of)
    assert len(result.records) == len(set(subjects))
    dumped = json.dumps(result.records)
    for subject in subjects:
        assert subject.number not in dumped
    assert '"bsn"' not in dumped
    assert '"onderwijsnummer"' not in dumped
    assert "identificerende_nummers" not in dumped
    assert [r["subject"] for r in result.records] == [
        {"pseudonym": pseudonymizer.of(s)} for s in dict.fromkeys(subjects)]


def test_numbers_cannot_be_asked_for_in_a_pseudonymised_fetch(
        register: SourceRegister, seeded: Engine, pseudonymizer: Pseudonymizer) -> None:
    subjects = sample_subjects(engine=seeded, count=3, seed=6)
    with pytest.raises(IdentifiersInPseudonymisedFetchError):
        register.fetch(subjects=subjects,
                       categories=[Category.OPLEIDINGSGEGEVENS, Category.IDENTIFICERENDE_NUMMERS],
                       pseudonymise=pseudonymizer.of)


def test_a_number_hidden_in_other_data_stops_a_pseudonymised_fetch(
        pseudonymizer: Pseudonymizer) -> None:
    subject = Subject(SubjectIdType.BSN, "111222333")
    fake = InMemoryRegister()
    fake.add(subject, data={Category.OPLEIDINGSGEGEVENS: {"note": "pupil 111222333"}})
    with pytest.raises(IdentifierLeakError) as caught:
        fake.fetch(subjects=[subject], categories=[Category.OPLEIDINGSGEGEVENS],
                   pseudonymise=pseudonymizer.of)
    assert "111222333" not in str(caught.value)


def test_shielded_subjects_are_detected(register: SourceRegister, seeded: Engine) -> None:
    shielded = find_shielded(engine=seeded, limit=5)
    plain = sample_subjects(engine=seeded, count=50, seed=7, shielded=False)
    assert len(shielded) == 5
    assert register.shielded([*plain, *shielded]) == set(shielded)
    assert register.shielded(plain) == set()
    result = register.fetch(subjects=[*plain[:3], shielded[0]],
                            categories=[Category.PERSONALIA], pseudonymise=None)
    assert result.shielded == [shielded[0]]


def test_the_fake_and_the_database_answer_alike(seeded: Engine,
                                                pseudonymizer: Pseudonymizer) -> None:
    subjects = sample_subjects(engine=seeded, count=100, seed=8)
    fake = InMemoryRegister.generated(persons=PERSONS, seed=SEED)
    for pseudonymise in (None, pseudonymizer.of):
        categories = ALL_BUT_NUMBERS if pseudonymise else list(Category)
        sql = SqlRegister(seeded).fetch(subjects=subjects, categories=categories,
                                        pseudonymise=pseudonymise)
        memory = fake.fetch(subjects=subjects, categories=categories, pseudonymise=pseudonymise)
        assert sql.records == memory.records
        assert sql.shielded == memory.shielded


@pytest.mark.slow
def test_a_fetch_of_5000_subjects_works(engine: Engine) -> None:
    seed_register(engine=engine, persons=6_000, seed=SEED)
    subjects = sample_subjects(engine=engine, count=5_000, seed=9)
    taken = {s.number for s in subjects}
    unknown = _unknown_bsns(50, taken | {r.number for r in
                                         sample_subjects(engine=engine, count=6_000, seed=0)})
    register = SqlRegister(engine)
    started = time.perf_counter()
    result = register.fetch(subjects=[*subjects, *unknown],
                            categories=[Category.PERSONALIA, Category.OPLEIDINGSGEGEVENS],
                            pseudonymise=None)
    elapsed = time.perf_counter() - started
    assert len(result.records) == 5_000
    assert result.not_found == unknown
    assert elapsed < 30
    assert len(register.shielded(subjects)) == len(result.shielded)


# -- failure and privacy ------------------------------------------------------------------------

def test_a_register_without_its_schema_is_unavailable(sqlite_engine: Engine) -> None:
    subject = Subject(SubjectIdType.BSN, "111222333")
    with pytest.raises(RegisterUnavailableError) as caught:
        SqlRegister(sqlite_engine).fetch(subjects=[subject], categories=[Category.PERSONALIA],
                                         pseudonymise=None)
    assert "111222333" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    engine = make_register_engine("postgresql://postgres@127.0.0.1:1/none",
                                  connect_args={"connect_timeout": 2})
    subject = Subject(SubjectIdType.BSN, "111222333")
    with pytest.raises(RegisterUnavailableError) as caught:
        SqlRegister(engine).shielded([subject])
    assert "111222333" not in str(caught.value)
    engine.dispose()


def test_a_fetch_logs_counts_not_numbers_and_results_do_not_show_them(
        seeded: Engine) -> None:
    subjects = sample_subjects(engine=seeded, count=10, seed=10)
    with capture_logs() as logs:
        result = SqlRegister(seeded).fetch(subjects=subjects,
                                           categories=[Category.IDENTIFICERENDE_NUMMERS],
                                           pseudonymise=None)
    assert logs
    assert logs[-1]["event"] == "register_fetched"
    assert logs[-1]["found"] == 10
    shown = repr(logs) + repr(result) + repr(subjects)
    for subject in subjects:
        assert subject.number not in shown
    assert isinstance(result, FetchResult)

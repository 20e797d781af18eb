"""The synthetic DUO source register's one table, on its own metadata (a database of its own).

The register is not the ledger: it stands for DUO's own systems, which the engine only reads.
It lives in a separate database (default ``sqlite:///var/register.db``; PostgreSQL works too) and
its tables are on their own :data:`register_metadata`, so the ledger's migrations never see them.

One row per person, keyed by the person's persoonsgebonden nummer (``id_type`` + ``number``: a BSN,
or an onderwijsnummer for someone without one), with **one JSON column per data category** of
DESIGN.md section 4. A fetch selects only the columns of the released categories, so a category
that was not released cannot leak into a delivery through a mistake further on: it is never read.
A category column is NULL when the register holds nothing of that kind about the person (the
special categories are NULL for most people).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Engine, Index, MetaData, Table
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from legal_bases.vocabulary import Category

#: The register's own metadata: never the ledger's ``SQLModel.metadata``.
register_metadata = MetaData()
_registry = registry(metadata=register_metadata)

#: Longest identifier type slug and number the table stores.
ID_TYPE_LENGTH = 16
NUMBER_LENGTH = 9


class RegisterBase(SQLModel, registry=_registry):
    """Base of the source register's tables (bound to :data:`register_metadata`)."""


def _category() -> Any:
    # none_as_null: a category the register does not hold is SQL NULL, not the JSON text "null".
    return Field(default=None, sa_type=JSON(none_as_null=True), nullable=True)


class RegisterPerson(RegisterBase, table=True):
    """One person in the synthetic register: identifier, shielded flag, one JSON value per category.

    ``shielded`` marks an address that must not be given out without review (a shielded person's
    presence in a request sends the request to a reviewer). Every category value is a JSON object.
    """

    __tablename__ = "register_persons"
    __table_args__ = (Index("ix_register_persons_subject", "id_type", "number", unique=True),)

    person_id: int = Field(primary_key=True)
    id_type: str = Field(max_length=ID_TYPE_LENGTH)
    number: str = Field(max_length=NUMBER_LENGTH)
    shielded: bool = Field(default=False)
    personalia: dict[str, Any] | None = _category()
    opleidingsgegevens: dict[str, Any] | None = _category()
    financiele_gegevens: dict[str, Any] | None = _category()
    identificerende_nummers: dict[str, Any] | None = _category()
    contacthistorie: dict[str, Any] | None = _category()
    accountgegevens: dict[str, Any] | None = _category()
    technische_gegevens: dict[str, Any] | None = _category()
    nationaliteit: dict[str, Any] | None = _category()
    gezondheid: dict[str, Any] | None = _category()
    strafrechtelijke_gegevens: dict[str, Any] | None = _category()


def persons_table() -> Table:
    """The Core table behind :class:`RegisterPerson` (for bulk inserts and column selects)."""
    table = RegisterPerson.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


def category_column(category: Category) -> Column[Any]:
    """The JSON column that holds one data category."""
    column: Column[Any] = persons_table().c[category.value]
    return column


# Every category of the vocabulary has its column, and no column is left without a category.
assert {c.value for c in Category} <= set(persons_table().c.keys())


def create_register_schema(engine: Engine) -> None:
    """Create the register's table(s) if they are missing (``metadata.create_all``).

    The synthetic register is a stand-in for DUO's own systems, not a store of record, so it has
    no migrations: a changed layout is re-seeded.
    """
    register_metadata.create_all(engine)

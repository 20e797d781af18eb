"""API keys in the ledger: issued, checked, revoked; stored only as hashes; audited; insert-only."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

import records.api_keys as api_keys
from legal_bases import limits
from records.api_keys import (
    API_KEY_TABLES,
    KEY_ISSUED,
    KEY_REVOKED,
    ApiKeyRow,
    TooManyKeysError,
    UnknownApiKeyError,
    active_key_counts,
    bound_hash,
    issue_key,
    key_hash,
    key_id_of,
    keys_of,
    revoke_keys,
    revoked_among,
    verify_key,
)
from records.chain import verify_chain
from records.models import AuditEvent, metadata

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def issue(engine: Engine, partner_id: str = "belastingdienst") -> api_keys.IssuedKey:
    with Session(engine) as session, session.begin():
        return issue_key(session=session, partner_id=partner_id, issued_at=NOW,
                         issued_by="operator:test")


def check(engine: Engine, key: str) -> api_keys.KeyCheck:
    with Session(engine) as session:
        return verify_key(connection=session, key=key)


def test_a_key_is_high_entropy_and_names_its_key_id() -> None:
    key_id, key = api_keys.new_key()
    assert re.fullmatch(r"dk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert key_id_of(key) == key_id
    assert len({api_keys.new_key()[1] for _ in range(1000)}) == 1000
    for bad in ("", "dk_", f"dk_{key_id}", key + "x", key.replace("dk_", "xk_"), key.upper()):
        assert key_id_of(bad) is None


def test_an_issued_key_works_and_only_its_hash_is_stored(ledger_engine: Engine) -> None:
    issued = issue(ledger_engine)
    assert check(ledger_engine, issued.key) == api_keys.KeyCheck(issued.key_id,
                                                                  partner_id="belastingdienst")
    with Session(ledger_engine) as session:
        row = session.get(ApiKeyRow, issued.key_id)
        assert row is not None
        assert row.key_hash == key_hash(issued.key) != issued.key
        dumped = json.dumps([list(r) for r in session.execute(text("SELECT * FROM api_keys"))],
                            default=str)
        # the secret is everything after "dk_<key id>_" (it may hold "_" itself)
        secret = issued.key.removeprefix(f"dk_{issued.key_id}_")
        assert len(secret) == 43
        assert secret not in dumped


def test_wrong_unknown_and_malformed_keys_fail_with_their_reason(ledger_engine: Engine) -> None:
    issued = issue(ledger_engine)
    forged = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    assert check(ledger_engine, forged).problem == "mismatch"
    assert check(ledger_engine, "dk_0123456789abcdef_" + "A" * 43).problem == "unknown"
    assert check(ledger_engine, "secret").problem == "malformed"
    assert not check(ledger_engine, forged).ok


def test_several_keys_per_partner_and_revocation_one_by_one(ledger_engine: Engine) -> None:
    old, new = issue(ledger_engine), issue(ledger_engine)
    other = issue(ledger_engine, "uwv")
    with Session(ledger_engine) as session, session.begin():
        assert revoke_keys(session=session, partner_id="belastingdienst", key_ids=[old.key_id],
                           revoked_at=NOW, revoked_by="operator:test",
                           reason="rotated") == [old.key_id]
    assert check(ledger_engine, old.key).problem == "revoked"
    assert check(ledger_engine, new.key).ok
    assert check(ledger_engine, other.key).ok
    with Session(ledger_engine) as session:
        assert revoked_among(session=session, key_ids=[old.key_id, new.key_id]) == {old.key_id}
        assert active_key_counts(session=session) == {"belastingdienst": 1, "uwv": 1}
        listed = keys_of(session=session, partner_id="belastingdienst")
        assert {(k.key_id, k.active) for k in listed} == {(old.key_id, False),
                                                          (new.key_id, True)}


def test_revoking_all_and_revoking_what_is_not_there(ledger_engine: Engine) -> None:
    first, second = issue(ledger_engine), issue(ledger_engine)
    uwv = issue(ledger_engine, "uwv")
    with Session(ledger_engine) as session, session.begin():
        with pytest.raises(UnknownApiKeyError):
            revoke_keys(session=session, partner_id="belastingdienst", key_ids=[uwv.key_id],
                        revoked_at=NOW, revoked_by="operator:test")
        revoked = revoke_keys(session=session, partner_id="belastingdienst", key_ids=None,
                              revoked_at=NOW, revoked_by="operator:test")
        assert sorted(revoked) == sorted([first.key_id, second.key_id])
        assert revoke_keys(session=session, partner_id="belastingdienst", key_ids=None,
                           revoked_at=NOW, revoked_by="operator:test") == []
        with pytest.raises(UnknownApiKeyError):
            revoke_keys(session=session, partner_id="belastingdienst", key_ids=[first.key_id],
                        revoked_at=NOW, revoked_by="operator:test")
    assert check(ledger_engine, uwv.key).ok


def test_a_partner_holds_a_bounded_number_of_keys(ledger_engine: Engine) -> None:
    keys = [issue(ledger_engine) for _ in range(limits.MAX_ACTIVE_API_KEYS)]
    with pytest.raises(TooManyKeysError):
        issue(ledger_engine)
    with Session(ledger_engine) as session, session.begin():
        revoke_keys(session=session, partner_id="belastingdienst", key_ids=[keys[0].key_id],
                    revoked_at=NOW, revoked_by="operator:test")
    assert check(ledger_engine, issue(ledger_engine).key).ok


def test_issuing_and_revoking_are_audit_events_without_the_secret(ledger_engine: Engine) -> None:
    issued = issue(ledger_engine)
    with Session(ledger_engine) as session, session.begin():
        revoke_keys(session=session, partner_id="belastingdienst", key_ids=None, revoked_at=NOW,
                    revoked_by="operator:alice", reason="left the team")
    with Session(ledger_engine) as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))  # type: ignore[arg-type]
        assert [(e.kind, e.actor) for e in events] == [(KEY_ISSUED, "operator:test"),
                                                       (KEY_REVOKED, "operator:alice")]
        assert events[0].payload == {"partner_id": "belastingdienst", "key_id": issued.key_id,
                                     "key_hash_sha256": bound_hash(key_hash(issued.key))}
        assert events[1].payload["reason"] == "left the team"
        text_of_events = json.dumps([e.payload for e in events])
        assert issued.key not in text_of_events
        assert key_hash(issued.key) not in text_of_events
        assert verify_chain(session=session).ok


@pytest.mark.parametrize("table", API_KEY_TABLES)
def test_the_key_tables_are_append_only_in_the_database(ledger_engine: Engine,
                                                         table: str) -> None:
    issued = issue(ledger_engine)
    with Session(ledger_engine) as session, session.begin():
        revoke_keys(session=session, partner_id="belastingdienst", key_ids=None, revoked_at=NOW,
                    revoked_by="operator:test")
    for statement in (f"UPDATE {table} SET key_id = key_id", f"DELETE FROM {table}"):
        with pytest.raises(IntegrityError, match="append-only"), \
                ledger_engine.begin() as connection:
            connection.execute(text(statement))
    assert check(ledger_engine, issued.key).problem == "revoked"


def test_the_migration_creates_the_key_tables_as_the_models_declare_them(
        ledger_engine: Engine) -> None:
    with ledger_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, metadata)
                 if any(name in repr(d) for name in (*API_KEY_TABLES, "ix_api_keys"))]
    assert diffs == []
    inspector = inspect(ledger_engine)
    for table in API_KEY_TABLES:
        declared = {c.name for c in metadata.tables[table].constraints
                    if isinstance(c.name, str) and c.name.startswith("ck_")}
        assert declared == {c["name"] for c in inspector.get_check_constraints(table)}
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("requests")}
    assert indexes["ix_requests_partner_received"] == ["partner_id", "received_at", "id"]


def test_a_key_id_longer_than_its_column_is_refused_on_every_backend(
        ledger_engine: Engine) -> None:
    with pytest.raises(DBAPIError), ledger_engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO api_keys (key_id, partner_id, key_hash, issued_at, issued_by) "
            "VALUES (:k, 'p', :h, :at, 'x')"), {"k": "0" * 17, "h": "0" * 64, "at": NOW})

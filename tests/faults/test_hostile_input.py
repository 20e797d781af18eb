"""Partners are authenticated, not trusted: poison in every field, keys named twice, a reference
raced from many connections. Each is recorded and refused (or decided by the table) on its own,
nothing refused is released, and the others go through — followed through the dispatcher and the
deliveries to the invariants (fault_support.py)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pipeline_support as ps
import pytest
import test_pipeline
from fault_support import assert_invariants, injected
from test_intake_api import running_api

from legal_bases import limits
from legal_bases.table import GroundTable
from records.models import DeliveryRow, RequestRow

pytestmark = pytest.mark.slow

# The pipeline suite's Prefect test server and set-up (ledger on SQLite or PostgreSQL, a seeded
# register, file drops and a real HTTPS receiver on loopback), shared rather than copied.
prefect = test_pipeline.prefect
certificate = test_pipeline.certificate
backend = test_pipeline.backend
pipeline = test_pipeline.pipeline

LONG = "x" * (limits.MAX_CASE_REFERENCE_LENGTH + 1)
#: field -> values that must each be refused (the rest of the request valid).
POISON: dict[str, list[Any]] = {
    "reference": ["", "A" * (limits.MAX_REFERENCE_LENGTH + 1), "X-1\n", "X\u202e1", None, 7,
                  ["X-1"], {"$ne": ""}, "X\u00001"],
    "legal_basis": ["a" * (limits.MAX_SLUG_LENGTH + 1), "AWR-55", "awr-55\n", "", None,
                    "awr\u200b-55", 55],
    "purpose": ["", "belastingheffing " * 10, None, ["belastingheffing"], "BELASTINGHEFFING"],
    "reference_date": ["2026-02-30", "28-11-2026", "2026-11-28T00:00:00", 20261128,
                       "\u0662\u0660\u0662\u0666-11-28"],
    "subjects": [[], [{"bsn": "123456789"}], [{"bsn": "\u0667\u0662\u0665\u0667\u0666\u0663"
                                                      "\u0668\u0666\u0663"}],
                 [{"bsn": ps.TAX_SUBJECT.number, "onderwijsnummer": "102791163"}],
                 [{"bsn": 725763863}], [ps.TAX_SUBJECT.number], "all", None,
                 [{"bsn": ps.TAX_SUBJECT.number}] * 2 + [{"passport": "X"}]],
    "categories": [[], ["alles"], "personalia", [None], None, ["personalia\u0000"]],
    "case_reference": ["", " ", "\u200b", LONG, 5, ["FIN/1"]],
    "due_date": ["yesterday", "2020-01-01", 5],
    "authorisations": [[{"kind": "rc_machtiging"}], [{"kind": "x", "reference": "R"}],
                       [{"kind": "rc_machtiging", "reference": "R"}] * (
                           limits.MAX_AUTHORISATIONS + 1), "yes"],
    "requester": ["uwv"],  # not a field: the requester is the key's partner
}


def valid(reference: str) -> dict[str, Any]:
    return ps.tax_request(reference, subjects=(ps.TAX_SUBJECT,))


def test_poison_in_every_field_is_refused_on_its_own_and_the_rest_is_delivered(
        pipeline: ps.Pipeline) -> None:
    lines: list[dict[str, Any] | str] = []
    for field, values in POISON.items():
        for i, value in enumerate(values):
            lines.append({**valid(f"P-{field}-{i}"), field: value})
    lines += [valid(f"OK-{i}") for i in range(5)]
    # and whole lines that are no request: not JSON, nested too deep, a key named twice
    lines += ["{not json", "[" * 10_000 + "]" * 10_000,
              json.dumps(valid("DUP-1"))[:-1] + ', "reference": "DUP-2"}']
    injected("poison values in every field", len(lines) - 5)
    pipeline.drop("belastingdienst", "poison.jsonl", ps.jsonl(*lines))
    pipeline.collect()
    assert pipeline.dispatch().state.is_completed()
    outcome = assert_invariants(pipeline, submitted=len(lines))
    assert outcome.delivered == 5
    delivered = {r.reference for r in ps.rows(pipeline.ledger, RequestRow)
                 if ps.deliveries_of(pipeline.ledger, r.id)}
    assert delivered == {f"OK-{i}" for i in range(5)}
    assert outcome.states == {"delivered": 5, "rejected": len(lines) - 5}


def test_a_reference_raced_from_many_connections_is_accepted_once_and_delivered_once(
        pipeline: ps.Pipeline, shipped_table: GroundTable) -> None:
    """Twenty bodies under one reference at the same moment, plus the same body twice: one is
    accepted, the same body again is answered with it, every other is a 409 recorded as
    refused — and only the accepted one is ever delivered."""
    base = valid("RACE-1")
    bodies = [{**base, "case_reference": f"FIN/{i}"} for i in range(20)]
    with running_api(pipeline.ledger, shipped_table,
                     partners=pipeline.rt.partners) as api, ThreadPoolExecutor(21) as pool:
        answers = list(pool.map(api.post, [*bodies, bodies[0]]))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 1
    assert set(codes) <= {200, 202, 409}
    injected("409 races", codes.count(409))
    assert pipeline.dispatch().state.is_completed()
    recorded = ps.rows(pipeline.ledger, RequestRow)
    outcome = assert_invariants(pipeline, submitted=len(recorded))
    assert outcome.delivered == 1
    (delivery,) = ps.rows(pipeline.ledger, DeliveryRow)
    (accepted,) = [r for r in recorded if r.valid]
    assert delivery.request_id == accepted.id
    assert len(recorded) == 1 + codes.count(409)


def test_a_body_naming_a_key_twice_is_refused_by_every_channel(
        pipeline: ps.Pipeline, shipped_table: GroundTable) -> None:
    text = json.dumps(valid("TWICE-1"))[:-1] + f', "subjects": [{{"bsn": "{ps.ABSENT.number}"}}]}}'
    pipeline.drop("belastingdienst", "twice.json", text)
    pipeline.collect()
    with running_api(pipeline.ledger, shipped_table, partners=pipeline.rt.partners) as api:
        answer = api.post_raw(text.replace("TWICE-1", "TWICE-2"))
    assert answer.status_code == 422
    assert [e["code"] for e in answer.json()["errors"]] == ["duplicate_key"]
    injected("duplicate JSON keys", 2)
    assert pipeline.dispatch().state.is_completed()
    outcome = assert_invariants(pipeline, submitted=2)
    assert outcome.states == {"rejected": 2}
    assert all(ps.received(pipeline.ledger, r).endswith(']}')
               for r in ps.rows(pipeline.ledger, RequestRow))


def test_a_partner_s_file_that_cannot_be_filed_away_stops_no_other_partner(
        pipeline: ps.Pipeline) -> None:
    """A file name so long that its report's name would not fit, and a file named like the
    folder a file is filed into: that partner's files wait (their requests recorded once), the
    other partners' are taken in and delivered."""
    long_name = "a" * 240 + ".json"
    pipeline.drop("toeslagen", long_name, json.dumps({
        "reference": "TS-LONG", "legal_basis": "awir-38", "purpose": "toeslagen",
        "subjects": [ps.wire(ps.TOESLAGEN_SUBJECT)], "categories": ["personalia"]}))
    (pipeline.dropoff / "uwv").mkdir(parents=True)
    (pipeline.dropoff / "uwv" / "processed").write_text("not a folder")
    pipeline.drop("uwv", "blocked.json", json.dumps(ps.uwv_on_tax_ground("UWV-BLOCKED")))
    pipeline.drop("belastingdienst", "after.json", json.dumps(valid("AFTER-1")))
    injected("drop file that cannot be filed away", 2)
    first = pipeline.collect()
    assert first.state.is_completed(), first.state
    assert first.totals["not_filed"] == 1  # uwv's; the long name is filed under a short one
    assert (pipeline.dropoff / "belastingdienst" / "processed" / "after.json").exists()
    assert not (pipeline.dropoff / "toeslagen" / long_name).exists()
    again = pipeline.collect()  # the blocked file again: nothing recorded twice
    assert again.totals["not_filed"] == 1
    assert pipeline.dispatch().state.is_completed()
    outcome = assert_invariants(pipeline, submitted=3)
    assert outcome.delivered == 2


def test_a_drop_line_that_is_not_utf8_is_refused_and_kept(pipeline: ps.Pipeline) -> None:
    folder = pipeline.dropoff / "belastingdienst"
    folder.mkdir(parents=True)
    good = json.dumps(valid("UTF-1")).encode()
    bad = json.dumps(valid("UTF-2")).replace("FIN/UTF-2", "FIN/\udcff").encode(
        "utf-8", errors="surrogateescape")
    (folder / "mixed.jsonl.part").write_bytes(good + b"\n" + bad + b"\n")
    (folder / "mixed.jsonl.part").rename(folder / "mixed.jsonl")
    injected("drop line that is not UTF-8")
    pipeline.collect()
    assert pipeline.dispatch().state.is_completed()
    outcome = assert_invariants(pipeline, submitted=2)
    assert outcome.states == {"delivered": 1, "rejected": 1}
    (refused,) = [r for r in ps.rows(pipeline.ledger, RequestRow) if not r.valid]
    assert [e["code"] for e in refused.validation_errors] == ["bad_encoding"]
    assert "\ufffd" in ps.received(pipeline.ledger, refused)

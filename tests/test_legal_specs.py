"""The legal specification: every case in ``tests/specs/*.yaml`` is one test, named by its sentence.

A spec file is a mapping with ``defaults`` (merged into every case; a case's own values win, and
``request`` is merged key by key) and ``cases``. One case::

    - name: The bijstand ground does not cover health data
      table: shipped                  # "shipped", or a folder under tests/specs/tables/
      body: gemeente                  # the requester's body: from its credential, not the request
      received_on: "2026-11-28"       # the day of receipt; reference_date defaults to it
      request: {legal_basis: participatiewet-64, purpose: bijstand, categories: [gezondheid]}
      omit: [reference]               # request fields to drop after merging (for invalid requests)
      expect: {outcome: partially_approved, withheld: [gezondheid]}

``subjects: {generate: 1001}`` (optionally ``id_type: onderwijsnummer``) expands into that many
distinct valid identifiers, the same ones on every run.

Every key present under ``expect`` is asserted exactly:

==========================  ==================================================================
``outcome``                 the decision's outcome
``released``, ``withheld``  categories, as sorted lists (``released`` is empty under review)
``reasons``                 reason codes, in the decision's order
``review_triggers``         review trigger codes, in order
``proposal``                ``{released, withheld}`` the reviewer starts from, or null
``errors``                  ``{field path: error code}`` of an invalid request
``ground_version_from``     ``valid_from`` of the ground version applied, or null if none was
``pseudonymise``            whether the version applied delivers subjects pseudonymised
``subject_count``           the number of distinct subjects
==========================  ==================================================================
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from legal_bases.assessment import assess
from legal_bases.decision import Decision
from legal_bases.identifiers import is_valid_bsn, is_valid_onderwijsnummer
from legal_bases.request import read_request
from legal_bases.table import GroundTable, load_table, table_from_snapshot
from legal_bases.validator import load_yaml
from legal_bases.vocabulary import SPECIAL_CATEGORIES, Body, Outcome, ReasonCode, ReviewTrigger

SPECS_DIR = Path(__file__).parent / "specs"
TABLES_DIR = SPECS_DIR / "tables"
SHIPPED = "shipped"

CASE_KEYS = frozenset({"name", "table", "body", "received_on", "request", "omit", "expect"})
EXPECT_KEYS = frozenset({"outcome", "released", "withheld", "reasons", "review_triggers",
                         "proposal", "errors", "ground_version_from", "pseudonymise",
                         "subject_count"})
_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


# -- generating subjects ------------------------------------------------------------------------

def valid_numbers(count: int, id_type: str = "bsn") -> list[str]:
    """The first ``count`` valid BSNs (or onderwijsnummers) counting up from a fixed start.

    A BSN's weighted sum (9..2 and -1 for the last digit) is 0 mod 11, an onderwijsnummer's is 5
    mod 11 and it starts with "10"; the last digit is solved for, and a prefix whose check digit
    would have to be 10 is skipped.
    """
    if id_type == "bsn":
        prefixes = (str(n) for n in itertools.count(10_000_000))
        remainder = 0
    elif id_type == "onderwijsnummer":
        prefixes = (f"10{n:06d}" for n in itertools.count())
        remainder = 5
    else:
        raise ValueError(f"unknown id_type {id_type!r}")
    numbers: list[str] = []
    for prefix in prefixes:
        if len(numbers) == count:
            break
        check = (sum(w * int(d) for w, d in zip(_WEIGHTS, prefix, strict=True)) - remainder) % 11
        if check < 10:
            numbers.append(f"{prefix}{check}")
    return numbers


def _expand_subjects(subjects: Any) -> Any:
    if isinstance(subjects, dict) and "generate" in subjects:
        id_type = subjects.get("id_type", "bsn")
        return [{id_type: n} for n in valid_numbers(subjects["generate"], id_type)]
    return subjects


# -- loading the cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class SpecCase:
    """One case of the legal specification."""

    name: str
    file: str
    table: str
    body: Body
    received_on: date
    request: dict[str, Any]
    expect: dict[str, Any]

    @property
    def ground(self) -> Any:
        return self.request.get("legal_basis")

    @property
    def effective_date(self) -> str:
        """The date whose law applies: the request's reference_date, else the day of receipt."""
        return self.request.get("reference_date") or self.received_on.isoformat()


def load_cases() -> list[SpecCase]:
    cases = []
    for path in sorted(SPECS_DIR.glob("*.yaml")):
        document = load_yaml(path.read_text("utf-8"))
        defaults = document.get("defaults") or {}
        for raw in document["cases"]:
            where = f"{path.name}: case {raw.get('name')!r}"
            if set(raw) - CASE_KEYS:
                raise ValueError(f"{where} has unknown keys {sorted(set(raw) - CASE_KEYS)}")
            expect = raw.get("expect") or {}
            if "outcome" not in expect or set(expect) - EXPECT_KEYS:
                raise ValueError(f"{where}: expect needs an outcome and only keys of "
                                 f"{sorted(EXPECT_KEYS)}")
            merged = {**defaults, **raw}
            request = {**(defaults.get("request") or {}), **(raw.get("request") or {})}
            for key in raw.get("omit") or ():
                request.pop(key)
            if "subjects" in request:
                request["subjects"] = _expand_subjects(request["subjects"])
            cases.append(SpecCase(
                name=raw["name"], file=path.name, table=merged.get("table", SHIPPED),
                body=Body(merged["body"]), received_on=date.fromisoformat(merged["received_on"]),
                request=request, expect=expect))
    return cases


CASES = load_cases()


@cache
def table_named(name: str) -> GroundTable:
    return load_table() if name == SHIPPED else load_table(TABLES_DIR / name)


def decide(case: SpecCase, table: GroundTable) -> Decision:
    return assess(read_request(case.request, received_on=case.received_on), case.body, table)


def observe(decision: Decision, table: GroundTable) -> dict[str, Any]:
    """The decision in the vocabulary of ``expect``."""
    version = table.version(decision.ground_version) if decision.ground_version else None
    proposal = decision.proposal
    return {
        "outcome": decision.outcome.value,
        "released": sorted(c.value for c in decision.released),
        "withheld": sorted(c.value for c in decision.withheld),
        "reasons": list(decision.reason_codes),
        "review_triggers": list(decision.trigger_codes),
        "proposal": None if proposal is None else {
            "released": sorted(c.value for c in proposal.released),
            "withheld": sorted(c.value for c in proposal.withheld)},
        "errors": {e.path: e.code for e in decision.errors},
        "ground_version_from": version.valid_from.isoformat() if version else None,
        "pseudonymise": version.pseudonymise if version else None,
        "subject_count": decision.subject_count,
    }


def _normalised(expect: dict[str, Any]) -> dict[str, Any]:
    out = dict(expect)
    for key in ("released", "withheld"):
        if key in out:
            out[key] = sorted(out[key])
    if out.get("proposal") is not None:
        out["proposal"] = {k: sorted(out["proposal"].get(k, [])) for k in ("released", "withheld")}
    return out


def assert_invariants(decision: Decision) -> None:
    """What holds for every decision, whatever the case expects."""
    assert decision.reasons, "every decision lists its reasons"
    assert all(r.citation.url.startswith("https://") for r in
               (*decision.reasons, *decision.review_triggers)), "every reason rests on a citation"
    if decision.outcome in (Outcome.REJECTED, Outcome.NEEDS_REVIEW):
        assert decision.released == (), "nothing is released before a reviewer decided"
    assert (decision.outcome is Outcome.NEEDS_REVIEW) == bool(decision.review_triggers)
    assert (decision.outcome is Outcome.NEEDS_REVIEW) == (decision.proposal is not None)
    if decision.outcome is Outcome.APPROVED:
        assert decision.withheld == ()
    if decision.outcome is Outcome.PARTIALLY_APPROVED:
        assert decision.withheld != ()
        assert not set(decision.released) & SPECIAL_CATEGORIES, "special categories need review"


# -- the specification ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_spec(case: SpecCase) -> None:
    table = table_named(case.table)
    decision = decide(case, table)
    observed = observe(decision, table)
    assert {k: observed[k] for k in case.expect} == _normalised(case.expect)
    assert_invariants(decision)


# -- the specification itself is complete -------------------------------------------------------

def test_case_names_are_unique_sentences() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert all(n[0].isupper() and " " in n and not n.endswith(".") for n in names)


def test_every_shipped_ground_has_a_case_where_it_applies_to_its_own_body() -> None:
    shipped = table_named(SHIPPED)
    applying = {Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value,
                Outcome.NEEDS_REVIEW.value}
    covered = {c.ground for c in CASES if c.table == SHIPPED and c.expect["outcome"] in applying
               and c.body in shipped.grounds[c.ground].requesters}
    assert covered == set(shipped.grounds)


def test_every_shipped_ground_has_a_refusal_of_another_body() -> None:
    refused = {c.ground for c in CASES if c.table == SHIPPED
               and c.expect.get("reasons") == ["requester_not_entitled"]}
    assert refused == set(table_named(SHIPPED).grounds)


def test_every_reason_code_and_review_trigger_is_specified() -> None:
    used = {code for c in CASES for key in ("reasons", "review_triggers")
            for code in c.expect.get(key, [])}
    wanted = {r.value for r in ReasonCode} | {t.value for t in ReviewTrigger}
    wanted.discard(ReviewTrigger.SHIELDED_SUBJECT.value)  # added by the flow, never by assess()
    # a reviewer's decision, never assess()'s (tests/test_review_rules.py specifies them)
    wanted -= {ReasonCode.WITHHELD_BY_REVIEWER.value, ReasonCode.REJECTED_BY_REVIEWER.value}
    assert wanted - used == set()


@pytest.mark.parametrize("name", [SHIPPED, *sorted(p.name for p in TABLES_DIR.iterdir())])
def test_every_date_boundary_is_specified_on_both_sides(name: str) -> None:
    dates_by_ground: dict[str, set[str]] = {}
    for case in CASES:
        if case.table == name:
            dates_by_ground.setdefault(case.ground, set()).add(case.effective_date)
    missing = []
    for ground in table_named(name):
        for version in ground.versions:
            boundaries = [version.valid_from - timedelta(days=1), version.valid_from]
            if version.valid_until is not None:
                boundaries += [version.valid_until, version.valid_until + timedelta(days=1)]
            missing += [f"{ground.id} on {d}" for d in boundaries
                        if d.isoformat() not in dates_by_ground.get(ground.id, set())]
    assert missing == []


def test_every_case_decides_the_same_against_the_table_rebuilt_from_its_snapshot() -> None:
    for name in sorted({c.table for c in CASES}):
        table = table_named(name)
        rebuilt = table_from_snapshot(table.snapshot)
        assert rebuilt.hash == table.hash
        for case in (c for c in CASES if c.table == name):
            assert decide(case, rebuilt) == decide(case, table), case.name


def test_generated_subjects_are_distinct_valid_and_deterministic() -> None:
    for id_type, valid in (("bsn", is_valid_bsn), ("onderwijsnummer", is_valid_onderwijsnummer)):
        numbers = valid_numbers(1001, id_type)
        assert len(set(numbers)) == 1001
        assert all(valid(n) for n in numbers)
        assert numbers == valid_numbers(1001, id_type)
    # Worked by hand: 10000000 has weighted sum 9, so its check digit is 9 (9 - 9 = 0 mod 11).
    assert valid_numbers(1) == ["100000009"]

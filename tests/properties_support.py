"""Strategies and invariants for tests/test_properties.py: what partners and operators may send.

Requests start from realistic valid ones (the bundled examples' shapes, valid BSNs and
onderwijsnummers) and are then mutated the way DESIGN.md section 11 says a partner may: fields
dropped, retyped, huge, empty, duplicated, unicode trickery, nesting, keys named twice (written as
raw text, since a dict cannot hold them). Ground files start from the shipped ones and are mutated
the way an operator's mistake may: keys removed or retyped, bad or overlapping dates, unknown
categories, huge numbers, bytes that are not UTF-8, small alias bombs, documents that are not
mappings. The invariants are stated once each: :func:`assert_well_formed` (a reading),
:func:`assert_allowed_by_table` and :func:`assert_allowed_by_files` (a decision against the loaded
table, and against the ground files read without the product's loader) and
:func:`assert_fits_its_columns` (what the ledger records of a decision).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import hypothesis.strategies as st
import yaml

from legal_bases import limits
from legal_bases.decision import Decision
from legal_bases.identifiers import is_valid_bsn, is_valid_onderwijsnummer
from legal_bases.request import Authorisation, DisclosureRequest, InvalidRequest, Subject
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table
from legal_bases.validator import load_yaml, schema
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    AuthorisationKind,
    Body,
    Category,
    Outcome,
    Purpose,
    ReasonCode,
    ReviewMode,
    SubjectIdType,
)

SHIPPED: GroundTable = load_table()
GROUND_IDS: tuple[str, ...] = tuple(sorted(SHIPPED.grounds))
PURPOSES_OF: dict[str, tuple[str, ...]] = {
    g.id: tuple(sorted(p.value for p in g.purposes)) for g in SHIPPED}
CATEGORY_SLUGS = tuple(c.value for c in Category)
ORDINARY_SLUGS = tuple(c.value for c in Category if c not in SPECIAL_CATEGORIES)
SPECIAL_SLUGS = tuple(sorted(c.value for c in SPECIAL_CATEGORIES))
PURPOSE_SLUGS = tuple(p.value for p in Purpose)
BODY_SLUGS = tuple(b.value for b in Body)
AUTHORISATION_SLUGS = tuple(k.value for k in AuthorisationKind)

#: The request schema's own patterns, which a field of a valid request must match *in full*.
REFERENCE_PATTERN = re.compile(schema("request")["reference"]["regex"])
SLUG_PATTERN = re.compile(schema("request")["legal_basis"]["regex"])
REFERENCE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/:-"
CASE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-. "


# -- identifiers ----------------------------------------------------------------------------------

def _check_digit(first_eight: str) -> int:
    return sum((9 - i) * int(c) for i, c in enumerate(first_eight)) % 11


def _generated_bsns(count: int) -> tuple[str, ...]:
    """``count`` distinct valid BSNs (elfproef), made up, in a fixed order."""
    found: list[str] = []
    stem = 11_000_000
    while len(found) < count:
        digits = f"{stem:08d}"
        check = _check_digit(digits)
        if check < 10:
            found.append(digits + str(check))
        stem += 7
    return tuple(found)


def _generated_onderwijsnummers(count: int) -> tuple[str, ...]:
    found: list[str] = []
    stem = 10_000_000
    while len(found) < count:
        digits = f"{stem:08d}"
        check = (_check_digit(digits) - 5) % 11
        if check < 10:
            found.append(digits + str(check))
        stem += 13
    return tuple(found)


#: Valid numbers from the bundled examples and the pipeline tests' register.
EXAMPLE_BSNS = ("725763863", "192285142", "738199795", "187891151", "691682483", "688136138",
                "883235912", "178598835", "987825707", "467279627", "864623112", "321146487",
                "111222333", "123456782")
EXAMPLE_ONDERWIJSNUMMERS = ("102791163", "102169968")
#: Most subjects a generated bulk request names: one above the shipped automatic limit.
AUTO_LIMIT = max(v.auto_limit for g in SHIPPED for v in g.versions)
BULK_BSNS = _generated_bsns(AUTO_LIMIT + 1)
MORE_ONDERWIJSNUMMERS = _generated_onderwijsnummers(5)
assert all(is_valid_bsn(n) for n in EXAMPLE_BSNS + BULK_BSNS)
assert all(is_valid_onderwijsnummer(n) for n in EXAMPLE_ONDERWIJSNUMMERS + MORE_ONDERWIJSNUMMERS)

SUBJECT_POOL: tuple[dict[str, str], ...] = (
    *({"bsn": n} for n in EXAMPLE_BSNS),
    *({"onderwijsnummer": n} for n in EXAMPLE_ONDERWIJSNUMMERS + MORE_ONDERWIJSNUMMERS))

#: Digit systems that ``str.isdigit`` accepts and a BSN must not: Arabic-Indic, Extended
#: Arabic-Indic, Devanagari, full-width, mathematical bold, superscript.
FOREIGN_DIGITS: tuple[str, ...] = (
    "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９",
    "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def foreign(number: str, digits: str, *, only: int | None = None) -> str:
    """``number`` with its ASCII digits (or only the one at ``only``) written in ``digits``."""
    return "".join(digits[int(c)] if c.isascii() and c.isdigit() and only in (None, i) else c
                   for i, c in enumerate(number))


# -- raw JSON text --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it stands (deep nesting that ``json.dumps`` cannot make)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written as its pairs, so that it can name a key twice."""

    items: tuple[tuple[str, Any], ...]


def render(value: Any, *, ensure_ascii: bool = True) -> str:
    """JSON text of ``value``, which may hold :class:`Raw` and :class:`Pairs` anywhere."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        value = Pairs(tuple(value.items()))
    if isinstance(value, Pairs):
        return "{" + ",".join(
            f"{json.dumps(k, ensure_ascii=ensure_ascii)}:{render(v, ensure_ascii=ensure_ascii)}"
            for k, v in value.items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render(v, ensure_ascii=ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def nested(depth: int, *, kind: str = "[") -> Raw:
    """A value nested ``depth`` levels deep."""
    if kind == "[":
        return Raw("[" * depth + "1" + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


# -- JSON values and unicode trickery -------------------------------------------------------------

#: Characters a partner may slip into text: NUL, lone surrogates (JSON-escaped by render()),
#: direction and zero-width marks, BOM, line breaks, combining marks, case-folding traps,
#: non-ASCII digits (Arabic-Indic, full-width, superscript), an astral emoji, DEL, quoting.
TRICKS: tuple[str, ...] = (
    "\x00", "\ud800", "\udfff", "\ud83d", "\u202e", "\u200f", "\u200b", "\ufeff", "\u2028",
    "\n", "\r\n", "\t", " ", "\u00a0", "\u0301", "İ", "ß", "٣", "３", "²", "\U0001f600", "\x7f",
    "\\", '"', "%00", "..")

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=12), st.sampled_from(TRICKS), st.sampled_from(CATEGORY_SLUGS + PURPOSE_SLUGS))


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value (NaN and infinities too: Python's reader takes them)."""
    return st.recursive(
        json_scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves)


#: Keys of fields a request does not have; several look like list positions to ``isdigit``.
ODD_KEYS: tuple[str, ...] = (
    "", ".", "a.b", "0", "1", "١", "²", "①", "٣.٣", "subjects.0", "Reference", "reference\u200b",
    "REFERENCE", "__proto__", "\x00", "\ud800", "legal basis", "9" * 5000)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, chosen in proportion to its weight (``one_of`` does not weigh)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


# -- requests -------------------------------------------------------------------------------------

def references(min_size: int = 1, max_size: int = limits.MAX_REFERENCE_LENGTH,
               ) -> st.SearchStrategy[str]:
    """References of the documented form (the partner's idempotency key)."""
    return st.builds(lambda first, rest: first + rest,
                     st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
                     st.text(REFERENCE_CHARS, min_size=min_size - 1, max_size=max_size - 1))


def subject_lists() -> st.SearchStrategy[list[dict[str, str]]]:
    """A few subjects (repeats too), or exactly the automatic limit, or one more than it."""
    bulk = st.sampled_from((AUTO_LIMIT, AUTO_LIMIT + 1)).map(
        lambda n: [{"bsn": b} for b in BULK_BSNS[:n]])
    few = st.lists(st.sampled_from(SUBJECT_POOL), min_size=1, max_size=4)
    return weighted((4, few), (1, bulk))


@st.composite
def authorisations(draw: st.DrawFn) -> dict[str, str]:
    out = {"kind": draw(st.sampled_from(AUTHORISATION_SLUGS)),
           "reference": draw(st.text(CASE_CHARS.strip(), min_size=1, max_size=20))}
    if draw(st.booleans()):
        out["issued_on"] = draw(st.dates(date(2019, 1, 1), date(2031, 1, 1))).isoformat()
    return out


@st.composite
def valid_requests(draw: st.DrawFn, *, received_on: date) -> dict[str, Any]:
    """A request in the shape of DESIGN.md section 5 that the reader should accept.

    The ground is one of the shipped ones and the purpose mostly its own, so that every step of
    the decision policy is reached; categories, subjects, case reference, authorisations and
    dates vary.
    """
    ground = draw(st.sampled_from(GROUND_IDS))
    doc: dict[str, Any] = {
        "reference": draw(references()),
        "legal_basis": ground,
        "purpose": draw(weighted((4, st.sampled_from(PURPOSES_OF[ground])),
                                 (1, st.sampled_from(PURPOSE_SLUGS)))),
        "subjects": draw(subject_lists()),
        "categories": draw(st.lists(st.sampled_from(CATEGORY_SLUGS), min_size=1, max_size=6)),
    }
    reference_date = received_on
    if draw(st.booleans()):
        reference_date = draw(weighted(  # mostly while the shipped grounds are in force
            (4, st.dates(date(2020, 8, 1), date(2031, 12, 31))),
            (1, st.dates(date(2019, 1, 1), date(2031, 12, 31)))))
        doc["reference_date"] = reference_date.isoformat()
    if draw(st.booleans()):
        doc["case_reference"] = draw(st.text(CASE_CHARS, min_size=1,
                                             max_size=limits.MAX_CASE_REFERENCE_LENGTH))
    if draw(st.booleans()):
        doc["authorisations"] = draw(st.lists(authorisations(), max_size=3))
    if draw(st.booleans()):
        doc["due_date"] = (reference_date + timedelta(days=draw(st.integers(0, 400)))).isoformat()
    return doc


#: Dates a partner may write: impossible days, other formats, foreign digits, the extremes.
ODD_DATES: tuple[Any, ...] = (
    "2026-02-29", "2024-02-29", "2026-13-01", "2026-00-10", "2026-1-1", "20261128",
    "2026-11-28T00:00:00", "2026-11-28\n", " 2026-11-28", "٢٠٢٦-١١-٢٨", "２０２６-１１-２８",
    "0000-01-01", "0001-01-01", "9999-12-31", "1899-12-31", "", None, 20261128, ["2026-11-28"])

Mutation = Callable[[st.DrawFn, dict[str, Any]], Any]
REQUEST_FIELDS = ("reference", "legal_basis", "purpose", "reference_date", "subjects",
                  "categories", "case_reference", "authorisations", "due_date")
STRING_FIELDS = ("reference", "legal_basis", "purpose", "reference_date", "case_reference",
                 "due_date")


def _drop_field(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    if not doc:
        return doc
    key = draw(st.sampled_from(sorted(doc)))
    return {k: v for k, v in doc.items() if k != key}


def _retype_field(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    return {**doc, draw(st.sampled_from(REQUEST_FIELDS)): draw(json_values())}


def _empty_field(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    return {**doc, draw(st.sampled_from(REQUEST_FIELDS)): draw(st.sampled_from(
        ["", " ", [], {}, None, 0, False, [""], [{}]]))}


def _huge_string(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.sampled_from(REQUEST_FIELDS))
    size = draw(st.sampled_from((limits.MAX_SLUG_LENGTH + 1, limits.MAX_CASE_REFERENCE_LENGTH + 1,
                                 1000, 100_000)))
    filler = draw(st.sampled_from(("a", "A", "9", "é", "\u202e", "-", "a-")))
    return {**doc, key: (filler * size)[:size]}


def _unicode_trick(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.sampled_from(STRING_FIELDS))
    current = doc.get(key)
    current = current if isinstance(current, str) else "X-1"
    at = draw(_positions(current))
    return {**doc, key: current[:at] + draw(st.sampled_from(TRICKS)) + current[at:]}


def _positions(text: str) -> st.SearchStrategy[int]:
    """Where to put a trick: at the end (where ``$`` still matches), the start, or anywhere."""
    return st.one_of(st.just(len(text)), st.just(0), st.integers(0, len(text)))


def _long_reference(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    size = draw(st.sampled_from((limits.MAX_REFERENCE_LENGTH - 1, limits.MAX_REFERENCE_LENGTH,
                                 limits.MAX_REFERENCE_LENGTH + 1, 4096)))
    return {**doc, "reference": draw(references(size, size))}


def _odd_legal_basis(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    slug = draw(st.sampled_from((
        "a" * limits.MAX_SLUG_LENGTH, "a" * (limits.MAX_SLUG_LENGTH + 1),
        "a-" * 40 + "a", "x" * 500, "AWR-55", "awr_55", "awr-55 ", "awr-55\n", "sv-126nc\n",
        "awr--55", "-awr-55", "awr-55-", "awr-５５", "awr-٥٥", "unknown-ground", *GROUND_IDS)))
    return {**doc, "legal_basis": slug}


def _odd_purpose(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    return {**doc, "purpose": draw(st.sampled_from(
        (*PURPOSE_SLUGS, "Belastingheffing", "belastingheffing ", "bijstand\n", "")))}


def _odd_date(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.sampled_from(("reference_date", "due_date")))
    return {**doc, key: draw(st.sampled_from(ODD_DATES))}


def _due_before_reference(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    day = draw(st.dates(date(2019, 1, 2), date(2031, 1, 1)))
    return {**doc, "reference_date": day.isoformat(),
            "due_date": (day - timedelta(days=draw(st.integers(1, 400)))).isoformat()}


def _subject_variants(number: str, trick: str, digits: str, position: int) -> list[Any]:
    return [
        {"bsn": foreign(number, digits)}, {"bsn": foreign(number, digits, only=position)},
        {"onderwijsnummer": foreign(number, digits)}, {"bsn": int(number)},
        {"bsn": number + trick}, {"bsn": trick + number}, {"bsn": number[:position] + trick
                                                           + number[position + 1:]},
        {"bsn": number, "onderwijsnummer": "102791163"}, {}, number, {"BSN": number},
        {"bsn": number[1:]}, {"bsn": number + "0"}, {"onderwijsnummer": number},
        {"bsn": None}, {"bsn": [number]}, {"bsn": "000000000"}, {"onderwijsnummer": "000000000"},
        {"bsn": "1" + number[1:]}, {"bsn": float(number)}, {"bsn": {"bsn": number}},
        {trick: number}, [number], None]


def _subject_trick(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    subjects = doc.get("subjects")
    if not isinstance(subjects, list) or not subjects:
        return doc
    index = draw(st.integers(0, len(subjects) - 1))
    subject = subjects[index]
    number = "111222333"
    if isinstance(subject, dict) and subject and isinstance(next(iter(subject.values())), str):
        number = next(iter(subject.values()))
    if len(number) != 9 or not number.isascii() or not number.isdigit():
        number = "111222333"
    variant = draw(st.sampled_from(_subject_variants(
        number, draw(st.sampled_from(TRICKS)), draw(st.sampled_from(FOREIGN_DIGITS)),
        draw(st.integers(0, 8)))))
    return {**doc, "subjects": [*subjects[:index], variant, *subjects[index + 1:]]}


def _subject_count(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    found = doc.get("subjects")
    subjects: list[Any] = found if isinstance(found, list) else []
    choice = draw(st.sampled_from(("empty", "twice", "same", "bulk")))
    if choice == "empty":
        return {**doc, "subjects": []}
    if choice == "twice":
        return {**doc, "subjects": subjects * 2}
    if choice == "same":
        return {**doc, "subjects": [{"bsn": "111222333"}] * draw(st.integers(2, 300))}
    return {**doc, "subjects": [{"bsn": b} for b in BULK_BSNS]}


def _odd_categories(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    return {**doc, "categories": draw(st.sampled_from((
        [], ["personalia"] * 3, ["Personalia"], ["personalia "], ["persona\u200blia"],
        list(SPECIAL_SLUGS), list(CATEGORY_SLUGS), list(CATEGORY_SLUGS) * 50, [None], [1],
        [["personalia"]], "personalia", {"personalia": True}, ["gezondheid", "gezondheid"])))}


def _odd_authorisations(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    one = {"kind": "rc_machtiging", "reference": "RC-1"}
    return {**doc, "authorisations": draw(st.sampled_from((
        [one] * (limits.MAX_AUTHORISATIONS + 1), [one] * limits.MAX_AUTHORISATIONS,
        [{"kind": "machtiging", "reference": "RC-1"}], [{"kind": "rc_machtiging"}],
        [{"kind": "rc_machtiging", "reference": ""}], [{**one, "issued_on": "2026-02-30"}],
        [{**one, "extra": 1}], [{**one, "reference": "R" * 129}], one, ["rc_machtiging"],
        [{**one, "reference": "RC\x00"}], [{**one, "kind": "RC_MACHTIGING"}], [None], None)))}


def _free_text_trick(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    """Trickery in the free-text fields, which no pattern constrains: the case reference and an
    authorisation's reference."""
    trick = draw(st.sampled_from(TRICKS))
    authorisations = doc.get("authorisations")
    if draw(st.booleans()) and isinstance(authorisations, list) and authorisations \
            and isinstance(authorisations[0], dict):
        first = {**authorisations[0], "reference": f"RC{trick}-1"}
        return {**doc, "authorisations": [first, *authorisations[1:]]}
    current = doc.get("case_reference")
    current = current if isinstance(current, str) else "PARKET-1"
    at = draw(_positions(current))
    return {**doc, "case_reference": current[:at] + trick + current[at:]}


def _unknown_field(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.one_of(st.sampled_from(ODD_KEYS), st.sampled_from(ODD_KEYS),
                         st.text(max_size=6)))
    target = doc
    if draw(st.booleans()) and isinstance(doc.get("subjects"), list) and doc["subjects"] \
            and isinstance(doc["subjects"][0], dict):
        subject = {**doc["subjects"][0], key: "x"}
        return {**doc, "subjects": [subject, *doc["subjects"][1:]]}
    return {**target, key: draw(json_values(4))}


def _deep_nesting(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.sampled_from((*REQUEST_FIELDS, "extra")))
    depth = draw(st.sampled_from((3, limits.MAX_JSON_DEPTH, limits.MAX_JSON_DEPTH + 1, 200,
                                  990, 1000, 1010, 5000, 100_000)))
    return {**doc, key: nested(depth, kind=draw(st.sampled_from("[{")))}


def _huge_number(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    key = draw(st.sampled_from((*REQUEST_FIELDS, "extra")))
    digits = draw(st.sampled_from((300, 4300, 4301, 100_000)))
    return {**doc, key: Raw(draw(st.sampled_from(("", "-"))) + "9" * digits)}


def _not_an_object(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    return draw(st.sampled_from(([doc], [doc, doc], "request", 1, None, [], {})))


#: Mutations that keep text ordinary (no unicode trickery, no odd keys): assessment inputs.
PLAIN_MUTATIONS: tuple[Mutation, ...] = (
    _drop_field, _retype_field, _empty_field, _huge_string, _long_reference, _odd_legal_basis,
    _odd_purpose, _odd_date, _due_before_reference, _subject_count, _odd_categories,
    _odd_authorisations)
#: Trickery: unicode, foreign digits, odd keys, nesting, numbers Python will not convert.
TRICK_MUTATIONS: tuple[Mutation, ...] = (
    _unicode_trick, _free_text_trick, _subject_trick, _unknown_field, _deep_nesting,
    _huge_number, _not_an_object)
#: Everything DESIGN.md section 11 lists.
ALL_MUTATIONS: tuple[Mutation, ...] = (*PLAIN_MUTATIONS, *TRICK_MUTATIONS)


@st.composite
def mutated_requests(draw: st.DrawFn, *, received_on: date,
                     mutations: tuple[Mutation, ...] = ALL_MUTATIONS) -> Any:
    """A valid request with one to three mutations applied."""
    doc: Any = draw(valid_requests(received_on=received_on))
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(doc, dict):
            break
        doc = draw(st.sampled_from(mutations))(draw, doc)
    return doc


@st.composite
def duplicated_key_texts(draw: st.DrawFn, *, received_on: date) -> tuple[str, str]:
    """JSON text of a request that names one key twice in one object, and the key's path.

    The object is the request itself, a subject or an authorisation; the second value is the
    same, another valid one (two readings, both valid: the nasty case) or anything.
    """
    doc = draw(valid_requests(received_on=received_on))
    targets: list[tuple[str | int, ...]] = [()]
    targets += [("subjects", i) for i in range(min(len(doc["subjects"]), 3))]
    targets += [("authorisations", i) for i in range(len(doc.get("authorisations", ())))]
    target = draw(st.sampled_from(targets))
    obj: dict[str, Any] = doc
    for step in target:
        obj = obj[step]  # type: ignore[index]
    key = draw(st.one_of(st.sampled_from(sorted(obj)), st.sampled_from(REQUEST_FIELDS),
                         st.text(min_size=1, max_size=70)))
    if target == () and key == "subjects":
        second: Any = draw(st.one_of(subject_lists(), json_values(4)))
    elif target and target[0] == "subjects":
        second = draw(st.one_of(st.sampled_from(SUBJECT_POOL).map(
            lambda s: next(iter(s.values()))), json_values(4)))
    else:
        second = draw(st.one_of(st.just(obj.get(key)), json_values(4)))
    pairs = list(obj.items())
    if key not in obj:
        pairs.append((key, second))
    pairs.insert(draw(st.integers(0, len(pairs))), (key, second))
    replaced: Any = Pairs(tuple(pairs))
    for depth in range(len(target), 0, -1):
        parent: Any = doc
        for step in target[:depth - 1]:
            parent = parent[step]
        step = target[depth - 1]
        if isinstance(parent, list):
            assert isinstance(step, int)
            parent = [*parent[:step], replaced, *parent[step + 1:]]
        else:
            parent = {**parent, step: replaced}
        replaced = parent
    path = ".".join(str(p) for p in (*target, key[:64]))
    return render(replaced, ensure_ascii=draw(st.booleans())), path


@st.composite
def serialized(draw: st.DrawFn, value: Any) -> str | bytes:
    """``value`` as text, or as UTF-8 bytes (lone surrogates written as WTF-8, as a careless
    partner's encoder would)."""
    text = render(value, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        return text
    return text.encode("utf-8", "surrogatepass")


def submissions(*, received_on: date) -> st.SearchStrategy[str | bytes]:
    """Whatever a partner may send: requests with trickery or other mutations most, valid ones,
    keys named twice, any JSON, any text, any bytes."""
    documents = weighted(
        (4, mutated_requests(received_on=received_on, mutations=TRICK_MUTATIONS)),
        (4, mutated_requests(received_on=received_on)),
        (1, valid_requests(received_on=received_on)),
        (1, json_values()))
    return weighted(
        (8, documents.flatmap(serialized)),
        (1, duplicated_key_texts(received_on=received_on).map(lambda pair: pair[0])),
        (1, st.text(max_size=200)),
        (1, st.binary(max_size=200)))


# -- the invariants -------------------------------------------------------------------------------

def assert_well_formed(request: DisclosureRequest | InvalidRequest) -> None:
    """A reading is a request within every documented limit, or a refusal that says why."""
    if isinstance(request, InvalidRequest):
        assert request.errors, "a refusal must name at least one problem"
        for error in request.errors:
            assert isinstance(error.code, str)
            assert error.code
            assert isinstance(error.path, str)
            assert isinstance(error.message, str)
        assert request.legal_basis is None or isinstance(request.legal_basis, str)
        return
    assert isinstance(request, DisclosureRequest)
    assert 1 <= len(request.reference) <= limits.MAX_REFERENCE_LENGTH
    assert REFERENCE_PATTERN.fullmatch(request.reference), (
        f"reference {request.reference!r} is not of the documented form")
    assert 1 <= len(request.legal_basis) <= limits.MAX_SLUG_LENGTH
    assert SLUG_PATTERN.fullmatch(request.legal_basis), (
        f"legal_basis {request.legal_basis!r} is not of the documented form")
    assert isinstance(request.purpose, Purpose)
    assert isinstance(request.reference_date, date)
    assert 1 <= len(request.subjects) <= limits.MAX_SUBJECTS_PER_REQUEST
    assert len(set(request.subjects)) == len(request.subjects)
    for subject in request.subjects:
        if subject.id_type is SubjectIdType.BSN:
            assert is_valid_bsn(subject.number)
        else:
            assert subject.id_type is SubjectIdType.ONDERWIJSNUMMER
            assert is_valid_onderwijsnummer(subject.number)
    assert request.categories
    assert all(isinstance(c, Category) for c in request.categories)
    assert list(request.categories) == sorted(set(request.categories))
    if request.case_reference is not None:
        assert 1 <= len(request.case_reference) <= limits.MAX_CASE_REFERENCE_LENGTH
    assert len(request.authorisations) <= limits.MAX_AUTHORISATIONS
    for authorisation in request.authorisations:
        assert isinstance(authorisation.kind, AuthorisationKind)
        assert 1 <= len(authorisation.reference) <= limits.MAX_CASE_REFERENCE_LENGTH
    if request.due_date is not None:
        assert request.due_date >= request.reference_date


def assert_allowed_by_table(request: DisclosureRequest | InvalidRequest, body: Body,
                            table: GroundTable, decision: Decision) -> None:
    """The decision is one the table allows: DESIGN.md section 6, read as a contract.

    Nothing is released (or proposed for release) unless the ground's version in force on the
    reference date lists it, the requester's body and purpose are the ground's, and its
    conditions are met; special categories are never released by the engine; released is empty
    unless approved; a refusal to read is a rejection as ``invalid_request``.
    """
    assert decision.requester_body is body
    assert decision.table_hash == table.hash
    assert isinstance(decision.outcome, Outcome)
    released, withheld = set(decision.released), set(decision.withheld)
    assert not released & SPECIAL_CATEGORIES, "the engine released a special category"
    assert not released & withheld
    if decision.outcome in (Outcome.REJECTED, Outcome.NEEDS_REVIEW):
        assert not released
    if isinstance(request, InvalidRequest):
        assert decision.outcome is Outcome.REJECTED
        assert ReasonCode.INVALID_REQUEST.value in decision.reason_codes
        assert decision.proposal is None
        return
    assert withheld <= set(request.categories)
    proposed = set(decision.proposal.released) if decision.proposal is not None else set()
    offered = released | proposed
    if decision.outcome is Outcome.NEEDS_REVIEW:
        assert decision.proposal is not None
        assert proposed
        assert decision.review_triggers
    else:
        assert decision.proposal is None
        assert not decision.review_triggers
    if decision.outcome in (Outcome.APPROVED, Outcome.PARTIALLY_APPROVED):
        assert released
        assert bool(withheld) is (decision.outcome is Outcome.PARTIALLY_APPROVED)
    if not offered:
        return
    ground = table.get(request.legal_basis)
    assert ground is not None, "released under a ground the table does not have"
    on = request.reference_date
    in_force = [v for v in ground.versions
                if v.valid_from <= on and (v.valid_until is None or on <= v.valid_until)]
    assert len(in_force) == 1, "released under a ground not in force on the reference date"
    version = in_force[0]
    assert decision.ground_id == ground.id
    assert decision.ground_version == version.id
    assert offered <= version.categories | version.special_categories, (
        "released a category the version does not list")
    assert offered <= set(request.categories), "released a category nobody asked for"
    assert body in version.requesters, "released to a body the ground does not name"
    assert request.purpose in version.purposes, "released for a purpose the ground does not name"
    if version.case_reference_required:
        assert request.case_reference
    assert set(version.authorisations_required) <= request.authorisation_kinds
    if version.single_subject:
        assert len(request.subjects) == 1
    if released:  # the engine alone releases only what needs no reviewer
        assert version.review is ReviewMode.NEVER
        assert len(request.subjects) <= version.auto_limit


def assert_allowed_by_files(request: DisclosureRequest | InvalidRequest, body: Body,
                            documents: dict[str, Any], decision: Decision) -> None:
    """The decision is one the ground *files* allow, read here without the loader: what the
    operator wrote (``documents``, ground id → parsed YAML) is the law the engine applies."""
    if isinstance(request, InvalidRequest):
        return
    proposed = decision.proposal.released if decision.proposal is not None else ()
    offered = {c.value for c in (*decision.released, *proposed)}
    if not offered:
        return
    document = documents.get(request.legal_basis)
    assert isinstance(document, dict), "released under a ground no file defines"
    on = request.reference_date
    in_force = [v for v in document["versions"]
                if date.fromisoformat(str(v["valid_from"])) <= on
                and (v.get("valid_until") is None
                     or on <= date.fromisoformat(str(v["valid_until"])))]
    assert len(in_force) == 1, "released under a ground its file does not put in force then"
    version = in_force[0]
    assert offered <= {*version["categories"], *version.get("special_categories", ())}
    assert body.value in document["requesters"]
    assert request.purpose.value in document["purposes"]
    if version.get("case_reference_required", False):
        assert request.case_reference
    assert {*version.get("authorisations_required", ())} <= {
        k.value for k in request.authorisation_kinds}
    if version.get("single_subject", False):
        assert len(request.subjects) == 1
    if decision.released:
        assert version.get("review", "never") == "never"
        assert len(request.subjects) <= version.get("auto_limit", limits.DEFAULT_AUTO_LIMIT)
        assert not offered & set(SPECIAL_SLUGS)


def documents_by_id(files: dict[str, bytes]) -> dict[str, Any]:
    """The ground documents of a folder's files by their id, parsed without the product's code."""
    out: dict[str, Any] = {}
    for content in files.values():
        document = yaml.safe_load(content)
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            out[document["id"]] = document
    return out


SHIPPED_BY_ID: dict[str, Any] = {}  # filled in below, once the shipped files are read


def entitled_bodies(reading: DisclosureRequest | InvalidRequest | Any,
                    ) -> st.SearchStrategy[Body]:
    """Mostly a body the claimed ground names (so the policy gets past step 4), else any."""
    ground = SHIPPED.get(reading.legal_basis) if isinstance(reading, DisclosureRequest) else None
    if ground is None:
        return st.sampled_from(Body)
    return weighted((4, st.sampled_from(sorted(ground.requesters))), (1, st.sampled_from(Body)))


def assert_fits_its_columns(decision: Decision) -> None:
    """What the ledger records of a decision fits its columns (DESIGN.md section 10: every value
    from outside is checked against its column's limit first)."""
    if decision.ground_id is not None:
        assert len(decision.ground_id) <= limits.MAX_SLUG_LENGTH, (
            f"ground_id of {len(decision.ground_id)} characters does not fit its column of "
            f"{limits.MAX_SLUG_LENGTH}")
    if decision.ground_version is not None:
        assert len(decision.ground_version) <= limits.COLUMN_GROUND_VERSION_LENGTH


# -- ground files ---------------------------------------------------------------------------------

SHIPPED_FILES: dict[str, str] = {
    path.name: path.read_text("utf-8") for path in sorted(DEFAULT_GROUNDS_DIR.glob("*.yaml"))}
SHIPPED_DOCUMENTS: dict[str, dict[str, Any]] = {
    name: load_yaml(text) for name, text in SHIPPED_FILES.items()}
SHIPPED_BY_ID.update(documents_by_id({n: t.encode("utf-8") for n, t in SHIPPED_FILES.items()}))


def dump(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8")


def _subset(draw: st.DrawFn, values: tuple[str, ...], *, min_size: int = 0) -> list[str]:
    return draw(st.lists(st.sampled_from(values), unique=True, min_size=min_size,
                         max_size=len(values)))


def _a_version(draw: st.DrawFn, document: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    versions = document.get("versions")
    if not isinstance(versions, list) or not versions or not isinstance(versions[0], dict):
        return None
    index = draw(st.integers(0, len(versions) - 1))
    version = versions[index]
    return (index, version) if isinstance(version, dict) else None


def _with_version(document: dict[str, Any], index: int, version: Any) -> dict[str, Any]:
    versions = list(document["versions"])
    versions[index] = version
    return {**document, "versions": versions}


def _a_date(value: Any) -> date:
    """``value`` as a date to compute with, or the shipped grounds' first day if it is none."""
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return date(2020, 8, 1)
    return day if date(1000, 1, 1) <= day <= date(9000, 1, 1) else date(2020, 8, 1)


def _lawful_change(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """A change a legislator might make, which the loader must take: who, why, what, when."""
    kind = draw(weighted((1, st.just("requesters")), (1, st.just("purposes")),
                         (2, st.just("version")), (2, st.just("split")), (2, st.just("end"))))
    if kind == "requesters":
        return {**document, "requesters": _subset(draw, BODY_SLUGS, min_size=1)}
    if kind == "purposes":
        return {**document, "purposes": _subset(draw, PURPOSE_SLUGS, min_size=1)}
    found = _a_version(draw, document)
    if found is None:
        return document
    index, version = found
    start = _a_date(version.get("valid_from"))
    if kind == "end":
        until = start + timedelta(days=draw(st.integers(0, 3000)))
        return _with_version(document, index, {**version, "valid_until": until.isoformat()})
    if kind == "split" and version.get("valid_until") is None:
        cut = start + timedelta(days=draw(st.integers(1, 3000)))
        first = {**version, "valid_until": (cut - timedelta(days=1)).isoformat()}
        second = {**version, "valid_from": cut.isoformat()}
        second = {**second, **_version_content(draw)}
        versions = [v for i, v in enumerate(document["versions"]) if i != index]
        return {**document, "versions": [*versions, first, second]}
    return _with_version(document, index, {**version, **_version_content(draw)})


def _version_content(draw: st.DrawFn) -> dict[str, Any]:
    special = _subset(draw, SPECIAL_SLUGS)
    return {
        "categories": _subset(draw, ORDINARY_SLUGS, min_size=0 if special else 1),
        "special_categories": special,
        "case_reference_required": draw(st.booleans()),
        "authorisations_required": _subset(draw, AUTHORISATION_SLUGS),
        "single_subject": draw(st.booleans()),
        "auto_limit": draw(st.sampled_from((1, 2, 3, AUTO_LIMIT, 10**30))),
        "review": draw(st.sampled_from(("never", "always"))),
        "response_days": draw(st.integers(1, 366)),
        "pseudonymise": draw(st.booleans()),
    }


#: Values an operator may mistype for a field of a ground file.
ODD_YAML_VALUES = st.one_of(
    json_values(6), st.dates(), st.binary(max_size=4),
    st.sampled_from((10**100, -1, 0, 367, 1.5, float("inf"), float("nan"), True, "1000", "",
                     "2020-02-30", "2020-8-1", "20200801", date(2020, 8, 1), "never ", "Never")))


def _break_key(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """A key removed, retyped or added (possibly with a key that is no string)."""
    found = _a_version(draw, document)
    where = draw(st.sampled_from(("ground", "version"))) if found else "ground"
    target = found[1] if where == "version" and found else document
    action = draw(st.sampled_from(("remove", "retype", "add")))
    if action == "remove" and target:
        key = draw(st.sampled_from([k for k in target if isinstance(k, str)] or ["id"]))
        changed = {k: v for k, v in target.items() if k != key}
    elif action == "retype" and target:
        key = draw(st.sampled_from([k for k in target if isinstance(k, str)] or ["id"]))
        changed = {**target, key: draw(ODD_YAML_VALUES)}
    else:
        odd_key: Any = draw(st.one_of(st.sampled_from(ODD_KEYS), st.text(max_size=6),
                                      st.integers(), st.none(), st.booleans()))
        changed = {**target, odd_key: draw(ODD_YAML_VALUES)}
    if where == "version" and found:
        return _with_version(document, found[0], changed)
    return changed


def _break_dates(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    found = _a_version(draw, document)
    if found is None:
        return document
    index, version = found
    kind = draw(st.sampled_from(("odd", "backwards", "overlap", "copy")))
    if kind == "odd":
        key = draw(st.sampled_from(("valid_from", "valid_until")))
        return _with_version(document, index, {**version, key: draw(st.one_of(
            st.sampled_from(ODD_DATES), st.dates()))})
    start = draw(st.dates(date(2000, 1, 2), date(2040, 1, 1)))
    if kind == "backwards":
        return _with_version(document, index, {
            **version, "valid_from": start.isoformat(),
            "valid_until": (start - timedelta(days=draw(st.integers(1, 800)))).isoformat()})
    later = {**version, "valid_from": start.isoformat()}
    if kind == "copy":
        later = dict(version)
    return {**document, "versions": [*document["versions"], later]}


def _unknown_category(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    found = _a_version(draw, document)
    if found is None:
        return document
    index, version = found
    key = draw(st.sampled_from(("categories", "special_categories")))
    odd = draw(st.sampled_from((*CATEGORY_SLUGS, "Personalia", "bsn", "", "gezondheid ",
                                "personalia\u200b")))
    found = version.get(key)
    current: list[Any] = found if isinstance(found, list) else []
    return _with_version(document, index, {**version, key: [*current, odd]})


def _rename(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "id": draw(st.one_of(
        st.sampled_from(GROUND_IDS),
        st.sampled_from(("a" * (limits.MAX_SLUG_LENGTH + 1), "AWR-55", "awr_55", "", "awr-٥٥")),
        st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}", fullmatch=True)))}


#: How a ground document may be changed before it is written back as YAML.
LAWFUL_CHANGES = (_lawful_change,)
MISTAKES = (_lawful_change, _break_key, _break_dates, _unknown_category, _rename)

#: Whole ground files an operator may end up with: not mappings, several documents, tags the
#: safe loader refuses, small alias bombs, recursive aliases, broken YAML.
ODD_FILES: tuple[bytes, ...] = (
    b"", b"~\n", b"42\n", b"just a sentence\n", b"- a\n- b\n", b"---\nid: a\n---\nid: b\n",
    b"!!python/object/apply:os.system ['true']\n", b"!!binary aGVsbG8=\n", b"!!set {a, b}\n",
    b"? [a, b]\n: c\n", b"id: [unclosed\n", b"id:\n\t- tab\n", b"*undefined\n",
    b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: &d [*c, *c]\ne: &e [*d, *d]\n",
    b"&r [*r]\n", b"&m {self: *m}\n", b"\xff\xfe\x00\x00", b"\xef\xbb\xbfid: awr-55\n")
#: Lines appended to a ground file: the last of two equal keys wins in YAML, so these replace a
#: field with a recursive alias, an explicit tag or a value the schema cannot expect.
ODD_TAILS: tuple[bytes, ...] = (
    b"requesters: &r [gemeente, *r]\n", b"versions: &v [*v]\n", b"legal_basis: &l {law: *l}\n",
    b"versions: [&w {valid_from: '2020-08-01', categories: [personalia], note: *w}]\n",
    b"purposes: !!set {bijstand}\n", b"title: !!binary aGVsbG8=\n",
    b"versions: [{valid_from: !!timestamp 2020-08-01, categories: [personalia]}]\n",
    b"requesters: [gemeente, &x gemeente]\n", b"id: !!str 55\n", b"title: \xe9t\xe9\n",
    b"auto_limit: 1:30\n", b"title: " + b"9" * 5000 + b"\n",
    b"versions: [{valid_from: '2020-08-01', categories: [personalia], "
    b"auto_limit: 0x7fffffffffffffffffff}]\n")


@st.composite
def ground_folders(draw: st.DrawFn, *, changes: tuple[Mutation, ...] = MISTAKES,
                   raw: bool = True) -> dict[str, bytes]:
    """File name → bytes of a folder of ground files: some of the shipped ones, changed."""
    names = draw(st.lists(st.sampled_from(sorted(SHIPPED_DOCUMENTS)), unique=True, min_size=1,
                          max_size=len(SHIPPED_DOCUMENTS)))
    documents: dict[str, Any] = {name: SHIPPED_DOCUMENTS[name] for name in names}
    for _ in range(draw(weighted((1, st.just(0)), (4, st.integers(1, 4))))):
        name = draw(st.sampled_from(sorted(documents)))
        if isinstance(documents[name], dict):
            documents[name] = draw(st.sampled_from(changes))(draw, documents[name])
    files: dict[str, bytes] = {}
    for old_name, document in documents.items():
        ground_id = document.get("id") if isinstance(document, dict) else None
        renamed = (isinstance(ground_id, str) and SLUG_PATTERN.fullmatch(ground_id)
                   and draw(st.booleans()))  # renamed with its file, or not
        files[f"{ground_id}.yaml" if renamed else old_name] = dump(document)
    if raw:
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(sorted(files)))
            how = draw(st.sampled_from(("replace", "append", "latin-1", "utf-16", "truncate")))
            if how == "replace":
                files[name] = draw(st.sampled_from(ODD_FILES))
            elif how == "append":
                files[name] += draw(st.sampled_from(ODD_TAILS))
            elif how == "latin-1":
                files[name] = files[name].decode("utf-8", "replace").replace(
                    "title: ", "title: é").encode("latin-1", "replace")
            elif how == "utf-16":
                files[name] = files[name].decode("utf-8", "replace").encode("utf-16")
            else:
                files[name] = files[name][:draw(st.integers(0, len(files[name])))]
    return files


def _day_next_to(day: date, step: int) -> list[date]:
    """The day before or after ``day``, if the calendar has one."""
    try:
        return [day + timedelta(days=step)]
    except OverflowError:
        return []


def requests_for(table: GroundTable, rng: random.Random,
                 ) -> Iterator[tuple[DisclosureRequest, Body]]:
    """Requests that probe every version of every ground of ``table`` at its edges (the day
    before it, its first and last day, the day after), for its own bodies and two others:
    purposes, categories, subject counts around the automatic limit, case reference and
    authorisations at random."""
    for ground in table:
        for version in ground.versions:
            edges = [version.valid_from, *_day_next_to(version.valid_from, -1)]
            if version.valid_until is not None:
                edges += [version.valid_until, *_day_next_to(version.valid_until, 1)]
            counts = sorted({1, 2, min(version.auto_limit, AUTO_LIMIT),
                             min(version.auto_limit + 1, AUTO_LIMIT + 1)})
            purposes = sorted(version.purposes)
            bodies = {*version.requesters, *rng.sample(list(Body), 2)}
            for body in sorted(bodies):
                purpose = rng.choice(purposes if rng.random() < 0.7 else list(Purpose))
                categories = rng.sample(list(Category), rng.randint(1, len(Category)))
                count = rng.choice(counts)
                kinds = rng.sample(list(AuthorisationKind), rng.randint(0, 2))
                yield DisclosureRequest(
                    reference="PROP-1", legal_basis=ground.id, purpose=purpose,
                    reference_date=rng.choice(edges),
                    subjects=tuple(Subject(SubjectIdType.BSN, n) for n in BULK_BSNS[:count]),
                    categories=tuple(sorted(categories)),
                    case_reference=rng.choice((None, "PARKET-1")),
                    authorisations=tuple(Authorisation(k, "AUTH-1") for k in kinds)), body

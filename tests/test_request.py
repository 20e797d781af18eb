"""Request validation at the boundary: each bad field named, with a code, and nothing else."""

from __future__ import annotations

from datetime import date

import pytest

from legal_bases import limits
from legal_bases.errors import InvalidRequestError
from legal_bases.identifiers import (
    bsn_problem,
    is_valid_bsn,
    is_valid_onderwijsnummer,
    mask,
    oin_problem,
)
from legal_bases.request import Subject, parse_request, read_request, validation_errors
from legal_bases.vocabulary import Category, SubjectIdType

RECEIVED = date(2026, 11, 28)


def request(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "reference": "BD-2026-000123",
        "legal_basis": "awr-55",
        "purpose": "belastingheffing",
        "reference_date": "2026-11-28",
        "subjects": [{"bsn": "111222333"}],
        "categories": ["personalia", "opleidingsgegevens"],
        "case_reference": "FIN/2026/77",
        "authorisations": [{"kind": "rc_machtiging", "reference": "RC-2026-12",
                            "issued_on": "2026-11-20"}],
        "due_date": "2026-12-26",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def errors_of(body: object) -> dict[str, str]:
    return {e.path: e.code for e in validation_errors(body)}


@pytest.mark.parametrize(("number", "valid"), [
    ("111222333", True), ("123456782", True), ("999998620", False), ("000000000", False),
    ("11122233", False), ("1112223334", False), ("11122233a", False),
])
def test_bsn_elfproef(number: str, valid: bool) -> None:
    assert is_valid_bsn(number) is valid


def test_bsn_given_as_a_json_number_is_refused_with_a_reason() -> None:
    assert bsn_problem(111222333) == (
        "must be a string of 9 digits (a number would lose its leading zeros)")


@pytest.mark.parametrize(("number", "valid"), [
    ("101222331", True), ("100252333", False), ("111222333", False), ("10122233", False),
])
def test_onderwijsnummer_check(number: str, valid: bool) -> None:
    assert is_valid_onderwijsnummer(number) is valid


@pytest.mark.parametrize(("oin", "ok"), [
    ("00000001002220647000", True), ("0000000700025BE00000", True),
    ("0000000100222064700", False), ("00000001002220647000X", False),
    ("ABCDEFGH002220647000", False),
])
def test_oin_shape_allows_letters_after_the_prefix(oin: str, ok: bool) -> None:
    assert (oin_problem(oin) is None) is ok


def test_a_valid_request_becomes_typed_values() -> None:
    parsed = parse_request(request(), received_on=RECEIVED)
    assert parsed.reference_date == date(2026, 11, 28)
    assert parsed.due_date == date(2026, 12, 26)
    assert parsed.subjects == (Subject(SubjectIdType.BSN, "111222333"),)
    assert parsed.categories == (Category.OPLEIDINGSGEGEVENS, Category.PERSONALIA)
    assert parsed.authorisations[0].issued_on == date(2026, 11, 20)


def test_reference_date_defaults_to_the_day_of_receipt() -> None:
    parsed = parse_request(request(reference_date=...), received_on=RECEIVED)
    assert parsed.reference_date == RECEIVED


def test_a_category_listed_twice_counts_once_and_a_subject_too() -> None:
    parsed = parse_request(request(categories=["personalia", "personalia"],
                                   subjects=[{"bsn": "111222333"}, {"bsn": "111222333"},
                                             {"onderwijsnummer": "101222331"}]),
                           received_on=RECEIVED)
    assert parsed.categories == (Category.PERSONALIA,)
    assert [s.id_type for s in parsed.subjects] == [SubjectIdType.BSN,
                                                   SubjectIdType.ONDERWIJSNUMMER]


def test_subject_repr_never_shows_the_number() -> None:
    subject = Subject(SubjectIdType.BSN, "111222333")
    assert "111222333" not in repr(subject)
    assert "111222333" not in str(parse_request(request(), received_on=RECEIVED))
    assert subject.masked == mask("111222333") == "******333"


@pytest.mark.parametrize(("changes", "path", "code"), [
    ({"reference": ...}, "reference", "required"),
    ({"reference": ""}, "reference", "empty"),
    ({"reference": "x" * (limits.MAX_REFERENCE_LENGTH + 1)}, "reference", "too_long"),
    ({"reference": "has space"}, "reference", "bad_format"),
    ({"legal_basis": "AWR 55"}, "legal_basis", "bad_format"),
    ({"purpose": "nosy"}, "purpose", "unknown_value"),
    ({"purpose": ...}, "purpose", "required"),
    ({"subjects": []}, "subjects", "too_short"),
    ({"subjects": "111222333"}, "subjects", "wrong_type"),
    ({"subjects": [{"bsn": "111222334"}]}, "subjects.0.bsn", "invalid_bsn"),
    ({"subjects": [{"bsn": 111222333}]}, "subjects.0.bsn", "invalid_bsn"),
    ({"subjects": [{"onderwijsnummer": "100252333"}]}, "subjects.0.onderwijsnummer",
     "invalid_onderwijsnummer"),
    ({"subjects": [{"bsn": "111222333", "onderwijsnummer": "101222331"}]}, "subjects.0",
     "bad_subject"),
    ({"subjects": [{"name": "Jan"}]}, "subjects.0.name", "unknown_field"),
    ({"subjects": ["111222333"]}, "subjects.0", "wrong_type"),
    ({"categories": ["personalia", "shoe_size"]}, "categories.1", "unknown_value"),
    ({"categories": []}, "categories", "too_short"),
    ({"reference_date": "28-11-2026"}, "reference_date", "bad_date"),
    ({"reference_date": "2026-02-30"}, "reference_date", "bad_date"),
    ({"due_date": "2026-11-27"}, "due_date", "before_reference_date"),
    ({"authorisations": [{"kind": "handshake", "reference": "x"}]}, "authorisations.0.kind",
     "unknown_value"),
    ({"authorisations": [{"kind": "rc_machtiging"}]}, "authorisations.0.reference", "required"),
    ({"case_reference": ""}, "case_reference", "empty"),
    ({"requester": "belastingdienst"}, "requester", "unknown_field"),
])
def test_each_bad_field_is_named_with_a_code(changes: dict[str, object], path: str,
                                             code: str) -> None:
    assert errors_of(request(**changes)) == {path: code}


def test_every_problem_is_reported_not_only_the_first() -> None:
    found = errors_of(request(purpose="x", subjects=[{"bsn": "1"}, {"bsn": "111222333"},
                                                     {"bsn": "2"}], due_date="nope"))
    assert found == {"purpose": "unknown_value", "subjects.0.bsn": "invalid_bsn",
                     "subjects.2.bsn": "invalid_bsn", "due_date": "bad_date"}


def test_too_many_subjects_is_refused_at_the_cap_plus_one() -> None:
    many = [{"bsn": "111222333"}] * (limits.MAX_SUBJECTS_PER_REQUEST + 1)
    assert errors_of(request(subjects=many)) == {"subjects": "too_long"}
    assert errors_of(request(subjects=many[:-1])) == {}


def test_not_an_object_at_all() -> None:
    assert errors_of(["not", "a", "request"]) == {"": "wrong_type"}


def test_parse_raises_with_every_error_and_read_keeps_the_claimed_ground() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request(request(purpose="x", categories=["y"]), received_on=RECEIVED)
    assert [e.path for e in caught.value.errors] == ["categories.0", "purpose"]
    invalid = read_request(request(purpose="x"), received_on=RECEIVED)
    assert invalid.legal_basis == "awr-55"  # type: ignore[union-attr]


def test_error_messages_never_repeat_a_submitted_number() -> None:
    for error in validation_errors(request(subjects=[{"bsn": "111222334"}, {"bsn": 123456782}])):
        assert "111222334" not in error.message
        assert "123456782" not in error.message

"""Reading a request fast changes nothing: the reading of 0.6.0, frozen here, says the same.

0.6.0 showed every request to cerberus, which walked the whole schema; the engine now shows
cerberus only what the schema's compiled check does not accept
(:func:`legal_bases.validator.compiled_check`). The reading of 0.6.0 is kept below as it was
(its validator class, error conversion and parsing, copied from ``legal_bases/validator.py`` and
``legal_bases/request.py`` at 0.6.0), so that the equivalence can be tested after the old code is
gone. Hypothesis generates valid and invalid requests (``properties_support``), and every
reading must be the same to the byte: each error's path, code and message, in the same order,
and every parsed value with its type. On JSON data the compiled check must also agree with
cerberus exactly (accept what it accepts), so the fast path is the common one; on other Python
values it may only be stricter.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from datetime import date, timedelta
from enum import Enum
from json import JSONDecodeError
from typing import Any

import hypothesis.strategies as st
import pytest
from cerberus import Validator, errors
from hypothesis import HealthCheck, example, given, settings
from properties_support import (
    BULK_BSNS,
    PLAIN_MUTATIONS,
    REQUEST_FIELDS,
    json_values,
    mutated_requests,
    render,
    submissions,
    valid_requests,
    weighted,
)

from legal_bases import limits, strict_json
from legal_bases.errors import FieldError, InvalidRequestError
from legal_bases.identifiers import bsn_problem, onderwijsnummer_problem
from legal_bases.request import (
    Authorisation,
    DisclosureRequest,
    InvalidRequest,
    Subject,
    parse_request,
    read_json,
    read_request,
    read_request_text,
    validation_errors,
)
from legal_bases.validator import VOCABULARIES, compiled_check, schema
from legal_bases.vocabulary import AuthorisationKind, Category, Purpose, SubjectIdType

RECEIVED_ON = date(2026, 11, 28)
REQUEST: dict[str, Any] = {
    "reference": "BD-2026-000123", "legal_basis": "awr-55", "purpose": "belastingheffing",
    "reference_date": "2026-11-28", "subjects": [{"bsn": "111222333"}],
    "categories": ["personalia", "opleidingsgegevens"], "case_reference": "FIN/2026/77",
    "authorisations": [{"kind": "rc_machtiging", "reference": "RC-2026-12",
                        "issued_on": "2026-11-20"}],
    "due_date": "2026-12-26"}


# -- the reading of 0.6.0, frozen ------------------------------------------------------------------

_FROZEN_VOCABULARY_SETS = {name: frozenset(values) for name, values in VOCABULARIES.items()}
_FROZEN_SUBJECT_KEYS = ("bsn", "onderwijsnummer")
_FROZEN_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class FrozenValidator(Validator):  # type: ignore[misc]
    """``DisclosureValidator`` of 0.6.0, with the rules and checks the request schema uses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("field_errors", [])
        super().__init__(*args, **kwargs)

    def validate(self, document: Any, *args: Any, **kwargs: Any) -> bool:
        self._config["field_errors"].clear()
        return bool(super().validate(document, *args, **kwargs))

    def _validate_vocabulary(self, vocabulary: str, field: str, value: object) -> None:
        """Value must be a slug of the named vocabulary.

        The rule's arguments are validated against this schema:
        {'type': 'string', 'allowed': ['body', 'purpose', 'category', 'ordinary_category',
         'special_category', 'authorisation_kind', 'review_mode']}
        """
        if isinstance(value, str) and value not in _FROZEN_VOCABULARY_SETS[vocabulary]:
            allowed = ", ".join(VOCABULARIES[vocabulary])
            if vocabulary == "ordinary_category" and value in _FROZEN_VOCABULARY_SETS[
                    "special_category"]:
                message = f"{value!r} is a special category; list it under special_categories"
            elif vocabulary == "special_category" and value in _FROZEN_VOCABULARY_SETS[
                    "category"]:
                message = f"{value!r} is not a special category; list it under categories"
            else:
                kind = vocabulary.replace("_", " ")
                message = f"{value!r} is not a known {kind}; one of: {allowed}"
            self._domain_error(field, "unknown_value", message)

    def _check_with_iso_date(self, field: str, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not _FROZEN_ISO_DATE.match(value):
            self._domain_error(field, "bad_date", f"{value!r} is not a date written as YYYY-MM-DD")
            return
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            self._domain_error(field, "bad_date", f"{value!r} is not a date: {exc}")

    def _check_with_visible_text(self, field: str, value: object) -> None:
        if isinstance(value, str) and not any(
                unicodedata.category(c)[0] not in "ZC" for c in value):
            self._domain_error(field, "blank", "must hold visible characters, not only spaces "
                                               "or invisible ones")

    def _check_with_subjects(self, field: str, subjects: object) -> None:
        if not isinstance(subjects, list):
            return
        base = self._path(field)
        for index, subject in enumerate(subjects):
            if type(subject) is dict and len(subject) == 1:
                (key, number), = subject.items()
                if key == "bsn":
                    problem = bsn_problem(number)
                elif key == "onderwijsnummer":
                    problem = onderwijsnummer_problem(number)
                else:
                    self._record(f"{base}.{index}.{key}", "unknown_field",
                                 "a subject is identified by bsn or onderwijsnummer")
                    continue
                if problem is not None:
                    code = "invalid_bsn" if key == "bsn" else "invalid_onderwijsnummer"
                    self._record(f"{base}.{index}.{key}", code, problem)
            elif isinstance(subject, dict):
                keys = sorted(k for k in subject if k in _FROZEN_SUBJECT_KEYS)
                message = ("needs exactly one of bsn, onderwijsnummer"
                           if len(keys) != 1 else "has fields other than its identifier")
                self._record(f"{base}.{index}", "bad_subject", message)
            else:
                self._record(f"{base}.{index}", "wrong_type",
                             "must be an object such as {\"bsn\": \"111222333\"}")
        if self._config["field_errors"]:
            self._error(field, "see field_errors")

    def _path(self, field: str) -> str:
        return ".".join(str(p) for p in (*self.document_path, field))

    def _record(self, path: str, code: str, message: str) -> None:
        self._config["field_errors"].append(FieldError(path, code, message))

    def _domain_error(self, field: str, code: str, message: str) -> None:
        self._record(self._path(field), code, message)
        self._error(field, message)

    def field_errors(self) -> list[FieldError]:
        found = [_frozen_from_cerberus(e) for e in _frozen_leaves(self._errors)]
        found.extend(self._config["field_errors"])
        return sorted(found, key=lambda e: _frozen_natural_key(e.path))


def _frozen_leaves(errs: Any) -> Any:
    for err in errs:
        if err.is_group_error:
            yield from _frozen_leaves(err.child_errors)
        elif err.code != errors.CUSTOM.code and err.rule != "vocabulary":
            yield err


_FROZEN_MESSAGES = {
    "required": ("required", "is required"),
    "type": ("wrong_type", "must be of type {constraint}"),
    "empty": ("empty", "must not be empty"),
    "nullable": ("null_not_allowed", "must not be null"),
    "minlength": ("too_short", "must have at least {constraint} item(s)"),
    "maxlength": ("too_long", "must have at most {constraint} item(s) or characters"),
    "regex": ("bad_format", "does not have the required format"),
    "min": ("too_small", "must be at least {constraint}"),
    "max": ("too_large", "must be at most {constraint}"),
    "allowed": ("unknown_value", "must be one of {constraint}"),
}


def _frozen_from_cerberus(err: Any) -> FieldError:
    path = ".".join(str(p) for p in err.document_path)
    if err.code == errors.UNKNOWN_FIELD.code:
        return FieldError(path, "unknown_field", "is not a field of this document")
    code, template = _FROZEN_MESSAGES.get(err.rule, ("invalid", "is not valid ({constraint})"))
    if err.rule == "maxlength" and isinstance(err.value, str):
        template = "must be at most {constraint} characters"
    elif err.rule == "maxlength":
        template = "must have at most {constraint} item(s)"
    return FieldError(path, code, template.format(constraint=err.constraint))


def _frozen_natural_key(path: str) -> tuple[tuple[int, object], ...]:
    return tuple((0, int(p)) if p.isascii() and p.isdigit() and len(p) <= 18 else (1, p)
                 for p in path.split("."))


_frozen: dict[str, FrozenValidator] = {}


def frozen_validation_errors(raw: object, *, received_on: date | None = None,
                             ) -> list[FieldError]:
    """``validation_errors`` of 0.6.0: one validator reused for every document, as then."""
    if not isinstance(raw, dict):
        return [FieldError("", "wrong_type", "a request must be a JSON object")]
    validator = _frozen.get("request")
    if validator is None:
        validator = _frozen["request"] = FrozenValidator(schema("request"))
    if validator.validate(raw, normalize=False):
        found: list[FieldError] = []
    else:
        found = validator.field_errors()
    due, ref = raw.get("due_date"), raw.get("reference_date")
    if ref is None and received_on is not None:
        ref = received_on.isoformat()
    if not found and isinstance(due, str) and isinstance(ref, str) and due < ref:
        found.append(FieldError("due_date", "before_reference_date",
                                "must not be before reference_date"))
    return found


_FROZEN_SUBJECT_TYPES = {"bsn": SubjectIdType.BSN,
                         "onderwijsnummer": SubjectIdType.ONDERWIJSNUMMER}


def frozen_parse_request(raw: object, *, received_on: date) -> DisclosureRequest:
    found = frozen_validation_errors(raw, received_on=received_on)
    if found:
        raise InvalidRequestError(found)
    assert isinstance(raw, dict)
    subjects: dict[tuple[str, str], Subject] = {}
    for item in raw["subjects"]:
        (key, number), = item.items()
        if (key, number) not in subjects:
            subjects[(key, number)] = Subject(_FROZEN_SUBJECT_TYPES[key], number)
    reference_date = raw.get("reference_date")
    due_date = raw.get("due_date")
    return DisclosureRequest(
        reference=raw["reference"],
        legal_basis=raw["legal_basis"],
        purpose=Purpose(raw["purpose"]),
        reference_date=date.fromisoformat(reference_date) if reference_date else received_on,
        subjects=tuple(subjects.values()),
        categories=tuple(sorted({Category(c) for c in raw["categories"]})),
        case_reference=raw.get("case_reference"),
        authorisations=tuple(_frozen_authorisation(a) for a in raw.get("authorisations") or ()),
        due_date=date.fromisoformat(due_date) if due_date else None,
    )


def _frozen_authorisation(raw: dict[str, Any]) -> Authorisation:
    issued_on = raw.get("issued_on")
    return Authorisation(
        kind=AuthorisationKind(raw["kind"]),
        reference=raw["reference"],
        issued_on=date.fromisoformat(issued_on) if issued_on else None,
    )


def frozen_read_request(raw: object, *, received_on: date) -> DisclosureRequest | InvalidRequest:
    try:
        return frozen_parse_request(raw, received_on=received_on)
    except InvalidRequestError as exc:
        legal_basis = raw.get("legal_basis") if isinstance(raw, dict) else None
        claimed = (legal_basis if isinstance(legal_basis, str) and legal_basis.isprintable()
                   and 0 < len(legal_basis) <= limits.MAX_SLUG_LENGTH else None)
        return InvalidRequest(exc.errors, claimed)


def frozen_read_request_text(text: str | bytes, *, received_on: date,
                             ) -> DisclosureRequest | InvalidRequest:
    """``read_request_text`` of 0.6.0 (``read_json`` with its character scan, then the reading)."""
    try:
        data = strict_json.loads(text)
    except strict_json.DuplicateKeyError as exc:
        return InvalidRequest((FieldError(
            exc.path, "duplicate_key", "this key appears more than once in its object; send "
            "each key once"),))
    except JSONDecodeError as exc:
        return InvalidRequest((FieldError(
            "", "bad_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"),))
    except UnicodeDecodeError as exc:
        return InvalidRequest((FieldError(
            "", "bad_encoding", f"not UTF-8 text (at byte {exc.start})"),))
    except ValueError as exc:
        reason = str(exc) if "number" in str(exc) else "a number far too long"
        return InvalidRequest((FieldError(
            "", "bad_json", f"not JSON the engine can read ({reason})"),))
    except RecursionError:
        return InvalidRequest((FieldError("", "too_deep", "the JSON nests too deeply"),))
    path = frozen_bad_character_path(data)
    if path is not None:
        return InvalidRequest((FieldError(
            path, "invalid_characters", "holds a NUL character or an unpaired surrogate"),))
    return frozen_read_request(data, received_on=received_on)


def frozen_bad_character_path(data: Any) -> str | None:
    """``strict_json.bad_character_path`` of 0.6.0 (a scan character by character)."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _frozen_bad(node):
                return path
        elif isinstance(node, dict):
            for key, value in node.items():
                if _frozen_bad(key):
                    return path
                stack.append((value, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, list):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node))
    return None


def _frozen_bad(text: str) -> bool:
    return "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# -- comparing readings to the byte ----------------------------------------------------------------

def exact(value: Any) -> Any:
    """``value`` as nested tuples that name every type, so that equal means identical (a str
    subclass or an int where a str was is a difference; so is the order of errors)."""
    if isinstance(value, BaseException):
        return ("raised", type(value).__name__, str(value),
                exact(getattr(value, "errors", None)))
    if isinstance(value, Enum):
        return (type(value).__name__, value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *((f.name, exact(getattr(value, f.name)))
                                        for f in dataclasses.fields(value)))
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(exact(v) for v in value))
    return (type(value).__name__, repr(value))


def outcome(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except Exception as exc:  # the old and the new reading must raise alike, if at all
        return exc


def assert_read_alike(raw: Any, *, every_day: bool = True) -> None:
    """Every reading function of the request gives what 0.6.0 gave, to the byte (the errors
    without a day of receipt, and as of days before and after a due date may fall)."""
    days = (None, RECEIVED_ON, date(2031, 1, 1)) if every_day else (RECEIVED_ON,)
    for received_on in days:
        assert exact(outcome(validation_errors, raw, received_on=received_on)) == exact(
            outcome(frozen_validation_errors, raw, received_on=received_on))
    assert exact(outcome(read_request, raw, received_on=RECEIVED_ON)) == exact(
        outcome(frozen_read_request, raw, received_on=RECEIVED_ON))
    if every_day:
        assert exact(outcome(parse_request, raw, received_on=RECEIVED_ON)) == exact(
            outcome(frozen_parse_request, raw, received_on=RECEIVED_ON))


def cerberus_accepts(raw: Any) -> bool:
    """Whether the frozen cerberus validation finds nothing wrong (the due date aside); 0.6.0
    showed it only objects."""
    validator = FrozenValidator(schema("request"))
    return isinstance(raw, dict) and bool(validator.validate(raw, normalize=False))


def the_check() -> Any:
    check = compiled_check("request")
    assert check is not None, "the request schema no longer compiles: every request is slow"
    return check


# -- the properties --------------------------------------------------------------------------------

_BIG_DATA = [HealthCheck.data_too_large, HealthCheck.too_slow, HealthCheck.large_base_example]
EQUIVALENCE = settings(max_examples=400, derandomize=True, database=None,
                       deadline=timedelta(seconds=5), suppress_health_check=_BIG_DATA)
#: Documents as partners send them: valid ones, mutated ones (every mutation of
#: ``properties_support``), any JSON.
DOCUMENTS = weighted(
    (3, valid_requests(received_on=RECEIVED_ON)),
    (4, mutated_requests(received_on=RECEIVED_ON)),
    (2, mutated_requests(received_on=RECEIVED_ON, mutations=PLAIN_MUTATIONS)),
    (1, json_values()))


@EQUIVALENCE
@given(document=DOCUMENTS)
@example(document=REQUEST)
@example(document={**REQUEST, "reference": "BD-2026-000123\n"})
@example(document={**REQUEST, "subjects": [{"bsn": "111222333"}, {"bsn": "111222334"}]})
@example(document={**REQUEST, "categories": [None, 1, "gezondheid", "Personalia"]})
@example(document={**REQUEST, "authorisations": [{"kind": "rc_machtiging", "reference": " ",
                                                  "issued_on": None, "extra": 1}, None]})
@example(document={**REQUEST, "reference_date": None, "due_date": "2026-11-27"})
@example(document={**REQUEST, "case_reference": None, "authorisations": None})
@example(document={k: v for k, v in REQUEST.items() if k != "reference_date"})
def test_a_json_request_reads_as_in_0_6_0(document: Any) -> None:
    data, refused = read_json(render(document))
    if refused is not None:
        return  # the JSON reader did not change; nothing reached the request reader
    assert_read_alike(data)
    # JSON has one type for each of cerberus's: the compiled check agrees with cerberus exactly
    assert the_check()(data) is cerberus_accepts(data)


@EQUIVALENCE
@given(text=submissions(received_on=RECEIVED_ON))
@example(text='{"reference": "X-1\\u0000"}')
@example(text='{"a": ["ok", {"b\\ud800": 1}], "c": "\\udfff"}')
@example(text='["\\ud83d\\ude00", "\\ud7ff\\ue000"]')  # a pair; the code points beside
def test_a_request_text_reads_as_in_0_6_0(text: str | bytes) -> None:
    """Every channel's reading, from the text on: the JSON reader and its scan for NUL
    characters and unpaired surrogates (now one regular expression) included."""
    assert exact(outcome(read_request_text, text, received_on=RECEIVED_ON)) == exact(
        outcome(frozen_read_request_text, text, received_on=RECEIVED_ON))


@EQUIVALENCE
@given(value=json_values(), trick=st.text(st.one_of(
    st.characters(), st.characters(categories=["Cs", "Cc"]),
    st.sampled_from("\x00\ud7ff\ud800\udbff\udc00\udfff\ue000")), max_size=3))
def test_the_character_scan_finds_what_it_found_in_0_6_0(value: Any, trick: str) -> None:
    for data in (value, [value, trick], {trick: value}, {"a": {"b": [trick]}}):
        assert strict_json.bad_character_path(data) == frozen_bad_character_path(data)


@EQUIVALENCE
@given(document=st.one_of(mutated_requests(received_on=RECEIVED_ON),
                          valid_requests(received_on=RECEIVED_ON)),
       field=st.sampled_from(REQUEST_FIELDS),
       odd=st.sampled_from(("tuple", "str subclass", "dict subclass", "int key", "bytes")))
def test_a_python_request_of_other_types_reads_as_in_0_6_0(document: Any, field: str,
                                                           odd: str) -> None:
    """What ``read_request`` may be handed besides JSON data (the command line's examples, the
    synthetic history): a tuple for a list, a str subclass, a dict subclass, a key that is no
    text, bytes, and the mutations' raw JSON text objects. The compiled check may refuse what
    cerberus takes (cerberus then says it is valid), never the other way round."""
    if isinstance(document, dict):
        value = document.get(field)
        if odd == "tuple" and isinstance(value, list):
            document = {**document, field: tuple(value)}
        elif odd == "str subclass" and isinstance(value, str):
            document = {**document, field: _Text(value)}
        elif odd == "dict subclass":
            document = _Mapping(document)
        elif odd == "int key":
            document = {**document, 7: "x"}
        elif odd == "bytes" and isinstance(value, str):
            document = {**document, field: value.encode("utf-8", "surrogatepass")}
    assert_read_alike(document)
    if the_check()(document):
        assert cerberus_accepts(document)


class _Text(str):
    __slots__ = ()


class _Mapping(dict[Any, Any]):
    pass


@pytest.mark.parametrize("where", ["none", "first", "last"])
def test_a_request_of_the_most_subjects_reads_as_in_0_6_0(where: str) -> None:
    numbers = (BULK_BSNS * (limits.MAX_SUBJECTS_PER_REQUEST // len(BULK_BSNS) + 1))[
        :limits.MAX_SUBJECTS_PER_REQUEST]
    subjects: list[Any] = [{"bsn": n} for n in numbers]
    if where == "first":
        subjects[0] = {"bsn": "111222334"}
    elif where == "last":
        subjects[-1] = {"onderwijsnummer": "111222333"}
    document = {**REQUEST, "subjects": subjects}
    assert_read_alike(document, every_day=False)
    assert the_check()(document) is (where == "none")
    assert_read_alike({**document, "subjects": [*subjects, {"bsn": "111222333"}]},
                      every_day=False)


def test_the_common_requests_take_the_fast_path() -> None:
    """The benchmark's mix and DESIGN.md's example are accepted without cerberus."""
    check = the_check()
    assert check(REQUEST)
    assert check(json.loads(json.dumps(REQUEST)))
    assert check({k: v for k, v in REQUEST.items()
                  if k in ("reference", "legal_basis", "purpose", "subjects", "categories")})


def test_a_schema_with_a_rule_the_compiler_does_not_know_is_left_to_cerberus() -> None:
    # a ground file's schema uses rules beyond the request's (``min``, ``default``): not compiled
    assert compiled_check("ground", "ground") is None

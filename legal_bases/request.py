"""A disclosure request as the engine sees it after the boundary: typed values, no raw dicts.

:func:`parse_request` turns a partner's JSON (DESIGN.md section 5) into a
:class:`DisclosureRequest`, or raises :class:`~legal_bases.errors.InvalidRequestError` listing
every bad field. The receipt date is an explicit argument: the law applies as of the request's
``reference_date``, which defaults to the day of receipt, and nothing here reads today's date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from json import JSONDecodeError
from typing import Any

from legal_bases import limits, strict_json
from legal_bases.errors import FieldError, InvalidRequestError
from legal_bases.identifiers import mask
from legal_bases.validator import compiled_check, thread_validator
from legal_bases.vocabulary import AuthorisationKind, Category, Purpose, SubjectIdType


@dataclass(frozen=True, slots=True)
class Subject:
    """A data subject named in a request. Its repr masks the number, so it cannot leak into logs."""

    id_type: SubjectIdType
    number: str

    def __repr__(self) -> str:
        return f"Subject({self.id_type.value}={mask(self.number)})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        """The number with all but its last three digits hidden, for people to recognise it."""
        return mask(self.number)


@dataclass(frozen=True, slots=True)
class Authorisation:
    """An authorisation sent with a request, such as the rechter-commissaris's machtiging."""

    kind: AuthorisationKind
    reference: str
    issued_on: date | None = None


@dataclass(frozen=True, slots=True)
class DisclosureRequest:
    """A valid request: what is asked, of whom, under which ground, for what purpose, as of when."""

    reference: str
    legal_basis: str
    purpose: Purpose
    reference_date: date
    subjects: tuple[Subject, ...]
    categories: tuple[Category, ...]
    case_reference: str | None = None
    authorisations: tuple[Authorisation, ...] = ()
    due_date: date | None = None

    @property
    def authorisation_kinds(self) -> frozenset[AuthorisationKind]:
        return frozenset(a.kind for a in self.authorisations)


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A submission that failed validation; :func:`~legal_bases.assessment.assess` rejects it.

    ``legal_basis`` is the ground it claimed, where that is printable text that fits a ground id
    (it becomes the rejection's ``ground_id``); else None.
    """

    errors: tuple[FieldError, ...]
    legal_basis: str | None = None


_SUBJECT_TYPES = {"bsn": SubjectIdType.BSN, "onderwijsnummer": SubjectIdType.ONDERWIJSNUMMER}


def validation_errors(raw: object, *, received_on: date | None = None) -> list[FieldError]:
    """Every problem with a submitted request body, or an empty list if it is valid.

    With ``received_on`` a due date is also checked against the reference date the request
    defaults to (the day of receipt) when it names none. A request the schema's compiled check
    accepts is not shown to cerberus (:func:`~legal_bases.validator.compiled_check`); any other
    is, and every error comes from there.
    """
    if not isinstance(raw, dict):
        return [FieldError("", "wrong_type", "a request must be a JSON object")]
    accepts = compiled_check("request")
    errors: list[FieldError] = []
    if accepts is None or not accepts(raw):  # cerberus says what is wrong, if anything
        validator = thread_validator("request")
        if not validator.validate(raw, normalize=False):
            errors = validator.field_errors()
    due, ref = raw.get("due_date"), raw.get("reference_date")
    if ref is None and received_on is not None:
        ref = received_on.isoformat()
    if not errors and isinstance(due, str) and isinstance(ref, str) and due < ref:
        errors.append(FieldError("due_date", "before_reference_date",
                                 "must not be before reference_date"))
    return errors


def parse_request(raw: object, *, received_on: date) -> DisclosureRequest:
    """Validate a submitted request body and return it as typed values.

    Raises :class:`InvalidRequestError` naming every bad field. A category listed twice counts
    once; a subject listed twice is one subject. ``reference_date`` defaults to ``received_on``.
    """
    errors = validation_errors(raw, received_on=received_on)
    if errors:
        raise InvalidRequestError(errors)
    assert isinstance(raw, dict)  # validation_errors() refused anything else
    subjects: dict[tuple[str, str], Subject] = {}
    for item in raw["subjects"]:
        (key, number), = item.items()
        if (key, number) not in subjects:
            subjects[(key, number)] = Subject(_SUBJECT_TYPES[key], number)
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
        authorisations=tuple(_authorisation(a) for a in raw.get("authorisations") or ()),
        due_date=date.fromisoformat(due_date) if due_date else None,
    )


def _authorisation(raw: dict[str, Any]) -> Authorisation:
    issued_on = raw.get("issued_on")
    return Authorisation(
        kind=AuthorisationKind(raw["kind"]),
        reference=raw["reference"],
        issued_on=date.fromisoformat(issued_on) if issued_on else None,
    )


def read_request(raw: object, *, received_on: date) -> DisclosureRequest | InvalidRequest:
    """Like :func:`parse_request`, but an invalid submission becomes an :class:`InvalidRequest`."""
    try:
        return parse_request(raw, received_on=received_on)
    except InvalidRequestError as exc:
        legal_basis = raw.get("legal_basis") if isinstance(raw, dict) else None
        claimed = (legal_basis if isinstance(legal_basis, str) and legal_basis.isprintable()
                   and 0 < len(legal_basis) <= limits.MAX_SLUG_LENGTH else None)
        return InvalidRequest(exc.errors, claimed)


def read_json(text: str | bytes) -> tuple[Any, InvalidRequest | None]:
    """A submission's text as JSON data, or why it cannot be read as one request.

    Strict (:mod:`legal_bases.strict_json`): a key named twice in one object makes the request
    ambiguous and is refused (``duplicate_key``, with its path), like text that is not JSON
    (``bad_json``) or nests too deeply to read (``too_deep``).
    """
    try:
        data = strict_json.loads(text)
    except strict_json.DuplicateKeyError as exc:
        return None, InvalidRequest((FieldError(
            exc.path, "duplicate_key", "this key appears more than once in its object; send "
            "each key once"),))
    except JSONDecodeError as exc:
        return None, InvalidRequest((FieldError(
            "", "bad_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"),))
    except UnicodeDecodeError as exc:
        return None, InvalidRequest((FieldError(
            "", "bad_encoding", f"not UTF-8 text (at byte {exc.start})"),))
    except ValueError as exc:  # NaN, a number of more digits than Python reads, ...
        reason = str(exc) if "number" in str(exc) else "a number far too long"
        return None, InvalidRequest((FieldError(
            "", "bad_json", f"not JSON the engine can read ({reason})"),))
    except RecursionError:
        return None, InvalidRequest((FieldError("", "too_deep", "the JSON nests too deeply"),))
    path = strict_json.bad_character_path(data)
    if path is not None:
        return None, InvalidRequest((FieldError(
            path, "invalid_characters", "holds a NUL character or an unpaired surrogate"),))
    return data, None


def read_request_text(text: str | bytes, *, received_on: date,
                      ) -> DisclosureRequest | InvalidRequest:
    """:func:`read_request` of a submission's text: every channel reads a request this way."""
    data, refused = read_json(text)
    return refused if refused is not None else read_request(data, received_on=received_on)

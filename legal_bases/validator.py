"""The one cerberus validator class of the project, and the loading of its schemas.

Schemas are data (``legal_bases/schemas/*.yaml``), loaded once and checked by cerberus itself when
first used. Domain checks are ``_check_with_*`` methods here; the closed vocabularies are a custom
rule, ``vocabulary``. A validator is created per document (cerberus validators are not
thread-safe); errors come out as :class:`~legal_bases.errors.FieldError` values with a dotted
path, a stable code and a message.

Cerberus walks a document rule by rule through generic machinery (a child validator per list of
items, the rules ordered anew for every field), which costs far more than the checks themselves.
:func:`compiled_check` therefore turns a schema once into plain checks that say whether a
document passes every rule, the domain checks being the same functions the validator calls. A
document it accepts is valid; anything it does not accept goes to cerberus, which says why, so
every error, its code and its message still come from cerberus and the domain checks.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cerberus import Validator, errors

from legal_bases import limits
from legal_bases.errors import FieldError
from legal_bases.identifiers import bsn_problem, onderwijsnummer_problem
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    AuthorisationKind,
    Body,
    Category,
    Purpose,
    ReviewMode,
    slugs,
)

SCHEMA_DIR = Path(__file__).parent / "schemas"
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "body": tuple(slugs(Body)),
    "purpose": tuple(slugs(Purpose)),
    "category": tuple(slugs(Category)),
    "ordinary_category": tuple(c.value for c in Category if c not in SPECIAL_CATEGORIES),
    "special_category": tuple(c.value for c in Category if c in SPECIAL_CATEGORIES),
    "authorisation_kind": tuple(slugs(AuthorisationKind)),
    "review_mode": tuple(slugs(ReviewMode)),
}
_VOCABULARY_SETS = {name: frozenset(values) for name, values in VOCABULARIES.items()}
_SUBJECT_KEYS = ("bsn", "onderwijsnummer")


class DisclosureValidator(Validator):  # type: ignore[misc]
    """Cerberus validator with the vocabularies and the domain checks of the disclosure engine.

    Domain checks record precise errors (with the index of a bad subject, say) in the shared list
    ``field_errors`` that child validators inherit through cerberus's config.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("field_errors", [])
        super().__init__(*args, **kwargs)

    def validate(self, document: Any, *args: Any, **kwargs: Any) -> bool:
        """Validate one document; the domain errors of an earlier document are forgotten."""
        self._config["field_errors"].clear()
        return bool(super().validate(document, *args, **kwargs))

    # -- custom rule -------------------------------------------------------------------------

    def _validate_vocabulary(self, vocabulary: str, field: str, value: object) -> None:
        """Value must be a slug of the named vocabulary.

        The rule's arguments are validated against this schema:
        {'type': 'string', 'allowed': ['body', 'purpose', 'category', 'ordinary_category',
         'special_category', 'authorisation_kind', 'review_mode']}
        """
        message = vocabulary_problem(vocabulary, value)
        if message is not None:
            self._domain_error(field, "unknown_value", message)

    # -- domain checks -----------------------------------------------------------------------

    def _check_with_iso_date(self, field: str, value: object) -> None:
        message = iso_date_problem(value)
        if message is not None:
            self._domain_error(field, "bad_date", message)

    def _check_with_visible_text(self, field: str, value: object) -> None:
        """Text that says something: not only spaces or invisible characters (a case reference
        of a blank or a zero-width space is no case reference)."""
        if is_blank(value):
            self._domain_error(field, "blank", "must hold visible characters, not only spaces "
                                               "or invisible ones")

    def _check_with_subjects(self, field: str, subjects: object) -> None:
        """Each subject is an object with exactly one identifier, ``bsn`` or ``onderwijsnummer``."""
        if not isinstance(subjects, list):
            return
        base = self._path(field)
        for where, code, message in subject_problems(subjects):
            self._record(f"{base}.{where}", code, message)
        if self._config["field_errors"]:
            self._error(field, "see field_errors")

    # -- plumbing ----------------------------------------------------------------------------

    def _path(self, field: str) -> str:
        return ".".join(str(p) for p in (*self.document_path, field))

    def _record(self, path: str, code: str, message: str) -> None:
        self._config["field_errors"].append(FieldError(path, code, message))

    def _domain_error(self, field: str, code: str, message: str) -> None:
        self._record(self._path(field), code, message)
        self._error(field, message)

    def field_errors(self) -> list[FieldError]:
        """All errors of the last validation: cerberus's own and the domain checks', path-sorted."""
        found = [_from_cerberus(e) for e in _leaves(self._errors)]
        found.extend(self._config["field_errors"])
        return sorted(found, key=lambda e: _natural_key(e.path))


# -- the domain checks as functions: the validator's methods and the compiled checks share them --

def vocabulary_problem(vocabulary: str, value: object) -> str | None:
    """Why ``value`` is not a slug of the named vocabulary, or None (also for a non-string)."""
    if not isinstance(value, str) or value in _VOCABULARY_SETS[vocabulary]:
        return None
    if vocabulary == "ordinary_category" and value in _VOCABULARY_SETS["special_category"]:
        return f"{value!r} is a special category; list it under special_categories"
    if vocabulary == "special_category" and value in _VOCABULARY_SETS["category"]:
        return f"{value!r} is not a special category; list it under categories"
    kind = vocabulary.replace("_", " ")
    return f"{value!r} is not a known {kind}; one of: {', '.join(VOCABULARIES[vocabulary])}"


def iso_date_problem(value: object) -> str | None:
    """Why ``value`` is not a date written as YYYY-MM-DD, or None (also for None)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        return f"{value!r} is not a date written as YYYY-MM-DD"
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        return f"{value!r} is not a date: {exc}"
    return None


def is_blank(value: object) -> bool:
    """Text of only spaces or invisible characters (or none at all)."""
    return isinstance(value, str) and not any(
        unicodedata.category(c)[0] not in "ZC" for c in value)


def subject_problems(subjects: list[Any]) -> Iterator[tuple[str, str, str]]:
    """Every bad subject of a subject list, in one pass: (its path within the list, code,
    message). A subject is an object with exactly one identifier, ``bsn`` or ``onderwijsnummer``."""
    for index, subject in enumerate(subjects):
        if type(subject) is dict and len(subject) == 1:
            (key, number), = subject.items()
            if key == "bsn":
                problem = bsn_problem(number)
            elif key == "onderwijsnummer":
                problem = onderwijsnummer_problem(number)
            else:
                yield (f"{index}.{key}", "unknown_field",
                       "a subject is identified by bsn or onderwijsnummer")
                continue
            if problem is not None:
                code = "invalid_bsn" if key == "bsn" else "invalid_onderwijsnummer"
                yield f"{index}.{key}", code, problem
        elif isinstance(subject, dict):
            keys = sorted(k for k in subject if k in _SUBJECT_KEYS)
            message = ("needs exactly one of bsn, onderwijsnummer"
                       if len(keys) != 1 else "has fields other than its identifier")
            yield f"{index}", "bad_subject", message
        else:
            yield f"{index}", "wrong_type", "must be an object such as {\"bsn\": \"111222333\"}"


def _leaves(errs: Any) -> Iterator[Any]:
    for err in errs:
        if err.is_group_error:
            yield from _leaves(err.child_errors)
        elif err.code != errors.CUSTOM.code and err.rule != "vocabulary":
            yield err


_MESSAGES = {
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


def _from_cerberus(err: Any) -> FieldError:
    path = ".".join(str(p) for p in err.document_path)
    if err.code == errors.UNKNOWN_FIELD.code:
        return FieldError(path, "unknown_field", "is not a field of this document")
    code, template = _MESSAGES.get(err.rule, ("invalid", "is not valid ({constraint})"))
    if err.rule == "maxlength" and isinstance(err.value, str):
        template = "must be at most {constraint} characters"
    elif err.rule == "maxlength":
        template = "must have at most {constraint} item(s)"
    return FieldError(path, code, template.format(constraint=err.constraint))


def _natural_key(path: str) -> tuple[tuple[int, object], ...]:
    """Path parts in order: list positions as numbers, keys as text (a partner's key may be
    '²' or a thousand digits: only a short run of ASCII digits is a position)."""
    return tuple((0, int(p)) if p.isascii() and p.isdigit() and len(p) <= 18 else (1, p)
                 for p in path.split("."))


def _substitute_limits(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _substitute_limits(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_limits(v) for v in node]
    if isinstance(node, str) and node.startswith("$"):
        return getattr(limits, node[1:])
    return node


class _NoDatesLoader(yaml.SafeLoader):
    """A safe YAML loader that leaves dates as strings, so that the schema checks them by field."""


_NoDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """Parse YAML safely, keeping dates as strings."""
    return yaml.load(text, Loader=_NoDatesLoader)  # noqa: S506 - a SafeLoader subclass


@cache
def schema(name: str) -> dict[str, Any]:
    """The named schema from ``legal_bases/schemas`` with its limits filled in (loaded once)."""
    text = (SCHEMA_DIR / f"{name}.yaml").read_text("utf-8")
    loaded: dict[str, Any] = _substitute_limits(load_yaml(text))
    return loaded


def new_validator(schema_name: str, part: str | None = None) -> DisclosureValidator:
    """A fresh validator for one document against a named schema (or one part of it)."""
    document_schema = schema(schema_name)
    if part is not None:
        document_schema = document_schema[part]
    return DisclosureValidator(document_schema)


_per_thread = threading.local()


def thread_validator(schema_name: str) -> DisclosureValidator:
    """This thread's validator for a named schema: never shared between threads, built once each.

    Building a cerberus validator costs more than a small validation, and validators are not
    thread-safe, so each thread keeps its own.
    """
    cached: dict[str, DisclosureValidator] = _per_thread.__dict__.setdefault("validators", {})
    validator = cached.get(schema_name)
    if validator is None:
        validator = cached[schema_name] = new_validator(schema_name)
    return validator


# -- compiled checks -------------------------------------------------------------------------

#: A compiled check: True only where cerberus would find nothing wrong; False where it might.
Check = Callable[[Any], bool]

#: What each ``check_with`` of the schemas accepts without a word, as a compiled check.
_COMPILED_DOMAIN_CHECKS: dict[str, Check] = {
    "iso_date": lambda value: iso_date_problem(value) is None,
    "visible_text": lambda value: not is_blank(value),
    "subjects": lambda value: (not isinstance(value, list)
                               or next(subject_problems(value), None) is None),
}
#: The cerberus types a compiled check knows, each as the one Python type it accepts (stricter
#: than cerberus, which takes any sequence as a list: anything else is left to cerberus).
_EXACT_TYPES: dict[str, type[Any]] = {"string": str, "list": list, "dict": dict}
_COMPILED_RULES = frozenset({"type", "required", "nullable", "empty", "minlength", "maxlength",
                             "regex", "vocabulary", "check_with", "schema"})


class _NotCompiledError(Exception):
    """A schema uses a rule the compiled checks do not know (cerberus alone checks it)."""


@cache
def compiled_check(schema_name: str, part: str | None = None) -> Check | None:
    """A named schema (or one part of it) compiled into plain checks: a function that is True
    only for a document cerberus accepts (:meth:`DisclosureValidator.validate` without
    normalisation), and False for any other — it never says why; ask cerberus for that.

    None if the schema uses a rule this does not compile (then cerberus checks every document).
    Cerberus checks the schema itself first. The check holds no state: threads share it.
    """
    document_schema = new_validator(schema_name, part).schema
    try:
        return _compile_mapping(dict(document_schema))
    except _NotCompiledError:
        return None


def _compile_mapping(fields: dict[str, Any]) -> Check:
    """A check of a mapping: the required fields present, no other fields, each field valid."""
    checks = {name: _compile_field(rules) for name, rules in fields.items()}
    required = frozenset(name for name, rules in fields.items() if rules.get("required") is True)

    def check(document: Any) -> bool:
        if type(document) is not dict or not document.keys() >= required:
            return False
        for name, value in document.items():
            field_check = checks.get(name)
            if field_check is None or not field_check(value):
                return False
        return True
    return check


def _compile_field(rules: Any) -> Check:
    """A check of one value against a field's rules, the way cerberus applies them: ``nullable``
    first (a None ends it, but for the domain checks), then type, emptiness, lengths, pattern,
    vocabulary, the domain check and the rules of the items or fields inside."""
    if not isinstance(rules, dict) or not rules.keys() <= _COMPILED_RULES:
        raise _NotCompiledError
    type_name = rules.get("type")
    exact_type = _EXACT_TYPES.get(type_name) if isinstance(type_name, str) else None
    not_empty = "empty" in rules
    if exact_type is None or (not_empty and rules["empty"] is not False):
        raise _NotCompiledError  # (empty: true would waive the lengths, pattern and domain check)
    nullable = rules.get("nullable", False) is True
    minlength, maxlength = rules.get("minlength"), rules.get("maxlength")
    if not all(n is None or type(n) is int for n in (minlength, maxlength)):
        raise _NotCompiledError
    pattern = rules.get("regex")
    regex = None
    if pattern is not None:
        if exact_type is not str:
            raise _NotCompiledError
        regex = re.compile(pattern if pattern.endswith("$") else pattern + "$")  # as cerberus
    vocabulary = None
    if "vocabulary" in rules:
        if exact_type is not str:
            raise _NotCompiledError
        vocabulary = _VOCABULARY_SETS[rules["vocabulary"]]
    domain_check = None
    if "check_with" in rules:
        name = rules["check_with"]
        domain_check = _COMPILED_DOMAIN_CHECKS.get(name) if isinstance(name, str) else None
        if domain_check is None:
            raise _NotCompiledError
    inner = None
    if "schema" in rules:
        if exact_type is list:
            inner = _compile_field(rules["schema"])
        elif exact_type is dict and isinstance(rules["schema"], dict):
            inner = _compile_mapping(rules["schema"])
        else:
            raise _NotCompiledError

    def check(value: Any) -> bool:
        if value is None:
            return nullable and (domain_check is None or domain_check(None))
        if type(value) is not exact_type:
            return False
        if not_empty and not value:
            return False
        if minlength is not None and len(value) < minlength:
            return False
        if maxlength is not None and len(value) > maxlength:
            return False
        if regex is not None and regex.match(value) is None:
            return False
        if vocabulary is not None and value not in vocabulary:
            return False
        if domain_check is not None and not domain_check(value):
            return False
        if inner is None:
            return True
        if exact_type is list:
            return all(map(inner, value))
        return inner(value)
    return check


def vocabulary_enum(name: str) -> type[StrEnum]:
    """The enum behind a vocabulary name used in the schemas."""
    return {"body": Body, "purpose": Purpose, "category": Category,
            "authorisation_kind": AuthorisationKind, "review_mode": ReviewMode}[name]

"""JSON as the engine reads what partners send: RFC 8259 text whose object keys are unique.

Python's ``json.loads`` keeps the last of two equal keys (``{"subjects": [A], "subjects": [B]}``
reads as B alone), while the ledger keeps the raw text with both: the record would then be
ambiguous about what was asked. :func:`loads` refuses such text instead, naming the path of the
first duplicated key, everywhere a request is read (the intake API, drop-off files, replay, the
command line).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from legal_bases.errors import DisclosureError

#: Longest key echoed in an error (a key is partner-chosen text).
_KEY_SHOWN = 64
#: A NUL character or a surrogate code point (in text read from JSON, only an unpaired one).
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class DuplicateKeyError(DisclosureError, ValueError):
    """Raised when a JSON object names the same key more than once; ``path`` is where (dotted,
    list positions as numbers, as in the request's field errors)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"the key {path!r} appears more than once in its object")


class _Object(dict[str, Any]):
    """A parsed object that had a duplicated key (only such objects get this type)."""

    __slots__ = ("duplicate",)
    duplicate: str


def _marked(pairs: list[tuple[str, Any]], found: dict[str, Any]) -> _Object:
    seen: set[str] = set()
    marked = _Object(found)
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, but a duplicated object key raises :class:`DuplicateKeyError`.

    ``NaN`` and ``Infinity`` (which Python reads, JSON does not have) and numbers too large
    for a float raise ``ValueError``. Other errors are ``json.loads``'s own
    (:class:`json.JSONDecodeError`, and ``RecursionError`` for text nested too deeply to
    read). A document without duplicates costs one dict per object
    more than ``json.loads``; only one with a duplicate is walked again, to name its path.
    """
    duplicates: list[bool] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) == len(pairs):
            return found
        duplicates.append(True)
        return _marked(pairs, found)

    data = json.loads(text, object_pairs_hook=hook, parse_constant=_not_json,
                      parse_float=_finite)
    if duplicates:
        raise DuplicateKeyError(_first_duplicate(data))
    return data


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number too large to read")
    return value


def _first_duplicate(data: Any) -> str:
    """The dotted path of the first duplicated key, in document order."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if isinstance(node, _Object):
                key = node.duplicate[:_KEY_SHOWN]
                return f"{path}.{key}" if path else key
            children = list(node.items())
            stack.extend((value, f"{path}.{key}" if path else key)
                         for key, value in reversed(children)
                         if isinstance(value, dict | list))
        elif isinstance(node, list):
            stack.extend((value, f"{path}.{i}" if path else str(i))
                         for i, value in reversed(list(enumerate(node)))
                         if isinstance(value, dict | list))
    raise AssertionError("no object with a duplicated key was marked")


def bad_character_path(data: Any) -> str | None:
    """The path of the first string (or key) in parsed JSON holding a NUL character or an
    unpaired surrogate (``\\u0000``, ``\\ud800`` escapes), or None. Neither can be stored as
    text by PostgreSQL nor written as UTF-8, so a request holding one is refused, by every
    channel alike."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _bad(node):
                return path
        elif isinstance(node, dict):
            for key, value in node.items():
                if _bad(key):
                    return path
                stack.append((value, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, list):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node))
    return None


def _bad(text: str) -> bool:
    return _BAD_CHARACTER.search(text) is not None

"""Checks of the identifiers that occur in requests and partner configuration.

* BSN: 9 digits, elfproef with weights 9..2 and -1, sum mod 11 == 0, not all zeros
  (legal-reference.md section 5.1).
* Onderwijsnummer: 9 digits, starts with "10", the same weighted sum mod 11 == 5 (section 5.2).
* OIN: 20 characters, an 8-digit prefix and an alphanumeric rest (section 5.3; BRIN-based OINs
  contain letters, so a digits-only check would refuse valid ones).

These functions are on the hot path of bulk validation, so they avoid per-call allocation.
"""

from __future__ import annotations

import random
import re

_DIGITS = frozenset("0123456789")
_OIN = re.compile(r"^[0-9]{8}[0-9A-Z]{12}$")
#: Nine digits standing alone, perhaps grouped by dots, spaces or dashes ("123.456.782"): the
#: shape of a BSN or an onderwijsnummer in free text a partner chose.
_NINE_DIGIT_SHAPE = re.compile(r"(?<![0-9])[0-9](?:[ .-]?[0-9]){8}(?![0-9])")


def _weighted_sum(number: str) -> int:
    d = [ord(c) - 48 for c in number]
    return (9 * d[0] + 8 * d[1] + 7 * d[2] + 6 * d[3] + 5 * d[4] + 4 * d[5] + 3 * d[6]
            + 2 * d[7] - d[8])


def _nine_digits(number: object) -> bool:
    return isinstance(number, str) and len(number) == 9 and _DIGITS.issuperset(number)


def bsn_problem(number: object) -> str | None:
    """Why ``number`` is not a valid BSN, or None if it is one."""
    if not isinstance(number, str):
        return "must be a string of 9 digits (a number would lose its leading zeros)"
    if not _nine_digits(number):
        return "must be exactly 9 digits"
    if number == "000000000":
        return "must not be all zeros"
    if _weighted_sum(number) % 11 != 0:
        return "fails the elfproef (check digit)"
    return None


def onderwijsnummer_problem(number: object) -> str | None:
    """Why ``number`` is not a valid onderwijsnummer, or None if it is one."""
    if not isinstance(number, str):
        return "must be a string of 9 digits"
    if not _nine_digits(number):
        return "must be exactly 9 digits"
    if not number.startswith("10"):
        return "must start with 10"
    if _weighted_sum(number) % 11 != 5:
        return "fails the onderwijsnummer check digit"
    return None


def is_valid_bsn(number: object) -> bool:
    """Whether ``number`` is a valid BSN."""
    return bsn_problem(number) is None


def is_valid_onderwijsnummer(number: object) -> bool:
    """Whether ``number`` is a valid onderwijsnummer."""
    return onderwijsnummer_problem(number) is None


def oin_problem(oin: object) -> str | None:
    """Why ``oin`` is not a well-formed OIN, or None if it is one."""
    if not isinstance(oin, str):
        return "must be a string of 20 characters"
    if len(oin) != 20:
        return f"must be 20 characters, not {len(oin)}"
    if not _OIN.match(oin):
        return "must be an 8-digit prefix followed by 12 digits or capital letters"
    return None


def mask(number: str) -> str:
    """A display form of an identifier that shows only its last three characters."""
    return "*" * max(len(number) - 3, 0) + number[-3:]


def mask_identifier_shapes(text: str) -> str:
    """``text`` with every nine-digit number in it (a BSN or onderwijsnummer, perhaps grouped
    as ``123.456.782``) replaced by asterisks: for text a partner chose, such as a reference,
    before it is shown where no personal data may go."""
    return _NINE_DIGIT_SHAPE.sub("*********", text)


_PREFIX_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


def _prefix_sum(prefix: str) -> int:
    return sum(w * (ord(c) - 48) for w, c in zip(_PREFIX_WEIGHTS, prefix, strict=True))


def random_bsn(rng: random.Random) -> str:
    """A valid (11-proef) BSN drawn from ``rng``: for synthetic registers and histories."""
    while True:
        prefix = f"{int(rng.random() * 10**8):08d}"
        check = _prefix_sum(prefix) % 11
        if check < 10 and prefix != "00000000":
            return f"{prefix}{check}"


def random_onderwijsnummer(rng: random.Random) -> str:
    """A valid onderwijsnummer (starting 10) drawn from ``rng``."""
    while True:
        prefix = f"10{int(rng.random() * 10**6):06d}"
        check = (_prefix_sum(prefix) - 5) % 11
        if check < 10:
            return f"{prefix}{check}"

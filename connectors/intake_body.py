"""Reading a submitted body: what it says, whether it is refused, and what the ledger keeps.

:func:`read_body` is a pure function of the body, its ``Content-Type``, the partner's body and
the table of grounds; :func:`read_submission` streams a call's body in (refusing more than the
limit unread, ``413``) and reads it. Every outcome is a :class:`Reading`: a valid request
(``202``), or the answer of a rejection that is recorded as received.

A body that could not be read back as JSON by every later reader — nested deeper than
:data:`MAX_JSON_DEPTH`, or holding NUL characters or unpaired surrogates — is stored after a
one-line marker, so it stays whole but is never taken for JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect

from connectors.intake_problems import ApiError
from legal_bases import limits, strict_json
from legal_bases.errors import FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest, read_request
from legal_bases.strict_json import bad_character_path
from legal_bases.table import GroundTable
from records.ledger import received_on
from records.submissions import NOT_PARSED

#: Deepest JSON nesting stored as JSON. A valid request nests 3 deep; anything much deeper is
#: stored after a marker, so no later reader's parser runs out of stack on it.
MAX_JSON_DEPTH = limits.MAX_JSON_DEPTH
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class Reading:
    """What a submitted body says: the request or why it is refused, and what the ledger keeps.

    ``status`` is 202 for a valid request, else the answer for the recorded rejection.
    """

    raw_body: str
    data: Any
    parsed: DisclosureRequest | InvalidRequest
    status: int
    code: str
    detail: str


def _marked(marker: str, text: str) -> str:
    return f"({marker}; the body as received follows this line)\n{text}"


def _rejected(status: int, code: str, detail: str, raw_body: str, *,
              errors: tuple[FieldError, ...], legal_basis: str | None = None,
              data: Any = NOT_PARSED) -> Reading:
    return Reading(raw_body, data, InvalidRequest(errors, legal_basis), status, code, detail)


def json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type header says JSON in UTF-8 (``application/json``)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
                "utf-8", "utf8"}:
            return False
    return True


def _depth(data: Any) -> int:
    """How deep JSON data nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
    return deepest


def read_body(body: bytes, *, content_type: str | None, body_of: str, received_at: datetime,
              table: GroundTable) -> Reading:
    """Read a submitted body for a partner of body ``body_of``: a pure function of its input.

    The JSON is read strictly (:mod:`legal_bases.strict_json`): a key named twice in one object
    makes the request ambiguous, so it is refused (``422``, ``duplicate_key`` with the key's path)
    and recorded as sent.

    What is stored behind a marker is the body as text, undecodable bytes and NUL characters
    replaced by U+FFFD (PostgreSQL text cannot hold NUL).
    """
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if not json_media_type(content_type):
        return _rejected(415, "unsupported_media_type",
                         "send the request as Content-Type: application/json (UTF-8)",
                         _marked("not sent as application/json", text),
                         errors=(FieldError("", "unsupported_media_type",
                                     "the body must be sent as application/json"),))
    try:
        strict = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _rejected(400, "bad_json", "the body is not UTF-8 text",
                         _marked("not UTF-8; undecodable bytes replaced", text),
                         errors=(FieldError("", "bad_encoding", f"not UTF-8 at byte {exc.start}"),))
    duplicate: strict_json.DuplicateKeyError | None = None
    try:
        try:
            data = strict_json.loads(strict)
        except strict_json.DuplicateKeyError as exc:
            # Refused below, once the checks of what is stored have run on the body as every
            # lenient reader (and the ledger's body hash) reads it: the last value wins.
            duplicate, data = exc, json.loads(strict)
    except RecursionError:
        return _rejected(400, "bad_json", "the body is not JSON: it nests too deeply",
                         _marked("not JSON", text),
                         errors=(FieldError("", "bad_json", "nested too deeply to read"),))
    except ValueError as exc:
        message = getattr(exc, "msg", None) or "not JSON"
        position = getattr(exc, "pos", None)
        where = f" at character {position}" if isinstance(position, int) else ""
        return _rejected(400, "bad_json", f"the body is not JSON: {message}{where}",
                         _marked("not JSON", text),
                         errors=(FieldError("", "bad_json", f"not JSON: {message}{where}"),))
    brackets = strict.count("[") + strict.count("{")
    if brackets > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        return _rejected(422, "invalid_request",
                         f"the body nests deeper than {MAX_JSON_DEPTH} levels",
                         _marked(f"nested deeper than {MAX_JSON_DEPTH} levels", strict),
                         errors=(FieldError("", "too_deep",
                                            f"nests deeper than {MAX_JSON_DEPTH} levels"),))
    if _SUSPECT_ESCAPE.search(strict):
        path = bad_character_path(data)
        if path is not None:
            return _rejected(422, "invalid_request",
                             "the body holds NUL characters or unpaired surrogates",
                             _marked("holds NUL characters or unpaired surrogates", strict),
                             errors=(FieldError(path, "invalid_characters",
                                                "holds a NUL character or an unpaired surrogate"),))
    if duplicate is not None:
        return _rejected(422, "invalid_request",
                         f"a key appears more than once in one object (at {duplicate.path}), "
                         "so the request is ambiguous; it was recorded as received and rejected",
                         strict, data=data, errors=(FieldError(
                             duplicate.path, "duplicate_key", "this key appears more than once "
                             "in its object; send each key once"),))
    parsed = read_request(data, received_on=received_on(received_at))
    if isinstance(parsed, InvalidRequest):
        count = len(parsed.errors)
        return Reading(strict, data, parsed, 422, "invalid_request",
                       f"the request has {count} invalid field(s); it was recorded as received "
                       "and rejected")
    ground = table.get(parsed.legal_basis)
    if ground is not None and body_of not in ground.requesters:
        error = FieldError("legal_basis", "requester_not_entitled",
                           f"ground {parsed.legal_basis} is not a ground of a {body_of} "
                           "requester")
        return _rejected(403, "requester_not_entitled",
                         f"the ground {parsed.legal_basis} may not be claimed by a {body_of}",
                         strict, errors=(error,), legal_basis=parsed.legal_basis, data=data)
    return Reading(strict, data, parsed, 202, "accepted", "accepted")


def too_large(what: str, limit: int) -> Reading:
    """The reading of a body over ``limit`` bytes: a ``413``, recorded as a marker with the size
    only (nothing of the body is read)."""
    marker = (f"(not stored: the body was larger than the limit of {limit} bytes; {what}; "
              "nothing of it was read)")
    return _rejected(413, "too_large", f"the body is larger than {limit} bytes; split the "
                     "request", marker,
                     errors=(FieldError("", "too_large", f"larger than {limit} bytes"),))


async def read_submission(request: Request, *, body_of: str, received_at: datetime,
                          table: GroundTable, max_bytes: int, inline_bytes: int) -> Reading:
    """A call's body read and judged (``413`` and others as readings to record).

    A body larger than ``inline_bytes`` is read in a worker thread, off the event loop.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return too_large(f"{int(declared)} bytes declared", max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return too_large(f"more than {max_bytes} bytes sent", max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the body did not arrive whole") from None
    body = b"".join(chunks)
    content_type = request.headers.get("content-type")

    def read() -> Reading:
        return read_body(body, content_type=content_type, body_of=body_of,
                         received_at=received_at, table=table)

    if len(body) <= inline_bytes:
        return read()
    return await anyio.to_thread.run_sync(read)

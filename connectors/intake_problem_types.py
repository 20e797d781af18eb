"""The kinds of problem the intake API answers with, each a stable ``type`` URI with its own page.

Every error answer is an RFC 9457 problem document whose ``type`` is
``<origin>/v1/problems/<kind>``: the origin the caller addressed, then a path that never changes
for a kind (partners match on it). Fetching it gives a page saying what the problem means and
what to do (:func:`problem_page`); ``docs/partners.md`` lists the same kinds. A kind always
answers with the same status and title.

An *input* kind is a problem with what was sent (body, parameters): its document carries the
per-field ``errors`` and, where the submission was recorded, its ledger ``request_id`` — the
extension members of RFC 9457 section 3.2 that ``docs/api-design-rules.md`` explains. Every
other kind carries only the core members (``type``, ``title``, ``status``, ``detail``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

#: Where the problem pages are, under the API's base path.
PROBLEMS_PATH = "/v1/problems"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of problem: its status, title, when it happens and what the partner does."""

    kind: str
    status: int
    title: str
    when: str
    action: str
    recorded: bool = False
    input: bool = False


_TYPES = (
    ProblemType("bad-json", 400, "The body is not JSON",
                "The body is not UTF-8 text, is not JSON, nests too deeply to read, or is cut "
                "off. Each entry of `errors` says which (`bad_json`, `bad_encoding`).",
                "Send a well-formed JSON document encoded as UTF-8. This submission was "
                "recorded as received and rejected (`request_id`); a corrected one is a new "
                "submission.", recorded=True, input=True),
    ProblemType("invalid-parameters", 400, "A parameter is not valid",
                "A query or path parameter cannot be used: an unknown `state`, a `limit` out of "
                "range, a `since` that is not a moment, a `cursor` this API did not give out, a "
                "request id that is not a UUID. Each entry of `errors` names one parameter "
                "(`query.limit`, `path.request_id`).",
                "Correct the parameter. Nothing was recorded.", input=True),
    ProblemType("client-disconnected", 400, "The body did not arrive whole",
                "The connection closed before the whole body was received.",
                "Send the same request again; nothing was recorded.", input=True),
    ProblemType("missing-credentials", 401, "Credentials are missing",
                "The call carried neither an API key (`Authorization: Bearer dk_…`) nor a client "
                "certificate of a partner. Credentials are checked before anything else, so the "
                "answer says nothing about the parameters or the body.",
                "Send your API key, or connect with your PKIoverheid client certificate."),
    ProblemType("invalid-credentials", 401, "The credentials are not valid",
                "The key is unknown, revoked or malformed, the certificate is not a partner's, "
                "or a key and a certificate name different partners. The answer does not say "
                "which, by design.",
                "Check the key you send; if it was revoked or lost, ask DUO's operators for a "
                "new one."),
    ProblemType("requester-not-entitled", 403, "This ground is not open to your body",
                "The request claims a statutory ground that the law gives to another kind of "
                "public body than yours (`legal_basis`).",
                "Claim a ground of your own body. This submission was recorded as received and "
                "rejected (`request_id`) and will never be released.", recorded=True,
                input=True),
    ProblemType("not-found", 404, "Not found",
                "There is no such resource for you: an unknown request id, a request of another "
                "partner (answered the same, so ids reveal nothing), or an unknown path.",
                "Check the id: it is the `id` of the answer to your submission."),
    ProblemType("method-not-allowed", 405, "Method not allowed",
                "The path exists but does not take this HTTP method; the `Allow` header lists "
                "the methods it takes.", "Use one of the methods in `Allow`."),
    ProblemType("reference-conflict", 409, "This reference belongs to another request",
                "An accepted request with the same `reference` and another body exists "
                "(`existing_request_id`). The `reference` is your idempotency key: the same "
                "reference with the same body is a repeat (`200`), with another body a conflict.",
                "Send a new request under a new reference. This submission was recorded as "
                "received and rejected (`request_id`); the accepted one is unaffected.",
                recorded=True, input=True),
    ProblemType("too-large", 413, "The body is too large",
                "The body is larger than the limit of the API (the size is recorded, nothing of "
                "the body is read).",
                "Split the request into smaller ones.", recorded=True, input=True),
    ProblemType("unsupported-media-type", 415, "The body is not sent as JSON",
                "The `Content-Type` is not `application/json` (UTF-8).",
                "Send the body with `Content-Type: application/json`. This submission was "
                "recorded as received and rejected (`request_id`).", recorded=True, input=True),
    ProblemType("invalid-request", 422, "The request breaks the request format",
                "The body is JSON but not a valid disclosure request: each entry of `errors` "
                "names one field (`path`), a stable `code` (`invalid_bsn`, `unknown_value`, "
                "`duplicate_key`, …) and a `message`.",
                "Correct every field listed. This submission was recorded as received and "
                "rejected (`request_id`) and will never be released; a corrected one is a new "
                "submission (under a new reference if this one was otherwise accepted).",
                recorded=True, input=True),
    ProblemType("rate-limited", 429, "Too many requests",
                "You sent more requests per second than your rate allows. Nothing was "
                "recorded.", "Wait the seconds of `Retry-After`, then send again."),
    ProblemType("internal-error", 500, "Internal error",
                "The API failed. This is DUO's error, not yours.",
                "Send it again later; quote the `X-Correlation-ID` of the answer to DUO."),
    ProblemType("ledger-unavailable", 503, "The ledger cannot record now",
                "DUO's ledger did not answer in time, so nothing was recorded.",
                "Send the same request again after `Retry-After` seconds: the same reference "
                "and body is safe to repeat."),
)
#: Every kind, by its name.
PROBLEM_TYPES: dict[str, ProblemType] = {t.kind: t for t in _TYPES}
#: The statuses whose problems are about what was sent (their documents may carry ``errors``).
INPUT_STATUSES = frozenset(t.status for t in _TYPES if t.input)


def kind_of(code: str) -> ProblemType | None:
    """The problem type of an internal error code (``invalid_request`` → ``invalid-request``)."""
    return PROBLEM_TYPES.get(code.replace("_", "-"))


def problem_page(problem_type: ProblemType, *, type_uri: str, api_version: str) -> str:
    """The page a problem's ``type`` URI resolves to (HTML, readable in a browser)."""
    def text(value: str) -> str:
        escaped = html.escape(value)
        parts = escaped.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    recorded = ("<p>This submission <strong>was recorded</strong> on DUO's ledger as received "
                "and rejected; the problem's <code>request_id</code> is its id.</p>"
                if problem_type.recorded else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(problem_type.title)} — DUO intake API</title></head><body>\n"
        f"<h1>{html.escape(problem_type.title)}</h1>\n"
        f"<p>Problem type <code>{html.escape(type_uri)}</code>, HTTP status "
        f"<strong>{problem_type.status}</strong>, intake API {html.escape(api_version)}.</p>\n"
        f"<h2>When</h2>\n<p>{text(problem_type.when)}</p>\n{recorded}\n"
        f"<h2>What to do</h2>\n<p>{text(problem_type.action)}</p>\n"
        "<p>Every answer carries <code>X-Correlation-ID</code>: quote it to DUO. The partner's "
        "guide lists every problem type.</p>\n</body></html>\n")

"""The errors of the connectors; all derive from the project's one root, ``DisclosureError``.

No message here ever contains a BSN, an onderwijsnummer or other personal data: they name ids,
counts, kinds and status codes only, so they can be logged and shown as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.receipts import Receipt
from legal_bases.errors import DisclosureError, Problem


class ConnectorError(DisclosureError):
    """Raised when a connector (source register, destination, partner directory) fails."""


# -- source register ------------------------------------------------------------------------------

class RegisterError(ConnectorError):
    """Raised when the source register cannot answer what it was asked."""


class RegisterUnavailableError(RegisterError):
    """Raised when the source register's database cannot be reached or is not set up.

    The database driver's own error is not chained: its text may quote the query's parameters,
    which are subjects' numbers. ``reason`` names the kind of failure.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the source register is unavailable ({reason})")


class IdentifiersInPseudonymisedFetchError(RegisterError):
    """Raised when ``identificerende_nummers`` is asked for in a pseudonymised fetch.

    A ground that pseudonymises its subjects cannot release their numbers; asking for both is a
    mistake upstream, so the fetch refuses instead of silently dropping a category.
    """

    def __init__(self) -> None:
        super().__init__("identificerende_nummers cannot be released when subjects are "
                         "pseudonymised; leave the category out of the fetch")


class IdentifierLeakError(RegisterError):
    """Raised when a pseudonymised record would still contain its subject's number (fail closed)."""

    def __init__(self, category: str) -> None:
        self.category = category
        super().__init__(f"a pseudonymised record still contains its subject's number in "
                         f"category {category!r}; nothing was released")


class RegisterNotEmptyError(RegisterError):
    """Raised when seeding a register that already holds persons, without ``replace``."""

    def __init__(self, persons: int) -> None:
        self.persons = persons
        super().__init__(f"the register already holds {persons} person(s); "
                         "seed with replace=True to start over")


# -- destinations ---------------------------------------------------------------------------------

class DestinationConfigError(ConnectorError):
    """Raised when a destination is configured so it cannot deliver safely (say, plain http)."""


class DeliveryError(ConnectorError):
    """Raised when a document could not be delivered to a partner."""


class InvalidIdempotencyKeyError(DeliveryError):
    """Raised when an idempotency key is empty, too long, or not made of ``[A-Za-z0-9._-]``."""


class InvalidDocumentError(DeliveryError):
    """Raised when a document to deliver cannot be written as JSON."""


class IdempotencyConflictError(DeliveryError):
    """Raised when an idempotency key was already used to deliver a different document.

    ``existing`` is the receipt of what the destination holds under the key, where it can tell
    (a file drop): the delivery that happened under that key.
    """

    def __init__(self, idempotency_key: str, location: str, *,
                 existing: Receipt | None = None) -> None:
        self.idempotency_key = idempotency_key
        self.location = location
        self.existing = existing
        super().__init__(f"idempotency key {idempotency_key!r} was already used for a different "
                         f"document at {location}; the delivered document was left as it was")


class DeliveryRejectedError(DeliveryError):
    """Raised when the receiver refused the delivery for good (a 4xx other than 408 and 429).

    Retrying the same document will not help; the receiver's body is not quoted, since it may
    echo personal data back.
    """

    def __init__(self, *, status_code: int, reason: str, host: str) -> None:
        self.status_code = status_code
        self.reason = reason
        self.host = host
        super().__init__(f"{host} refused the delivery: HTTP {status_code} {reason}".rstrip())


class DeliveryFailedError(DeliveryError):
    """Raised when a delivery did not get through: every attempt failed (connection errors,
    time-outs, 408, 429, 5xx), the TLS check failed, or the file could not be written.
    """

    def __init__(self, *, destination: str, attempts: int, last_failure: str) -> None:
        self.destination = destination
        self.attempts = attempts
        self.last_failure = last_failure
        super().__init__(f"delivery to {destination} failed after {attempts} attempt(s); "
                         f"last failure: {last_failure}")


class OutboxCleanupError(ConnectorError):
    """Raised when a file-drop outbox cannot be listed or a delivered file (or its marker)
    cannot be removed, for a reason other than its being gone already (permission, say).

    ``path`` is relative to the file-drop root (``<partner_id>/<key>.json``: ids, no content);
    ``reason`` is the operating system's word for the failure. What was removed before stays
    removed; the sweep is idempotent, so a rerun continues where this one stopped.
    """

    def __init__(self, *, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"the file-drop outbox could not clean {path}: {reason}")


# -- partners -------------------------------------------------------------------------------------

class PartnerConfigError(ConnectorError):
    """Raised when the partner configuration cannot be loaded; names each problem's file, field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"the partner configuration has {len(self.problems)} problem(s):\n{lines}")


class UnknownPartnerError(ConnectorError):
    """Raised when no configured partner has the id or OIN asked for."""

    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value
        super().__init__(f"no partner with {key} {value!r}")

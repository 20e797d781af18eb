"""The errors of the ledger; all derive from the project's one root, ``DisclosureError``."""

from __future__ import annotations

from legal_bases.errors import DisclosureError


class LedgerError(DisclosureError):
    """Raised when the ledger cannot record or read something it was asked to."""


class ReferenceConflictError(LedgerError):
    """Raised when a partner reuses an accepted request's reference with a different body."""

    def __init__(self, *, partner_id: str, reference: str, existing_request_id: str) -> None:
        self.partner_id = partner_id
        self.reference = reference
        self.existing_request_id = existing_request_id
        super().__init__(
            f"partner {partner_id!r} already has request {existing_request_id} with reference "
            f"{reference!r} and a different body")


class SnapshotMissingError(LedgerError):
    """Raised when a table snapshot asked for by its hash is not in the ledger."""

    def __init__(self, table_hash: str) -> None:
        self.table_hash = table_hash
        super().__init__(f"no table snapshot with hash {table_hash} in the ledger")


class RequestNotFoundError(LedgerError):
    """Raised when a request id names no request in the ledger."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no request with id {request_id} in the ledger")


class ChainKeyError(LedgerError):
    """Raised when the chain's key ring is missing, malformed, or lacks a key the chain needs."""


class PseudonymKeyError(LedgerError):
    """Raised when the pseudonym key is missing, malformed or too short."""


class ValueTooLongError(LedgerError):
    """Raised when a value is longer than its column holds; names the column and its length,
    never the value (which may come from a partner)."""

    def __init__(self, *, table: str, column: str, length: int, request_id: str | None = None,
                 ) -> None:
        self.table = table
        self.column = column
        self.length = length
        self.request_id = request_id
        about = f" (request {request_id})" if request_id else ""
        super().__init__(f"{table}.{column} holds at most {length} characters; the value "
                         f"given{about} is longer")


class ReleaseRefusedError(LedgerError):
    """Raised when the release gate (:mod:`records.release`) refuses to let data leave; ``code``
    says why (:data:`records.release.REFUSALS`)."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"the release gate refused the release: {code}")


class DataKeyError(LedgerError):
    """Raised when a data key or a KEK is missing, or a sealed value does not open with its key."""

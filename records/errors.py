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


class PseudonymKeyError(LedgerError):
    """Raised when the pseudonym key is missing, malformed or too short."""

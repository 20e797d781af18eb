"""Who is calling the intake API: the partner an API key or a client certificate belongs to.

* An API key comes as ``Authorization: Bearer dk_<key id>_<secret>``. Read calls check it
  against the ledger every time (:func:`records.api_keys.verify_key`). Submissions, the hot path,
  check it against the key's hash held in memory (keys never change once issued: a key id, its
  partner and its hash are fixed) and leave the revocation check to the transaction that records
  them (:mod:`connectors.group_commit`): a submission whose key is revoked by then is not
  recorded and gets ``401``. Either way a revocation holds for the very next request.
* A client certificate (mutual TLS, :mod:`connectors.client_certificates`) names its partner by
  the OIN in its subject serialNumber, as PKIoverheid certificates do.

With both, they must name the same partner. A key of a partner that is no longer configured
counts for nothing. The requester is never read from the request body.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors.client_certificates import subject_serial_number
from connectors.group_commit import LedgerUnavailableError
from connectors.partner_file import PartnerSource
from connectors.partners import Partner
from records.api_keys import KeyCheck, key_hash, key_id_of, verify_key
from records.db import read_only


@dataclass(frozen=True, slots=True)
class Identity:
    """The partner a call is made for, and by which credential.

    ``key_id`` is set when a key was presented; ``revocation_checked`` tells whether the ledger
    was asked about its revocation for this call (if not, the writer asks).
    """

    partner: Partner
    key_id: str | None
    certificate: bool
    revocation_checked: bool = True


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is not authenticated: ``code`` for the partner, ``reason`` for the log."""

    code: str
    reason: str


MISSING = "missing_credentials"
INVALID = "invalid_credentials"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Authenticator:
    """Finds the partner of a call from its headers and its TLS client certificate."""

    def __init__(self, *, engine: Engine, partners: PartnerSource) -> None:
        self._reads = read_only(engine)
        self._partners = partners
        self._known: dict[str, tuple[str, str]] = {}  # key id -> (partner id, key hash)

    def forget(self, key_id: str) -> None:
        """Drop a key from memory (it was found revoked)."""
        self._known.pop(key_id, None)

    def authenticate(self, *, authorization: str | None, scope: Mapping[str, Any],
                     revocation_by_writer: bool = False) -> Identity | Refusal:
        """The caller's identity, or why there is none.

        With ``revocation_by_writer`` a key seen before is checked in memory, and the caller
        must have the revocation checked where it records (``Identity.revocation_checked`` is
        then False). Raises :class:`LedgerUnavailableError` if the ledger must be asked and
        cannot answer.
        """
        token = bearer_token(authorization)
        oin = subject_serial_number(scope)
        by_certificate = self._partners.by_oin(oin) if oin is not None else None
        if token is None:
            if authorization:
                return Refusal(INVALID, "not_a_bearer_token")
            if by_certificate is not None:
                return Identity(by_certificate, None, certificate=True)
            if oin is not None:
                return Refusal(INVALID, "certificate_of_no_partner")
            return Refusal(MISSING, "no_credentials")
        check, checked = self._check(token, in_memory=revocation_by_writer)
        if not check.ok or check.partner_id is None:
            return Refusal(INVALID, f"key_{check.problem}")
        partner = self._partners.get(check.partner_id)
        if partner is None:
            structlog.get_logger("disclosure.api").warning(
                "api_key_of_unconfigured_partner", key_id=check.key_id,
                partner_id=check.partner_id)
            return Refusal(INVALID, "partner_not_configured")
        if by_certificate is not None and by_certificate.id != partner.id:
            return Refusal(INVALID, "certificate_and_key_disagree")
        return Identity(partner, check.key_id, certificate=by_certificate is not None,
                        revocation_checked=checked)

    def _check(self, token: str, *, in_memory: bool) -> tuple[KeyCheck, bool]:
        key_id = key_id_of(token)
        if key_id is None:
            return KeyCheck(None, problem="malformed"), True
        known = self._known.get(key_id) if in_memory else None
        if known is not None:
            partner_id, stored = known
            if hmac.compare_digest(stored, key_hash(token)):
                return KeyCheck(key_id, partner_id=partner_id), False
            return KeyCheck(key_id, problem="mismatch"), True
        try:
            with self._reads.connect() as connection:
                check = verify_key(connection=connection, key=token)
        except SQLAlchemyError as exc:
            raise LedgerUnavailableError(f"the ledger could not check the key "
                                         f"({type(exc).__name__})") from None
        if check.ok and check.partner_id is not None:
            self._known[key_id] = (check.partner_id, key_hash(token))
        return check, True

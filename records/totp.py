"""Time-based one-time passwords (RFC 6238, HMAC-SHA1, 30 s steps, 6 digits), as authenticator
apps make them; and the sealing of the shared secrets at rest.

The secret is shown to a reviewer once, at enrolment (as base32 and as an ``otpauth://`` URI for
a QR code); the ledger keeps it sealed with a key derived from the engine's secret key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote

from cryptography.fernet import Fernet, InvalidToken

from legal_bases import limits
from records.errors import LedgerError


class SealError(LedgerError):
    """Raised when a sealed reviewer secret cannot be opened with the configured key."""


def new_secret() -> str:
    """A fresh shared secret: 160 random bits in base32 (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def code_at(secret: str, step: int) -> str:
    """The one-time code of ``secret`` for time step ``step`` (RFC 4226 dynamic truncation)."""
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** limits.TOTP_DIGITS).zfill(limits.TOTP_DIGITS)


def step_of(unix_seconds: float) -> int:
    return int(unix_seconds // limits.TOTP_STEP_SECONDS)


def matching_step(secret: str, code: str, *, now: float) -> int | None:
    """The time step (now, or within the allowed drift) whose code is ``code``, or None."""
    current = step_of(now)
    for step in range(current - limits.TOTP_DRIFT_STEPS, current + limits.TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, *, account: str, issuer: str = "DUO disclosure engine") -> str:
    """The ``otpauth://`` URI an authenticator app scans as a QR code."""
    return (f"otpauth://totp/{quote(issuer)}:{quote(account)}?secret={secret}"
            f"&issuer={quote(issuer)}&digits={limits.TOTP_DIGITS}"
            f"&period={limits.TOTP_STEP_SECONDS}")


class SecretSeal:
    """Seals reviewer secrets with a key derived from the engine's secret key (never stored)."""

    def __init__(self, master_key: bytes) -> None:
        derived = hmac.new(master_key, b"disclosure:reviewer-totp-secrets", hashlib.sha256)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived.digest()))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("ascii")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SealError("a reviewer's secret cannot be opened with the configured key; was "
                            "DISCLOSURE_PSEUDONYM_KEY changed?") from None

    def __repr__(self) -> str:
        return "SecretSeal(<key hidden>)"

"""Where released data goes: a partner's destination, chosen by partner configuration.

:class:`Destination` is the interface; :class:`FileDrop` (the default: one folder per partner,
written atomically) and :class:`HttpsDestination` (a POST with ``requests``) implement it. Both
deliver the same bytes for the same document (:func:`encode_document`: UTF-8 JSON, sorted keys),
so the receipt's sha256 identifies what was delivered.

Exactly once: every delivery carries an **idempotency key** (the ledger's delivery id, say). A file
drop that finds the key's file already there with the same bytes reports a *repeat* instead of
writing again, and refuses a different document under a used key; an HTTPS receiver gets the key
in the ``Idempotency-Key`` header, so a POST retried after a time-out is not a second disclosure.
Errors are the project's own (:class:`~connectors.errors.DeliveryError` and subclasses) and name
the partner, host or key, never the document's content.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import json
import os
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
import structlog

from connectors.errors import (
    DeliveryFailedError,
    DeliveryRejectedError,
    DestinationConfigError,
    IdempotencyConflictError,
    InvalidDocumentError,
    InvalidIdempotencyKeyError,
)
from connectors.receipts import Receipt, ReceiptStatus
from legal_bases import limits

#: Longest idempotency key, in characters (it becomes a file name and an HTTP header).
MAX_IDEMPOTENCY_KEY_LENGTH = 128
#: Default seconds to connect to an HTTPS receiver, and to wait for its answer.
DEFAULT_CONNECT_TIMEOUT_S = limits.DELIVERY_CONNECT_TIMEOUT_SECONDS
DEFAULT_READ_TIMEOUT_S = limits.DELIVERY_READ_TIMEOUT_SECONDS
#: Default retries after the first attempt, and the first back-off (doubling each retry) in seconds.
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 0.5
#: Longest wait between two attempts, and longest ``Retry-After`` honoured, in seconds.
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
#: Largest response body read for a receipt id, in bytes; a longer one is not parsed.
MAX_RECEIPT_BODY_BYTES = 65_536
#: Longest receipt id recorded from a receiver, in characters.
MAX_RECEIPT_ID_LENGTH = 128
#: Header a receiver may put its receipt id in when its JSON body has no ``receipt_id``.
RECEIPT_ID_HEADER = "X-Receipt-Id"
#: Header with which a receiver says it had this idempotency key already (it replayed its answer).
REPLAYED_HEADER = "Idempotent-Replayed"
#: The folder under a file-drop root where documents are written before they are linked into a
#: partner's folder (a partner id never starts with a dot).
STAGING_FOLDER = ".staging"

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_RETRYABLE_STATUS = frozenset({408, 429})


def check_idempotency_key(key: object) -> str:
    """``key`` if it is a safe idempotency key: 1 to 128 of ``[A-Za-z0-9._-]``, starting with a
    letter or digit, without ``..``; raise :class:`InvalidIdempotencyKeyError` otherwise.

    The key becomes a file name and a header value: no path separators, no traversal, no spaces.
    """
    if not isinstance(key, str) or not key:
        raise InvalidIdempotencyKeyError("an idempotency key must be a non-empty string")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidIdempotencyKeyError(
            f"an idempotency key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if not _KEY.match(key) or ".." in key:
        raise InvalidIdempotencyKeyError(
            "an idempotency key may hold only letters, digits, '.', '_' and '-', must start with "
            "a letter or digit and must not contain '..'")
    return key


def encode_document(document: Mapping[str, Any]) -> bytes:
    """The bytes delivered for ``document``: UTF-8 JSON with sorted keys, ending in a newline.

    The same document always gives the same bytes, so a repeat can be recognised by its sha256.
    """
    try:
        text = json.dumps(document, ensure_ascii=False, sort_keys=True, allow_nan=False,
                          separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        # The message names the offending type, not the value.
        raise InvalidDocumentError(f"the document cannot be written as JSON: {exc}") from None
    return (text + "\n").encode("utf-8")


def _now() -> datetime:
    return datetime.now(UTC)


class Destination(ABC):
    """Where one partner's deliveries go."""

    kind: ClassVar[str]

    @abstractmethod
    def deliver(self, *, idempotency_key: str, document: Mapping[str, Any]) -> Receipt:
        """Deliver ``document`` once under ``idempotency_key``; a repeat is no second delivery."""

    def held(self, idempotency_key: str) -> tuple[Receipt, bytes] | None:
        """What the destination already holds under ``idempotency_key`` (its receipt and the
        bytes), if it can tell; None if not, or if it cannot look (then a delivery under the
        same key is the way to find out: a repeat is answered with the first receipt)."""
        return None


# -- file drop ----------------------------------------------------------------------------------

class FileDrop(Destination):
    """Writes each delivery as ``<root>/<partner_id>/<idempotency_key>.json``, atomically.

    The bytes go to a temporary file in the staging folder ``<root>/.staging`` — outside every
    partner's folder, so a partner never sees half a document, and a crash leaves nothing in
    its folder — are fsynced, and are then linked into place under their final name, which fails
    rather than overwrites if that name exists; where the file system has no hard links,
    ``os.replace`` is used instead (and where the partner's folder is another file system, the
    temporary file is a hidden ``.<key>.*.tmp`` in that folder). The folder is fsynced
    afterwards, so a delivery that was acknowledged survives a crash. Staged files a crashed
    writer left are removed by :func:`clean_staging`. The files are readable by the owner only
    (0600).
    """

    kind: ClassVar[str] = "file_drop"

    def __init__(self, root: Path, partner_id: str) -> None:
        if not isinstance(partner_id, str) or not _PARTNER_ID.match(partner_id):
            raise DestinationConfigError(
                "a file drop's partner id must be a slug of lowercase letters, digits and '-'")
        self.root = Path(root)
        self.partner_id = partner_id
        self.folder = self.root / partner_id

    def __repr__(self) -> str:
        return f"FileDrop({str(self.folder)!r})"

    def deliver(self, *, idempotency_key: str, document: Mapping[str, Any]) -> Receipt:
        key = check_idempotency_key(idempotency_key)
        body = encode_document(document)
        digest = hashlib.sha256(body).hexdigest()
        target = self.folder / f"{key}.json"
        log = structlog.get_logger("disclosure.connectors")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            status = self._write(target, key, body, digest)
        except OSError as exc:
            log.warning("delivery_failed", kind=self.kind, partner_id=self.partner_id,
                        idempotency_key=key, error=exc.strerror or type(exc).__name__)
            raise DeliveryFailedError(destination=f"file drop {self.partner_id}", attempts=1,
                                      last_failure=exc.strerror or type(exc).__name__) from None
        # a repeat was delivered when its file landed (before a crash, say), not now
        delivered_at = (datetime.fromtimestamp(target.stat().st_mtime, UTC)
                        if status is ReceiptStatus.REPEAT else _now())
        receipt = Receipt(kind=self.kind, location=str(target), idempotency_key=key,
                          sha256=digest, size=len(body), status=status,
                          delivered_at=delivered_at, detail={"partner_id": self.partner_id})
        log.info("document_delivered", kind=self.kind, partner_id=self.partner_id,
                 idempotency_key=key, size=len(body), status=status.value)
        return receipt

    def held(self, idempotency_key: str) -> tuple[Receipt, bytes] | None:
        key = check_idempotency_key(idempotency_key)
        target = self.folder / f"{key}.json"
        try:
            body = target.read_bytes()
            delivered_at = datetime.fromtimestamp(target.stat().st_mtime, UTC)
        except FileNotFoundError:
            return None
        return Receipt(kind=self.kind, location=str(target), idempotency_key=key,
                       sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                       status=ReceiptStatus.REPEAT, delivered_at=delivered_at,
                       detail={"partner_id": self.partner_id}), body

    def _write(self, target: Path, key: str, body: bytes, digest: str) -> ReceiptStatus:
        if target.exists():
            return self._repeat(target, key, digest)
        staging = self.root / STAGING_FOLDER
        staging.mkdir(exist_ok=True)
        try:
            return self._place(staging, f"{key}.", target, key=key, body=body, digest=digest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # the partner's folder is another file system: stage beside it, hidden
            return self._place(self.folder, f".{key}.", target, key=key, body=body,
                               digest=digest)

    def _place(self, folder: Path, prefix: str, target: Path, *, key: str, body: bytes,
               digest: str) -> ReceiptStatus:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, target)  # atomic, and never replaces a delivered file
            except FileExistsError:
                return self._repeat(target, key, digest)  # a concurrent delivery won the race
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise
                os.replace(tmp, target)  # no hard links here: atomic, but last writer wins
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_folder(self.folder)
        return ReceiptStatus.DELIVERED

    def _repeat(self, target: Path, key: str, digest: str) -> ReceiptStatus:
        held = target.read_bytes()
        existing = hashlib.sha256(held).hexdigest()
        if existing != digest:
            delivered_at = datetime.fromtimestamp(target.stat().st_mtime, UTC)
            raise IdempotencyConflictError(key, str(target), existing=Receipt(
                kind=self.kind, location=str(target), idempotency_key=key, sha256=existing,
                size=len(held), status=ReceiptStatus.REPEAT, delivered_at=delivered_at,
                detail={"partner_id": self.partner_id, "document_differs": True}))
        return ReceiptStatus.REPEAT


def clean_staging(root: Path, *, older_than: float = limits.STAGING_MAX_AGE_SECONDS,
                  now: float | None = None) -> int:
    """Remove the temporary files crashed writers left under a file-drop root — in the staging
    folder, and hidden ``.*.tmp`` files in partners' folders — older than ``older_than``
    seconds (younger ones may be a write in progress). Returns how many were removed."""
    moment = time.time() if now is None else now
    removed = 0
    candidates = list((root / STAGING_FOLDER).glob("*.tmp")) + list(root.glob("*/.*.tmp"))
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            if moment - path.stat().st_mtime >= older_than:
                path.unlink()
                removed += 1
    if removed:
        structlog.get_logger("disclosure.connectors").warning("staged_files_removed",
                                                               files=removed)
    return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- HTTPS --------------------------------------------------------------------------------------

Timeout = float | tuple[float, float]
ClientCert = str | Path | tuple[str | Path, str | Path]


class HttpsDestination(Destination):
    """POSTs each delivery as JSON to a partner's HTTPS endpoint, with retries and a receipt.

    * every call has a timeout: ``(connect, read)`` seconds, or one number for both;
    * connection errors, time-outs, 408, 429 and 5xx are retried up to ``retries`` times, waiting
      ``backoff`` seconds doubled per retry (with jitter, at most :data:`MAX_BACKOFF_S`); a 429's or
      503's ``Retry-After`` is honoured up to ``max_retry_after`` seconds. When every attempt
      failed: :class:`DeliveryFailedError`;
    * any other 4xx, and a redirect (never followed: the data goes only where it was configured),
      is final: :class:`DeliveryRejectedError`, without retrying;
    * each attempt carries the same ``Idempotency-Key`` header, so the receiver can tell a retry
      from a new delivery; a receiver that answers ``Idempotent-Replayed: true`` had it already,
      and the receipt says ``repeat``;
    * the receipt records the status code, the attempts and the receiver's receipt id (the JSON
      body's ``receipt_id``, else the :data:`RECEIPT_ID_HEADER` header).

    Plain ``http://`` is refused unless ``allow_insecure`` (tests on loopback); production partner
    configuration only has https. ``client_cert`` is a PEM file with certificate and key, or a
    ``(cert, key)`` pair (PKIoverheid mutual TLS); ``verify`` is True, False or a CA bundle path.
    """

    kind: ClassVar[str] = "https"

    def __init__(self, url: str, *,
                 timeout: Timeout = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S),
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S,
                 max_retry_after: float = MAX_RETRY_AFTER_S,
                 client_cert: ClientCert | None = None, verify: bool | str | Path = True,
                 session: requests.Session | None = None, allow_insecure: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and allow_insecure):
            raise DestinationConfigError("a delivery URL must use https "
                                         "(plain http only with allow_insecure, for tests)")
        if not parts.hostname:
            raise DestinationConfigError("a delivery URL must name a host")
        if parts.username or parts.password:
            raise DestinationConfigError("a delivery URL must not carry credentials; "
                                         "use a client certificate")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        if not (connect > 0 and read > 0):
            raise DestinationConfigError("delivery timeouts must be positive")
        if retries < 0 or backoff < 0 or max_retry_after < 0:
            raise DestinationConfigError(
                "retries, backoff and max_retry_after must not be negative")
        self.url = url
        self.host = parts.hostname
        # The receipt names the endpoint without its query string (it might carry a token).
        self.location = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.timeout = (float(connect), float(read))
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.cert: str | tuple[str, str] | None = (
            None if client_cert is None
            else (str(client_cert[0]), str(client_cert[1])) if isinstance(client_cert, tuple)
            else str(client_cert))
        self.verify: bool | str = verify if isinstance(verify, bool) else str(verify)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"HttpsDestination({self.location!r})"

    def close(self) -> None:
        """Close the HTTP session if this destination made it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> HttpsDestination:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def deliver(self, *, idempotency_key: str, document: Mapping[str, Any]) -> Receipt:
        key = check_idempotency_key(idempotency_key)
        body = encode_document(document)
        digest = hashlib.sha256(body).hexdigest()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Idempotency-Key": key}
        log = structlog.get_logger("disclosure.connectors")
        last_failure = ""
        for attempt in range(1, self.retries + 2):
            wait: float | None = None
            try:
                response = self._session.post(self.url, data=body, headers=headers,
                                              timeout=self.timeout, cert=self.cert,
                                              verify=self.verify, allow_redirects=False)
            except requests.exceptions.SSLError:
                # A certificate problem does not go away by trying again.
                log.warning("delivery_failed", kind=self.kind, host=self.host,
                            idempotency_key=key, attempt=attempt, failure="tls")
                raise DeliveryFailedError(destination=self.host, attempts=attempt,
                                          last_failure="TLS handshake or certificate check "
                                                       "failed") from None
            except requests.exceptions.Timeout as exc:
                phase = "connect" if isinstance(exc, requests.exceptions.ConnectTimeout) else "read"
                last_failure = f"{phase} timed out"
            except requests.exceptions.ConnectionError:
                last_failure = "connection failed"
            except requests.exceptions.RequestException as exc:
                raise DeliveryFailedError(destination=self.host, attempts=attempt,
                                          last_failure=type(exc).__name__) from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._receipt(response, key=key, digest=digest, size=len(body),
                                         attempts=attempt)
                if status not in _RETRYABLE_STATUS and status < 500:
                    log.warning("delivery_rejected", kind=self.kind, host=self.host,
                                idempotency_key=key, attempt=attempt, status_code=status)
                    raise DeliveryRejectedError(status_code=status, reason=response.reason or "",
                                                host=self.host)
                last_failure = f"HTTP {status}"
                wait = _retry_after(response.headers.get("Retry-After"), self.max_retry_after)
            log.info("delivery_attempt_failed", kind=self.kind, host=self.host,
                     idempotency_key=key, attempt=attempt, failure=last_failure,
                     will_retry=attempt <= self.retries)
            if attempt <= self.retries:
                time.sleep(wait if wait is not None else self._backoff(attempt))
        log.warning("delivery_failed", kind=self.kind, host=self.host, idempotency_key=key,
                    attempts=self.retries + 1, failure=last_failure)
        raise DeliveryFailedError(destination=self.host, attempts=self.retries + 1,
                                  last_failure=last_failure)

    def _backoff(self, attempt: int) -> float:
        delay: float = min(MAX_BACKOFF_S, self.backoff * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    def _receipt(self, response: requests.Response, *, key: str, digest: str, size: int,
                 attempts: int) -> Receipt:
        replayed = response.headers.get(REPLAYED_HEADER, "").strip().lower() == "true"
        receipt_id = _receipt_id(response)
        receipt = Receipt(
            kind=self.kind, location=self.location, idempotency_key=key, sha256=digest,
            size=size, status=ReceiptStatus.REPEAT if replayed else ReceiptStatus.DELIVERED,
            delivered_at=_now(),
            detail={"status_code": response.status_code, "receipt_id": receipt_id,
                    "attempts": attempts, "replayed": replayed})
        structlog.get_logger("disclosure.connectors").info(
            "document_delivered", kind=self.kind, host=self.host, idempotency_key=key, size=size,
            status=receipt.status.value, status_code=response.status_code, attempts=attempts)
        return receipt


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), at most ``cap``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - _now()).total_seconds()
    return max(0.0, min(float(seconds), float(cap)))


def _receipt_id(response: requests.Response) -> str | None:
    found: object = None
    content = response.content
    if content and len(content) <= MAX_RECEIPT_BODY_BYTES:
        with contextlib.suppress(ValueError):
            parsed = json.loads(content)
            if isinstance(parsed, dict):
                found = parsed.get("receipt_id")
    if found is None:
        found = response.headers.get(RECEIPT_ID_HEADER)
    if isinstance(found, int | str) and not isinstance(found, bool):
        text = str(found).strip()
        if text and text.isprintable():
            return text[:MAX_RECEIPT_ID_LENGTH]
    return None

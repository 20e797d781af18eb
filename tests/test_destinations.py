"""Destinations: the file drop and HTTPS delivery, against a real folder and a real HTTP server.

The HTTP receiver runs in a thread on 127.0.0.1 (port 0), can be told to fail, be slow, throttle
or refuse, and counts distinct deliveries by their Idempotency-Key, as a real receiver would.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.destinations import (
    FileDrop,
    HttpsDestination,
    encode_document,
)
from connectors.errors import (
    DeliveryError,
    DeliveryFailedError,
    DeliveryRejectedError,
    DestinationConfigError,
    IdempotencyConflictError,
    InvalidDocumentError,
    InvalidIdempotencyKeyError,
)
from connectors.receipts import ReceiptStatus
from legal_bases.errors import DisclosureError

DOCUMENT: dict[str, Any] = {
    "request_id": "req-1",
    "records": [{"subject": {"bsn": "111222333"}, "personalia": {"surname": "Jansen"}}],
}


# -- the file drop ------------------------------------------------------------------------------

def test_a_file_drop_writes_the_document_under_its_key(tmp_path: Path) -> None:
    drop = FileDrop(tmp_path, "gemeente-utrecht")
    receipt = drop.deliver(idempotency_key="delivery-0001", document=DOCUMENT)
    target = tmp_path / "gemeente-utrecht" / "delivery-0001.json"
    body = target.read_bytes()
    assert json.loads(body) == DOCUMENT
    assert body == encode_document(DOCUMENT)
    assert receipt.status is ReceiptStatus.DELIVERED
    assert receipt.kind == "file_drop"
    assert receipt.location == str(target)
    assert receipt.sha256 == hashlib.sha256(body).hexdigest()
    assert receipt.size == len(body)
    assert receipt.delivered_at.tzinfo is UTC
    assert json.loads(json.dumps(receipt.to_dict()))["status"] == "delivered"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["delivery-0001.json"]  # no temporary file left


def test_a_reader_never_sees_a_half_written_delivery(tmp_path: Path) -> None:
    drop = FileDrop(tmp_path, "cbs")
    folder = tmp_path / "cbs"
    folder.mkdir()
    big = {"rows": ["x" * 1000] * 2000}  # about 2 MB per document
    expected = hashlib.sha256(encode_document(big)).hexdigest()
    done = threading.Event()
    seen: list[str] = []

    def read_while_writing() -> None:
        while not done.is_set():
            for name in os.listdir(folder):
                if name.endswith(".json") and not name.startswith("."):
                    seen.append(hashlib.sha256((folder / name).read_bytes()).hexdigest())

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    try:
        for index in range(15):
            drop.deliver(idempotency_key=f"big-{index}", document=big)
    finally:
        done.set()
        reader.join()
    assert seen
    assert set(seen) == {expected}


def test_a_repeated_delivery_is_recognised_and_not_written_again(tmp_path: Path) -> None:
    drop = FileDrop(tmp_path, "svb")
    first = drop.deliver(idempotency_key="d-1", document=DOCUMENT)
    target = Path(first.location)
    written = target.stat().st_mtime_ns
    again = drop.deliver(idempotency_key="d-1", document=dict(reversed(DOCUMENT.items())))
    assert again.status is ReceiptStatus.REPEAT
    assert again.sha256 == first.sha256
    assert target.stat().st_mtime_ns == written


def test_a_used_key_with_a_different_document_is_refused(tmp_path: Path) -> None:
    drop = FileDrop(tmp_path, "svb")
    drop.deliver(idempotency_key="d-1", document=DOCUMENT)
    with pytest.raises(IdempotencyConflictError):
        drop.deliver(idempotency_key="d-1", document={"other": True})
    assert json.loads((tmp_path / "svb" / "d-1.json").read_bytes()) == DOCUMENT


def test_concurrent_deliveries_of_one_key_write_once(tmp_path: Path) -> None:
    drop = FileDrop(tmp_path, "uwv")
    statuses: list[ReceiptStatus] = []
    lock = threading.Lock()

    def deliver() -> None:
        receipt = drop.deliver(idempotency_key="same", document=DOCUMENT)
        with lock:
            statuses.append(receipt.status)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == sorted([ReceiptStatus.DELIVERED] + [ReceiptStatus.REPEAT] * 7)
    assert os.listdir(tmp_path / "uwv") == ["same.json"]


@pytest.mark.parametrize("key", ["../escape", "a/b", "..", "../../etc/passwd", ".hidden",
                                 "a..b", "", "a b", "line\nbreak", "back\\slash", "x" * 129,
                                 "/absolute", "ünïcode"])
def test_unsafe_idempotency_keys_are_refused(tmp_path: Path, key: str) -> None:
    drop = FileDrop(tmp_path / "drop", "cbs")
    with pytest.raises(InvalidIdempotencyKeyError) as caught:
        drop.deliver(idempotency_key=key, document=DOCUMENT)
    assert isinstance(caught.value, DeliveryError)
    assert isinstance(caught.value, DisclosureError)
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("partner_id", ["../other", "a/b", "", "UPPER", ".."])
def test_an_unsafe_partner_folder_is_refused(tmp_path: Path, partner_id: str) -> None:
    with pytest.raises(DestinationConfigError):
        FileDrop(tmp_path, partner_id)


def test_a_document_that_is_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocumentError):
        FileDrop(tmp_path, "cbs").deliver(idempotency_key="k", document={"x": object()})
    with pytest.raises(InvalidDocumentError):
        FileDrop(tmp_path, "cbs").deliver(idempotency_key="k", document={"x": float("nan")})


def test_a_file_drop_that_cannot_write_fails_as_a_delivery_error(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the partner folder should be")
    drop = FileDrop(tmp_path / "blocked", "cbs")
    with pytest.raises(DeliveryFailedError):
        drop.deliver(idempotency_key="k", document=DOCUMENT)


# -- a real HTTP receiver -----------------------------------------------------------------------

@dataclass
class Receiver:
    """What the test receiver does, and what it saw. Failure modes count down per request."""

    fail_503: int = 0
    slow: int = 0
    slow_seconds: float = 0.0
    throttle_429: int = 0
    retry_after: str = "1"
    always_status: int | None = None
    redirect: bool = False
    receipt_in_header: bool = False
    requests: int = 0
    deliveries: dict[str, bytes] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, key: str, body: bytes,
               headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            self.requests += 1
            self.headers.append(headers)
            if self.redirect:
                return 302, {"Location": "https://elsewhere.example/"}, b"", 0.0
            if self.always_status is not None:
                return self.always_status, {}, b'{"error": "nope"}', 0.0
            if self.fail_503 > 0:
                self.fail_503 -= 1
                return 503, {}, b"busy", 0.0
            if self.throttle_429 > 0:
                self.throttle_429 -= 1
                return 429, {"Retry-After": self.retry_after}, b"slow down", 0.0
            replay = key in self.deliveries
            if not replay:
                self.deliveries[key] = body  # received and stored, even if the answer is late
            delay = 0.0
            if self.slow > 0:
                self.slow -= 1
                delay = self.slow_seconds
            receipt_id = f"R-{list(self.deliveries).index(key) + 1}"
        out_headers = {"Idempotent-Replayed": "true"} if replay else {}
        if self.receipt_in_header:
            out_headers["X-Receipt-Id"] = receipt_id
            return (200 if replay else 201), out_headers, b"", delay
        payload = json.dumps({"receipt_id": receipt_id}).encode()
        out_headers["Content-Type"] = "application/json"
        return (200 if replay else 201), out_headers, payload, delay

    @property
    def distinct_deliveries(self) -> int:
        return len(self.deliveries)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            status, headers, payload, delay = receiver.handle(key, body, dict(self.headers))
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: that is what a slow answer tests

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield state, f"http://{host!s}:{port}/deliveries"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _destination(url: str, **options: Any) -> HttpsDestination:
    options.setdefault("timeout", (1.0, 1.0))
    options.setdefault("retries", 3)
    options.setdefault("backoff", 0.01)
    return HttpsDestination(url, allow_insecure=True, **options)


def test_an_https_delivery_posts_json_with_its_key_and_records_the_receipt(
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    with _destination(url) as destination:
        receipt = destination.deliver(idempotency_key="delivery-42", document=DOCUMENT)
    assert state.deliveries == {"delivery-42": encode_document(DOCUMENT)}
    sent = state.headers[0]
    assert sent["Idempotency-Key"] == "delivery-42"
    assert sent["Content-Type"] == "application/json"
    assert receipt.status is ReceiptStatus.DELIVERED
    assert receipt.kind == "https"
    assert receipt.location == url
    assert receipt.sha256 == hashlib.sha256(encode_document(DOCUMENT)).hexdigest()
    assert receipt.detail == {"status_code": 201, "receipt_id": "R-1", "attempts": 1,
                              "replayed": False}
    assert json.loads(json.dumps(receipt.to_dict()))["detail"]["receipt_id"] == "R-1"


def test_the_receipt_id_may_come_in_a_header(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.receipt_in_header = True
    receipt = _destination(url).deliver(idempotency_key="k-1", document=DOCUMENT)
    assert receipt.detail["receipt_id"] == "R-1"


def test_503s_are_retried_and_deliver_once(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.fail_503 = 2
    receipt = _destination(url).deliver(idempotency_key="k-503", document=DOCUMENT)
    assert state.requests == 3
    assert state.distinct_deliveries == 1
    assert receipt.detail["attempts"] == 3
    assert receipt.status is ReceiptStatus.DELIVERED


def test_a_post_retried_after_a_read_timeout_is_one_delivery(
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.slow, state.slow_seconds = 1, 1.0
    destination = _destination(url, timeout=(1.0, 0.3))
    receipt = destination.deliver(idempotency_key="k-slow", document=DOCUMENT)
    assert state.requests == 2
    assert state.distinct_deliveries == 1  # the receiver kept the first; the retry was a repeat
    assert {h["Idempotency-Key"] for h in state.headers} == {"k-slow"}
    assert receipt.status is ReceiptStatus.REPEAT
    assert receipt.detail["replayed"] is True
    assert receipt.detail["receipt_id"] == "R-1"


def test_a_delivery_sent_twice_by_the_caller_is_one_delivery(
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    destination = _destination(url)
    first = destination.deliver(idempotency_key="k-twice", document=DOCUMENT)
    second = destination.deliver(idempotency_key="k-twice", document=DOCUMENT)
    assert state.distinct_deliveries == 1
    assert (first.status, second.status) == (ReceiptStatus.DELIVERED, ReceiptStatus.REPEAT)


def test_exhausted_retries_raise_delivery_failed(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.fail_503 = 100
    with pytest.raises(DeliveryFailedError) as caught:
        _destination(url, retries=2).deliver(idempotency_key="k-down", document=DOCUMENT)
    assert state.requests == 3
    assert caught.value.attempts == 3
    assert "503" in caught.value.last_failure
    assert state.distinct_deliveries == 0


def test_a_429_honours_retry_after_up_to_the_cap(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.throttle_429, state.retry_after = 1, "5"
    started = time.perf_counter()
    receipt = _destination(url, max_retry_after=0.4).deliver(idempotency_key="k-429",
                                                             document=DOCUMENT)
    elapsed = time.perf_counter() - started
    assert 0.4 <= elapsed < 4  # waited for Retry-After, but no longer than the cap
    assert state.requests == 2
    assert receipt.detail["attempts"] == 2


def test_a_400_is_rejected_without_retrying(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.always_status = 400
    with pytest.raises(DeliveryRejectedError) as caught:
        _destination(url).deliver(idempotency_key="k-400", document=DOCUMENT)
    assert caught.value.status_code == 400
    assert state.requests == 1
    assert isinstance(caught.value, DeliveryError)


def test_a_408_is_retried(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.always_status = 408
    with pytest.raises(DeliveryFailedError):
        _destination(url, retries=1).deliver(idempotency_key="k-408", document=DOCUMENT)
    assert state.requests == 2


def test_a_redirect_is_not_followed(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.redirect = True
    with pytest.raises(DeliveryRejectedError) as caught:
        _destination(url).deliver(idempotency_key="k-302", document=DOCUMENT)
    assert caught.value.status_code == 302
    assert state.requests == 1


def test_a_closed_port_fails_after_retries() -> None:
    destination = _destination("http://127.0.0.1:1/deliveries", retries=2)
    with pytest.raises(DeliveryFailedError) as caught:
        destination.deliver(idempotency_key="k-closed", document=DOCUMENT)
    assert caught.value.attempts == 3
    assert caught.value.last_failure == "connection failed"


def test_plain_http_needs_explicit_permission() -> None:
    with pytest.raises(DestinationConfigError):
        HttpsDestination("http://127.0.0.1:8080/x")
    with pytest.raises(DestinationConfigError):
        HttpsDestination("https://user:secret@partner.example/x")
    with pytest.raises(DestinationConfigError):
        HttpsDestination("https://partner.example/x", timeout=(0, 5))
    assert HttpsDestination("https://partner.example/x?token=abc").location == (
        "https://partner.example/x")


def test_https_keys_are_checked_before_anything_is_sent(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    with pytest.raises(InvalidIdempotencyKeyError):
        _destination(url).deliver(idempotency_key="bad key\r\nX-Evil: 1", document=DOCUMENT)
    assert state.requests == 0


def test_delivery_logs_and_errors_carry_no_personal_data(
        receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    state, url = receiver
    state.fail_503, state.always_status = 1, None
    with capture_logs() as logs:
        _destination(url).deliver(idempotency_key="k-log", document=DOCUMENT)
        FileDrop(tmp_path, "cbs").deliver(idempotency_key="k-log", document=DOCUMENT)
    assert {e["event"] for e in logs} >= {"delivery_attempt_failed", "document_delivered"}
    assert "111222333" not in repr(logs)
    assert "Jansen" not in repr(logs)
    state.always_status = 400
    with pytest.raises(DeliveryRejectedError) as caught:
        _destination(url).deliver(idempotency_key="k-log-2", document=DOCUMENT)
    assert "111222333" not in str(caught.value)

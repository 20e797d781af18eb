"""Support for ``tests/test_pipeline.py``: a real loopback HTTPS receiver, the test's subjects
and partners, request files, plain reads of the ledger and the register, and running the flows.

The receiver is a ``ThreadingHTTPServer`` on 127.0.0.1 behind TLS with a certificate made here
(for the IP address 127.0.0.1), so a partner's ``delivery: {kind: https, url: https://127.0.0.1:
<port>/..., verify: <ca file>}`` goes through the configuration path the product uses. It can be
told to fail with 503, to answer every POST with one status, to answer late, or to be down, and
it counts distinct deliveries by their ``Idempotency-Key`` as a real receiver would.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prefect.states import State
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from connectors.register_models import persons_table
from flows.pipeline.dispatcher import process_requests
from flows.pipeline.dropoff import collect_dropoffs
from flows.runtime import Runtime, runtime
from legal_bases.request import Subject
from legal_bases.vocabulary import Category, SubjectIdType
from records.chain import verify_chain
from records.data_keys import SEALED_PREFIX
from records.ledger import raw_body_of
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestRow, RequestStatus

# -- subjects -----------------------------------------------------------------------------------

BSN = SubjectIdType.BSN
ONR = SubjectIdType.ONDERWIJSNUMMER

#: Subjects seeded into the test register (valid numbers, made up; from the bundled examples).
TAX_SUBJECT = Subject(BSN, "725763863")
TAX_SUBJECT_2 = Subject(BSN, "192285142")
INSPECTED_BSN = Subject(BSN, "738199795")
INSPECTED_ONR = Subject(ONR, "102791163")
SVB_CHILD = Subject(ONR, "102169968")
SVB_PARENT = Subject(BSN, "187891151")
UWV_SUBJECT = Subject(BSN, "691682483")
PUPIL = Subject(BSN, "688136138")
CBS_SUBJECT = Subject(BSN, "883235912")
CBS_SUBJECT_2 = Subject(BSN, "178598835")
BIJSTAND_SUBJECT = Subject(BSN, "987825707")
TOESLAGEN_SUBJECT = Subject(BSN, "467279627")
IN_REGISTER: tuple[Subject, ...] = (
    TAX_SUBJECT, TAX_SUBJECT_2, INSPECTED_BSN, INSPECTED_ONR, SVB_CHILD, SVB_PARENT, UWV_SUBJECT,
    PUPIL, CBS_SUBJECT, CBS_SUBJECT_2, BIJSTAND_SUBJECT, TOESLAGEN_SUBJECT)
#: Valid BSNs (elfproef) that the register does not hold.
ABSENT = Subject(BSN, "111222333")
ABSENT_2 = Subject(BSN, "123456782")
NOT_IN_REGISTER: tuple[Subject, ...] = (ABSENT, ABSENT_2)
#: Nine digits that fail the elfproef.
BAD_BSN = "123456789"

#: Every number a test sends: none of them may show up in Prefect.
ALL_NUMBERS = frozenset(s.number for s in IN_REGISTER + NOT_IN_REGISTER) | {BAD_BSN}

REGISTER_PERSONS = 200
REGISTER_SEED = 4242
PSEUDONYM_KEY = "ab" * 32


def wire(subject: Subject) -> dict[str, str]:
    """A subject as a partner writes it in a request."""
    return {subject.id_type.value: subject.number}


# -- partners -----------------------------------------------------------------------------------

#: id -> body, OIN (test prefix 00000099). ``cbs`` delivers over HTTPS (see partners_yaml).
PARTNERS = {
    "belastingdienst": ("belastingdienst", "00000099000000001000"),
    "toeslagen": ("toeslagen", "00000099000000002000"),
    "svb": ("svb", "00000099000000003000"),
    "uwv": ("uwv", "00000099000000004000"),
    "gemeente-utrecht": ("gemeente", "00000099000000005000"),
    "cbs": ("cbs", "00000099000000007000"),
    "inspectie": ("inspectie_onderwijs", "00000099000000008000"),
}
HTTPS_PARTNER = "cbs"


def partners_yaml(*, https_url: str, ca_file: Path) -> str:
    """The partners file: file drops, and an https delivery for :data:`HTTPS_PARTNER`."""
    lines = []
    for partner_id, (body, oin) in PARTNERS.items():
        lines += [f"- id: {partner_id}", f"  name: Test partner {partner_id}", f"  body: {body}",
                  f'  oin: "{oin}"']
        if partner_id == HTTPS_PARTNER:
            lines += ["  delivery:", "    kind: https", f"    url: {https_url}",
                      f"    verify: {ca_file.name}"]
    return "\n".join(lines) + "\n"


# -- requests -----------------------------------------------------------------------------------

def tax_request(reference: str, subjects: Sequence[Subject] = (TAX_SUBJECT, ABSENT),
                categories: Sequence[str] = ("personalia", "financiele_gegevens"),
                ) -> dict[str, Any]:
    """Belastingdienst, awr-55: approved for personalia and financiele_gegevens."""
    return {"reference": reference, "legal_basis": "awr-55", "purpose": "belastingheffing",
            "subjects": [wire(s) for s in subjects], "categories": list(categories),
            "case_reference": f"FIN/{reference}"}


def inspectie_request(reference: str) -> dict[str, Any]:
    """Inspectie, wro-19 (pseudonymised): opleidingsgegevens released, personalia withheld."""
    return {"reference": reference, "legal_basis": "wro-19", "purpose": "onderwijstoezicht",
            "subjects": [wire(INSPECTED_BSN), wire(ABSENT_2), wire(INSPECTED_ONR)],
            "categories": ["opleidingsgegevens", "personalia"]}


def svb_request(reference: str) -> dict[str, Any]:
    """SVB, suwi-54-svb: approved for opleidingsgegevens and personalia."""
    return {"reference": reference, "legal_basis": "suwi-54-svb", "purpose": "kinderbijslag",
            "subjects": [wire(SVB_CHILD), wire(SVB_PARENT)],
            "categories": ["opleidingsgegevens", "personalia"]}


def uwv_on_tax_ground(reference: str) -> dict[str, Any]:
    """UWV on the tax inspector's ground: rejected (requester_not_entitled)."""
    return {"reference": reference, "legal_basis": "awr-55", "purpose": "werk_en_inkomen",
            "subjects": [wire(UWV_SUBJECT)], "categories": ["personalia"],
            "case_reference": "UWV/1"}


def leerplicht_with_health(reference: str) -> dict[str, Any]:
    """Gemeente, wro-21 with gezondheid: needs_review (special category)."""
    return {"reference": reference, "legal_basis": "wro-21", "purpose": "leerplicht",
            "subjects": [wire(PUPIL)],
            "categories": ["personalia", "opleidingsgegevens", "gezondheid"]}


def cbs_request(reference: str, subjects: Sequence[Subject] = (CBS_SUBJECT,)) -> dict[str, Any]:
    """CBS, cbs-33: approved for opleidingsgegevens (delivered over HTTPS)."""
    return {"reference": reference, "legal_basis": "cbs-33", "purpose": "statistiek",
            "subjects": [wire(s) for s in subjects], "categories": ["opleidingsgegevens"]}


def jsonl(*lines: dict[str, Any] | str) -> str:
    """A batch file: dicts as JSON lines, strings as they are."""
    return "".join((json.dumps(line) if isinstance(line, dict) else line) + "\n"
                   for line in lines)


# -- reading the ledger and the register ----------------------------------------------------------

def count(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return int(session.execute(
            select(func.count()).select_from(model)).scalar_one())  # type: ignore[arg-type]


def rows(engine: Engine, model: type[Any], **where: Any) -> list[Any]:
    """Every row of ``model`` whose columns equal ``where``, as detached objects."""
    with Session(engine, expire_on_commit=False) as session:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        found = list(session.execute(query).scalars())
        session.expunge_all()
        return found


def received(engine: Engine, row: RequestRow) -> str:
    """A request's body as received: stored sealed under its data key (never in clear), opened
    with it here."""
    assert row.raw_body.startswith(SEALED_PREFIX), row.raw_body[:40]
    with Session(engine) as session:
        opened = raw_body_of(session=session, row=row)
    assert opened is not None, f"request {row.id} is shredded"
    return opened


def request_by_reference(engine: Engine, partner_id: str, reference: str) -> RequestRow:
    found = [r for r in rows(engine, RequestRow, partner_id=partner_id, reference=reference)
             if r.valid]
    assert len(found) == 1, f"{len(found)} valid requests {partner_id}/{reference}"
    return found[0]


def state_of(engine: Engine, request_id: str) -> str:
    with Session(engine) as session:
        status = session.get(RequestStatus, request_id)
        assert status is not None
        return status.state


def decisions_of(engine: Engine, request_id: str) -> list[DecisionRow]:
    return rows(engine, DecisionRow, request_id=request_id)


def deliveries_of(engine: Engine, request_id: str) -> list[DeliveryRow]:
    return rows(engine, DeliveryRow, request_id=request_id)


def events_of(engine: Engine, request_id: str, kind: str | None = None) -> list[AuditEvent]:
    found = sorted(rows(engine, AuditEvent, request_id=request_id), key=lambda e: e.seq)
    return [e for e in found if kind is None or e.kind == kind]


def register_entry(engine: Engine, subject: Subject) -> dict[str, Any]:
    """The register's row of a subject, every category as JSON would carry it."""
    table = persons_table()
    with engine.connect() as connection:
        found = connection.execute(select(table).where(
            table.c.id_type == subject.id_type.value,
            table.c.number == subject.number)).mappings().one()
    return {c.value: json.loads(json.dumps(found[c.value])) for c in Category} | {
        "shielded": found["shielded"]}


# -- a real HTTPS receiver on loopback -------------------------------------------------------------

def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "disclosure-test-receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "receiver-ca.pem", folder / "receiver-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass
class Receiver:
    """What the receiver does, and what it saw. Failure modes count down per request."""

    fail_503: int = 0
    always_status: int | None = None
    slow: int = 0
    slow_seconds: float = 0.0
    requests: int = 0
    deliveries: dict[str, bytes] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, key: str, body: bytes) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            self.requests += 1
            self.keys.append(key)
            if self.always_status is not None:
                return self.always_status, {}, b'{"error": "refused"}', 0.0
            if self.fail_503 > 0:
                self.fail_503 -= 1
                return 503, {}, b"busy", 0.0
            replay = key in self.deliveries
            if not replay:
                self.deliveries[key] = body  # stored, even when the answer comes too late
            delay = 0.0
            if self.slow > 0:
                self.slow -= 1
                delay = self.slow_seconds
            receipt_id = f"R-{list(self.deliveries).index(key) + 1}"
        headers = {"Content-Type": "application/json"}
        if replay:
            headers["Idempotent-Replayed"] = "true"
        return (200 if replay else 201), headers, json.dumps(
            {"receipt_id": receipt_id}).encode(), delay

    @property
    def distinct_deliveries(self) -> int:
        return len(self.deliveries)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, payload, delay = receiver.handle(
                self.headers.get("Idempotency-Key", ""), body)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client gave up waiting: that is what a slow answer tests

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class LoopbackServer:
    """The receiver served over TLS on 127.0.0.1; can be stopped and started on the same port."""

    def __init__(self, receiver: Receiver, cert_file: Path, key_file: Path) -> None:
        self.receiver = receiver
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/deliveries"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.receiver))
        server.daemon_threads = True
        server.socket = self.context.wrap_socket(server.socket, server_side=True)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None


# -- running the flows, and what a user looks at -----------------------------------------------

@dataclass
class Run:
    """One flow run: its id, its final state and (when it completed) its returned totals."""

    id: str
    state: State[Any]
    totals: Any  # what the flow returned, or None if it did not complete


def run_flow(call: Callable[..., State[Any]], **parameters: Any) -> Run:
    state = call(return_state=True, **parameters)
    totals = state.result() if state.is_completed() else None
    return Run(str(state.state_details.flow_run_id), state, totals)


@dataclass
class Pipeline:
    """The engine's settings for one test, and what a user looks at."""

    backend: str
    data_dir: Path
    register: Engine
    receiver: Receiver
    server: LoopbackServer
    ca_file: Path

    @property
    def rt(self) -> Runtime:
        return runtime()

    @property
    def ledger(self) -> Engine:
        return runtime().ledger

    @property
    def dropoff(self) -> Path:
        return self.data_dir / "dropoff"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox"

    def drop(self, partner_id: str, name: str, text: str) -> Path:
        """Drop a file as a partner does: written under a ``.part`` name, then renamed."""
        folder = self.dropoff / partner_id
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{name}.part"
        part.write_text(text, "utf-8")
        return part.rename(folder / name)

    def collect(self) -> Run:
        return run_flow(collect_dropoffs, nudge=False)

    def dispatch(self, **parameters: Any) -> Run:
        return run_flow(process_requests, **parameters)

    def delivered(self) -> dict[str, list[str]]:
        """The file-drop deliveries: partner -> file names (temporary files included)."""
        if not self.outbox.exists():
            return {}
        return {folder.name: sorted(p.name for p in folder.iterdir())
                for folder in sorted(self.outbox.iterdir()) if any(folder.iterdir())}

    def document(self, partner_id: str, decision_id: str) -> tuple[dict[str, Any], bytes]:
        body = (self.outbox / partner_id / f"delivery-{decision_id}.json").read_bytes()
        return json.loads(body), body

    def request(self, partner_id: str, reference: str) -> RequestRow:
        return request_by_reference(self.ledger, partner_id, reference)

    def decision(self, request_id: str) -> DecisionRow:
        found = decisions_of(self.ledger, request_id)
        assert len(found) == 1, f"{len(found)} decisions on {request_id}"
        return found[0]

    def expire_claims(self) -> None:
        """Let every claim's lease run out (as CLAIM_LEASE_SECONDS passing would)."""
        with Session(self.ledger) as session, session.begin():
            past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            session.execute(update(RequestStatus).where(
                RequestStatus.claimed_until.is_not(None)).values(  # type: ignore[union-attr]
                claimed_until=past))

    def chain_ok(self) -> bool:
        with Session(self.ledger) as session:
            return verify_chain(session=session).ok


def no_retries(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    """Run one of a flow's tasks without retries: the process 'dies' at the first failure."""
    monkeypatch.setattr(module, name, getattr(module, name).with_options(retries=0))


def fail_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
              when: Callable[..., bool] = lambda *a, **k: True,
              error: Exception | None = None) -> list[int]:
    """Make ``module.name`` raise once (the first call for which ``when`` holds)."""
    real = getattr(module, name)
    failed: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failed and when(*args, **kwargs):
            failed.append(1)
            raise error or RuntimeError(f"simulated crash in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return failed


def wait_for(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``what`` until it returns something truthy (Prefect writes task runs and logs
    asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)

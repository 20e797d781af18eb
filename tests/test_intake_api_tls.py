"""Mutual TLS: a client certificate whose subject serialNumber is the partner's OIN identifies it.

A test CA issues the server's certificate and the clients' (PKIoverheid-style: the OIN in the
subject serialNumber); the API serves HTTPS on loopback with that CA as the client CA, and
clients call it with ``requests`` and their certificate, with or without an API key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine
from test_intake_api import PARTNERS_FILE, TAX, issue

from cli.api_server import Tls, serve_in_thread
from connectors.intake_api import create_app
from connectors.partners import load_partners
from legal_bases.table import GroundTable
from records.pseudonym import Pseudonymizer

pytestmark = pytest.mark.parametrize("ledger_engine", ["sqlite"], indirect=True)
BELASTINGDIENST_OIN = "00000099000000001000"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 server: bool = False) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]
    belastingdienst: tuple[Path, Path]
    unknown_oin: tuple[Path, Path]
    stranger: tuple[Path, Path]  # issued by another CA


def _client(folder: Path, name: str, oin: str, issuer: x509.Name,
            issuer_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.example"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, oin)])
    return _write(folder, name, _certificate(subject, key, issuer, issuer_key), key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test PKIoverheid CA")])
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some other CA")])
    ca_path, _ = _write(folder, "ca", _certificate(ca_name, ca_key, ca_name, ca_key, ca=True),
                        ca_key)
    server_key = _key()
    server = _write(folder, "server", _certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), server_key, ca_name,
        ca_key, server=True), server_key)
    return Pki(ca=ca_path, server=server,
               belastingdienst=_client(folder, "belastingdienst", BELASTINGDIENST_OIN, ca_name,
                                       ca_key),
               unknown_oin=_client(folder, "nobody", "00000099999999999999", ca_name, ca_key),
               stranger=_client(folder, "stranger", BELASTINGDIENST_OIN, other_name,
                                other_key))


@dataclass
class TlsApi:
    url: str
    pki: Pki
    keys: dict[str, str]

    def post(self, cert: tuple[Path, Path] | None, key: str | None = None,
             reference: str = "TLS-1") -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return requests.post(f"{self.url}/v1/requests", json={**TAX, "reference": reference},
                             headers=headers, timeout=10, verify=str(self.pki.ca),
                             cert=(str(cert[0]), str(cert[1])) if cert else None)


@pytest.fixture
def tls_api(ledger_engine: Engine, shipped_table: GroundTable, pki: Pki) -> Iterator[TlsApi]:
    keys = {p: issue(ledger_engine, p) for p in ("belastingdienst", "uwv")}
    app = create_app(engine=ledger_engine, partners=load_partners(PARTNERS_FILE),
                     pseudonymizer=Pseudonymizer(bytes(32)), table=shipped_table,
                     nudge=lambda: None)
    with serve_in_thread(app, tls=Tls(pki.server[0], pki.server[1], pki.ca)) as url:
        assert url.startswith("https://")
        yield TlsApi(url, pki, keys)


def test_a_client_certificate_with_the_partners_oin_identifies_the_partner(
        tls_api: TlsApi) -> None:
    answer = tls_api.post(tls_api.pki.belastingdienst)
    assert answer.status_code == 202, answer.text
    status = requests.get(answer.json()["status_url"], verify=str(tls_api.pki.ca), timeout=10,
                          cert=(str(tls_api.pki.belastingdienst[0]),
                                str(tls_api.pki.belastingdienst[1])))
    assert status.status_code == 200
    assert status.json()["reference"] == "TLS-1"


def test_a_certificate_and_a_key_of_the_same_partner_work_together(tls_api: TlsApi) -> None:
    assert tls_api.post(tls_api.pki.belastingdienst, "belastingdienst").status_code == 202


def test_a_key_alone_still_works_over_tls(tls_api: TlsApi) -> None:
    assert tls_api.post(None, "belastingdienst").status_code == 202


def test_a_certificate_and_a_key_of_different_partners_are_refused(tls_api: TlsApi) -> None:
    answer = tls_api.post(tls_api.pki.belastingdienst, "uwv")
    assert answer.status_code == 401
    assert answer.json()["type"].endswith("/v1/problems/invalid-credentials")


def test_a_certificate_whose_oin_is_no_partners_is_refused(tls_api: TlsApi) -> None:
    answer = tls_api.post(tls_api.pki.unknown_oin)
    assert answer.status_code == 401


def test_without_any_credential_the_answer_is_401(tls_api: TlsApi) -> None:
    assert tls_api.post(None).status_code == 401


def test_a_certificate_from_another_ca_does_not_get_through_the_handshake(
        tls_api: TlsApi) -> None:
    with pytest.raises(requests.exceptions.RequestException):
        tls_api.post(tls_api.pki.stranger)

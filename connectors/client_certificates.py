"""Mutual TLS for the intake API: the verified client certificate, handed to the app.

uvicorn terminates TLS but does not pass the client's certificate on to the application, so
:class:`ClientCertificateH11Protocol` (uvicorn's own HTTP/1.1 protocol, plus this) puts it in
the ASGI scope as the ASGI TLS extension describes (``scope["extensions"]["tls"]``:
``client_cert_chain`` with the leaf certificate as PEM, ``client_cert_name`` as an RFC 4514
string, ``client_cert_error``) and adds ``client_cert_subject``, the subject's attributes by
name. Only a certificate that the TLS layer verified against the configured CA bundle gets here;
a connection without one has no ``client_cert_name``.

PKIoverheid certificates carry the organisation's OIN as the subject's ``serialNumber``
(OID 2.5.4.5); :func:`subject_serial_number` reads it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

_RFC4514_ESCAPES = str.maketrans({",": r"\,", "+": r"\+", '"': r"\"", "\\": r"\\", "<": r"\<",
                                  ">": r"\>", ";": r"\;", "=": r"\="})


def _subject(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            pairs.append((str(name), str(value)))
    return pairs


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension of a connection, from its (verified) peer certificate."""
    cert = ssl_object.getpeercert()
    der = ssl_object.getpeercert(binary_form=True)
    if not cert or not der:
        return {"client_cert_chain": [], "client_cert_name": None, "client_cert_error": None,
                "client_cert_subject": {}, "tls_version": None, "cipher_suite": None,
                "server_cert": None}
    pairs = _subject(cert)
    name = ",".join(f"{k}={v.translate(_RFC4514_ESCAPES)}" for k, v in reversed(pairs))
    return {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)], "client_cert_name": name,
            "client_cert_error": None, "client_cert_subject": dict(pairs), "tls_version": None,
            "cipher_suite": None, "server_cert": None}


def subject_serial_number(scope: Mapping[str, Any]) -> str | None:
    """The subject serialNumber of the call's verified client certificate, or None."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, Mapping):
        return None
    subject = tls.get("client_cert_subject")
    if not isinstance(subject, Mapping):
        return None
    value = subject.get("serialNumber")
    return value if isinstance(value, str) and value else None


class ClientCertificateH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, passing the verified client certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        extension = tls_extension(ssl_object)
        app = self.app

        async def with_certificate(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope.setdefault("extensions", {})["tls"] = extension
            await app(scope, receive, send)

        self.app = with_certificate

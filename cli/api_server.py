"""Building and serving the intake API (:mod:`connectors.intake_api`) with uvicorn.

:func:`api_server` runs the API in a background thread for as long as a ``with`` block lasts:
``disclosure up`` uses it to run the API next to the rest; ``disclosure api`` serves it in the
foreground (one process, or several built by :func:`app_from_environment`).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine

from connectors.client_certificates import ClientCertificateH11Protocol
from connectors.intake_api import ApiConfig, create_app
from connectors.partner_file import PartnerSource
from flows.logs import get_logger
from flows.runtime import open_ledger, partners_file
from flows.starts import nudge_dispatcher
from legal_bases import limits
from legal_bases.errors import DisclosureError
from records.pseudonym import Pseudonymizer
from records.settings import Settings, load_settings

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
#: How ``disclosure api --workers N`` hands its rate limit to the worker processes.
WORKER_RATE = "DISCLOSURE_INTAKE_WORKER_RATE"
WORKER_BURST = "DISCLOSURE_INTAKE_WORKER_BURST"
#: Seconds :func:`api_server` waits for the server to listen.
API_START_TIMEOUT_S = 30


class ApiCommandError(DisclosureError):
    """Raised when an API or partner command cannot do what it was asked."""


def prefect_nudge(api_url: str | None = None) -> Callable[[], object]:
    """The dispatcher nudge for the API: ``flows.starts.nudge_dispatcher`` against
    ``api_url`` (else the configured ``PREFECT_API_URL``).

    Without any Prefect API URL the nudge does nothing (logged once): the dispatcher's schedule
    picks requests up, and Prefect must not start a temporary server inside the API process.
    """
    target = api_url or PREFECT_API_URL.value()
    if not target:
        get_logger("api").warning("dispatcher_nudge_disabled",
                                  reason="no PREFECT_API_URL; the schedule sweeps requests up")
        return lambda: None

    def nudge() -> object:
        with temporary_settings(updates={PREFECT_API_URL: target}):
            return nudge_dispatcher()

    return nudge


@dataclass
class ApiParts:
    """What the API is built from; ``close()`` releases the ledger engine."""

    app: FastAPI
    ledger: Engine

    def close(self) -> None:
        self.ledger.dispose()


def build_api(settings: Settings, *, nudge: Callable[[], object],
              config: ApiConfig | None = None) -> ApiParts:
    """The intake API over the settings' ledger, partner file, pseudonym key and table."""
    ledger = open_ledger(settings)
    try:
        app = create_app(engine=ledger, partners=PartnerSource(partners_file(settings)),
                         pseudonymizer=Pseudonymizer.from_settings(settings),
                         table=settings.ground_table(), nudge=nudge, config=config)
    except BaseException:
        ledger.dispose()
        raise
    return ApiParts(app, ledger)


@dataclass(frozen=True)
class Tls:
    """TLS for the API: its certificate and key, and the CA bundle client certificates must
    chain to (mutual TLS, optional for clients that use a key instead)."""

    certfile: Path
    keyfile: Path
    client_ca: Path | None = None


def uvicorn_options(*, host: str, port: int, tls: Tls | None = None) -> dict[str, Any]:
    """How uvicorn serves the API: our logging only (no access log: the API logs each call
    itself, with its correlation id), TLS and client certificates as given."""
    options: dict[str, Any] = {"host": host, "port": port, "log_config": None,
                               "access_log": False, "lifespan": "on",
                               "timeout_keep_alive": 30, "timeout_graceful_shutdown": 10}
    if tls is not None:
        options |= {"ssl_certfile": str(tls.certfile), "ssl_keyfile": str(tls.keyfile),
                    "http": ClientCertificateH11Protocol}
        if tls.client_ca is not None:
            options |= {"ssl_ca_certs": str(tls.client_ca), "ssl_cert_reqs": ssl.CERT_OPTIONAL}
    return options


def uvicorn_config(app: FastAPI, *, host: str, port: int,
                   tls: Tls | None = None) -> uvicorn.Config:
    """The uvicorn configuration of one API process serving ``app``."""
    return uvicorn.Config(app, **uvicorn_options(host=host, port=port, tls=tls))


def configured_or(settings: Settings, name: str, default: Any) -> Any:
    """A setting the lead may add to :class:`Settings` (``api_host``, ``api_port``), or
    ``default`` until then."""
    value = getattr(settings, name, None)
    return default if value is None else value


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = DEFAULT_API_HOST, port: int = 0,
                    tls: Tls | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread while the block runs; yield its base
    URL (``port`` 0 picks a free port). On leaving, the server stops taking calls, answers the
    ones in progress, and the app's writer records what it took in before this returns."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ApiCommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, tls=tls))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="intake-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            sock.close()
            raise ApiCommandError("the intake API did not start; see the log")
        time.sleep(0.01)
    bound = sock.getsockname()[1]
    scheme = "https" if tls is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"{scheme}://{shown}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def api_server(settings: Settings | None = None, *, host: str | None = None,
               port: int | None = None, prefect_api_url: str | None = None,
               nudge: Callable[[], object] | None = None, config: ApiConfig | None = None,
               tls: Tls | None = None) -> Iterator[str]:
    """Serve the intake API in a background thread while the block runs; yield its base URL.

    For ``disclosure up``: ``with api_server(settings, prefect_api_url=api_url) as url:``
    (host and port from the settings' ``api_host``/``api_port`` where it has them, else
    127.0.0.1:8000; ``port=0`` picks a free one).
    """
    settings = settings or load_settings()
    host = host or configured_or(settings, "api_host", DEFAULT_API_HOST)
    port = configured_or(settings, "api_port", DEFAULT_API_PORT) if port is None else port
    parts = build_api(settings, nudge=nudge or prefect_nudge(prefect_api_url), config=config)
    try:
        with serve_in_thread(parts.app, host=host, port=port, tls=tls) as url:
            yield url
    finally:
        parts.close()


def app_from_environment() -> FastAPI:
    """The API from the environment's settings: uvicorn's ``--factory`` entry point when
    several worker processes serve it (``disclosure api --workers N``); each builds its own."""
    config = ApiConfig(
        rate_per_second=float(os.environ.get(WORKER_RATE, limits.API_RATE_PER_SECOND)),
        rate_burst=int(os.environ.get(WORKER_BURST, limits.API_RATE_BURST)))
    return build_api(load_settings(), nudge=prefect_nudge(None), config=config).app

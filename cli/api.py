"""``disclosure api`` and ``disclosure partners``: the intake API and the partners' keys.

* ``disclosure api [--host H] [--port P] [--tls-cert F --tls-key F [--client-ca F]]`` serves the
  intake API (:mod:`connectors.intake_api`) with uvicorn, one process, one worker: the ledger's
  writer batches commits, and SQLite takes one writer anyway. With ``--client-ca`` clients may
  authenticate by certificate (mutual TLS; the subject serialNumber is the partner's OIN).
* ``disclosure partners list`` shows the configured partners with their keys (ids only).
* ``disclosure partners add ID --name N --body B --oin O [--https-url U]`` appends the partner to
  the partner file (``DISCLOSURE_PARTNERS_FILE``; checked as a whole first) and issues its first
  key. ``rotate-key ID`` issues another key (the old ones keep working until revoked);
  ``revoke ID (--key-id K ... | --all)`` revokes, effective for the next request. A key is
  printed once and stored only as its hash; issuing and revoking are audit events.

:func:`api_server` runs the API in a background thread for as long as a ``with`` block lasts:
``disclosure up`` uses it to run the API next to the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine
from sqlmodel import Session

from connectors.client_certificates import ClientCertificateH11Protocol
from connectors.intake_api import ApiConfig, create_app
from connectors.partner_file import PartnerSource, append_partner, partner_entry
from connectors.partners import load_partners
from flows.logs import get_logger
from flows.runtime import open_ledger, partners_file
from flows.starts import nudge_dispatcher
from legal_bases import limits
from legal_bases.errors import DisclosureError
from legal_bases.vocabulary import Body, slugs
from records.api_keys import IssuedKey, active_key_counts, issue_key, keys_of, revoke_keys
from records.pseudonym import Pseudonymizer
from records.settings import Settings, load_settings

#: Where the API listens unless told otherwise (``DISCLOSURE_API_HOST`` / ``_PORT`` once the
#: settings have them).
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
#: How ``disclosure api --workers N`` hands its rate limit to the worker processes.
WORKER_RATE = "DISCLOSURE_INTAKE_WORKER_RATE"
WORKER_BURST = "DISCLOSURE_INTAKE_WORKER_BURST"
#: Seconds :func:`api_server` waits for the server to listen.
API_START_TIMEOUT_S = 30


class ApiCommandError(DisclosureError):
    """Raised when an API or partner command cannot do what it was asked."""


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _actor(given: str | None) -> str:
    """Who an operator command is recorded as: ``--actor``, else ``operator:<login name>``."""
    if given:
        return given
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


# -- building and serving the API -----------------------------------------------------------------

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


def _setting(settings: Settings, name: str, default: Any) -> Any:
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
    host = host or _setting(settings, "api_host", DEFAULT_API_HOST)
    port = _setting(settings, "api_port", DEFAULT_API_PORT) if port is None else port
    parts = build_api(settings, nudge=nudge or prefect_nudge(prefect_api_url), config=config)
    try:
        with serve_in_thread(parts.app, host=host, port=port, tls=tls) as url:
            yield url
    finally:
        parts.close()


def cmd_api(args: argparse.Namespace) -> int:
    settings = load_settings()
    tls = _tls(args)
    host = args.host or _setting(settings, "api_host", DEFAULT_API_HOST)
    port = args.port if args.port is not None else _setting(settings, "api_port",
                                                            DEFAULT_API_PORT)
    scheme = "https" if tls else "http"
    _say(f"Intake API on {scheme}://{host}:{port}  (OpenAPI: {scheme}://{host}:{port}/docs)")
    if args.workers > 1:
        # each worker process builds its own app from the environment (the factory below)
        os.environ |= {WORKER_RATE: str(args.rate), WORKER_BURST: str(args.burst)}
        if args.prefect_api_url:
            os.environ["PREFECT_API_URL"] = args.prefect_api_url
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            uvicorn.run(f"{__name__}:app_from_environment", factory=True,
                        workers=args.workers, **uvicorn_options(host=host, port=port, tls=tls))
        return 0
    config = ApiConfig(rate_per_second=args.rate, rate_burst=args.burst)
    parts = build_api(settings, nudge=prefect_nudge(args.prefect_api_url), config=config)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            uvicorn.Server(uvicorn_config(parts.app, host=host, port=port, tls=tls)).run()
    finally:
        parts.close()
    return 0


def _tls(args: argparse.Namespace) -> Tls | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise ApiCommandError("--client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ApiCommandError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key, args.client_ca):
        if path is not None and not path.is_file():
            raise ApiCommandError(f"{path} is not a file")
    return Tls(args.tls_cert, args.tls_key, args.client_ca)


# -- partners and their keys ----------------------------------------------------------------------

def _print_key(issued: IssuedKey) -> None:
    _say(f"API key for {issued.partner_id} (key id {issued.key_id}); shown once, store it now:")
    _say(f"  {issued.key}")


def _issue(settings: Settings, partner_id: str, actor: str) -> IssuedKey:
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            return issue_key(session=session, partner_id=partner_id,
                             issued_at=datetime.now(UTC), issued_by=actor)
    finally:
        engine.dispose()


def _configured(settings: Settings, partner_id: str) -> None:
    directory = load_partners(partners_file(settings))
    if partner_id not in directory:
        raise ApiCommandError(f"no partner {partner_id!r} in {directory.source}; add it with "
                              "`disclosure partners add`")


def cmd_partners_add(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.partners_file is None:
        raise ApiCommandError("set DISCLOSURE_PARTNERS_FILE to the partner file to add to "
                              "(the bundled examples are not edited)")
    entry = partner_entry(partner_id=args.id, name=args.name, body=args.body, oin=args.oin,
                          https_url=args.https_url)
    partner = append_partner(settings.partners_file, entry)
    _say(f"Added {partner.id} ({partner.name}, {partner.body.value}, OIN {partner.oin}) to "
         f"{settings.partners_file}")
    _print_key(_issue(settings, partner.id, _actor(args.actor)))
    return 0


def cmd_partners_rotate_key(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configured(settings, args.id)
    _print_key(_issue(settings, args.id, _actor(args.actor)))
    _say("The partner's other keys keep working until revoked "
         f"(disclosure partners revoke {args.id} --key-id <old key id>).")
    return 0


def cmd_partners_revoke(args: argparse.Namespace) -> int:
    if not args.all and not args.key_id:
        raise ApiCommandError("name the keys to revoke with --key-id, or revoke --all")
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            revoked = revoke_keys(session=session, partner_id=args.id,
                                  key_ids=None if args.all else args.key_id,
                                  revoked_at=datetime.now(UTC), revoked_by=_actor(args.actor),
                                  reason=args.reason)
    finally:
        engine.dispose()
    if not revoked:
        _say(f"{args.id} has no unrevoked keys; nothing revoked")
        return 0
    _say(f"Revoked {len(revoked)} key(s) of {args.id}: {', '.join(revoked)} (effective now)")
    return 0


def cmd_partners_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory = load_partners(partners_file(settings))
    engine = open_ledger(settings)
    try:
        with Session(engine) as session:
            keys = keys_of(session=session)
            counts = active_key_counts(session=session)
    finally:
        engine.dispose()
    rows = [("partner", "body", "OIN", "keys", "key ids (unrevoked)")]
    for partner in directory:
        active = [k.key_id for k in keys if k.partner_id == partner.id and k.active]
        rows.append((partner.id, partner.body.value, partner.oin,
                     str(counts.get(partner.id, 0)), ", ".join(active) or "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if args.all_keys:
        _say("")
        for key in keys:
            revoked = (f"revoked {key.revoked_at.isoformat()} by {key.revoked_by}"
                       if key.revoked_at else "active")
            _say(f"{key.key_id}  {key.partner_id}  issued {key.issued_at.isoformat()} by "
                 f"{key.issued_by}  {revoked}")
    unknown = sorted({k.partner_id for k in keys if k.active} - set(directory.ids))
    if unknown:
        _say(f"\nunrevoked keys of partners no longer configured (they do not work): "
             f"{', '.join(unknown)}")
    _say(f"\n{len(directory)} partner(s) from {directory.source}")
    return 0


def register(sub: Any) -> None:
    """Add ``api`` and ``partners add|rotate-key|revoke|list`` to the command line."""
    api = sub.add_parser(
        "api", help="serve the intake API (partners submit and follow requests)",
        description="Serve the intake API with uvicorn (one process). The OpenAPI document is "
                    "at /openapi.json, readable at /docs.")
    api.add_argument("--host", default=None,
                     help=f"address to listen on (default {DEFAULT_API_HOST})")
    api.add_argument("--port", type=int, default=None,
                     help=f"port to listen on (default {DEFAULT_API_PORT})")
    api.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                     help="serve HTTPS with this certificate (chain)")
    api.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                     help="the private key of --tls-cert")
    api.add_argument("--client-ca", type=Path, default=None, metavar="PEM",
                     help="accept client certificates chaining to these CAs (mutual TLS; the "
                          "subject serialNumber is the partner's OIN)")
    api.add_argument("--rate", type=float, default=limits.API_RATE_PER_SECOND,
                     help="requests per second per partner (default %(default)s)")
    api.add_argument("--burst", type=int, default=limits.API_RATE_BURST,
                     help="burst per partner (default %(default)s)")
    api.add_argument("--workers", type=int, default=1,
                     help="API processes (default 1; each has its own rate limits and ledger "
                          "writer: on SQLite one is as fast, see the README)")
    api.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL"),
                     help="the Prefect API the dispatcher is nudged through (default "
                          "PREFECT_API_URL; none: the schedule sweeps requests up)")
    api.set_defaults(handler=cmd_api)

    partners = sub.add_parser("partners", help="partner organisations and their API keys")
    psub = partners.add_subparsers(dest="partners_command", required=True, metavar="ACTION")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=None,
                       help="who does this, for the audit trail (default operator:<login>)")
    plist = psub.add_parser("list", help="the configured partners and their keys (ids only)")
    plist.add_argument("--all-keys", action="store_true",
                       help="also list every key ever issued, revoked ones too")
    plist.set_defaults(handler=cmd_partners_list)
    add = psub.add_parser("add", parents=[actor],
                          help="add a partner to the partner file and issue its first key")
    add.add_argument("id", help="the partner's id (a slug, e.g. gemeente-utrecht)")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--body", required=True, choices=slugs(Body), help="its requesting body")
    add.add_argument("--oin", required=True, help="its OIN (20 characters)")
    add.add_argument("--https-url", default=None,
                     help="deliver by HTTPS POST to this URL (default: a file drop)")
    add.set_defaults(handler=cmd_partners_add)
    rotate = psub.add_parser("rotate-key", parents=[actor],
                             help="issue another key (old ones work until revoked)")
    rotate.add_argument("id")
    rotate.set_defaults(handler=cmd_partners_rotate_key)
    revoke = psub.add_parser("revoke", parents=[actor], help="revoke keys, effective at once")
    revoke.add_argument("id")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--key-id", action="append", default=None, metavar="KEY_ID",
                       help="the key to revoke (repeatable)")
    which.add_argument("--all", action="store_true", help="every unrevoked key of the partner")
    revoke.add_argument("--reason", default=None, help="why (kept with the revocation)")
    revoke.set_defaults(handler=cmd_partners_revoke)


def app_from_environment() -> FastAPI:
    """The API from the environment's settings: uvicorn's ``--factory`` entry point when
    several worker processes serve it (``disclosure api --workers N``); each builds its own."""
    config = ApiConfig(
        rate_per_second=float(os.environ.get(WORKER_RATE, limits.API_RATE_PER_SECOND)),
        rate_burst=int(os.environ.get(WORKER_BURST, limits.API_RATE_BURST)))
    return build_api(load_settings(), nudge=prefect_nudge(None), config=config).app

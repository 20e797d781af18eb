"""``disclosure api [--host H] [--port P] [--tls-cert F --tls-key F [--client-ca F]]``: serve
the intake API with uvicorn, one process, one worker: the ledger's writer batches commits, and
SQLite takes one writer anyway. With ``--client-ca`` clients may authenticate by certificate
(mutual TLS; the subject serialNumber is the partner's OIN).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

import uvicorn

from cli import api_server
from cli.api_server import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    WORKER_BURST,
    WORKER_RATE,
    ApiCommandError,
    Tls,
    build_api,
    configured_or,
    prefect_nudge,
    uvicorn_config,
    uvicorn_options,
)
from cli.arguments import say
from connectors.intake_api import ApiConfig
from legal_bases import limits
from records.settings import load_settings


def cmd_api(args: argparse.Namespace) -> int:
    settings = load_settings()
    tls = _tls(args)
    host = args.host or configured_or(settings, "api_host", DEFAULT_API_HOST)
    port = args.port if args.port is not None else configured_or(settings, "api_port",
                                                            DEFAULT_API_PORT)
    scheme = "https" if tls else "http"
    say(f"Intake API on {scheme}://{host}:{port}  (OpenAPI: {scheme}://{host}:{port}/docs)")
    if args.workers > 1:
        # each worker process builds its own app from the environment (the factory below)
        os.environ |= {WORKER_RATE: str(args.rate), WORKER_BURST: str(args.burst)}
        if args.prefect_api_url:
            os.environ["PREFECT_API_URL"] = args.prefect_api_url
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            uvicorn.run(f"{api_server.__name__}:app_from_environment", factory=True,
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


def register(sub: Any) -> None:
    """Add ``api`` to the command line."""
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

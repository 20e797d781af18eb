"""``disclosure cluster up``: the scaled-out set-up on one machine, for trying and testing.

What production runs on several hosts (README, "Several machines"), here side by side, each in a
process of its own: a Prefect server on PostgreSQL (``prefect server start`` with
``PREFECT_SERVER_DATABASE_CONNECTION_URL``), the work pool ``disclosure`` (process type) with the
deployments of ``prefect.yaml`` (``prefect --no-prompt deploy --all``), N Prefect workers
(``prefect worker start --pool disclosure``) with the engine's environment, the intake API
(``disclosure api``) and beside it the watch that starts the sweepers when there is work
(``disclosure watch``); the ledger on PostgreSQL. Both databases are created if missing.

It prints where to look and keeps running until Ctrl-C or SIGTERM, then stops every process it
started: each runs in a process group of its own, and a worker's flow runs, which Prefect starts
in sessions of their own, are stopped with it. A worker that stops is reported, not replaced:
the others take its requests over (at once on this host, where its dead processes are seen;
from another host once their claims' lease ran out).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from cli.arguments import UsageError, say
from cli.local_prefect import (
    API_URL_FILE,
    RUNNER_POLL_SECONDS,
    PrefectStartError,
    healthy,
    local_api_url,
    prefect_env,
)
from cli.up import example_files, prepare_register
from flows.runtime import EXAMPLES_DIR, open_ledger, partners_file
from legal_bases import limits
from records.db import database_url
from records.settings import Settings, load_settings

#: The work pool of ``prefect.yaml``, and where that file (and the code the workers run) lies.
POOL = "disclosure"
PROJECT_DIR = Path(__file__).resolve().parents[1]
#: The ledger when neither ``--database-url`` nor a PostgreSQL DISCLOSURE_DATABASE_URL names one;
#: Prefect's database is the ledger's name with this suffix on the same server, unless given.
DEFAULT_LEDGER_URL = "postgresql://postgres@127.0.0.1:5432/disclosure"
PREFECT_DATABASE_SUFFIX = "_prefect"
DEFAULT_WORKERS = 2
#: Flow runs one worker runs at once (as ``disclosure serve`` does).
DEFAULT_WORKER_LIMIT = 4
DEFAULT_API_PORT = 8000
#: Seconds ``prefect deploy`` may take (it imports every flow), and the workers and the API
#: may take to come up.
DEPLOY_TIMEOUT_S = 300
READY_TIMEOUT_S = limits.PREFECT_START_TIMEOUT_SECONDS
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class ClusterError(PrefectStartError):
    """Raised when a part of the cluster does not start, or a database cannot be made."""


# -- the databases ----------------------------------------------------------------------------

def postgres_urls(ledger: str | None, prefect: str | None) -> tuple[URL, URL]:
    """The ledger's URL (``--database-url``, else a PostgreSQL DISCLOSURE_DATABASE_URL, else
    :data:`DEFAULT_LEDGER_URL`) and the Prefect server's (``--prefect-database-url``, else the
    ledger's server with the database ``<ledger>_prefect``), asyncpg as Prefect needs."""
    configured = os.environ.get("DISCLOSURE_DATABASE_URL", "")
    chosen = ledger or (configured if configured.startswith("postgres") else DEFAULT_LEDGER_URL)
    ledger_url = make_url(chosen)
    if ledger_url.get_backend_name() != "postgresql":
        raise UsageError("several workers share the ledger: --database-url must name PostgreSQL "
                         f"(postgresql://…), not {ledger_url.get_backend_name()}")
    prefect_url = (make_url(prefect) if prefect else
                   ledger_url.set(database=f"{ledger_url.database}{PREFECT_DATABASE_SUFFIX}"))
    if prefect_url.get_backend_name() != "postgresql":
        raise UsageError("--prefect-database-url must name PostgreSQL (postgresql+asyncpg://…)")
    for url in (ledger_url, prefect_url):
        if not _DATABASE_NAME.fullmatch(url.database or ""):
            raise UsageError(f"{url.database!r} is not a database name this command creates")
    return ledger_url, prefect_url.set(drivername="postgresql+asyncpg")


def plain(url: URL) -> str:
    """``url`` as a child process's environment takes it (with its password)."""
    return url.render_as_string(hide_password=False)


def ensure_database(url: URL) -> bool:
    """Create the database ``url`` names on its server if it is missing; whether it did."""
    admin = create_engine(database_url(url.set(drivername="postgresql")).set(database="postgres"),
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                  {"name": url.database}).first():
                return False
            quoted = connection.dialect.identifier_preparer.quote(str(url.database))
            connection.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    except SQLAlchemyError as exc:
        shown = url.render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        raise ClusterError(f"cannot reach or create the database {shown}: "
                           f"{type(cause).__name__}: {str(cause).strip()[:200]}") from None
    finally:
        admin.dispose()


# -- processes --------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = parents.get(todo.pop(0), [])
        found += below
        todo += below
    return found


def _signal(pids: list[int], group: int, sig: int) -> None:
    for target, kill in ((group, os.killpg), *((p, os.kill) for p in pids)):
        with suppress(ProcessLookupError, PermissionError):
            kill(target, sig)


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process``, its process group and every process below it (TERM, then KILL)."""
    family = descendants(process.pid)
    _signal(family, process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=limits.PROCESS_STOP_TIMEOUT_SECONDS)
    _signal(family, process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def child(argv: list[str], *, env: dict[str, str],
          log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in a session of its own (in the project folder, output to ``log``) while the
    block runs; stopped with everything below it afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=PROJECT_DIR, stdout=out,  # noqa: S603
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_tree(process)


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _wait(what: str, ready: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise ClusterError(f"{what} stopped at start (exit {process.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not come up within {READY_TIMEOUT_S} s; see {log}")
        time.sleep(0.5)


# -- the parts --------------------------------------------------------------------------------

@contextmanager
def prefect_server(*, port: int, home: Path, logs: Path,
                   database: URL) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``prefect server start`` on 127.0.0.1:``port`` with its database on PostgreSQL; yields
    its API URL (noted in ``home`` as ``disclosure up`` notes its own, for the commands) and its
    process."""
    api_url = local_api_url(port)
    if healthy(api_url):
        raise ClusterError(f"a Prefect server already answers on port {port}: stop it, or "
                           "choose another --port")
    env = prefect_env(api_url=api_url, home=home)
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = plain(database)
    log = logs / "prefect-server.log"
    with child(_prefect("server", "start", "--host", "127.0.0.1", "--port", str(port),
                        "--analytics-off"), env=env, log=log) as process:
        _wait("the Prefect server", lambda: healthy(api_url), process, log)
        (home / API_URL_FILE).write_text(api_url + "\n", "utf-8")
        try:
            yield api_url, process
        finally:
            (home / API_URL_FILE).unlink(missing_ok=True)


def ensure_pool(api_url: str) -> bool:
    """Create the work pool ``disclosure`` (process type) if it is missing; whether it did."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        try:
            client.read_work_pool(POOL)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(
                name=POOL, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            return False
        return True


def deploy(*, api_url: str, home: Path, logs: Path) -> None:
    """``prefect --no-prompt deploy --all`` from the project folder (``prefect.yaml``): the code
    is on this disk, so the deployments run from here."""
    if not (PROJECT_DIR / "prefect.yaml").is_file():
        raise ClusterError(f"no prefect.yaml in {PROJECT_DIR}: run from a checkout of the engine")
    log = logs / "deploy.log"
    with log.open("ab") as out:
        try:
            result = subprocess.run(_prefect("--no-prompt", "deploy", "--all"),  # noqa: S603
                                    cwd=PROJECT_DIR, env=prefect_env(api_url=api_url, home=home),
                                    stdout=out, stderr=subprocess.STDOUT, check=False,
                                    timeout=DEPLOY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"prefect deploy took over {DEPLOY_TIMEOUT_S} s; see {log}"
                               ) from None
    if result.returncode != 0:
        raise ClusterError(f"prefect deploy failed (exit {result.returncode}); see {log}")


def engine_env(settings: Settings) -> dict[str, str]:
    """The engine's settings as every worker and the API get them: absolute paths (a flow run
    works in the project folder), the ledger on PostgreSQL, the shared checkpoint folder."""
    env = {"DISCLOSURE_DATA_DIR": str(settings.data_dir),
           "DISCLOSURE_DATABASE_URL": settings.resolved_database_url,
           "DISCLOSURE_CHECKPOINT_DIR": str(settings.resolved_checkpoint_dir.resolve()),
           "DISCLOSURE_DROPOFF_DIR": str(settings.resolved_dropoff_dir.resolve()),
           "DISCLOSURE_OUTBOX_DIR": str(settings.resolved_outbox_dir.resolve()),
           "DISCLOSURE_PARTNERS_FILE": str(partners_file(settings).resolve())}
    if settings.grounds_dir is not None:
        env["DISCLOSURE_GROUNDS_DIR"] = str(settings.grounds_dir.resolve())
    return env


def online_workers(api_url: str) -> set[str]:
    """The names of the pool's workers the server has heard from."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        return {w.name for w in client.read_workers_for_work_pool(POOL)
                if str(w.status).upper().endswith("ONLINE")}


def _api_healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=limits.PREFECT_HEALTH_TIMEOUT_SECONDS).ok
    except requests.RequestException:
        return False


# -- the command ------------------------------------------------------------------------------

def cmd_cluster_up(args: argparse.Namespace) -> int:
    # A TERM signal (a service manager, `kill`) stops the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.workers < 1 or args.worker_limit < 1:
        raise UsageError("--workers and --worker-limit must be at least 1")
    ledger, prefect_db = postgres_urls(args.database_url, args.prefect_database_url)
    settings = load_settings(data_dir=load_settings().data_dir.resolve(),
                             database_url=plain(ledger))
    say("Preparing the databases, the ledger and the register …")
    for url in (ledger, prefect_db):
        ensure_database(url)
    prepare_register(settings, EXAMPLES_DIR, example_files(EXAMPLES_DIR))
    open_ledger(settings).dispose()  # migrated, and the chain's key ring made, before any worker
    home, logs = settings.data_dir / "prefect", settings.data_dir / "logs"
    home.mkdir(parents=True, exist_ok=True)
    port = args.port or settings.prefect_port
    with ExitStack() as stack:
        api_url, server = stack.enter_context(prefect_server(port=port, home=home, logs=logs,
                                                             database=prefect_db))
        say(f"Prefect server at {api_url.removesuffix('/api')} on PostgreSQL; work pool {POOL}, "
            "deploying prefect.yaml …")
        ensure_pool(api_url)
        deploy(api_url=api_url, home=home, logs=logs)
        env = prefect_env(api_url=api_url, home=home) | engine_env(settings) | {
            "PREFECT_WORKER_QUERY_SECONDS": str(RUNNER_POLL_SECONDS)}
        host = socket.gethostname()
        workers: dict[str, subprocess.Popen[bytes]] = {}
        for n in range(1, args.workers + 1):
            name = f"{host}-worker-{n}"
            workers[name] = stack.enter_context(child(
                _prefect("worker", "start", "--pool", POOL, "--type", "process", "--name", name,
                         "--limit", str(args.worker_limit)),
                env=env, log=logs / f"worker-{n}.log"))
        for n, (name, process) in enumerate(workers.items(), start=1):
            _wait(f"worker {name}", lambda name=name: name in online_workers(api_url), process,
                  logs / f"worker-{n}.log")
        intake_url = f"http://127.0.0.1:{args.api_port}"
        intake = stack.enter_context(child(
            [sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port",
             str(args.api_port), "--prefect-api-url", api_url], env=env, log=logs / "api.log"))
        _wait("the intake API", lambda: _api_healthy(intake_url), intake, logs / "api.log")
        watch = stack.enter_context(child(
            [sys.executable, "-m", "cli.main", "watch", "--prefect-api-url", api_url], env=env,
            log=logs / "watch.log"))
        _print_where(settings, api_url, prefect_db, intake_url, workers=workers, logs=logs)
        say("\nServing until interrupted (Ctrl-C) …")
        try:
            return supervise(workers, others={"the Prefect server": server,
                                              "the intake API": intake}, watch=watch, logs=logs)
        except KeyboardInterrupt:
            say("\nstopping …")
    return 0


def supervise(workers: dict[str, subprocess.Popen[bytes]], *,
              others: dict[str, subprocess.Popen[bytes]], watch: subprocess.Popen[bytes],
              logs: Path) -> int:
    """Look after the processes until interrupted: a worker that stops is reported (the others
    take its requests over), and so is the watch (the sweepers' schedules remain, slow); the
    server, the API or every worker stopping ends the cluster (1)."""
    gone: set[str] = set()
    while True:
        if "watch" not in gone and watch.poll() is not None:
            gone.add("watch")
            say(f"The watch stopped (exit {watch.returncode}); the sweepers' schedules remain — "
                f"see {logs / 'watch.log'}")
        for what, process in others.items():
            if process.poll() is not None:
                print(f"disclosure: {what} stopped (exit {process.returncode}); stopping the "
                      f"cluster — see {logs}", file=sys.stderr, flush=True)
                return 1
        for name, process in workers.items():
            if name not in gone and process.poll() is not None:
                gone.add(name)
                say(f"Worker {name} stopped (exit {process.returncode}); the other workers take "
                    "its requests over")
        if len(gone - {"watch"}) == len(workers):
            print("disclosure: every worker stopped; stopping the cluster", file=sys.stderr,
                  flush=True)
            return 1
        time.sleep(1)


def _print_where(settings: Settings, api_url: str, prefect_db: URL, intake_url: str, *,
                 workers: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    ui = api_url.removesuffix("/api")
    ledger = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    lines = [
        "",
        "Where to look:",
        f"  Prefect UI        {ui}/runs   (Work Pools → {POOL}: the workers; a run's labels name "
        "its worker)",
        f"  Prefect database  {prefect_db.render_as_string(hide_password=True)}",
        f"  Ledger            {ledger}   (disclosure status, disclosure audit verify)",
        f"  Intake API        {intake_url}/docs   (partners: disclosure partners rotate-key ID)",
        f"  Watch             starts the sweepers when there is work; log {logs}/watch.log",
    ]
    lines += [f"  Worker {n:<11}{name}, pid {process.pid}, log {logs}/worker-{n}.log"
              for n, (name, process) in enumerate(workers.items(), start=1)]
    lines += [
        f"  Deliveries        {settings.resolved_outbox_dir}/<partner>/",
        f"  Drop-off folders  {settings.resolved_dropoff_dir}/<partner>/",
        f"  Logs              {logs}/ (prefect-server, deploy, worker-N, api, watch)",
        "  Commands          DISCLOSURE_DATABASE_URL=… and PREFECT_API_URL=" + api_url,
    ]
    for line in lines:
        say(line)


def register(sub: Any) -> None:
    """Add ``cluster up`` to the command line."""
    cluster = sub.add_parser("cluster", help="the scaled-out set-up (Prefect workers on "
                             "PostgreSQL) on one machine")
    csub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = csub.add_parser(
        "up", help="start a PostgreSQL-backed Prefect server, the work pool, N workers and the "
                   "intake API",
        description="Start on this machine what production runs on several hosts: a Prefect "
                    "server on PostgreSQL, the work pool and deployments of prefect.yaml, N "
                    "Prefect workers and the intake API, the ledger on PostgreSQL; serve until "
                    "interrupted.")
    up.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                    help="Prefect workers to start (default %(default)s)")
    up.add_argument("--worker-limit", type=int, default=DEFAULT_WORKER_LIMIT,
                    help="flow runs each worker runs at once (default %(default)s)")
    up.add_argument("--database-url", default=None, metavar="URL",
                    help="the ledger (default: DISCLOSURE_DATABASE_URL if PostgreSQL, else "
                         f"{DEFAULT_LEDGER_URL}); created if missing")
    up.add_argument("--prefect-database-url", default=None, metavar="URL",
                    help="the Prefect server's database (default: the ledger's server, database "
                         f"<ledger>{PREFECT_DATABASE_SUFFIX}); created if missing")
    up.add_argument("--port", type=int, default=None,
                    help="port of the Prefect server (default DISCLOSURE_PREFECT_PORT, 4200)")
    up.add_argument("--api-port", type=int, default=DEFAULT_API_PORT,
                    help="port of the intake API (default %(default)s)")
    up.set_defaults(handler=cmd_cluster_up)

"""The Prefect processes of the embedded set-up: a local server on SQLite and the flow server.

``disclosure up`` starts both (unless ``PREFECT_API_URL`` names a server already running
elsewhere); each writes its log under ``<data_dir>/logs``. Everything Prefect keeps lives under
``<data_dir>/prefect`` (``PREFECT_HOME``), next to the ledger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from prefect.settings import PREFECT_API_URL

from legal_bases import limits
from legal_bases.errors import DisclosureError

#: Seconds the local server gets to migrate a fresh database and answer (11–14 s measured).
SERVER_START_TIMEOUT_S = limits.PREFECT_START_TIMEOUT_SECONDS
#: How often the flow server polls for scheduled runs (Prefect's default is 10 s).
RUNNER_POLL_SECONDS = 2


class PrefectStartError(DisclosureError):
    """Raised when a local Prefect process does not start or does not answer in time."""


def prefect_env(*, api_url: str, home: Path) -> dict[str, str]:
    """The environment of a Prefect process of ours: our server, our home, our log lines."""
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home.resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # structlog's lines (logger "disclosure") go to the run's log in the UI too
        "PREFECT_LOGGING_EXTRA_LOGGERS": "disclosure",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_RUNNER_POLL_FREQUENCY": str(RUNNER_POLL_SECONDS),
    })
    return env


class PrefectUnreachableError(DisclosureError):
    """Raised when a command needs a Prefect server and none answers."""


#: Where a running ``disclosure up`` notes its Prefect server's address (in its Prefect home).
API_URL_FILE = "api-url"


def local_api_url(port: int) -> str:
    """The API address of the local Prefect server on ``port`` (the one ``up`` starts)."""
    return f"http://127.0.0.1:{port}/api"


def command_api_url(port: int, home: Path | None = None) -> str:
    """The Prefect API a command talks to: ``PREFECT_API_URL``, else the local server that a
    running ``disclosure up`` started (it notes its address in ``home``, whatever ``--port`` it
    was given), else the local server on ``port`` (``DISCLOSURE_PREFECT_PORT``)."""
    configured = PREFECT_API_URL.value()
    if configured:
        return str(configured)
    noted = home / API_URL_FILE if home is not None else None
    if noted is not None and noted.is_file():
        url = noted.read_text("utf-8").strip()
        if url.startswith("http://127.0.0.1:") and healthy(url):
            return url
    return local_api_url(port)


def answering_api_url(port: int, *, needed_for: str, home: Path | None = None) -> str:
    """:func:`command_api_url`, checked to answer; else :class:`PrefectUnreachableError` saying
    what to do (``needed_for`` names the option or command that needs the server)."""
    url = command_api_url(port, home)
    if healthy(url):
        return url
    if PREFECT_API_URL.value():
        raise PrefectUnreachableError(f"{needed_for}: the Prefect server at {url} does not answer")
    raise PrefectUnreachableError(f"{needed_for} needs a Prefect server: set PREFECT_API_URL, or "
                                  "start the local one with `disclosure up`")


def healthy(api_url: str) -> bool:
    """Whether a Prefect API answers at ``api_url``."""
    try:
        answer = requests.get(f"{api_url}/health",
                              timeout=limits.PREFECT_HEALTH_TIMEOUT_SECONDS)
        return answer.status_code == 200
    except requests.RequestException:
        return False


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=limits.PROCESS_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=limits.PROCESS_STOP_TIMEOUT_SECONDS)


@contextmanager
def local_server(*, port: int, home: Path, log_dir: Path) -> Iterator[str]:
    """A Prefect server on 127.0.0.1:``port`` for as long as the block runs; yields its API URL.

    A server already answering on that port (an earlier ``up`` still running) is used as it is.
    """
    api_url = local_api_url(port)
    if healthy(api_url):
        yield api_url
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    with (log_dir / "prefect-server.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own executable, fixed arguments
            [_executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
             str(port), "--analytics-off"],
            env=prefect_env(api_url=api_url, home=home), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not healthy(api_url):
            if process.poll() is not None:
                log_file = log_dir / "prefect-server.log"
                raise PrefectStartError(f"the Prefect server stopped at start (exit "
                                        f"{process.returncode}); see {log_file}")
            if time.monotonic() > deadline:
                raise PrefectStartError(f"the Prefect server did not answer within "
                                        f"{SERVER_START_TIMEOUT_S} s; see {log_dir}")
            time.sleep(0.5)
        (home / API_URL_FILE).write_text(api_url + "\n", "utf-8")
        yield api_url
    finally:
        (home / API_URL_FILE).unlink(missing_ok=True)
        _stop(process)


@contextmanager
def flow_server(*, api_url: str, home: Path, log_dir: Path,
                extra_env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``disclosure serve`` in its own process for as long as the block runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = prefect_env(api_url=api_url, home=home) | (extra_env or {})
    with (log_dir / "serve.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own executable, fixed arguments
            [_executable("disclosure"), "serve"], env=env, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        _stop(process)

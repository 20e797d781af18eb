"""The processes around a worker die: ``disclosure serve`` loses a flow run mid-delivery, the
Prefect server goes away during a run, the ledger's database drops the worker's connections.

Each ends on the invariants (fault_support.py); the first measures how long a crashed run's
requests wait before the next delivery.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pipeline_support as ps
import pytest
import test_pipeline
from fault_support import (
    ROOT,
    TOTALS,
    assert_invariants,
    drop_mix,
    injected,
    worker_env,
)
from sqlalchemy import text

from records.models import DeliveryRow, RequestStatus

pytestmark = pytest.mark.slow

# The pipeline suite's Prefect test server and set-up (ledger on SQLite or PostgreSQL, a seeded
# register, file drops and a real HTTPS receiver on loopback), shared rather than copied.
prefect = test_pipeline.prefect
certificate = test_pipeline.certificate
backend = test_pipeline.backend
pipeline = test_pipeline.pipeline


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in a session of its own (so its children die with it), stopped after."""
    with log.open("ab") as out:
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def wait_until(what: object, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(what())  # type: ignore[operator]


def settled(pipeline: ps.Pipeline, count: int) -> bool:
    """Every one of ``count`` submissions recorded, and none waiting for the dispatcher."""
    states = [s.state for s in ps.rows(pipeline.ledger, RequestStatus)]
    return len(states) == count and not {"received", "invalid", "decided"} & set(states)


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def prefect_server(folder: Path, port: int | None = None) -> Iterator[
        tuple[str, dict[str, str], list[str], subprocess.Popen[bytes]]]:
    """A real ``prefect server`` (scheduler and automations on, unlike the test harness) on a
    free port with a database of its own: (API URL, its environment, its command, its
    process — the leader of a process group of its own)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(folder), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]
    with process(argv, env, folder.parent / f"{folder.name}.log") as server:
        assert wait_until(lambda: healthy(port), 90)
        yield env["PREFECT_API_URL"], env, argv, server


def test_a_flow_run_killed_mid_delivery_is_taken_over_within_seconds(
        pipeline: ps.Pipeline, tmp_path: Path) -> None:
    """``disclosure serve`` runs the pipeline; the dispatcher's flow-run process is SIGKILLed
    after its second delivery. The runner reports the run Crashed, the crashed-run trigger starts
    the next dispatcher run, which takes the dead process's claims over at once."""
    submitted = drop_mix(pipeline, "SERVE")
    with prefect_server(tmp_path / "prefect") as (api_url, _, _, _):
        env = worker_env(DISCLOSURE_FAULTS="delivered:killonce@2", PREFECT_API_URL=api_url,
                         PREFECT_HOME=str(tmp_path / "prefect"),
                         PREFECT_RUNNER_POLL_FREQUENCY="2",
                         PREFECT_LOGGING_EXTRA_LOGGERS="disclosure")
        killed_at, waited = _serve_until_settled(pipeline, env, tmp_path, submitted.count)
    TOTALS.recovery_seconds.append(waited)
    assert waited < 30  # within the lease; at once in practice (the figure is printed)
    outcome = assert_invariants(pipeline, submitted=submitted.count)
    assert outcome.delivered == 5
    assert killed_at


def _serve_until_settled(pipeline: ps.Pipeline, env: dict[str, str], tmp_path: Path,
                         count: int) -> tuple[datetime, float]:
    """Serve until every request settled; (when the dispatcher was killed, seconds from then
    to the next delivery)."""
    with process([sys.executable, "-m", "cli.main", "serve"], env, tmp_path / "serve.log"):
        marker = pipeline.data_dir / ".fault-delivered"
        assert wait_until(marker.exists, 120), (tmp_path / "serve.log").read_text()[-3000:]
        killed_at = datetime.fromtimestamp(marker.stat().st_mtime, UTC)
        injected("flow-run process SIGKILL under disclosure serve")
        assert wait_until(lambda: settled(pipeline, count), 120), (
            tmp_path / "serve.log").read_text()[-3000:]
    after = sorted(d.delivered_at for d in ps.rows(pipeline.ledger, DeliveryRow)
                   if d.delivered_at > killed_at)
    assert after, "nothing was delivered after the kill"
    return killed_at, (after[0] - killed_at).total_seconds()


def test_the_prefect_server_killed_and_restarted_during_a_run_loses_nothing(
        pipeline: ps.Pipeline, tmp_path: Path) -> None:
    """A worker talks to a Prefect server that is killed in the middle of its run and comes back
    on the same port and database. Whatever the worker makes of it, the ledger decides."""
    submitted = drop_mix(pipeline, "PREFECT")
    pipeline.collect()
    home = tmp_path / "prefect-home"
    with prefect_server(home) as (api_url, server_env, argv, server):
        port = int(api_url.rsplit(":", 1)[1].split("/")[0])
        time.sleep(2)
        env = worker_env(DISCLOSURE_FAULTS="fetched:sleep6", PREFECT_API_URL=api_url,
                         PREFECT_HOME=str(home))
        with process([sys.executable, "-c",
                      "from flows.pipeline.dispatcher import process_requests\n"
                                            "process_requests()"], env,
                     tmp_path / "worker.log") as worker:
            time.sleep(3)
            os.killpg(server.pid, signal.SIGKILL)  # the server and every process it started
            assert wait_until(lambda: not healthy(port), 20)
            injected("Prefect server SIGKILL during a run")
            with process(argv, server_env, tmp_path / "server-again.log"):
                assert wait_until(lambda: healthy(port), 90)
                worker.wait(180)
    # the next sweep, on the module's Prefect server, carries on from the ledger
    assert pipeline.dispatch().state.is_completed()
    assert assert_invariants(pipeline, submitted=submitted.count).delivered == 5


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_the_ledger_dropping_the_worker_s_connections_loses_nothing(
        pipeline: ps.Pipeline, backend: str) -> None:
    """PostgreSQL terminates every connection of the worker while it fetches; its next steps
    find their connections gone, reconnect (pre-ping) or retry, and the record stays whole."""
    submitted = drop_mix(pipeline, "PGKILL")
    pipeline.collect()
    env = worker_env(DISCLOSURE_FAULTS="fetched:sleep4")
    argv = [sys.executable, "-c", "from flows.pipeline.dispatcher import process_requests\n"
                                  "print(process_requests())"]
    with subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as worker:
        time.sleep(2.5)  # the worker sleeps at "fetched"
        with pipeline.ledger.connect() as admin:
            killed = admin.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> pg_backend_pid() AND "
                "backend_type = 'client backend' AND application_name NOT LIKE 'psql%'"
            )).scalar_one()
        injected("ledger connections terminated (PostgreSQL)", max(int(killed), 1))
        worker.wait(120)
    assert pipeline.dispatch().state.is_completed()
    assert assert_invariants(pipeline, submitted=submitted.count).delivered == 5


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a file system of its own of ``size`` (tmpfs), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        reason = f"cannot mount a small file system here: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)],
                   check=True)


def test_a_full_disk_under_the_outbox_fails_the_deliveries_and_a_later_run_delivers_once(
        pipeline: ps.Pipeline) -> None:
    """The outbox is a file system of 8 KB: two documents fit, then writing fails as on a full
    disk (ENOSPC). Those deliveries are recorded as failed (transient), no partial or
    temporary file stays, and once there is room the next run delivers each one once."""
    submitted = drop_mix(pipeline, "FULL")
    pipeline.collect()
    with small_disk(pipeline.outbox, "8k"):
        first = pipeline.dispatch()
        assert first.state.is_completed(), first.state
        assert first.totals["failed"] >= 1
        injected("full disk under the outbox", first.totals["failed"])
        assert not list(pipeline.outbox.rglob("*.tmp"))
        remount(pipeline.outbox, "size=4m")
        assert pipeline.dispatch().state.is_completed()
        outcome = assert_invariants(pipeline, submitted=submitted.count)
    assert outcome.delivered == 5


def test_a_read_only_drop_folder_takes_each_request_in_once(pipeline: ps.Pipeline) -> None:
    """The partner's drop folder turns read-only after the files arrived: the requests are
    recorded but the file cannot be filed away; when it is writable again the next collection
    finds it, records nothing twice (each line's intake key) and files it away."""
    folder = pipeline.dropoff / "belastingdienst"
    with small_disk(folder, "1m"):
        submitted = drop_mix(pipeline, "RO")
        remount(folder, "ro")
        stuck = pipeline.collect()
        injected("read-only drop folder")
        remount(folder, "rw")
        again = pipeline.collect()
        assert again.state.is_completed(), again.state
        assert not list(folder.glob("*.jsonl"))  # filed away now
        del stuck
        assert pipeline.dispatch().state.is_completed()
        outcome = assert_invariants(pipeline, submitted=submitted.count)
    assert outcome.delivered == 5

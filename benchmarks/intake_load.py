"""Load benchmark of the intake API: accepted ``POST /v1/requests`` per second, and latency.

    .venv/bin/python benchmarks/intake_load.py [--clients 50] [--requests 6000] [--warmup 1000]
        [--rate R] [--partners 10] [--workers 1] [--database-url URL] [--tool python|wrk]

Sets up a fresh ledger (a SQLite file in a temporary folder, or ``--database-url``), a partner
file with ``--partners`` benchmark partners and one key each, and starts the API in a process of
its own as ``disclosure api`` does (uvicorn; ``--workers`` processes; the Prefect nudge pointed
at an address where nothing listens, as when Prefect is down). The load comes from this
process, a separate one: ``--clients`` keep-alive connections, each a partner's system sending
unique valid requests (one subject, awr-55).

* Without ``--rate`` the clients send back to back (closed loop): the API's capacity. The
  latency is then set by the clients' own pace (Little's law: mean latency = clients /
  throughput), not only by the API.
* With ``--rate R`` the clients together send R requests per second on a fixed schedule (open
  loop), and each latency counts from the moment its request was due, so a stalled API shows in
  the figures instead of slowing the load down ("coordinated omission").
* ``--tool wrk`` drives the load with Debian's ``wrk`` instead (closed loop, ``--seconds``).

Prints accepted (202) requests per second, the latency percentiles of the measured requests
(the warm-up is left out), the status codes, the CPU the API process and the load tool used,
and checks that the ledger holds exactly one row per request sent. Target (the intake issue):
at least 500 accepted requests per second with p99 under 100 ms at 50 concurrent clients, on a
SQLite ledger, on the 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"legal_basis": "awr-55", "purpose": "belastingheffing", "case_reference": "FIN/2026/77",
        "subjects": [{"bsn": "111222333"}], "categories": ["personalia", "opleidingsgegevens"]}
#: Where the API's nudges go: nothing listens there (Prefect is "down").
NO_PREFECT = "http://127.0.0.1:9/api"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- setting up -----------------------------------------------------------------------------------

def setup(data_dir: Path, partners: int) -> list[str]:
    """A partner file with benchmark partners and a migrated ledger; one key per partner."""
    from sqlmodel import Session  # noqa: PLC0415 - after the settings are in the environment

    from records.api_keys import issue_key  # noqa: PLC0415
    from records.db import open_ledger  # noqa: PLC0415
    from records.settings import load_settings  # noqa: PLC0415

    lines = []
    for i in range(partners):
        lines += [f"- id: bench-{i}", f"  name: Benchmark partner {i}",
                  "  body: belastingdienst", f'  oin: "00000099{900000000000 + i}"']
    (data_dir / "partners.yaml").write_text("\n".join(lines) + "\n", "utf-8")
    engine = open_ledger(load_settings())
    with Session(engine) as session, session.begin():
        keys = [issue_key(session=session, partner_id=f"bench-{i}",
                          issued_at=datetime.now(UTC), issued_by="benchmark").key
                for i in range(partners)]
    engine.dispose()
    return keys


def ledger_rows(run: str) -> int:
    from sqlalchemy import text  # noqa: PLC0415

    from records.db import open_ledger  # noqa: PLC0415
    from records.settings import load_settings  # noqa: PLC0415

    engine = open_ledger(load_settings())
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM requests WHERE reference LIKE "
                                        ":prefix"), {"prefix": f"{run}-%"}).scalar_one()
    engine.dispose()
    return int(count)


def start_api(port: int, *, workers: int, rate: float, burst: int) -> subprocess.Popen[bytes]:
    """``disclosure api`` in its own process (and session, so it is stopped as a whole)."""
    command = [sys.executable, "-c",
               "import sys, argparse; from cli import api; from flows.logs import "
               "configure_logging; configure_logging(level='WARNING'); "
               "p = argparse.ArgumentParser(); api.register(p.add_subparsers()); "
               "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))",
               "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
               "--rate", str(rate), "--burst", str(burst), "--prefect-api-url", NO_PREFECT]
    process = subprocess.Popen(command, env=dict(os.environ), cwd=ROOT,  # noqa: S603 - ours
                               start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            stop(process)
            raise SystemExit("the API did not start")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# -- the Python load tool -------------------------------------------------------------------------

@dataclass
class Load:
    """What the clients share: the request numbers, the schedule and what they measured."""

    port: int
    run: str
    total: int
    warmup: int
    interval: float | None  # seconds between one client's requests (open loop), or None
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_measured: float | None = None


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bool]:
    writer.write(request)
    status_line = await reader.readline()
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    await reader.readexactly(length)
    return int(status_line.split()[1]), close


async def _client(load: Load, key: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    due = time.perf_counter() + (random.random() * load.interval if load.interval else 0)
    try:
        while (n := next(load.numbers)) < load.total + load.warmup:
            if load.interval is not None:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            body = json.dumps({"reference": f"{load.run}-{n}", **BODY}).encode()
            head = (f"POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1:{load.port}\r\n"
                    f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            sent = time.perf_counter()
            start = due if load.interval is not None else sent
            status, close = await _exchange(reader, writer, head + body)
            if n >= load.warmup:
                if load.first_measured is None:
                    load.first_measured = start
                load.latencies.append(time.perf_counter() - start)
                load.statuses[status] += 1
            if load.interval is not None:
                due += load.interval
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    finally:
        writer.close()


async def python_load(load: Load, keys: list[str], clients: int) -> float:
    """Run the clients; the seconds from the first measured request to the last answer."""
    await asyncio.gather(*(_client(load, keys[i % len(keys)]) for i in range(clients)))
    return time.perf_counter() - (load.first_measured or time.perf_counter())


# -- wrk ------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function init(args)
  keys = {}
  for k in string.gmatch(args[1], "[^,]+") do table.insert(keys, k) end
  run = args[2]
  n = 0
  statuses = {}
end
function request()
  n = n + 1
  local key = keys[(id + n) % #keys + 1]
  local body = '{"reference": "' .. run .. '-' .. id .. '-' .. n .. '", '
    .. '"legal_basis": "awr-55", "purpose": "belastingheffing", "case_reference": "FIN/2026/77", '
    .. '"subjects": [{"bsn": "111222333"}], "categories": ["personalia", "opleidingsgegevens"]}'
  return wrk.format("POST", "/v1/requests",
                    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"},
                    body)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local seen = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do seen[code] = (seen[code] or 0) + count end
  end
  io.write("WRK_JSON ", string.format(
    '{"requests": %d, "seconds": %.3f, "p50": %.3f, "p95": %.3f, "p99": %.3f, "statuses": {',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
  local first = true
  for code, count in pairs(seen) do
    if not first then io.write(", ") end
    io.write(string.format('"%d": %d', code, count))
    first = false
  end
  io.write("}}\\n")
end
"""


def wrk_load(*, port: int, keys: list[str], clients: int, seconds: int, run: str,
             folder: Path) -> dict[str, object]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    script = folder / "load.lua"
    script.write_text(_WRK_SCRIPT, "utf-8")
    out = subprocess.run(  # noqa: S603 - our own arguments
        [wrk, "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(script), f"http://127.0.0.1:{port}", "--", ",".join(keys), run],
        capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    result: dict[str, object] = json.loads(line.removeprefix("WRK_JSON "))
    return result


# -- main -----------------------------------------------------------------------------------------

def _own_cpu() -> float:
    """CPU seconds of this process and of its finished children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _arguments() -> argparse.Namespace:
    from legal_bases import limits  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=6000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=None,
                        help="total requests per second on a schedule (open loop)")
    parser.add_argument("--partners", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="API processes")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--tool", choices=["python", "wrk"], default="python")
    parser.add_argument("--seconds", type=int, default=20, help="wrk's duration")
    parser.add_argument("--rate-limit", type=float, default=limits.API_RATE_PER_SECOND,
                        help="per-partner rate limit of the API")
    parser.add_argument("--burst", type=int, default=limits.API_RATE_BURST)
    return parser.parse_args()


def _report(*, seconds: float, latencies: list[float], statuses: Counter[int]) -> None:
    ms = [x * 1000 for x in latencies]
    print(f"answered {len(ms)} measured requests in {seconds:.2f} s: "
          f"{statuses.get(202, 0) / seconds:.0f} accepted/s; latency p50 "
          f"{_percentile(ms, 50):.1f} ms, p95 {_percentile(ms, 95):.1f} ms, p99 "
          f"{_percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f}"
          f" ms; statuses {dict(sorted(statuses.items()))}")


def main() -> int:
    args = _arguments()
    folder = Path(tempfile.mkdtemp(prefix="intake-load-"))
    os.environ |= {"DISCLOSURE_DATA_DIR": str(folder),
                   "DISCLOSURE_PARTNERS_FILE": str(folder / "partners.yaml")}
    if args.database_url:
        os.environ["DISCLOSURE_DATABASE_URL"] = args.database_url
    keys = setup(folder, args.partners)
    port = free_port()
    api = start_api(port, workers=args.workers, rate=args.rate_limit, burst=args.burst)
    run = f"LOAD{int(time.time())}"
    try:
        mode = f"open loop at {args.rate:g}/s" if args.rate else "closed loop"
        print(f"API on port {port}, {args.workers} worker(s); ledger "
              f"{args.database_url or 'SQLite file'}; {args.clients} clients of "
              f"{args.partners} partners ({mode}); load tool {args.tool}; load average "
              f"{os.getloadavg()[0]:.2f}")
        cpu_before, own_before = cpu_seconds(api.pid), _own_cpu()
        if args.tool == "wrk":
            result = wrk_load(port=port, keys=keys, clients=args.clients,
                              seconds=args.seconds, run=run, folder=folder)
            statuses = {int(k): v for k, v in dict(result["statuses"]).items()}  # type: ignore[call-overload]
            seconds = float(str(result["seconds"]))
            print(f"wrk: {result['requests']} requests in {seconds:.1f} s: "
                  f"{statuses.get(202, 0) / seconds:.0f} accepted/s; latency p50 "
                  f"{result['p50']:.1f} ms, p95 {result['p95']:.1f} ms, p99 {result['p99']:.1f}"
                  f" ms; statuses {dict(sorted(statuses.items()))}")
            sent = sum(statuses.values())
        else:
            interval = args.clients / args.rate if args.rate else None
            load = Load(port=port, run=run, total=args.requests, warmup=args.warmup,
                        interval=interval)
            seconds = asyncio.run(python_load(load, keys, args.clients))
            _report(seconds=seconds, latencies=load.latencies, statuses=load.statuses)
            sent = args.requests + args.warmup
        children = sum(cpu_seconds(int(p)) for p in subprocess.run(  # noqa: S603
            ["/usr/bin/pgrep", "-g", str(api.pid)], capture_output=True, text=True,
            check=False).stdout.split() if int(p) != api.pid)
        print(f"CPU during the load: API {cpu_seconds(api.pid) - cpu_before + children:.1f} s "
              f"(workers' total since start: {children:.1f} s), load tool "
              f"{_own_cpu() - own_before:.1f} s; load average now "
              f"{os.getloadavg()[0]:.2f}")
        time.sleep(0.5)
        rows = ledger_rows(run)
        if args.tool == "wrk":  # wrk stops with up to one request per connection unanswered
            fits = sent <= rows <= sent + args.clients
            print(f"ledger: {rows} rows for {sent} answered requests and at most "
                  f"{args.clients} in flight when wrk stopped ({'fits' if fits else 'MISMATCH'})")
        else:
            print(f"ledger: {rows} rows for {sent} requests sent "
                  f"({'exactly one each' if rows == sent else 'MISMATCH'})")
    finally:
        stop(api)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

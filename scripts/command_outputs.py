#!/usr/bin/env python3
"""Capture what every ``disclosure`` command prints, to prove a refactoring changes no behaviour.

``capture`` runs the command line of one checkout on a fresh temporary data folder — the top-level
and every command's ``--help`` (found by walking ``disclosure --help``), ``grounds``, ``decide``
with the example requests, ``up --once``, and then every command the README shows against the
ledger that ``up`` filled (status, audit, replay, timeline, inzage, report, logboek, reviewers,
partners, overdue, register, db) — and writes one text file: per command the command line, exit
status, standard output and standard error, then every file the commands wrote, the ledger's
schema and rows, all normalised so that two captures of the same code are byte for byte equal
(UUIDs, hashes, keys, secrets, timestamps, today's date, durations, ports, temporary paths).
``compare`` prints a unified diff of two captures and exits 1 when they differ::

    python scripts/command_outputs.py capture --bin /tmp/baseline-wt/.venv/bin \\
        --repo /tmp/baseline-wt --out /tmp/baseline-outputs.txt
    python scripts/command_outputs.py capture --bin .venv/bin --repo . --out /tmp/after.txt
    python scripts/command_outputs.py compare /tmp/baseline-outputs.txt /tmp/after.txt

``up`` binds the intake API to 127.0.0.1:8000 (it has no option for another port), so a capture
runs in a network namespace of its own (``unshare -n``, or ``-rn`` when not root) where every
port is free; ``--no-netns`` runs it in the host's network instead (then port 8000 must be free).
Lines starting with ``#!`` (when and where a capture was made) are not compared.

Normalised: paths (``<TMP>``, ``<REPO>``, ``<BIN>``), request ids (``<REQ:reference>``), other
UUIDs, hex digests and ids, pseudonyms, keys and secrets (numbered per record, ``<UUID-3>``, so
that equal values stay visibly equal), timestamps, durations, the Prefect port; today's date
becomes ``<TODAY>`` and dates close to it (deadlines) ``<TODAY+N>``, so that captures of different
days compare too, but the strictest comparison is of two captures made on the same day. Output
of ``--help`` and ``grounds`` depends on the code alone and is kept as it is (paths aside), and
so is every hex string it prints (the table hash) wherever it appears. Orders that follow random
ids are sorted: the JSON Lines of the Logboek, a delivery's ``records``, the ledger's rows (its
audit events without their sequence numbers and chain hashes, and the kinds in sequence order).

``up --once`` is taken as it usually runs: one ``collect-dropoffs`` run takes the examples in
and one ``process-requests`` run decides and delivers them. When the watch or the dispatcher's
safety-net schedule starts a second run that shares the work (timing, not code), ``up --once``
is run again on a fresh data folder (noted on standard error and in a ``#!`` line). Standard
library only.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

#: Set in the environment of the re-executed capture inside its own network namespace.
NETNS_MARKER = "COMMAND_OUTPUTS_IN_NETNS"
#: Record headers and content prefixes of the capture file.
HEAD = "==== "
LINE = "| "
META = "#!"
#: Seconds one command may take (``up --once`` gets more).
COMMAND_TIMEOUT_S = 240.0
UP_TIMEOUT_S = 600.0
#: JSON lists whose order is no behaviour: a delivery's records come in the order of their
#: (keyed, so random) pseudonyms.
UNORDERED_JSON_KEYS = ("records",)
#: Lengths of the hex ids and digests the commands print (all-digit ones are numbers otherwise).
HEX_ID_LENGTHS = (8, 12, 16, 32, 40, 64)
#: How many times ``up --once`` is tried for a plain run (see ``unusual_run``).
UP_ATTEMPTS = 5
#: Days around today within which a date is written relative to today.
DATE_WINDOW_DAYS = (-40, 400)
#: The login name the commands see (recorded as the actor of operator commands and inzage).
LOGIN = "auditor"
#: Environment variables of the caller that must not reach the commands under test.
DROPPED_ENV_PREFIXES = ("DISCLOSURE_", "PREFECT_", "PYTHON", "VIRTUAL_ENV", "CI")
#: Files under the data folder whose content is recorded (the rest: name and mode only).
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".html", ".csv", ".svg", ".yaml", ".yml", ".txt")
#: Folders under the temporary folder whose content is left out (Prefect's own state), and
#: whose files are recorded by name and mode only (the logs).
OPAQUE_DIRS = ("var/prefect", "prefect-home")
NAME_ONLY_DIRS = ("var/logs",)
#: SQLite's journal files: there or not depending on how the last connection ended.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


# -- running commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command: ``disclosure`` followed by ``argv``."""

    argv: tuple[str, ...]
    stdin: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    #: False for output that depends on nothing but the code (help, grounds): recorded with
    #: paths normalised only, and its hex strings kept literally everywhere else.
    volatile: bool = True
    #: The output's lines are in no particular order (JSON Lines): recorded sorted.
    sort_lines: bool = False
    timeout: float = COMMAND_TIMEOUT_S


@dataclass(frozen=True)
class Result:
    step: Step
    code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Runner:
    """Runs ``disclosure`` from ``bin_dir`` in ``repo`` with the capture's environment."""

    bin_dir: Path
    repo: Path
    env: dict[str, str]
    results: list[Result] = field(default_factory=list)

    def run(self, step: Step) -> Result:
        env = dict(self.env)
        env.update(step.env)
        started = time.monotonic()
        # A session of its own, so that a command that times out is stopped with everything it
        # started (``up`` starts a Prefect server and a flow server).
        with subprocess.Popen(  # noqa: S603 - the command under test, no shell
                [str(self.bin_dir / "disclosure"), *step.argv], cwd=self.repo, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, errors="backslashreplace", start_new_session=True) as proc:
            try:
                out, err = proc.communicate(step.stdin or "", timeout=step.timeout)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                out, err = _stop(proc)
                code = -999
                err += f"\n[command_outputs: timed out after {step.timeout:.0f} s]"
        return Result(step, code, out, err, time.monotonic() - started)

    def record(self, result: Result) -> Result:
        self.results.append(result)
        return result

    def one(self, step: Step) -> Result:
        return self.record(self.run(step))

    def many(self, steps: Sequence[Step], workers: int) -> list[Result]:
        """Run independent, read-only ``steps`` in parallel; recorded in the given order."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(self.run, steps))
        for result in done:
            self.record(result)
        return done


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a command's whole session: TERM (``up`` stops its servers on it), then KILL."""
    for sig, grace in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return "", ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (``ip link set lo up``, without ``ip``)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), siocgifflags, request))[1]
        fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def unshare_prefix() -> list[str] | None:
    """The ``unshare`` command line that gives a process a network namespace, if it works."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)  # noqa: S603
    return prefix if probe.returncode == 0 else None


# -- help ------------------------------------------------------------------------------------

_SUBCOMMAND = re.compile(r"^ {4}([a-z][a-z0-9_-]*)(?: {2,}|$)")


def subcommands(help_text: str) -> list[str]:
    """The sub-commands an argparse help lists under its ``COMMAND``/``ACTION`` argument."""
    names: list[str] = []
    block = False
    for line in help_text.splitlines():
        if re.match(r"^ {2}\{?[A-Z_]+\}?\s*$", line) or re.match(r"^ {2}\{[a-z,_-]+\}", line):
            block = True
            continue
        if block:
            match = _SUBCOMMAND.match(line)
            if match:
                names.append(match.group(1))
            elif line.strip() and not line.startswith(" " * 5):
                block = False
    return names


def capture_help(runner: Runner, workers: int) -> list[tuple[str, ...]]:
    """Record ``--help`` of the top level and of every command and sub-command; return the
    command paths found (without the top level)."""
    found: list[tuple[str, ...]] = []
    level: list[tuple[str, ...]] = [()]
    while level:
        results = runner.many([Step((*path, "--help"), volatile=False) for path in level],
                              workers)
        following: list[tuple[str, ...]] = []
        for path, result in zip(level, results, strict=True):
            for name in subcommands(result.stdout):
                following.append((*path, name))
        found += following
        level = following
    return found


# -- normalisation ---------------------------------------------------------------------------

_UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])")
_HEX = re.compile(r"(?<![0-9A-Za-z#])[0-9a-f]{8,}(?![0-9A-Za-z])")
_GROUND_VERSION = re.compile(r"[a-z0-9][a-z0-9-]*@\d{4}-\d{2}-\d{2}#[0-9a-f]{6,64}")
_DATETIME = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                       r"(?:Z|[+-]\d{2}:?\d{2}|\+00)?(?![\d:])")
_COMPACT_DATETIME = re.compile(r"(?<!\d)\d{8}T\d{6}(?:\d+)?Z?(?!\d)")
_TIME = re.compile(r"(?<![\d:.])\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?![\d:])")
_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_CHAIN_KEY_ID = re.compile(r"\bk\d{8}-[0-9a-f]{6}\b")
_API_SECRET = re.compile(r"(dk_[0-9a-f]{8,}_)[A-Za-z0-9_-]{16,}")
_FERNET = re.compile(r"gAAAAA[A-Za-z0-9_-]{40,}={0,2}")
_TOTP_SECRET = re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{32}(?![A-Za-z0-9])")
_EPOCH = re.compile(r"(?<![\w.])1\d{9}(?:\d{3}|\d{6}|\d{9})?(?![\w.])")
_SECONDS_FIELD = re.compile(r"""(["']seconds["']:\s*)\d+(?:\.\d+)?""")
_DURATION = re.compile(r"(?<![\w.])\d+(?:\.\d+)? ?(?:s|ms|µs|seconds?)(?![\w])")
_RATE = re.compile(r"(?<![\w.])\d+(?:\.\d+)? (requests|events|persons)/s\b")


@dataclass
class Normaliser:
    """Rewrites the parts of an output that differ between two runs of the same code."""

    paths: list[tuple[str, str]]
    today: date
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    literal: set[str] = field(default_factory=set)

    def learn_literals(self, text: str) -> None:
        """Hex strings of an output that depends only on the code (a table hash) stay as
        they are wherever they appear."""
        self.literal.update(_HEX.findall(text))

    def paths_only(self, text: str) -> str:
        for old, new in self.paths:
            text = text.replace(old, new)
        return text

    def __call__(self, text: str, numbers: dict[str, str] | None = None) -> str:
        """``numbers`` (shared by the parts of one record) names each volatile value by the
        order of its first appearance, so that equal values stay visibly equal."""
        numbers = {} if numbers is None else numbers
        text = self.paths_only(text)
        for request_id, label in self.labels.items():
            text = text.replace(request_id, f"<{label}>")
        kept: list[str] = []

        def keep(match: re.Match[str]) -> str:
            kept.append(match.group(0))
            return f"\x00{len(kept) - 1}\x00"

        text = _GROUND_VERSION.sub(keep, text)
        text = _API_SECRET.sub(lambda m: m.group(1) + "<SECRET>", text)
        text = _FERNET.sub(lambda m: _number(numbers, "SEALED", m.group(0)), text)
        text = _TOTP_SECRET.sub(lambda m: _number(numbers, "TOTP", m.group(0)), text)
        text = _CHAIN_KEY_ID.sub(lambda m: _number(numbers, "CHAINKEY", m.group(0)), text)
        text = _UUID.sub(lambda m: _number(numbers, "UUID", m.group(0).lower()), text)
        text = _DATETIME.sub("<TS>", text)
        text = _COMPACT_DATETIME.sub("<TS>", text)
        text = _TIME.sub("<TIME>", text)
        text = _DATE.sub(self._date, text)
        text = _EPOCH.sub(self._epoch, text)
        text = _HEX.sub(lambda m: self._hex(m.group(0), numbers), text)
        text = _SECONDS_FIELD.sub(r"\1<DURATION>", text)
        text = _RATE.sub(r"<N> \1/s", text)
        text = _DURATION.sub("<DURATION>", text)
        text = re.sub(rf"(127\.0\.0\.1:|localhost:|--port ){self.port}(?!\d)",
                      r"\1<PREFECT_PORT>", text)
        text = re.sub(r"\bpid[ =:]?\d+", "pid <PID>", text)
        return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)

    def _hex(self, token: str, numbers: dict[str, str]) -> str:
        """A hash, digest, key or id in hex: numbered, unless it depends on the code only (in
        ``literal``) or is a number rather than hex (digits only: a BSN, an OIN, a sequence
        number; ids that happen to be all digits are recognised by their length)."""
        if token in self.literal:
            return token
        if token.isdigit() and (len(token) not in HEX_ID_LENGTHS or token.startswith("0000")):
            return token
        return _number(numbers, f"HEX{len(token)}", token)

    def _epoch(self, match: re.Match[str]) -> str:
        """Seconds, milliseconds, microseconds or nanoseconds since 1970, if within a year of
        now: a timestamp."""
        token = match.group(0)
        seconds = int(token) / 10 ** (len(token) - 10)
        near = abs(seconds - time.time()) < 366 * 86400
        return "<EPOCH>" if near else token

    def _date(self, match: re.Match[str]) -> str:
        try:
            day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            return match.group(0)
        offset = (day - self.today).days
        if offset == 0:
            return "<TODAY>"
        low, high = DATE_WINDOW_DAYS
        # Period boundaries (first and last days of months) come from the arguments, not
        # from the calendar: they stay literal.
        if not low <= offset <= high or day.day == 1 or (day + timedelta(days=1)).day == 1:
            return match.group(0)
        return f"<TODAY{offset:+d}>"


def _number(numbers: dict[str, str], kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    if key not in numbers:
        numbers[key] = f"<{kind}-{sum(k.startswith(kind + ':') for k in numbers) + 1}>"
    return numbers[key]


# -- rendering -------------------------------------------------------------------------------


def _block(name: str, text: str) -> list[str]:
    if not text:
        return [f"---- {name}: (empty)"]
    lines = [f"---- {name}"]
    lines += [(LINE + line).rstrip() for line in text.splitlines()]
    if not text.endswith("\n"):
        lines.append("\\ no newline at end")
    return lines


def render_result(index: int, result: Result, norm: Normaliser) -> list[str]:
    numbers: dict[str, str] = {}
    step = result.step

    def clean(text: str) -> str:
        return norm(text, numbers) if step.volatile else norm.paths_only(text)

    def clean_out(text: str) -> str:
        return sorted_lines(norm, text, numbers) if step.sort_lines else clean(text)

    lines = [f"{HEAD}[{index:03d}] {clean('disclosure ' + shlex.join(step.argv))}"]
    for key, value in sorted(step.env.items()):
        lines.append(f"env: {key}={clean(value)}")
    if step.stdin is not None:
        lines.append(f"stdin: {clean(step.stdin)!r}")
    lines.append(f"exit: {result.code}")
    lines.append(f"{META} {result.seconds:.1f} s")
    lines += _block("stdout", clean_out(result.stdout))
    lines += _block("stderr", clean(result.stderr))
    return lines


def sorted_lines(norm: Normaliser, text: str, numbers: dict[str, str]) -> str:
    """``text`` normalised with its lines sorted by their normalised form (their order is no
    behaviour: rows ordered by random ids); volatile values are numbered in that order."""
    lines = sorted(text.splitlines(), key=lambda line: (norm(line), line))
    joined = "\n".join(norm(line, numbers) for line in lines)
    return joined + "\n" if text.endswith("\n") else joined


def render_files(root: Path, norm: Normaliser) -> list[str]:
    """Every file under ``root`` (the temporary folder): name and mode, and the content of
    text files the commands wrote (normalised); sorted by normalised name and content."""
    entries: list[tuple[str, list[str]]] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if any(rel.startswith(d + "/") for d in OPAQUE_DIRS) or rel.endswith(SQLITE_SIDE_FILES):
            continue
        numbers: dict[str, str] = {}
        kind = "dir" if path.is_dir() else "file"
        head = f"{HEAD}[{kind}] {norm(rel, numbers)}  (mode {path.stat().st_mode & 0o777:04o})"
        body: list[str] = []
        name_only = any(rel.startswith(d + "/") for d in NAME_ONLY_DIRS)
        if kind == "file" and not name_only and rel.endswith(TEXT_SUFFIXES):
            text = path.read_text("utf-8", "backslashreplace")
            if rel.endswith(".json"):
                text = _sorted_json(text, norm)
            text = sorted_lines(norm, text, numbers) if rel.endswith(".jsonl") else norm(
                text, numbers)
            body = [(LINE + line).rstrip() for line in text.splitlines()]
        entries.append((head, body))
    lines: list[str] = []
    for head, body in sorted(entries):
        lines += [head, *body]
    return lines


def _sorted_json(text: str, norm: Normaliser) -> str:
    """A JSON document with its keys sorted (key order is no behaviour of ours to keep), and
    the lists named in ``UNORDERED_JSON_KEYS`` sorted by their normalised elements."""
    try:
        document = json.loads(text)
    except ValueError:
        return text

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {key: _unordered(key, walk(value)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    def _unordered(key: str, value: object) -> object:
        if key not in UNORDERED_JSON_KEYS or not isinstance(value, list):
            return value
        return sorted(value, key=lambda item: norm(json.dumps(item, sort_keys=True)))

    return json.dumps(walk(document), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_database(path: Path, norm: Normaliser, *, rows: bool) -> list[str]:
    """The schema of a SQLite database and, with ``rows``, every row of every table (sorted),
    else per table the row count and a digest of its sorted rows."""
    if not path.is_file():
        return [f"{HEAD}[database] {norm.paths_only(str(path))}: (missing)"]
    lines = [f"{HEAD}[database] {norm(str(path))}"]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master "
                              "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
        lines.append("---- schema")
        for kind, name, sql in schema:
            lines.append(f"{LINE}{kind} {name}")
            lines += [(LINE + "    " + line).rstrip() for line in (sql or "").splitlines()]
        tables = [name for kind, name, _ in schema if kind == "table"]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - a table name of ours
            columns = [d[0] for d in cursor.description]
            found = [[_cell(c) for c in row] for row in cursor]
            head = f"---- table {table} ({len(found)} rows): {', '.join(columns)}"
            if "seq" in columns:
                # The order of events written in one transaction follows their random ids:
                # recorded as the kinds in sequence order, the rows without their numbers.
                at = columns.index("seq")
                found.sort(key=lambda row: int(str(row[at])))
                if "kind" in columns:
                    kind = columns.index("kind")
                    lines.append(f"---- table {table}: kinds in sequence order: "
                                 + run_lengths([str(row[kind]) for row in found]))
                chained = [columns.index(c) for c in ("prev_hash", "hash") if c in columns]
                for row in found:
                    row[at] = "<SEQ>"
                    for index in chained:
                        row[index] = "<CHAINED>"
            raw = [json.dumps(row, ensure_ascii=False) for row in found]
            numbers: dict[str, str] = {}
            cleaned = sorted_lines(norm, "\n".join(raw), numbers).splitlines()
            if rows:
                lines.append(head)
                lines += [(LINE + row).rstrip() for row in cleaned]
            else:
                digest = hashlib.sha256("\n".join(cleaned).encode()).hexdigest()
                lines.append(f"{head}; rows digest {digest}")
    return lines


def run_lengths(items: Sequence[str]) -> str:
    runs: list[list[object]] = []
    for item in items:
        if runs and runs[-1][0] == item:
            runs[-1][1] = int(str(runs[-1][1])) + 1
        else:
            runs.append([item, 1])
    return ", ".join(f"{item}×{count}" if count != 1 else str(item) for item, count in runs)


def _cell(value: object) -> object:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and value[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


# -- the commands ----------------------------------------------------------------------------


@dataclass
class Capture:
    runner: Runner
    tmp: Path
    today: date
    workers: int
    norm: Normaliser
    #: What happened that a capture file does not compare (``#!`` lines).
    notes: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.tmp / "var"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def static(self) -> None:
        """What depends on the code and the shipped files only."""
        self.runner.many([
            Step((), volatile=False),
            Step(("no-such-command",), volatile=False),
            Step(("grounds", "list"), volatile=False),
            Step(("grounds", "list", "--on", "2026-11-28"), volatile=False),
            Step(("grounds", "show", "participatiewet-64"), volatile=False),
            Step(("grounds", "show", "participatiewet-64", "--on", "2026-11-28"), volatile=False),
            Step(("grounds", "show", "participatiewet-64", "--json"), volatile=False),
            Step(("grounds", "show", "participatiewet-64", "--on", "1999-01-01"), volatile=False),
            Step(("grounds", "show", "no-such-ground"), volatile=False),
            Step(("grounds", "check"), volatile=False),
            Step(("grounds", "check", "examples"), volatile=False),
            Step(("grounds", "check", "no-such-folder"), volatile=False),
        ], self.workers)
        for result in self.runner.results:
            if not result.step.volatile:
                self.norm.learn_literals(result.stdout)

    def decide(self) -> None:
        """``decide`` as the README shows it, then every example request as its partner's
        body sends it, and the usage errors."""
        bodies = partner_bodies(self.runner.repo / "examples" / "partners.yaml")
        x1 = ('{"reference":"X-1","legal_basis":"sv-126nc","purpose":"strafrechtelijk_onderzoek",'
              '\n       "subjects":[{"bsn":"111222333"}],"categories":["personalia"]}\n')
        steps = [
            Step(("decide", "--body", "gemeente",
                  "examples/requests/gemeente-utrecht/bijstand-with-health.json")),
            Step(("decide", "--body", "openbaar_ministerie", "-"), stdin=x1),
            Step(("decide", "--body", "gemeente", "--received-on", "2026-11-28",
                  "examples/requests/gemeente-utrecht/bijstand-with-health.json"),
                 volatile=False),
            Step(("decide", "--body", "gemeente", "no-such-file.json")),
            Step(("decide", "--body", "gemeente", "-"), stdin="{not json"),
            Step(("decide", "--body", "no-such-body", "-"), stdin="{}"),
        ]
        for path in sorted((self.runner.repo / "examples" / "requests").glob("*/*.json")):
            body = bodies.get(path.parent.name)
            if body:
                rel = path.relative_to(self.runner.repo).as_posix()
                steps.append(Step(("decide", "--body", body, rel)))
        self.runner.many(steps, self.workers)

    def up(self) -> Result:
        """``up --once`` on the fresh data folder; again on a new one when the run was not the
        plain one (see :func:`unusual_run`), so that two captures compare."""
        step = Step(("up", "--once"), timeout=UP_TIMEOUT_S)
        for attempt in range(1, UP_ATTEMPTS + 1):
            result = self.runner.run(step)
            if result.code == 0:
                why = unusual_run(self.data / "ledger.db")
                if why is None:
                    break
            elif "Address already in use" in result.stderr:
                why = "a port was in use"
                time.sleep(10)
            else:
                break
            self.notes.append(f"up --once attempt {attempt}: {why}")
            say(f"up --once attempt {attempt}: {why}; again on a fresh data folder")
            self.reset()
        return self.runner.record(result)

    def reset(self) -> None:
        """A fresh data folder and Prefect home, and another port for the Prefect server."""
        for folder in (self.data, self.tmp / "prefect-home"):
            shutil.rmtree(folder, ignore_errors=True)
        port = free_port()
        self.runner.env["DISCLOSURE_PREFECT_PORT"] = str(port)
        self.norm.port = port

    def requests(self) -> dict[str, str]:
        """The requests ``status`` lists: id → a label of their own (their reference)."""
        status = self.runner.one(Step(("status",)))
        labels: dict[str, str] = {}
        for line in status.stdout.splitlines():
            cells = line.split()
            if len(cells) >= 3 and _UUID.fullmatch(cells[0]):
                label = f"REQ:{cells[2]}"
                if label in labels.values():
                    label = f"REQ:{cells[2]}:{cells[1]}"
                labels[cells[0]] = label
        return labels

    def read_only(self, request_ids: Sequence[str]) -> None:
        year = self.today.year
        start, end = f"{year}-01-01", self.today.isoformat()
        steps: list[Step] = []
        for rid in request_ids:
            steps += [Step(("replay", rid)), Step(("timeline", "--ledger-only", rid))]
        for rid in request_ids[:2]:
            steps += [Step(("status", rid)), Step(("timeline", "--json", "--ledger-only", rid))]
        steps += [Step(("timeline", rid)) for rid in request_ids[:1]]
        missing = "00000000-0000-4000-8000-000000000000"
        steps += [
            Step(("status", missing)), Step(("replay", missing)), Step(("timeline", missing)),
            Step(("audit", "verify")), Step(("audit", "verify", "--json")),
            Step(("audit", "verify", "--expect-head", "1:" + "0" * 64)),
            Step(("audit", "verify", "--expect-head", "not-a-head")),
            Step(("replay", "--from", start, "--to", end)),
            Step(("replay", "--from", start, "--to", end, "--all")),
            Step(("replay", "--from", start, "--to", end, "--json")),
            Step(("replay", "--from", start, "--to", end, "--against-current")),
            Step(("replay", "--from", "2020-01-01", "--to", "2020-12-31")),
            Step(("overdue",)),
            Step(("overdue", "--on", (self.today + timedelta(days=60)).isoformat())),
            Step(("reviewers", "list")),
            Step(("partners", "list")),
            Step(("partners", "list", "--all-keys")),
        ]
        results = self.runner.many(steps, self.workers)
        head = next((m.group(1) for r in results if r.step.argv == ("audit", "verify")
                     for m in [re.search(r"--expect-head (\d+:[0-9a-f]{64})", r.stdout)] if m),
                    None)
        if head is not None:
            self.runner.one(Step(("audit", "verify", "--expect-head", head)))

    def writing(self) -> None:
        """The commands that write: inzage, report, logboek, reviewers, partners, audit."""
        run = self.runner.one
        year = self.today.year
        quarter = f"{year}-Q{(self.today.month - 1) // 3 + 1}"
        start, end = f"{year}-01-01", self.today.isoformat()
        for argv, stdin in [
            (("inzage", "--bsn", "987825707"), None),
            (("inzage", "--bsn", "321146487", "--requested-by", "privacy-officer"), None),
            (("inzage", "--onderwijsnummer", "102169968"), None),
            (("inzage", "--bsn", "738199795", "--onderwijsnummer", "102791163"), None),
            (("inzage", "--bsn", "-"), "467279627\n"),
            (("inzage", "--bsn", "162275868"), None),
            (("inzage", "--bsn", "111222333"), None),
            (("inzage",), None),
        ]:
            run(Step(argv, stdin=stdin))
        out = str(self.out)
        for argv in [
            ("report", "--period", str(year)),
            ("report", "--period", str(year), "--by", "quarter", "--out", f"{out}/report-by-q"),
            ("report", "--period", quarter, "--by", "month", "--out", f"{out}/report-q"),
            ("report", "--period", self.today.strftime("%Y-%m"), "--out", f"{out}/report-m"),
            ("report", "--period", "not-a-period"),
            ("logboek", "export", "--from", start, "--to", end, "--out", f"{out}/logboek.jsonl"),
            ("logboek", "export", "--from", "2020-01-01", "--to", "2020-12-31"),
            ("reviewers", "add", "anna", "--name", "Anna de Vries", "--role", "jurist"),
            ("reviewers", "add", "bram", "--name", "Bram Jansen", "--role", "senior_jurist"),
            ("reviewers", "add", "anna", "--name", "Anna de Vries", "--role", "jurist"),
            ("reviewers", "list"),
            ("reviewers", "remove", "bram"),
            ("reviewers", "remove", "nobody"),
            ("reviewers", "list"),
        ]:
            run(Step(argv))
        run(Step(("logboek", "export", "--from", start, "--to", end), sort_lines=True))
        first = run(Step(("partners", "rotate-key", "belastingdienst")))
        run(Step(("partners", "rotate-key", "belastingdienst", "--actor", "operator:capture")))
        run(Step(("partners", "rotate-key", "no-such-partner")))
        key_id = re.search(r"key id ([0-9a-f]+)", first.stdout)
        if key_id:
            run(Step(("partners", "revoke", "belastingdienst", "--key-id", key_id.group(1),
                      "--reason", "capture: revoked on purpose")))
        run(Step(("partners", "revoke", "toeslagen", "--all")))
        run(Step(("partners", "list", "--all-keys")))
        partners = self.tmp / "partners.yaml"
        shutil.copyfile(self.runner.repo / "examples" / "partners.yaml", partners)
        own = {"DISCLOSURE_PARTNERS_FILE": str(partners)}
        run(Step(("partners", "add", "gemeente-delft", "--name", "Gemeente Delft", "--body",
                  "gemeente", "--oin", "00000001001234567000"), env=own))
        run(Step(("partners", "add", "gemeente-delft", "--name", "Gemeente Delft", "--body",
                  "gemeente", "--oin", "00000001001234567000"), env=own))
        run(Step(("partners", "list"), env=own))
        register = {"DISCLOSURE_REGISTER_URL": f"sqlite:///{self.tmp}/register-extra.db"}
        run(Step(("register", "seed", "--persons", "50", "--seed", "7"), env=register))
        run(Step(("register", "seed", "--persons", "50", "--seed", "7"), env=register))
        run(Step(("register", "seed", "--persons", "60", "--seed", "8", "--replace"),
                 env=register))
        for argv in [("db", "upgrade"), ("audit", "checkpoint"), ("audit", "rotate-key"),
                     ("audit", "verify"), ("audit", "verify", "--json"), ("status",),
                     ("overdue",), ("replay", "--from", start, "--to", end, "--all")]:
            run(Step(argv))


def unusual_run(ledger: Path) -> str | None:
    """Why the ledger ``up --once`` left is not the plain run, or None.

    Plain: one ``collect-dropoffs`` run took every example in and one ``process-requests`` run
    decided, delivered and sent them to review. The watch or the dispatcher's schedule can start a
    second run while the first one works; it then shares the work (another order of events)
    and records a review run as started a second time — timing, not code.
    """
    try:
        with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as conn:
            events = conn.execute("SELECT kind, flow_run_id, request_id FROM audit_events "
                                  "ORDER BY seq").fetchall()
    except sqlite3.Error as exc:
        say(f"cannot read the audit events ({exc}); taking the run as it is")
        return None
    intake = {run for kind, run, _ in events if kind in ("request_received", "request_invalid")}
    batch = {run for kind, run, _ in events
             if kind in ("decision_recorded", "review_run_started", "delivery_recorded")}
    started = [request for kind, _, request in events if kind == "review_run_started"]
    problems = []
    if len(intake) > 1:
        problems.append(f"{len(intake)} flow runs took the examples in")
    if len(batch) > 1:
        problems.append(f"{len(batch)} flow runs decided and delivered them")
    if len(started) != len(set(started)):
        problems.append(f"{len(started) - len(set(started))} review run(s) recorded as started "
                        "twice")
    return "; ".join(problems) or None


def partner_bodies(path: Path) -> dict[str, str]:
    """Partner id → body from the examples' partner file (its simple YAML, read by line)."""
    bodies: dict[str, str] = {}
    current: str | None = None
    for line in path.read_text("utf-8").splitlines():
        if match := re.match(r"^- id:\s*(\S+)", line):
            current = match.group(1).strip("\"'")
        elif (match := re.match(r"^\s+body:\s*(\S+)", line)) and current:
            bodies[current] = match.group(1).strip("\"'")
    return bodies


def command_env(bin_dir: Path, tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "DISCLOSURE_DATA_DIR": str(tmp / "var"),
        "DISCLOSURE_PREFECT_PORT": str(port),
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "COLUMNS": "100",
        "LINES": "50",
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "LOGNAME": LOGIN,
        "USER": LOGIN,
        "NO_COLOR": "1",
    })
    return env


def say(text: str) -> None:
    sys.stderr.write(f"command_outputs: {text}\n")
    sys.stderr.flush()


def capture(args: argparse.Namespace) -> int:
    if not args.no_netns and os.environ.get(NETNS_MARKER) != "1":
        prefix = unshare_prefix()
        if prefix is not None:
            env = dict(os.environ, **{NETNS_MARKER: "1"})
            argv = [*prefix, sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
            return subprocess.run(argv, env=env, check=False).returncode  # noqa: S603
        say("cannot make a network namespace (unshare -n); running in the host's network")
    if os.environ.get(NETNS_MARKER) == "1":
        loopback_up()
    bin_dir, repo = args.bin.resolve(), args.repo.resolve()
    if not (bin_dir / "disclosure").is_file():
        say(f"no disclosure in {bin_dir}")
        return 2
    started = time.monotonic()
    today = datetime.now(UTC).date()
    tmp = Path(tempfile.mkdtemp(prefix="command-outputs-")).resolve()
    port = free_port()
    runner = Runner(bin_dir, repo, command_env(bin_dir, tmp, port))
    venv = bin_dir.parent
    paths = sorted({(str(tmp), "<TMP>"), (str(repo), "<REPO>"), (str(bin_dir), "<BIN>"),
                    (str(venv), "<VENV>"), (sys.base_prefix, "<PYTHON>")},
                   key=lambda p: -len(p[0]))
    norm = Normaliser(paths=list(paths), today=today, port=port)
    work = Capture(runner, tmp, today, workers=args.workers, norm=norm)
    try:
        say(f"capturing {bin_dir / 'disclosure'} in {repo}; data in {tmp}")
        help_paths = capture_help(runner, args.workers)
        say(f"help of {len(help_paths)} commands and sub-commands")
        work.static()
        work.decide()
        up = work.up()
        say(f"up --once: exit {up.code} after {up.seconds:.0f} s")
        labels = work.requests()
        norm.labels = labels
        work.read_only(sorted(labels, key=lambda rid: labels[rid]))
        work.writing()
        lines = render(runner, norm, tmp)
    finally:
        if args.keep_temp:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    meta = [f"{META} captured {datetime.now(UTC).isoformat(timespec='seconds')} from {repo} "
            f"({_git_head(repo)}) with {bin_dir}",
            f"{META} {len(runner.results)} commands in {seconds:.0f} s",
            *(f"{META} {note}" for note in work.notes)]
    args.out.write_text("\n".join([*meta, *lines]) + "\n", "utf-8")
    failed = [r for r in runner.results if r.code not in (0, 1, 2)]
    say(f"{len(runner.results)} commands in {seconds:.0f} s; written to {args.out}"
        + (f"; {len(failed)} exited other than 0, 1 or 2" if failed else ""))
    return 0


def render(runner: Runner, norm: Normaliser, tmp: Path) -> list[str]:
    lines = [f"# disclosure command outputs: {len(runner.results)} commands "
             "(scripts/command_outputs.py)"]
    for index, result in enumerate(runner.results, start=1):
        lines += render_result(index, result, norm)
    lines += render_database(tmp / "var" / "ledger.db", norm, rows=True)
    lines += render_database(tmp / "var" / "register.db", norm, rows=False)
    lines += render_database(tmp / "register-extra.db", norm, rows=False)
    lines += render_files(tmp, norm)
    return lines


def _git_head(repo: Path) -> str:
    """The commit checked out (read only: no index refresh, no lock)."""
    with contextlib.suppress(OSError):
        command = ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode == 0:
            return proc.stdout.strip()
    return "not a git checkout"


# -- compare ---------------------------------------------------------------------------------


def _compared_lines(path: Path) -> list[str]:
    return [line for line in path.read_text("utf-8").splitlines(keepends=True)
            if not line.startswith(META)]


def _titles(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith(HEAD):
            yield re.sub(r"^==== \[\d+\] ", "", line.rstrip("\n"))


def compare(args: argparse.Namespace) -> int:
    a, b = _compared_lines(args.a), _compared_lines(args.b)
    diff = list(difflib.unified_diff(a, b, fromfile=str(args.a), tofile=str(args.b),
                                     n=args.context))
    if not diff:
        sys.stdout.write(f"identical: {len(list(_titles(a)))} records\n")
        return 0
    sys.stdout.writelines(diff)
    records = _changed_records(a, b)
    sys.stderr.write(f"\n{len(records)} record(s) differ:\n")
    sys.stderr.writelines(f"  {title}\n" for title in records)
    return 1


def _changed_records(a: list[str], b: list[str]) -> list[str]:
    def split(lines: list[str]) -> dict[str, str]:
        records: dict[str, list[str]] = {}
        title = "(before the first record)"
        for line in lines:
            if line.startswith(HEAD):
                title = re.sub(r"^==== \[\d+\] ", "", line.rstrip("\n"))
                while title in records:
                    title += " (again)"
                records[title] = []
            records.setdefault(title, []).append(line)
        return {t: "".join(body) for t, body in records.items()}

    ra, rb = split(a), split(b)
    return [t for t in dict.fromkeys([*ra, *rb]) if ra.get(t) != rb.get(t)]


# -- wiring ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="action", required=True)
    cap = sub.add_parser("capture", help="run every command and write their normalised outputs")
    cap.add_argument("--bin", type=Path, required=True, metavar="DIR",
                     help="the folder holding the disclosure command to capture")
    cap.add_argument("--repo", type=Path, default=Path(), metavar="DIR",
                     help="the checkout of that code (commands run there; default .)")
    cap.add_argument("--out", type=Path, required=True, metavar="FILE")
    cap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                     help="read-only commands run this many at a time")
    cap.add_argument("--keep-temp", action="store_true", help="keep the temporary folder")
    cap.add_argument("--no-netns", action="store_true",
                     help="run in the host's network (port 8000 must be free)")
    cap.set_defaults(handler=capture)
    cmp = sub.add_parser("compare", help="unified diff of two captures; exit 1 if they differ")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--context", type=int, default=3, help="lines of context (default 3)")
    cmp.set_defaults(handler=compare)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""``disclosure up``: the whole system on one machine, and the operator commands beside it.

``up`` seeds the synthetic register (with the people the examples name), starts a local Prefect
server on SQLite (unless ``PREFECT_API_URL`` names one), serves the pipeline's deployments,
drops the bundled example requests into the partners' drop folders, waits until every one is
delivered, rejected or waiting for a reviewer, prints the outcomes and where to look, and keeps
serving until interrupted (``--once``: stop there). Running it again is safe: a file already
taken in is recognised by its content, a request decided is not decided again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select
from sqlmodel import Session, col

from cli.api_server import api_server
from cli.local_prefect import flow_server, local_server
from connectors.register import create_register_schema, make_register_engine
from connectors.register_seed import ensure_register, seed_register, set_shielded
from flows.audit.verification import verify_and_checkpoint
from flows.deployments import serve_all
from flows.runtime import EXAMPLES_DIR, open_ledger
from flows.starts import DISPATCHER, DROPOFF
from legal_bases.errors import DisclosureError
from legal_bases.request import DisclosureRequest, Subject, read_request
from legal_bases.validator import load_yaml
from legal_bases.vocabulary import Outcome, SubjectIdType
from records.chain import verify_chain
from records.ledger import latest_decision
from records.models import DecisionRow, RequestRow, RequestStatus
from records.settings import Settings, load_settings
from records.vocabulary import RequestState

#: States in which a request waits for nobody but a person (or nothing at all): on a later
#: ``up`` a review still waiting may have passed its deadline (escalated).
SETTLED = tuple(s.value for s in (RequestState.DELIVERED, RequestState.REJECTED,
                                  RequestState.AWAITING_REVIEW, RequestState.ESCALATED,
                                  RequestState.FAILED))
#: Seconds ``up`` waits for the examples to settle.
SETTLE_TIMEOUT_S = 180


class ExamplesError(DisclosureError):
    """Raised when the bundled examples are missing, broken, or do not settle in time."""


@dataclass(frozen=True)
class ExampleFile:
    partner_id: str
    path: Path
    sha256: str

    @property
    def intake_key(self) -> str:
        return f"dropoff:{self.partner_id}:{self.sha256}:1"


def example_files(examples: Path) -> list[ExampleFile]:
    files = sorted((examples / "requests").glob("*/*.json"))
    if not files:
        raise ExamplesError(f"no example requests in {examples / 'requests'}")
    return [ExampleFile(p.parent.name, p, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files]


def example_subjects(files: list[ExampleFile]) -> list[Subject]:
    """Every valid subject the example requests name (they must be in the register)."""

    subjects: list[Subject] = []
    for example in files:
        try:
            parsed = read_request(json.loads(example.path.read_text("utf-8")),
                                  received_on=date(2026, 1, 1))
        except ValueError:
            continue
        if isinstance(parsed, DisclosureRequest):
            subjects += parsed.subjects
    return list(dict.fromkeys(subjects))


def prepare_register(settings: Settings, examples: Path, files: list[ExampleFile]) -> None:
    """Seed the register on first start, with the examples' people; set their shielding."""
    engine = make_register_engine(settings.resolved_register_url)
    subjects = example_subjects(files)
    ensure_register(engine=engine, persons=settings.register_persons,
                    seed=settings.register_seed, include=subjects)
    facts = load_yaml((examples / "register.yaml").read_text("utf-8")) or {}
    shielded = [Subject(SubjectIdType(k), v) for entry in facts.get("shielded", [])
                for k, v in entry.items()]
    set_shielded(engine=engine, subjects=subjects, shielded=False)
    set_shielded(engine=engine, subjects=shielded, shielded=True)
    engine.dispose()


def _wait_for_deployments(api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for name in (DISPATCHER, DROPOFF):
        while True:
            try:
                if requests.get(f"{api_url}/deployments/name/{name}", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ExamplesError(f"the deployment {name} did not appear within {timeout:.0f} "
                                    "s; see the serve log")
            time.sleep(0.5)


def _drop(settings: Settings, files: list[ExampleFile]) -> None:
    for example in files:
        folder = settings.resolved_dropoff_dir / example.partner_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{example.path.name}.tmp"
        shutil.copyfile(example.path, tmp)
        tmp.rename(folder / example.path.name)


#: One example as ``up`` reports it: the file, its request, its state, its decision in force.
ExampleOutcome = tuple[ExampleFile, RequestRow, str, DecisionRow | None]


def settled_outcomes(settings: Settings, files: list[ExampleFile]) -> list[ExampleOutcome] | None:
    """Each example's request, state and decision in force (the highest ``sequence``: a
    reviewer's replaces the engine's), once every one has settled; None while one has not."""
    engine = open_ledger(settings)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
                .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
                .where(col(RequestRow.intake_key).in_([f.intake_key for f in files]))).all()
            by_key = {row.intake_key: (row, state) for row, state in rows}
            if len(by_key) < len(files) or any(s not in SETTLED for _, s in by_key.values()):
                return None
            return [(f, by_key[f.intake_key][0], by_key[f.intake_key][1],
                     latest_decision(session=session, request_id=by_key[f.intake_key][0].id))
                    for f in files]
    finally:
        engine.dispose()


def _detail(row: DecisionRow | None) -> str:
    """What the decision in force says, in a few words. A reviewer's decision keeps the
    engine's review triggers (they say why a person decided), so the outcome, not the
    triggers, says whether the request still waits."""
    if row is None:
        return ""
    if row.outcome == Outcome.NEEDS_REVIEW.value:
        return "review: " + ", ".join(t["code"] for t in row.review_triggers)
    by = f" (reviewed by {row.decided_by})" if row.sequence > 1 else ""
    if row.outcome == Outcome.REJECTED.value:
        return ", ".join(r["code"] for r in row.reasons) + by
    withheld = f"; withheld {', '.join(row.withheld)}" if row.withheld else ""
    return f"released {', '.join(row.released)}{withheld}{by}"


def cmd_up(args: argparse.Namespace) -> int:
    from prefect.deployments import run_deployment  # noqa: PLC0415 - needs the API URL first
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    # A TERM signal (a service manager, `kill`) stops the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = load_settings()
    examples: Path = args.examples
    files = example_files(examples)
    print("Seeding the synthetic register and opening the ledger …", flush=True)
    prepare_register(settings, examples, files)
    open_ledger(settings).dispose()
    home, logs = settings.data_dir / "prefect", settings.data_dir / "logs"
    port = args.port or settings.prefect_port
    with local_server(port=port, home=home, log_dir=logs) as api_url, \
            flow_server(api_url=api_url, home=home, log_dir=logs) as serving, \
            api_server(settings, prefect_api_url=api_url) as intake_url:
        print(f"Prefect server at {api_url.removesuffix('/api')}; serving the pipeline; "
              f"intake API at {intake_url} …", flush=True)
        _wait_for_deployments(api_url, timeout=120)
        _drop(settings, files)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            run_deployment(DROPOFF, timeout=0, as_subflow=False)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (outcomes := settled_outcomes(settings, files)) is None:
            if serving.poll() is not None:
                raise ExamplesError(f"the flow server stopped; see {logs / 'serve.log'}")
            if time.monotonic() > deadline:
                raise ExamplesError(f"the examples did not settle within {SETTLE_TIMEOUT_S} s; "
                                    f"see {logs} and `disclosure status`")
            time.sleep(1)
        _print_outcomes(outcomes)
        verify_and_checkpoint(settings)  # the first signed checkpoint, before the nightly one
        _print_where(settings, api_url, intake_url)
        if args.once:
            return 0
        print("\nServing until interrupted (Ctrl-C) …", flush=True)
        try:
            return _keep_serving(serving, api_url=api_url, home=home, logs=logs)
        except KeyboardInterrupt:
            print("\nstopping …")
    return 0


def _keep_serving(serving: Any, *, api_url: str, home: Path, logs: Path) -> int:
    """Wait on the flow server, and start it again when it stops (killed, crashed): what it
    left is taken up at once by its next dispatcher run. Exit status 1 if it keeps stopping
    within a minute of starting."""
    with ExitStack() as stack:
        quick_stops = 0
        while True:
            started = time.monotonic()
            code = serving.wait()
            quick_stops = quick_stops + 1 if time.monotonic() - started < 60 else 0
            if quick_stops >= RESTARTS_WITHOUT_PROGRESS:
                print(f"\ndisclosure: the flow server keeps stopping (exit status {code}); "
                      f"giving up — see {logs / 'serve.log'}", file=sys.stderr, flush=True)
                return 1
            print(f"\nThe flow server stopped (exit status {code}); starting it again — see "
                  f"{logs / 'serve.log'}", flush=True)
            serving = stack.enter_context(flow_server(api_url=api_url, home=home,
                                                      log_dir=logs))


#: How many times in a row the flow server may stop within a minute before ``up`` gives up.
RESTARTS_WITHOUT_PROGRESS = 5


def outcome_lines(outcomes: list[ExampleOutcome]) -> list[str]:
    """The table ``up`` prints: per example its partner, reference, ground, the outcome of the
    decision in force, the request's state and what that decision says."""
    rows = [("partner", "reference", "ground", "outcome", "state", "detail")]
    rows += [(f.partner_id, r.reference or "—", (d.ground_id if d else None) or "—",
              d.outcome if d else "—", state, _detail(d)) for f, r, state, d in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
            for row in rows]


def _print_outcomes(outcomes: list[ExampleOutcome]) -> None:
    print()
    for line in outcome_lines(outcomes):
        print(line)


def _print_where(settings: Settings, api_url: str, intake_url: str) -> None:
    ui = api_url.removesuffix("/api")
    engine = open_ledger(settings)
    with Session(engine) as session:
        report = verify_chain(session=session)
    engine.dispose()
    print(f"""
Where to look:
  Prefect UI        {ui}/runs   (flows process-requests, collect-dropoffs, review-request)
  Intake API        {intake_url}/docs   (partners: disclosure partners add|rotate-key|revoke)
  Deliveries        {settings.resolved_outbox_dir}/<partner>/delivery-<decision>.json
  Drop-off folders  {settings.resolved_dropoff_dir}/<partner>/   (drop more request files here)
  Ledger            {settings.resolved_database_url}   (disclosure status, disclosure audit verify)
  Audit chain       {report.events_checked} events, {'intact' if report.ok else 'BROKEN'}
  Audit tools       disclosure replay|timeline REQUEST, disclosure report --period YEAR,
                    disclosure inzage --bsn N, disclosure logboek export (README: Audit)""")


def cmd_serve(_args: argparse.Namespace) -> int:
    serve_all()
    return 0


def cmd_register_seed(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = make_register_engine(settings.resolved_register_url)
    create_register_schema(engine)
    report = seed_register(engine=engine, persons=args.persons, seed=args.seed,
                           replace=args.replace)
    print(report.to_dict())
    return 0


def register(sub: Any) -> None:
    """Add ``up``, ``serve`` and ``register seed`` to the command line."""
    up = sub.add_parser(
        "up", help="run the whole system on the embedded defaults",
        description="Seed the register, start a local Prefect server and the pipeline, process "
                    "the bundled example requests, print the outcomes and keep serving.")
    up.add_argument("--examples", type=Path, default=EXAMPLES_DIR, metavar="DIR",
                    help="folder with register.yaml and requests/<partner>/*.json")
    up.add_argument("--port", type=int, default=None,
                    help="port of the local Prefect server (default DISCLOSURE_PREFECT_PORT, 4200)")
    up.add_argument("--once", action="store_true",
                    help="stop after the examples are processed instead of serving on")
    up.set_defaults(handler=cmd_up)
    sub.add_parser("serve", help="serve the pipeline's Prefect deployments until interrupted"
                   ).set_defaults(handler=cmd_serve)
    register = sub.add_parser("register", help="the synthetic source register")
    rsub = register.add_subparsers(dest="register_command", required=True, metavar="ACTION")
    seed = rsub.add_parser("seed", help="fill the synthetic register with generated people")
    seed.add_argument("--persons", type=int, required=True)
    seed.add_argument("--seed", type=int, required=True)
    seed.add_argument("--replace", action="store_true", help="replace a filled register")
    seed.set_defaults(handler=cmd_register_seed)

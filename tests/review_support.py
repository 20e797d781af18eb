"""Support for ``tests/test_review_flow.py`` and ``tests/test_review_browser.py``: the whole
review path against real processes.

:class:`ReviewSystem` is a data folder with a seeded register and a ledger, a real
``prefect server`` on a free port (``cli.local_prefect.local_server``) and ``disclosure serve``
(``cli.local_prefect.flow_server``), both started as ``disclosure up`` starts them, with the
environment cleaned of the caller's ``DISCLOSURE_*``/``PREFECT_*``. It can be stopped and started
again on the same folder and port (a restart while reviews wait). Requests are recorded as the
intake records them (``records.ledger.record_submission``) and the dispatcher deployment is run
to decide them; a review run then suspends with its form, which the tests read and answer
through the Prefect client, as a reviewer's screen would.

Reviewers are enrolled with ``records.reviews.enroll_reviewer`` and the engine's own key, so the
test knows their TOTP secrets and can make the codes their authenticator apps would show
(:class:`Reviewer`: each code is used once, as the engine demands).

:class:`WebhookReceiver` is the legal department's channel: a plain HTTP server on loopback that
the escalation automation's ``notify-escalation`` run posts to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.deployments import run_deployment
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from cli.local_prefect import flow_server, local_server
from cli.up import example_files, prepare_register
from connectors.partners import load_partners
from flows.starts import DISPATCHER, DROPOFF, NOTIFY, REVIEW
from legal_bases.request import read_request
from records.chain import verify_chain
from records.data_keys import SEALED_PREFIX
from records.db import open_ledger
from records.ledger import received_on, record_submission
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.reviews import ReviewAnswerRow, answers_for, enroll_reviewer
from records.settings import Settings, load_settings
from records.totp import SecretSeal, code_at, step_of
from records.vocabulary import Channel

EXAMPLES = Path(__file__).parents[1] / "examples"
OM = "om-midden-nederland"
GEMEENTE = "gemeente-utrecht"
#: The bundled examples this suite starts from (each test gives its copy its own reference).
FINANCIAL_126ND = EXAMPLES / "requests" / OM / "126nd-financial.json"
LEERPLICHT_HEALTH = EXAMPLES / "requests" / GEMEENTE / "leerplicht-health.json"

#: How long the tests wait for a process-driven change (a resume costs a runner poll of 2 s
#: plus the start of a flow-run process: a few seconds on two idle cores, far more on a busy
#: machine).
WAIT_S = 180.0
POLL_S = 0.25

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def example(path: Path, **changes: Any) -> dict[str, Any]:
    """A bundled example request with ``changes`` (a new ``reference`` at least)."""
    body: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return body | changes


def request_numbers(*bodies: dict[str, Any]) -> set[str]:
    """Every subject number the requests name (none may reach Prefect)."""
    return {str(v) for body in bodies for s in body["subjects"] for v in s.values()}


# -- reviewers and their codes -------------------------------------------------------------------

@dataclass
class Reviewer:
    """An enrolled reviewer as their authenticator app knows them."""

    id: str
    name: str
    role: str
    secret: str
    used: set[int] = field(default_factory=set)

    def code(self) -> str:
        """A code the engine accepts for the next 30 s or more and this test has not used.

        The engine allows one step of drift either side and each step's code once, so the code
        of the next step (valid until two steps on) is taken first, then the current one; when
        both are spent this waits for the next step.
        """
        while True:
            now = step_of(time.time())
            for step in (now + 1, now):
                if step not in self.used:
                    self.used.add(step)
                    return code_at(self.secret, step)
            print(f"reviewer {self.id}: both usable codes spent, waiting for the next step")
            time.sleep(1)

    def wrong_code(self) -> str:
        """A well-formed code that is not this reviewer's code anywhere near now."""
        near = {code_at(self.secret, step_of(time.time()) + d) for d in range(-3, 4)}
        return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919))
                    if c not in near)


# -- the escalation webhook ---------------------------------------------------------------------

class WebhookReceiver:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(raw or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/escalations"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# -- the system ---------------------------------------------------------------------------------

@contextmanager
def clean_environment(**values: str) -> Iterator[None]:
    """The caller's ``DISCLOSURE_*``/``PREFECT_*`` variables removed (the child processes
    inherit this environment), ``values`` set; everything restored afterwards."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith(("DISCLOSURE_", "PREFECT_"))]:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Answer:
    """What a reviewer types on the form (the JSON the form posts on Resume)."""

    decision: str
    motivation: str
    reviewer_id: str
    code: str
    categories: list[str] | None = None

    def to_input(self) -> dict[str, Any]:
        data = {"decision": self.decision, "motivation": self.motivation,
                "reviewer_id": self.reviewer_id, "code": self.code}
        return data | ({"categories": self.categories} if self.categories is not None else {})


class ReviewSystem:
    """The engine on one machine: data folder, Prefect server, flow server (see module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.webhook = WebhookReceiver()
        self.env = {"DISCLOSURE_DATA_DIR": str(self.data_dir),
                    "DISCLOSURE_REGISTER_PERSONS": "300",
                    "DISCLOSURE_ESCALATION_WEBHOOK_URL": self.webhook.url}
        self._stack: ExitStack | None = None
        self.serve_process: Any = None
        self.settings: Settings = load_settings(
            data_dir=self.data_dir, register_persons=300,
            escalation_webhook_url=self.webhook.url)
        self.ledger: Engine = open_ledger(self.settings)
        self.seal = SecretSeal(self.settings.pseudonym_key_bytes())
        self.pseudonymizer = Pseudonymizer.from_settings(self.settings)
        prepare_register(self.settings, EXAMPLES, example_files(EXAMPLES))
        self.reviewers: dict[str, Reviewer] = {}
        #: The ledger ids of the requests submitted, by the name the test gave them.
        self.requests: dict[str, str] = {}

    # -- processes ------------------------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def start(self) -> None:
        """Start the Prefect server and ``disclosure serve``; wait for the deployments."""
        assert self._stack is None
        with ExitStack() as stack:
            stack.enter_context(clean_environment(**self.env))
            home = self.data_dir / "prefect"
            api_url = stack.enter_context(local_server(port=self.port, home=home,
                                                       log_dir=self.logs))
            assert api_url == self.api_url
            self.serve_process = stack.enter_context(flow_server(
                api_url=api_url, home=home, log_dir=self.logs, extra_env=self.env))
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
            for name in (DISPATCHER, DROPOFF, REVIEW, NOTIFY):
                wait_for(f"the deployment {name} (see {self.logs / 'serve.log'})",
                         lambda name=name: self._deployed(name), timeout=120)
            self._stack = stack.pop_all()

    def _deployed(self, name: str) -> bool:
        assert self.serve_process.poll() is None, f"disclosure serve stopped; see {self.logs}"
        try:
            return requests.get(f"{self.api_url}/deployments/name/{name}", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stop ``disclosure serve`` and the Prefect server (the data folder stays)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def close(self) -> None:
        self.stop()
        self.webhook.stop()
        self.ledger.dispose()

    # -- the ledger -----------------------------------------------------------------------------

    def enroll(self, reviewer_id: str, name: str, role: str = "jurist") -> Reviewer:
        with Session(self.ledger) as session, session.begin():
            secret = enroll_reviewer(session=session, reviewer_id=reviewer_id, name=name,
                                     role=role, seal=self.seal, now=datetime.now(UTC))
        self.reviewers[reviewer_id] = Reviewer(reviewer_id, name, role, secret)
        return self.reviewers[reviewer_id]

    def submit(self, name: str, partner_id: str, body: dict[str, Any]) -> str:
        """Record a request as the intake does (channel cli, a trusted operator naming the
        partner) under ``name`` in :attr:`requests`; returns its ledger id."""
        partner = self._partner_body(partner_id)
        now = datetime.now(UTC)
        raw = json.dumps(body)
        with Session(self.ledger, expire_on_commit=False) as session, session.begin():
            row = record_submission(
                session=session, partner_id=partner_id, requester_body=partner,
                channel=Channel.CLI, raw_body=raw,
                parsed=read_request(json.loads(raw), received_on=received_on(now)),
                received_at=now, pseudonymizer=self.pseudonymizer)
        self.requests[name] = row.id
        return row.id

    @staticmethod
    def _partner_body(partner_id: str) -> str:
        return load_partners(EXAMPLES / "partners.yaml").by_id(partner_id).body.value

    def rows(self, model: type[Any], **where: Any) -> list[Any]:
        with Session(self.ledger, expire_on_commit=False) as session:
            query = select(model)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            found = list(session.execute(query).scalars())
            session.expunge_all()
            return found

    def state(self, request_id: str) -> str:
        with Session(self.ledger) as session:
            status = session.get(RequestStatus, request_id)
            return status.state if status else "unknown"

    def decisions(self, request_id: str) -> list[DecisionRow]:
        return sorted(self.rows(DecisionRow, request_id=request_id), key=lambda d: d.sequence)

    def answers(self, request_id: str) -> list[ReviewAnswerRow]:
        """The request's review answers, their motivations opened with its data key (each is
        stored sealed, never in clear)."""
        stored = self.rows(ReviewAnswerRow, request_id=request_id)
        assert all(a.motivation.startswith(SEALED_PREFIX) for a in stored), stored
        with Session(self.ledger) as session:
            return answers_for(session=session, request_id=request_id)

    def deliveries(self, request_id: str) -> list[DeliveryRow]:
        return self.rows(DeliveryRow, request_id=request_id)

    def audit(self, request_id: str, kind: str | None = None) -> list[AuditEvent]:
        with Session(self.ledger, expire_on_commit=False) as session:
            query = select(AuditEvent).where(col(AuditEvent.request_id) == request_id)
            found = sorted(session.execute(query).scalars(), key=lambda e: e.seq)
            session.expunge_all()
        return [e for e in found if kind is None or e.kind == kind]

    def chain_intact(self) -> bool:
        with Session(self.ledger) as session:
            return verify_chain(session=session).ok

    def delivery_files(self, partner_id: str, request_id: str) -> list[dict[str, Any]]:
        found = [json.loads(p.read_text("utf-8"))
                 for p in (self.settings.resolved_outbox_dir / partner_id).glob("*.json")]
        return [d for d in found if d["disclosure"]["request_id"] == request_id]

    # -- Prefect --------------------------------------------------------------------------------

    @contextmanager
    def prefect(self) -> Iterator[None]:
        """This process's Prefect client settings pointed at the system's server."""
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def dispatch(self) -> FlowRun:
        """Run the dispatcher deployment now and wait for it to finish."""
        with self.prefect():
            run = run_deployment(DISPATCHER, timeout=0, as_subflow=False)
        assert isinstance(run, FlowRun)
        return self.wait_final(run.id)

    def wait_states(self, request_ids: list[str], states: tuple[str, ...]) -> None:
        wait_for(f"requests to reach {states}",
                 lambda: all(self.state(r) in states for r in request_ids))

    def read_run(self, run_id: UUID) -> FlowRun:
        with self.prefect(), get_client(sync_client=True) as client:
            return client.read_flow_run(run_id)

    def runs_of(self, deployment: str, **parameters: Any) -> list[FlowRun]:
        """The flow runs of ``flow/deployment`` whose parameters include ``parameters``."""
        flow_name, name = deployment.split("/")
        with self.prefect(), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))
        return [r for r in runs
                if all(r.parameters.get(k) == v for k, v in parameters.items())]

    def review_run(self, request_id: str) -> FlowRun:
        """The one review run of a request (waits for the dispatcher to start it)."""
        runs = wait_for(f"the review run of {request_id}",
                        lambda: self.runs_of(REVIEW, request_id=request_id))
        assert len(runs) == 1, [r.id for r in runs]
        return runs[0]

    def wait_form(self, run_id: UUID, n: int) -> FlowRun:
        """Wait until the run is suspended on its form for answer ``n`` (``review-<n>``)."""
        def probe() -> FlowRun | None:
            run = self.read_run(run_id)
            assert run.state is not None
            assert not run.state.is_failed(), run.state
            assert not run.state.is_crashed(), run.state
            keyset = run.state.state_details.run_input_keyset or {}
            if run.state.is_paused() and keyset.get("description") == (
                    f"suspended-review-{n}-description"):
                return run
            return None
        return wait_for(f"run {run_id} to wait on form review-{n}", probe)

    def wait_final(self, run_id: UUID) -> FlowRun:
        def probe() -> FlowRun | None:
            run = self.read_run(run_id)
            return run if run.state is not None and run.state.is_final() else None
        return wait_for(f"run {run_id} to finish", probe)

    def states(self, run_id: UUID) -> list[str]:
        """The names of every state the run has been in, in order."""
        with self.prefect(), get_client(sync_client=True) as client:
            return [s.name or s.type.value for s in client.read_flow_run_states(run_id)]

    def answer_all(self, answers: list[tuple[str, UUID, Answer]]) -> None:
        """Resume several waiting runs at once (``(request id, run id, answer)`` each) and wait
        until the flow recorded every answer: their runs work at the same time."""
        before = {request_id: len(self.answers(request_id)) for request_id, _, _ in answers}
        for _, run_id, answer in answers:
            self.resume(run_id, answer)
        for request_id, count in before.items():
            wait_for(f"answer {count} on {request_id}",
                     lambda r=request_id, c=count: len(self.answers(r)) > c)

    def form(self, run: FlowRun) -> tuple[str, dict[str, Any]]:
        """The form a reviewer sees on a waiting run: its description and its JSON schema."""
        assert run.state is not None
        keyset = run.state.state_details.run_input_keyset
        assert keyset is not None
        with self.prefect(), get_client(sync_client=True) as client:
            description = json.loads(client.read_flow_run_input(run.id, keyset["description"]))
            schema = json.loads(client.read_flow_run_input(run.id, keyset["schema"]))
        return description, schema

    def resume(self, run_id: UUID, answer: Answer | dict[str, Any]) -> None:
        """Submit the form, as Resume in the UI does. A busy SQLite server may answer 503
        (the UI then says "Something went wrong"); a reviewer submits again, and so does this,
        as long as the run still waits on the same form."""
        data = answer.to_input() if isinstance(answer, Answer) else answer
        keyset = (self.read_run(run_id).state.state_details.run_input_keyset  # type: ignore[union-attr]
                  or {})
        for attempt in range(3):
            try:
                with self.prefect():
                    resume_flow_run(run_id, run_input=data)
                return
            except PrefectHTTPStatusError as exc:
                run = self.read_run(run_id)
                waiting = (run.state is not None and run.state.is_paused()
                           and run.state.state_details.run_input_keyset == keyset)
                if exc.response.status_code != 503 or not waiting or attempt == 2:
                    raise
                time.sleep(2)

    def events(self, name: str, request_id: str, *, prefix: bool = False) -> list[Any]:
        """Prefect events named ``name`` (or starting with it) about the request."""
        names = EventNameFilter(prefix=[name]) if prefix else EventNameFilter(name=[name])
        with self.prefect(), get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(
                event=names,
                any_resource=EventAnyResourceFilter(id=[f"disclosure.request.{request_id}"])),
                limit=50)
        return list(page.events)

    def run_logs(self, run_ids: list[UUID]) -> list[str]:
        """Every log line of the runs, as stored."""
        found: list[str] = []
        with self.prefect(), get_client(sync_client=True) as client:
            while page := client.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200,
                    offset=len(found)):
                found += [log.message for log in page]
        return found

    def run_inputs(self, run_id: UUID) -> list[str]:
        """Every input stored on a run (schemas, descriptions, answers), as stored."""
        with self.prefect(), get_client(sync_client=True) as client:
            found = client.filter_flow_run_input(run_id, key_prefix="", limit=100,
                                                 exclude_keys=set())
        return [i.value for i in found]

    def artifact(self, key: str) -> str | None:
        """The latest version of the Markdown artifact ``key``, or None."""
        with self.prefect(), get_client(sync_client=True) as client:
            found = client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(
                    any_=[key])), limit=1)
        return str(found[0].data) if found else None

    def artifact_versions(self, key: str) -> list[Any]:
        """Every version of the artifact ``key``, oldest first."""
        with self.prefect(), get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC)
        return list(reversed(found))

    def disclosure(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the ``disclosure`` command line on this system's data, as an operator would."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DISCLOSURE_", "PREFECT_"))}
        env |= self.env | {"PREFECT_API_URL": self.api_url}
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parents[1], check=False)

"""structlog is configured once: a sentence for Prefect's log view, JSON lines (or the console)
on the process's own stream; no BSN-shaped number and no host path reaches either."""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
import structlog
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogHandler

from connectors.partners import load_partners
from flows.logs import MASK, configure_logging, get_logger, shown_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="DEBUG", json=True, stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger("disclosure").handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_are_json_lines_with_level_time_and_context(log_stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-1", flow_run_id="run-9")
    try:
        get_logger("test").info("decision_recorded", outcome="approved")
    finally:
        structlog.contextvars.clear_contextvars()
    (event,) = lines(log_stream)
    assert event["event"] == "decision_recorded"
    assert event["outcome"] == "approved"
    assert event["level"] == "info"
    assert event["request_id"] == "req-1"
    assert event["flow_run_id"] == "run-9"
    assert str(event["timestamp"]).endswith("Z")


def test_bsn_shaped_numbers_are_masked_everywhere_in_an_event(log_stream: io.StringIO) -> None:
    get_logger("test").warning(
        "careless_event 111222333",
        text="subject 123456782 asked",
        number=111222333,
        nested={"list": ["999998620", {"deep": "x 725763863 y"}]},
        subject_tuple=("162275869",),
    )
    output = log_stream.getvalue()
    for number in ("111222333", "123456782", "999998620", "725763863", "162275869"):
        assert number not in output
    assert output.count("*********") == 6


def test_masking_leaves_hashes_counts_and_longer_numbers_alone(log_stream: io.StringIO) -> None:
    digest = "ab123456789cd" + "0" * 51
    get_logger("test").info("fine", table_hash=digest, subjects=100_000,
                            oin="00000001002220647000", year=2026, ratio=0.5, flag=True)
    (event,) = lines(log_stream)
    assert event["table_hash"] == digest
    assert event["subjects"] == 100_000
    assert event["oin"] == "00000001002220647000"
    assert event["flag"] is True


def test_exceptions_are_rendered_and_masked_too(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("bad subject 111222333")
    except ValueError:
        get_logger("test").exception("failed")
    output = log_stream.getvalue()
    assert "ValueError" in output
    assert "111222333" not in output


def test_no_handler_receives_the_raw_exception(log_stream: io.StringIO) -> None:
    seen: list[logging.LogRecord] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logging.getLogger("disclosure").addHandler(Spy())
    try:
        raise RuntimeError("subject 111222333")
    except RuntimeError:
        get_logger("test").exception("failed")
    (record,) = seen
    assert record.exc_info is None
    assert "111222333" not in record.getMessage()


# -- two renderings: a sentence for people (Prefect's log view), JSON for machines ----------------

class Spy(logging.Handler):
    """Stands where Prefect's API log handler stands: it reads ``record.getMessage()``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [self.format(record) for record in self.records]


@pytest.fixture
def spy(log_stream: io.StringIO) -> Iterator[Spy]:
    handler = Spy()
    logging.getLogger("disclosure").addHandler(handler)
    yield handler
    logging.getLogger("disclosure").removeHandler(handler)


def test_the_message_is_a_sentence_and_the_stream_stays_json(
        log_stream: io.StringIO, spy: Spy) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-1", flow_run_id="run-9")
    try:
        get_logger("test").warning("delivery_failed", partner_id="cbs",
                                   error="DeliveryRejectedError", permanent=True,
                                   categories=["personalia", "gezondheid"], note="two words",
                                   counts={"delivered": 2}, code=None)
    finally:
        structlog.contextvars.clear_contextvars()
    (message,) = spy.messages
    assert message == (
        "delivery_failed · partner_id=cbs error=DeliveryRejectedError permanent=yes "
        'categories=[personalia, gezondheid] note="two words" counts=(delivered=2) '
        "(request_id=req-1, flow_run_id=run-9)")
    (event,) = lines(log_stream)  # the process's own stream: JSON, every field, time and level
    assert event["event"] == "delivery_failed"
    assert event["permanent"] is True
    assert event["categories"] == ["personalia", "gezondheid"]
    assert event["code"] is None
    assert (event["level"], event["request_id"]) == ("warning", "req-1")


def test_the_sentence_carries_no_time_no_level_and_no_json(
        log_stream: io.StringIO, spy: Spy) -> None:
    get_logger("test").info("partners_loaded", partners=4)
    (message,) = spy.messages
    assert message == "partners_loaded · partners=4"
    (event,) = lines(log_stream)
    assert str(event["timestamp"])[:10] not in message
    assert "info" not in message
    with pytest.raises(json.JSONDecodeError):
        json.loads(message)


def test_a_traceback_follows_the_sentence_masked(log_stream: io.StringIO, spy: Spy) -> None:
    try:
        raise ValueError("bad subject 111222333")
    except ValueError:
        get_logger("test").exception("failed", step="deliver")
    (message,) = spy.messages
    first, *trace = message.splitlines()
    assert first == "failed · step=deliver"
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == "ValueError: bad subject *********"
    assert spy.records[0].exc_info is None
    assert "111222333" not in log_stream.getvalue()


def test_a_bsn_in_any_field_reaches_neither_rendering(log_stream: io.StringIO, spy: Spy) -> None:
    structlog.contextvars.bind_contextvars(request_id="111222333")
    try:
        get_logger("test").warning("seen 123456782", text="subject 999998620 asked",
                                   number=725763863, deep={"list": [("162275869",)]})
    finally:
        structlog.contextvars.clear_contextvars()
    (message,) = spy.messages
    output = log_stream.getvalue()
    for number in ("111222333", "123456782", "999998620", "725763863", "162275869"):
        assert number not in message
        assert number not in output
    assert message.count(MASK) == output.count(MASK) == 5


def test_the_console_on_a_terminal_reads_the_event_too() -> None:
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    try:
        get_logger("test").info("partners_loaded", partners=4, note="subject 111222333")
    finally:
        structlog.reset_defaults()
        logging.getLogger("disclosure").handlers.clear()
    output = stream.getvalue()
    assert "partners_loaded" in output
    assert "partners=4" in output
    assert "[info" in output
    assert "111222333" not in output
    assert not output.startswith("{")


def test_a_record_past_structlog_is_written_masked_as_json_too(log_stream: io.StringIO) -> None:
    logging.getLogger("disclosure.other").warning("plain %s", "text 111222333")
    (event,) = lines(log_stream)
    assert event["event"] == f"plain text {MASK}"
    assert event["level"] == "warning"


def test_reconfiguring_replaces_our_stream_and_keeps_prefects_handler(
        log_stream: io.StringIO, spy: Spy) -> None:
    second = io.StringIO()
    configure_logging(level="INFO", json=True, stream=second)
    get_logger("test").info("once")
    assert log_stream.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]
    assert spy.messages == ["once"]


# -- no host paths ----------------------------------------------------------------------------

def test_paths_under_the_working_directory_are_relative(
        log_stream: io.StringIO, spy: Spy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    get_logger("test").info("files_seen", source=tmp_path / "examples" / "partners.yaml",
                            folder=tmp_path, relative=Path("var/outbox"),
                            files=[tmp_path / "a.json"],
                            text=f'File "{tmp_path}/flows/logs.py", line 1')
    (message,) = spy.messages
    assert message == ('files_seen · source=examples/partners.yaml folder=. relative=var/outbox '
                       'files=[a.json] text="File \\"flows/logs.py\\", line 1"')
    (event,) = lines(log_stream)
    assert event["source"] == "examples/partners.yaml"
    assert str(tmp_path) not in log_stream.getvalue()


def test_other_absolute_paths_keep_their_last_two_parts(
        log_stream: io.StringIO, spy: Spy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    elsewhere = Path("/etc/disclosure/partners.yaml")
    get_logger("test").info("files_seen", source=elsewhere,
                            path="/v1/requests/{request_id}", url="https://x.example/v1/requests")
    (message,) = spy.messages
    # a path given as a Path is shortened; text is text (a URL's path is not a host path)
    assert message == ("files_seen · source=.../disclosure/partners.yaml "
                       "path=/v1/requests/{request_id} url=https://x.example/v1/requests")
    assert lines(log_stream)[0]["source"] == ".../disclosure/partners.yaml"


def test_shown_path() -> None:
    assert shown_path(PurePosixPath("/srv/engine/var/ledger.db"), "/srv/engine") == "var/ledger.db"
    assert shown_path(PurePosixPath("/srv/engine"), "/srv/engine") == "."
    assert shown_path(PurePosixPath("/srv/engine2/x"), "/srv/engine") == ".../engine2/x"
    assert shown_path(PurePosixPath("/home/anna/a/b.yaml"), "/") == ".../a/b.yaml"
    assert shown_path(PurePosixPath("var/x"), "/srv") == "var/x"


def test_the_engine_logs_the_partner_file_without_the_host_path(
        log_stream: io.StringIO, spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    load_partners(REPO / "examples" / "partners.yaml")
    (message,) = spy.messages
    assert message.startswith("partners_loaded · source=examples/partners.yaml partners=")
    assert lines(log_stream)[0]["source"] == "examples/partners.yaml"


# -- on a real Prefect server: what the run's log view shows ------------------------------------

@flow(name="readable-log-lines")
def _logging_flow(partners_file: str) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-42")
    try:
        load_partners(Path(partners_file))
        log = get_logger("test")
        log.warning("subject_seen", note="subject 111222333 asked", number=123456782,
                    folder=Path(partners_file).parent)
        try:
            raise RuntimeError("cannot read 999998620")
        except RuntimeError:
            log.exception("step_failed", step="deliver")
    finally:
        structlog.contextvars.clear_contextvars()


def test_the_prefect_run_log_shows_sentences_without_paths_or_numbers(
        prefect_harness: None, log_stream: io.StringIO, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    handler = APILogHandler()  # what PREFECT_LOGGING_EXTRA_LOGGERS=disclosure attaches
    logging.getLogger("disclosure").addHandler(handler)
    outside = tmp_path / "config" / "partners.yaml"
    outside.parent.mkdir()
    shutil.copy(REPO / "examples" / "partners.yaml", outside)
    try:
        state = _logging_flow(str(outside), return_state=True)
        inside = _logging_flow(str(REPO / "examples" / "partners.yaml"), return_state=True)
    finally:
        logging.getLogger("disclosure").removeHandler(handler)
    runs = [state.state_details.flow_run_id, inside.state_details.flow_run_id]

    def ours() -> list[str]:
        with get_client(sync_client=True) as client:
            found = client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=runs)), sort=LogSort.TIMESTAMP_ASC)
        messages = [line.message for line in found if line.name.startswith("disclosure")]
        return messages if len(messages) == 6 else []

    deadline = time.monotonic() + 30  # Prefect ships log lines in batches, every 2 s
    while not (messages := ours()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(messages) == 6, messages
    loaded = [m for m in messages if m.startswith("partners_loaded")]
    assert sorted(loaded) == [
        "partners_loaded · source=.../config/partners.yaml partners=8 (request_id=req-42)",
        "partners_loaded · source=examples/partners.yaml partners=8 (request_id=req-42)"]
    assert (f"subject_seen · note=\"subject {MASK} asked\" number={MASK} folder=.../"
            f"{tmp_path.name}/config (request_id=req-42)") in messages
    failed = next(m for m in messages if m.startswith("step_failed"))
    assert failed.startswith("step_failed · step=deliver (request_id=req-42)\nTraceback")
    assert failed.endswith(f"RuntimeError: cannot read {MASK}")
    everything = "\n".join(messages)
    for number in ("111222333", "123456782", "999998620"):
        assert number not in everything
        assert number not in log_stream.getvalue()
    assert str(tmp_path) not in everything
    assert str(REPO) not in everything  # the traceback's files are relative too
    assert not any(m.lstrip().startswith("{") for m in messages)
    assert all(line["event"] for line in lines(log_stream))  # stderr: still JSON lines

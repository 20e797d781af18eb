"""structlog is configured once; BSN-shaped numbers never reach the rendered log output."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from flows.logs import configure_logging, get_logger


@pytest.fixture
def log_stream() -> io.StringIO:
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

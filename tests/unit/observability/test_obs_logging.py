"""hulk.observability.logging: JSON lines, trace ids, run-time level, the stdlib bridge."""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from tests.unit.observability.conftest import lines

from hulk.observability import logging as hulk_logging
from hulk.observability.logging import (
    configure_logging,
    get_level,
    get_logger,
    reset_logging,
    set_level,
)


def test_json_lines_have_timestamp_level_logger_event(output: io.BytesIO) -> None:
    get_logger("hulk.test").info("task.done", task_id="t1", attempts=2, payload={"a": [1, 2]})
    (line,) = lines(output)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["level"] == "info"
    assert line["logger"] == "hulk.test"
    assert line["event"] == "task.done"
    assert (line["task_id"], line["attempts"], line["payload"]) == ("t1", 2, {"a": [1, 2]})
    assert line["timestamp"].endswith("Z")
    assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None
    assert "trace_id" not in line  # no span is current


def test_values_json_cannot_encode_are_rendered_with_repr(output: io.BytesIO) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    get_logger("hulk.test").info("odd", thing=Opaque(), numbers={1: "one"})
    (line,) = lines(output)
    assert line["thing"] == "<opaque>"
    assert line["numbers"] == {"1": "one"}


def test_trace_and_span_ids_of_the_current_span(output: io.BytesIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    log = get_logger("hulk.test")
    with tracer.start_as_current_span("outer") as span:
        log.info("inside")
        logging.getLogger("nats").warning("stdlib inside")
    log.info("outside")
    inside, stdlib_inside, outside = lines(output)
    context = span.get_span_context()
    for line in (inside, stdlib_inside):
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


def test_bound_context_variables_appear(output: io.BytesIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        get_logger("hulk.test").info("with context")
    finally:
        structlog.contextvars.clear_contextvars()
    assert lines(output)[0]["request_id"] == "r-1"


def test_level_changes_at_run_time_for_cached_loggers(output: io.BytesIO) -> None:
    log = get_logger("hulk.cached")
    log.info("first use caches the logger")
    log.debug("hidden")
    assert get_level() == "info"
    set_level("debug")
    log.debug("visible")
    logging.getLogger("uvicorn.error").debug("stdlib visible")
    set_level("WARN")
    log.info("hidden again")
    log.warning("warned")
    assert get_level() == "warning"
    assert [line["event"] for line in lines(output)] == [
        "first use caches the logger",
        "visible",
        "stdlib visible",
        "warned",
    ]


def test_set_level_accepts_logging_constants(output: io.BytesIO) -> None:
    set_level(logging.ERROR)
    assert get_level() == "error"
    assert logging.getLogger().level == logging.ERROR


@pytest.mark.parametrize("level", ["loud", 7, True, ""])
def test_set_level_rejects_unknown_levels(output: io.BytesIO, level: Any) -> None:
    with pytest.raises(ValueError, match="level"):
        set_level(level)


def test_filtering_happens_before_any_processing(output: io.BytesIO) -> None:
    class Explosive:
        def __repr__(self) -> str:
            raise AssertionError("a filtered call was processed")

    log = get_logger("hulk.test")
    log.debug("dropped", thing=Explosive())
    logging.getLogger("hulk.stdlib").debug("dropped %r", Explosive())
    assert log.is_enabled_for(logging.INFO)
    assert not log.is_enabled_for(logging.DEBUG)
    assert output.getvalue() == b""


def test_stdlib_records_share_the_output(output: io.BytesIO) -> None:
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's own config would
    configure_logging(level="info", fmt="json", stream=output)  # routes it to ours again
    assert uvicorn.handlers == []
    uvicorn.warning("port %d busy", 8080)
    logging.getLogger("nats.client").info("connected")
    logging.getLogger("nats.client").debug("below the level")
    first, second = lines(output)
    assert (first["logger"], first["level"], first["event"]) == ("uvicorn.error", "warning", "port 8080 busy")
    assert (second["logger"], second["level"], second["event"]) == ("nats.client", "info", "connected")


def test_exceptions_are_rendered(output: io.BytesIO) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        get_logger("hulk.test").exception("failed")
        logging.getLogger("lib").exception("lib failed")
    ours, theirs = lines(output)
    for line in (ours, theirs):
        assert line["level"] == "error"
        assert "KeyError: 'missing'" in line["exception"]


def test_dropped_events_and_broken_processors_never_raise(output: io.BytesIO, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(logger: Any, method: str, event_dict: Any) -> Any:
        raise structlog.DropEvent

    def broken(logger: Any, method: str, event_dict: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(logging, "raiseExceptions", False)
    monkeypatch.setattr(hulk_logging, "_PROCESSORS", [drop])
    logging.getLogger("lib").warning("dropped")
    monkeypatch.setattr(hulk_logging, "_PROCESSORS", [broken])
    logging.getLogger("lib").warning("broken")
    assert output.getvalue() == b""


def test_console_format_is_for_people() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="console", stream=stream)
    try:
        get_logger("hulk.test").info("hello", answer=42)
    finally:
        reset_logging()
    text = stream.getvalue()
    assert "hello" in text
    assert "answer=42" in text
    assert not text.startswith("{")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "json"), [(io.StringIO(), True), (_Terminal(), False)])
def test_auto_format_is_console_on_a_terminal_only(stream: io.StringIO, json: bool) -> None:
    configure_logging(level="info", fmt="auto", stream=stream)
    try:
        get_logger("hulk.test").info("hello")
    finally:
        reset_logging()
    assert stream.getvalue().startswith("{") is json


def test_text_stream_with_a_buffer_gets_bytes() -> None:
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8")
    configure_logging(level="info", fmt="json", stream=text)
    try:
        get_logger("hulk.test").info("héllo")
    finally:
        reset_logging()
    assert orjson.loads(raw.getvalue())["event"] == "héllo"


def test_reconfiguring_moves_existing_loggers_to_the_new_stream(output: io.BytesIO) -> None:
    log = get_logger("hulk.moving")
    log.info("one")
    second = io.BytesIO()
    configure_logging(level="info", fmt="json", stream=second)
    log.info("two")
    assert [line["event"] for line in lines(output)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]


def test_bad_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="fmt"):
        configure_logging(fmt="xml")  # type: ignore[arg-type]

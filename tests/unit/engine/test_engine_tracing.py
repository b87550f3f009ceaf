"""Execution spans: an attempt of a task submitted inside a recorded trace is a span of that trace."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hulk.engine import EngineConfig, Hulk, Task, TaskStatus
from hulk.engine import pool as pool_module

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(pool_module, "_TRACER", provider.get_tracer("test"))
    return exporter


def test_sampled_flag_is_read_from_the_traceparent() -> None:
    assert pool_module._sampled({"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
    assert pool_module._sampled({"traceparent": f"00-{TRACE_ID}-{PARENT}-03"})
    assert not pool_module._sampled({"traceparent": f"00-{TRACE_ID}-{PARENT}-00"})
    assert not pool_module._sampled({"traceparent": "garbage"})
    assert not pool_module._sampled({})


async def test_only_attempts_of_recorded_traces_get_a_span(spans: InMemorySpanExporter) -> None:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=0), builtins=False)

    @app.task("traced.ok")
    async def ok(payload: Any) -> Any:
        return payload

    @app.task("traced.fail", retries=0)
    async def fail(payload: Any) -> Any:
        raise ValueError("no")

    async with app:
        submitted = [
            app.submit_task(Task("traced.ok", 1, trace={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})),
            app.submit_task(Task("traced.ok", 2, trace={"traceparent": f"00-{TRACE_ID}-{PARENT}-00"})),
            app.submit_task(Task("traced.ok", 3)),
            app.submit_task(Task("traced.fail", 4, trace={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})),
        ]
        finished = [await app.wait(task.id, timeout=10) for task in submitted]
    assert [t.status for t in finished] == [TaskStatus.SUCCEEDED] * 3 + [TaskStatus.DEAD]
    recorded = {span.name: span for span in spans.get_finished_spans()}
    assert sorted(recorded) == ["execute traced.fail", "execute traced.ok"]
    ok_span = recorded["execute traced.ok"]
    assert ok_span.kind is SpanKind.CONSUMER
    assert ok_span.parent is not None
    assert format(ok_span.parent.span_id, "016x") == PARENT
    assert format(ok_span.context.trace_id, "032x") == TRACE_ID
    assert ok_span.attributes is not None
    assert ok_span.attributes["hulk.task.id"] == submitted[0].id
    assert recorded["execute traced.fail"].status.status_code is StatusCode.ERROR

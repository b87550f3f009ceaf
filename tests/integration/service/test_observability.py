"""What the real process exposes: Prometheus text that promtool accepts, JSON logs with trace ids, spans."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import client_for
from tests.nats_servers import NatsServer
from tests.unit.observability.test_obs_metrics import promtool

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


class Collector:
    """A stand-in OTLP/HTTP collector: keeps the body of every POST to /v1/traces, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                collector.bodies.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()
        c.thread.join(5)


def test_live_metrics_pass_promtool(nats_server: NatsServer, start_service: ServiceFactory) -> None:
    service = start_service(nats_server, HULK_ENGINE__MAX_RETRIES="0")
    with client_for(service) as client:
        for body in ({"type": "echo", "payload": 1}, {"type": "fail"}, {"type": "sleep", "payload": {"ms": 5}}):
            client.post("/v1/tasks", json=body, params={"wait": "10s"})
        client.post("/v1/tasks", content=b"{", headers={"Content-Type": "application/json"})
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for family in (
        "hulk_tasks_total",
        "hulk_task_duration_seconds_bucket",
        "hulk_queue_depth",
        "hulk_workers",
        "hulk_http_request_duration_seconds_bucket",
        "hulk_cache_requests_total",
    ):
        assert family in text, family
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("hulk_tasks_total", (("status", "succeeded"), ("type", "echo")))] == 1.0
    assert samples[("hulk_tasks_total", (("status", "dead"), ("type", "fail")))] == 1.0
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=response.content, capture_output=True, timeout=60, check=False
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_logs_carry_trace_ids_and_spans_are_flushed_at_exit(
    nats_server: NatsServer, start_service: ServiceFactory, collector: Collector
) -> None:
    service = start_service(
        nats_server,
        HULK_TELEMETRY__TRACING__ENABLED="true",
        HULK_TELEMETRY__TRACING__ENDPOINT=collector.endpoint,
        HULK_LOGGING__LEVEL="debug",
    )
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    with client_for(service) as client:
        response = client.get("/v1/runtime", headers={"traceparent": traceparent, "X-Request-Id": "traced-1"})
        assert response.status_code == 200
        untraced = client.get("/health", headers={"X-Request-Id": "probe-1"})
        assert untraced.status_code == 200
    assert service.stop() == 0

    lines = service.log_lines()
    assert lines, service.log
    for line in lines:
        assert {"timestamp", "level", "logger", "event"} <= set(line), line
    traced = [line for line in lines if line.get("request_id") == "traced-1"]
    assert len(traced) == 1
    assert traced[0]["trace_id"] == TRACE_ID
    assert len(traced[0]["span_id"]) == 16
    assert traced[0]["span_id"] != PARENT_SPAN_ID  # the server span, child of the caller's
    probe = [line for line in lines if line.get("request_id") == "probe-1"]
    assert len(probe) == 1
    assert "trace_id" not in probe[0]  # probes are not traced
    # The server span reached the collector before the process exited.
    assert any(bytes.fromhex(TRACE_ID) in body for body in collector.bodies)


def _spans(bodies: list[bytes]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans: list[Any] = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return spans


def test_one_trace_spans_request_submission_and_execution(
    nats_server: NatsServer, start_service: ServiceFactory, collector: Collector
) -> None:
    service = start_service(
        nats_server,
        HULK_TELEMETRY__TRACING__ENABLED="true",
        HULK_TELEMETRY__TRACING__ENDPOINT=collector.endpoint,
    )
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    with client_for(service) as client:
        response = client.post(
            "/v1/tasks",
            json={"type": "echo", "payload": "traced"},
            params={"wait": "10s"},
            headers={"traceparent": traceparent},
        )
        assert response.json()["status"] == "succeeded"
    assert service.stop() == 0
    ours = [s for s in _spans(collector.bodies) if s.trace_id == bytes.fromhex(TRACE_ID)]
    by_name = {s.name: s for s in ours}
    assert {"POST", "submit echo", "execute echo"} <= set(by_name), sorted(by_name)
    server, submit, execute = by_name["POST"], by_name["submit echo"], by_name["execute echo"]
    assert server.parent_span_id == bytes.fromhex(PARENT_SPAN_ID)
    assert submit.parent_span_id == server.span_id
    # The execution ran after a trip through JetStream, yet it is a child of the submission.
    assert execute.parent_span_id == submit.span_id

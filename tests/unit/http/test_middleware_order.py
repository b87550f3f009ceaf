"""Middleware behaviour found with the real service: the span wraps everything; only our deadline is a 504."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from hulk.http import HttpOptions, create_app
from hulk.http.middleware import ErrorRecoveryMiddleware, TimeoutMiddleware


class RecordingSpan:
    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


async def test_the_span_sees_answers_made_by_the_other_middlewares() -> None:
    spans: list[RecordingSpan] = []

    @contextlib.contextmanager
    def start_span(scope: Scope) -> Iterator[RecordingSpan]:
        span = RecordingSpan()
        spans.append(span)
        yield span

    app = create_app(object(), HttpOptions(body_limit=10), start_span=start_span)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/v1/tasks", json={"type": "echo", "payload": "x" * 100})
    assert response.status_code == 413
    assert [span.attributes.get("http.response.status_code") for span in spans] == [413]


async def answer(app: Any) -> httpx.Response:
    stack = ErrorRecoveryMiddleware(TimeoutMiddleware(app, timeout=0.05))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack), base_url="http://test") as client:
        return await client.get("/v1/runtime")


async def test_a_timeout_error_raised_by_the_app_is_a_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("a NATS request gave up")

    response = await answer(app)
    assert (response.status_code, response.json()["error"]["code"]) == (500, "internal_error")


async def test_our_own_deadline_is_a_504() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10)

    response = await answer(app)
    assert (response.status_code, response.json()["error"]["code"]) == (504, "timeout")

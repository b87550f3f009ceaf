"""Middleware behaviour found with the real service: the span wraps everything; only our deadline is a 504."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from hulk.http import HttpOptions, create_app
from hulk.http.middleware import Deadlines, HttpMetrics, PlatformMiddleware


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
    stack = PlatformMiddleware(app, metrics=HttpMetrics(), body_limit=1000, timeout=0.05)
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


async def test_a_swallowed_deadline_leaves_the_task_uncancelled() -> None:
    swallowed = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        swallowed.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    response = await answer(app)
    assert swallowed.is_set()
    assert (response.status_code, response.text) == (200, "late")
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0


async def test_another_cancellation_goes_on() -> None:
    deadlines = Deadlines(10.0)
    entered = asyncio.Event()

    async def request() -> None:
        task = deadlines.enter()
        assert task is not None
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert not deadlines.expired(task)
            raise
        finally:
            assert deadlines.leave(task) is False

    running = asyncio.ensure_future(request())
    await entered.wait()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert running.cancelled()
    assert deadlines.expire_due(float("inf")) == 0


def test_deadlines_refuse_a_bad_timeout() -> None:
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Deadlines(bad)
    assert Deadlines(0.01).tick == 0.005
    assert Deadlines(600).tick == 1.0

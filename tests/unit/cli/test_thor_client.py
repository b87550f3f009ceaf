"""hulk.client: every route against the real app in-process, and the error mapping against canned answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from hulk.client import ApiError, HulkClient, RequestTimeout, Unreachable
from hulk.http import HttpOptions, create_app
from tests.unit.cli.ops_live import ADMIN_TOKEN, MemoryBackend


@pytest.fixture
async def hulk() -> AsyncIterator[HulkClient]:
    backend = MemoryBackend()
    app = create_app(backend, HttpOptions(admin_token=ADMIN_TOKEN), metrics=lambda: (b"hulk_up 1\n", "text/plain"))
    transport = httpx.ASGITransport(app=app)
    async with HulkClient("http://hulk/", token=ADMIN_TOKEN, tenant="acme", transport=transport) as client:
        yield client


async def test_every_route(hulk: HulkClient) -> None:
    assert hulk.url == "http://hulk"
    assert (await hulk.health()) == {"status": "ok"}
    assert (await hulk.ready())["ready"] is True
    assert (await hulk.metrics()) == "hulk_up 1\n"
    assert (await hulk.runtime())["instance"] == "mem-1"
    done = await hulk.submit("echo", {"x": 1}, wait=1.0, delay=0.0, timeout=5.0, max_retries=1, priority=2)
    assert done["tenant"] == "acme"
    assert done["result"] == {"x": 1}
    items = await hulk.submit_batch([{"type": "echo"}, {"type": "slow", "payload": 2}])
    assert [i["status"] for i in items] == ["queued", "queued"]
    view = await hulk.get_task(items[1]["id"], wait=0.01)
    assert view["status"] == "queued"
    assert (await hulk.cancel_task(items[1]["id"]))["status"] == "cancelled"
    assert await hulk.list_dead(limit=5) == []
    assert [b["name"] for b in await hulk.breakers()] == ["email", "payments"]
    assert (await hulk.open_breaker("email"))["action"] == "open"
    assert (await hulk.reset_breaker("email"))["action"] == "reset"
    assert "l1" in await hulk.cache_stats()
    assert await hulk.cache_flush(tenant="acme") == 5
    assert await hulk.set_log_level("DEBUG") == "debug"
    assert await hulk.drain() == {"draining": True}
    assert (await hulk.ready())["ready"] is False


async def test_argument_checks(hulk: HulkClient) -> None:
    with pytest.raises(ValueError, match="wait must be between 0 and 60"):
        await hulk.get_task("t1", wait=61)
    with pytest.raises(ValueError, match="limit"):
        await hulk.list_dead(limit=0)
    with pytest.raises(ValueError, match="without '/'"):
        await hulk.replay("a/b")
    with pytest.raises(ValueError, match="timeout"):
        HulkClient("http://h", timeout=0)
    with pytest.raises(ApiError) as refused:
        await hulk.get_task("odd id?&x=1")
    assert refused.value.code == "task_not_found"
    assert "odd id?&x=1" in refused.value.message


def canned(handler: Callable[[httpx.Request], httpx.Response]) -> HulkClient:
    return HulkClient("http://hulk", transport=httpx.MockTransport(handler))


async def test_error_bodies_that_are_not_hulks() -> None:
    async with canned(lambda r: httpx.Response(502, text="<html>bad gateway</html>")) as client:
        with pytest.raises(ApiError) as failed:
            await client.health()
    assert (failed.value.status, failed.value.code) == (502, "http_error")
    assert "bad gateway" in failed.value.message
    assert failed.value.to_dict() == {"status": 502, "code": "http_error", "message": "<html>bad gateway</html>"}

    async with canned(lambda r: httpx.Response(503, headers={"retry-after": "soon"}, json=[1])) as client:
        with pytest.raises(ApiError) as failed:
            await client.runtime()
    assert failed.value.retry_after is None

    body = {"error": {"code": "queue_full", "message": "full", "request_id": "r1", "field": None}}
    async with canned(lambda r: httpx.Response(429, headers={"retry-after": "2"}, json=body)) as client:
        with pytest.raises(ApiError) as failed:
            await client.submit("echo")
    assert failed.value.retry_after == 2.0
    assert failed.value.to_dict() == {
        "status": 429,
        "code": "queue_full",
        "message": "full",
        "request_id": "r1",
        "retry_after": 2.0,
    }
    assert not failed.value.needs_admin


async def test_ready_needs_a_readiness_body() -> None:
    async with canned(lambda r: httpx.Response(503, text="down")) as client:
        with pytest.raises(ApiError):
            await client.ready()
    async with canned(lambda r: httpx.Response(200, json={"other": 1})) as client:
        with pytest.raises(ApiError):
            await client.ready()


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


async def test_transport_failures() -> None:
    async with canned(raising(httpx.ConnectTimeout("slow"))) as client:
        with pytest.raises(Unreachable, match="connection timed out"):
            await client.health()
    async with canned(raising(httpx.ReadTimeout("slow"))) as client:
        with pytest.raises(RequestTimeout) as timed_out:
            await client.get_task("t1", wait=2)
    assert timed_out.value.timeout == 12.0
    assert isinstance(timed_out.value, TimeoutError)
    async with canned(raising(httpx.RemoteProtocolError("peer closed"))) as client:
        with pytest.raises(Unreachable, match="peer closed") as unreachable:
            await client.health()
    assert unreachable.value.url == "http://hulk"
    async with canned(raising(httpx.ConnectError(""))) as client:
        with pytest.raises(Unreachable, match="ConnectError"):
            await client.health()


async def test_follow_retries_a_task_not_yet_readable() -> None:
    answers = iter(
        [
            httpx.Response(404, json={"error": {"code": "task_not_found", "message": "no task"}}),
            httpx.Response(200, json={"id": "t1", "status": "running"}),
            httpx.Response(200, json={"id": "t1", "status": "succeeded", "result": 1}),
        ]
    )
    async with canned(lambda r: next(answers)) as client:
        view = await client.follow({"id": "t1", "status": "queued"}, 30)
    assert view == {"id": "t1", "status": "succeeded", "result": 1}


async def test_follow_gives_up_at_its_deadline() -> None:
    missing = httpx.Response(404, json={"error": {"code": "task_not_found", "message": "no task"}})
    async with canned(lambda r: missing) as client:
        with pytest.raises(ApiError):
            await client.follow({"id": "t1", "status": "queued"}, 0.01)
        assert await client.follow({"id": "t1", "status": "queued"}, 0) == {"id": "t1", "status": "queued"}
        assert await client.follow({"id": "t1", "status": "dead"}, 5) == {"id": "t1", "status": "dead"}

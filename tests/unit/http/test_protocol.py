"""hulk.http.protocol: the writes of one loop turn leave as one write, in order, before a close."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import uvicorn

from hulk.http.protocol import CoalescingHttpProtocol, CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", None))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


async def test_writes_of_one_turn_leave_together() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    transport.write(b'{"id": "1"}')
    assert inner.calls == []
    await asyncio.sleep(0)
    assert inner.calls == [("write", b'HTTP/1.1 202 Accepted\r\n\r\n{"id": "1"}')]
    transport.write(b"alone")
    await asyncio.sleep(0)
    assert inner.calls[-1] == ("write", b"alone")
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)


async def test_close_sends_what_is_gathered_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"bye")
    transport.close()
    await asyncio.sleep(0)  # the turn's flush finds nothing left to send
    assert inner.calls == [("write", b"bye"), ("close", None)]


async def test_a_real_server_answers_through_the_protocol() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b'{"ok": true}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"12")]})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=CoalescingHttpProtocol, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes start-up only as this flag
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # keep-alive: several responses on one connection
                r = await client.get("/")
                assert r.status_code == 200
                assert r.json() == {"ok": True}
    finally:
        server.should_exit = True
        await serving


async def test_an_answer_for_a_client_that_went_away_is_dropped() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"late")
    inner.closing = True
    await asyncio.sleep(0)
    assert inner.calls == []

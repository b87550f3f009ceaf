"""The lean Redis connection (hiredis packs and parses): pipelining, replies in pieces, errors, timeouts and
reconnection, against scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import ResponseError

from hulk.cache.resp import FastConnection, pack, supports
from tests.servers import free_port


def test_pack_writes_an_array_of_bulk_strings() -> None:
    # hiredis packs; the bytes are RESP's, whatever the argument types.
    assert pack(["MGET", "k", b"\x00", 7]) == b"*4\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\n\x00\r\n$1\r\n7\r\n"


def test_only_plain_redis_urls_take_the_lean_connection() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert supports("redis://user:pw@h/2")
    assert not supports("rediss://h:6379/0")
    assert not supports("unix:///tmp/redis.sock")
    assert not supports("redis://h:6379/0?protocol=3")


@asynccontextmanager
async def _server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A scripted server on a free port; `handler` answers each connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def test_replies_split_across_packets_and_pipelined_commands() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readexactly(len(pack(["AUTH", "u", "p"])) + len(pack(["SELECT", 3]))))
        writer.write(b"+OK\r\n+OK\r\n")
        await reader.readexactly(len(pack(["MGET", "a", "b"])) + len(pack(["GET", "c"])))
        for piece in (b"*2\r\n$1", b"\r\nx\r\n$-", b"1\r\n$2\r\nyz\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate packets: the parser must wait for the rest
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://u:p@127.0.0.1:{port}/3", timeout=1.0, connect_timeout=1.0)
        try:
            results: list[object] = list(await asyncio.gather(fast.execute("MGET", "a", "b"), fast.execute("GET", "c")))
            assert results == [[b"x", None], b"yz"]
            assert seen == [pack(["AUTH", "u", "p"]) + pack(["SELECT", 3])]
        finally:
            fast.close()


async def test_an_error_reply_raises_and_the_connection_stays_usable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["GET", "a"])) + len(pack(["GET", "b"])))
        writer.write(b"-WRONGTYPE no\r\n$1\r\nv\r\n")
        await reader.readexactly(len(pack(["GET", "c"])))
        writer.write(b"$1\r\nw\r\n")
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        try:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await fast.pipeline([("GET", "a"), ("GET", "b")])
            assert await fast.execute("GET", "c") == b"w"
        finally:
            fast.close()


async def test_no_reply_in_time_fails_every_waiter_and_the_next_call_reconnects() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.read()  # never answers
            return
        await reader.readexactly(len(pack(["GET", "k"])))
        writer.write(b"$2\r\nok\r\n")
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=0.05, connect_timeout=1.0)
        try:
            outcomes = await asyncio.gather(fast.execute("GET", "a"), fast.execute("GET", "b"), return_exceptions=True)
            assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
            assert await fast.execute("GET", "k") == b"ok"
            assert connections == 2
        finally:
            fast.close()


async def test_a_cancelled_caller_leaves_the_replies_in_order() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["GET", "a"])))
        await reader.readexactly(len(pack(["GET", "b"])))
        writer.write(b"$1\r\nA\r\n$1\r\nB\r\n")
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        try:
            first = asyncio.ensure_future(fast.execute("GET", "a"))
            await asyncio.sleep(0.01)
            first.cancel()
            assert await fast.execute("GET", "b") == b"B"
        finally:
            fast.close()


async def test_a_refused_set_up_and_a_closed_port_raise_connection_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["AUTH", "bad"])))
        writer.write(b"-WRONGPASS invalid\r\n")
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://:bad@127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await fast.execute("GET", "k")
        fast.close()
    closed = FastConnection(f"redis://127.0.0.1:{free_port()}", timeout=1.0, connect_timeout=1.0)
    with pytest.raises(ConnectionRefusedError):
        await closed.execute("GET", "k")
    closed.close()


async def test_a_connection_closed_by_the_server_fails_the_waiters() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["GET", "a"])))

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        try:
            with pytest.raises(ConnectionError):
                await fast.execute("GET", "a")
        finally:
            fast.close()


async def test_a_garbled_reply_drops_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["GET", "a"])))
        writer.write(b"?what\r\n")
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        try:
            with pytest.raises(ConnectionError, match="bad reply"):
                await fast.execute("GET", "a")
        finally:
            fast.close()


async def test_a_large_reply_in_many_small_reads() -> None:
    values = [bytes([65 + i % 26]) * (20_000 + i) for i in range(20)]
    reply = b"*%d\r\n" % len(values) + b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(pack(["MGET", "a"])))
        for start in range(0, len(reply), 4096):
            writer.write(reply[start : start + 4096])
            await writer.drain()
        await reader.read()

    async with _server(handler) as port:
        fast = FastConnection(f"redis://127.0.0.1:{port}", timeout=5.0, connect_timeout=1.0)
        try:
            assert await fast.execute("MGET", "a") == values
        finally:
            fast.close()

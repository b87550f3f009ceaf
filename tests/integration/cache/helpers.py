"""Helpers for the cache's integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from redis.asyncio import Redis


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    """Polls `predicate` until it holds (an event seen from outside), failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[Redis]:
    """A plain client to look at what the cache stored."""
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def stored(raw: Redis, key: str) -> bytes | None:
    """The raw record Redis holds under `key`."""
    value = await raw.get(key)
    assert value is None or isinstance(value, bytes)
    return value

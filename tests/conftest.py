"""Shared pytest fixtures: real servers on free ports, torn down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import RedisServer

if TYPE_CHECKING:
    from hulk.cache import Cache

CacheFactory = Callable[..., "Cache"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test (fault tests may stop and restart it)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def make_cache() -> AsyncIterator[CacheFactory]:
    """Builds `hulk.cache.Cache` objects (not started) and stops every one of them after the test."""
    from hulk.cache import Cache

    made: list[Cache] = []

    def make(**kwargs: Any) -> Cache:
        cache = Cache(**kwargs)
        made.append(cache)
        return cache

    try:
        yield make
    finally:
        for cache in made:
            await cache.stop()

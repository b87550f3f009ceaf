"""Shared pytest fixtures: real servers on free ports, torn down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from hulk.cache import Cache
from tests.servers import RedisServer

CacheFactory = Callable[..., Cache]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test (fault tests may stop and restart it)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def make_cache() -> AsyncIterator[CacheFactory]:
    """Builds `hulk.cache.Cache` objects (not started) and stops every one of them after the test."""
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

"""Shared pytest fixtures: real servers on free ports, torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test (fault tests may stop and restart it)."""
    with RedisServer() as server:
        yield server

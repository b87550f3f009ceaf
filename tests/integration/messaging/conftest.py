"""Fixtures for the NATS integration tests: a private nats-server per test, connections, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.streams import StreamSettings, ensure_streams
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

ConnFactory = Callable[..., Awaitable[NatsConnection]]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private JetStream server on a free port (tests may stop, kill and restart it)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def make_conn(nats_server: NatsServer) -> AsyncIterator[ConnFactory]:
    """Connects to the test server (reconnecting fast); closes every connection after the test."""
    made: list[NatsConnection] = []

    async def make(**kwargs: Any) -> NatsConnection:
        settings = ConnectionSettings(
            urls=(nats_server.url,), reconnect_base=0.05, reconnect_max=0.5, ping_interval=1.0, **kwargs
        )
        conn = NatsConnection(settings)
        await conn.connect(timeout=10)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        await conn.close()


@pytest.fixture
async def conn(make_conn: ConnFactory) -> NatsConnection:
    """A connection to the test server with hulk's streams created."""
    c = await make_conn()
    await ensure_streams(c.js, StreamSettings())
    return c

"""Fixtures of the thor tests: a live API per test, a seeded nats-server per session, a clean environment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from tests.unit.cli.ops_live import LiveApi, nats_server, serve_api


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HULK_URL", "HULK_TOKEN", "HULK_ADMIN_TOKEN", "HULK_TENANT", "HULK_CONFIG", "HULK_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def live() -> Iterator[LiveApi]:
    with serve_api() as api:
        yield api


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        asyncio.run(_seed_nats(url))
        yield url


async def _seed_nats(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="HULK_ENGINE_TASKS", subjects=["hulk.intake.>"]))
        await js.add_stream(StreamConfig(name="HULK_ENGINE_EVENTS", subjects=["hulk.task.*", "hulk.runtime.health"]))
        await js.add_stream(StreamConfig(name="OTHER", subjects=["other.>"]))
        for i in range(5):
            await js.publish("hulk.intake.echo", json.dumps({"n": i}).encode())
        await js.publish("other.x", b"1")
        sub = await js.pull_subscribe("hulk.intake.>", durable="hulk-workers", stream="HULK_ENGINE_TASKS")
        for msg in await sub.fetch(2, timeout=5):
            await msg.ack()
        for msg in await sub.fetch(2, timeout=5):
            await msg.nak()
        outstanding: list[Any] = []  # two redelivered and one new, left unacknowledged
        while len(outstanding) < 3:
            outstanding += await sub.fetch(3 - len(outstanding), timeout=5)
        assert sorted(m.metadata.num_delivered for m in outstanding) == [1, 2, 2]
        beats = [
            {"instance": "a", "interval": 60, "workers": 4, "status": "ready"},
            {"instance": "b", "interval": 60, "workers": 8, "status": "ready"},
            {"instance": "a", "interval": 60, "workers": 4, "status": "draining"},
            {"instance": "c", "interval": 1e-9, "workers": 1, "status": "ready"},
            {"no_instance": True},
        ]
        for beat in beats:
            await js.publish("hulk.runtime.health", json.dumps(beat).encode())
        await js.publish("hulk.runtime.health", b"not json")
    finally:
        await nc.close()

"""Helpers shared by the NATS fault tests: worker subprocesses, reading events back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from nats.errors import Error as NatsError

from hulk.messaging.connection import NatsConnection
from hulk.messaging.streams import STREAM_EVENTS

WORKER = Path(__file__).with_name("worker_script.py")


class WorkerProcess:
    """A worker subprocess (see worker_script.py); its START lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.started: list[tuple[str, int]] = []
        self._reader: asyncio.Task[None] | None = None
        self.first_start = asyncio.Event()

    @classmethod
    async def spawn(cls, urls: list[str], instance: str, data_dir: Path, ack_wait: float = 2.0) -> WorkerProcess:
        root = str(Path(__file__).parents[3])
        env = {**os.environ, "PYTHONPATH": root}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            ",".join(urls),
            instance,
            str(data_dir),
            str(ack_wait),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        w = cls(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"READY", line
        w._reader = asyncio.create_task(w._read())
        return w

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            parts = raw.decode().split()
            if len(parts) == 3 and parts[0] == "START":
                self.started.append((parts[1], int(parts[2])))
                self.first_start.set()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)


async def completed_events(conn: NatsConnection, ids: set[str], timeout: float) -> dict[str, list[dict[str, object]]]:
    """Reads `hulk.task.completed` events until every id in `ids` has one (or `timeout` passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:  # after a node loss the stream may be electing a leader for a few seconds
        try:
            sub = await conn.js.pull_subscribe("hulk.task.completed", stream=STREAM_EVENTS)
            break
        except NatsError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
    out: dict[str, list[dict[str, object]]] = {}
    try:
        while not ids <= out.keys() and loop.time() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except (TimeoutError, NatsError):
                continue
            for m in msgs:
                body = orjson.loads(m.data)
                for ev in body if isinstance(body, list) else [body]:
                    out.setdefault(str(ev["task_id"]), []).append(ev)
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


async def eventually(predicate: Callable[[], bool], timeout: float) -> None:
    """Polls `predicate` until it holds; TimeoutError after `timeout` seconds."""

    async def poll() -> None:
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def stream_drained(conn: NatsConnection, stream: str, timeout: float = 10.0) -> None:
    """Waits until `stream` holds no message (acks reach a work-queue stream asynchronously)."""

    async def poll() -> None:
        while True:
            if not (await conn.js.stream_info(stream)).state.messages:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)

"""The NATS connection of an instance: options, reconnect with backoff forever, state for readiness.

NATS being unavailable is a normal state, not an error: the client reconnects forever with
exponential backoff and jitter (nats-py's `reconnect_to_server_handler`), readiness is False while
disconnected, and one line is logged per outage (not one per failed attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client, Server
from nats.js import JetStreamContext

__all__ = ["ConnectionSettings", "NatsConnection", "backoff_delay"]

log = logging.getLogger("hulk.messaging")


@dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    """How to reach NATS (mapped from configuration).

    Args:
        urls: server URLs (`nats://host:port`, `tls://...`); several for a cluster.
        user: user name (with `password`).
        password: password.
        token: authorization token.
        creds_file: path of a `.creds` file (JWT + NKey).
        tls_ca_file: CA bundle to verify the servers; setting any tls_* option enables TLS.
        tls_cert_file: client certificate (mutual TLS).
        tls_key_file: client key (mutual TLS).
        tls_hostname: server name to verify, when it differs from the URL's host.
        name: connection name shown in the server's monitoring.
        connect_timeout: seconds for one connection attempt.
        reconnect_base: first reconnect delay in seconds; doubles per failed attempt.
        reconnect_max: cap of the reconnect delay in seconds.
        ping_interval: seconds between client pings (detects a dead server).
        pending_size: bytes buffered by the client while reconnecting.

    """

    urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    name: str = "hulk"
    connect_timeout: float = 2.0
    reconnect_base: float = 0.1
    reconnect_max: float = 5.0
    ping_interval: float = 5.0
    pending_size: int = 8 * 1024 * 1024
    extra: dict[str, Any] = field(default_factory=dict)

    def tls_context(self) -> ssl.SSLContext | None:
        """An SSL context when any TLS option is set, else None (plain or `tls://` URL defaults)."""
        if not (self.tls_ca_file or self.tls_cert_file):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file:
            ctx.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return ctx

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect` (callbacks excluded)."""
        opts: dict[str, Any] = {
            "servers": list(self.urls),
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": 2,
            "pending_size": self.pending_size,
            # Subjects are built and checked by hulk (streams.py); nats-py's per-publish regex
            # check would cost the hot path a match per ack.
            "skip_subject_validation": True,
        }
        if self.user is not None:
            opts["user"] = self.user
            opts["password"] = self.password or ""
        if self.token is not None:
            opts["token"] = self.token
        if self.creds_file is not None:
            opts["user_credentials"] = self.creds_file
        tls = self.tls_context()
        if tls is not None:
            opts["tls"] = tls
        if self.tls_hostname is not None:
            opts["tls_hostname"] = self.tls_hostname
        opts.update(self.extra)
        return opts


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Reconnect delay for failed attempt `attempt` (0-based): "equal jitter" exponential backoff."""
    d = min(cap, base * (2.0 ** min(attempt, 30)))
    r = (rng or random).random()
    return d / 2 + r * d / 2


Listener = Callable[[bool], Awaitable[None] | None]


class NatsConnection:
    """One NATS connection with JetStream, reconnecting forever, observable for readiness.

    Args:
        settings: connection settings.

    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self._listeners: list[Listener] = []
        self._outage_logged = False
        self._closing = False
        self.disconnects = 0
        self.reconnects = 0

    @property
    def nc(self) -> Client:
        """The nats-py client (after `connect`)."""
        if self._nc is None:
            raise RuntimeError("NatsConnection.connect() was not called")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (after `connect`)."""
        if self._js is None:
            raise RuntimeError("NatsConnection.connect() was not called")
        return self._js

    @property
    def connected(self) -> bool:
        """True while connected to a server (readiness)."""
        return self._nc is not None and self._nc.is_connected

    def add_listener(self, listener: Listener) -> None:
        """Calls `listener(connected)` on every disconnect (False) and reconnect (True)."""
        self._listeners.append(listener)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Waits until connected.

        Raises:
            TimeoutError: still disconnected after `timeout` seconds.

        """
        if self._connected.is_set() and not self.connected:
            # The client saw the loss before our disconnect callback ran: without this the flag
            # stays set, the wait returns at once, and a caller's retry loop spins the CPU.
            self._connected.clear()
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _pick_server(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        server = min(servers, key=lambda s: s.reconnects)
        return server, backoff_delay(
            server.reconnects, base=self.settings.reconnect_base, cap=self.settings.reconnect_max
        )

    async def connect(self, *, timeout: float | None = None) -> None:
        """Connects, retrying with backoff until it succeeds (or `timeout` seconds pass).

        Raises:
            TimeoutError: not connected within `timeout`.

        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        attempt = 0
        while True:
            nc = Client()
            try:
                # With unlimited reconnects nats-py's first connect retries forever on its own;
                # bound it so this loop's backoff, logging and timeout apply.
                await asyncio.wait_for(
                    nc.connect(
                        **self.settings.connect_options(),
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        reconnect_to_server_handler=self._pick_server,
                    ),
                    self.settings.connect_timeout * len(self.settings.urls) + 1.0,
                )
            except Exception as exc:
                await nc.close()
                if not self._outage_logged:
                    log.warning("NATS unavailable (%s); retrying with backoff", exc)
                    self._outage_logged = True
                delay = backoff_delay(attempt, base=self.settings.reconnect_base, cap=self.settings.reconnect_max)
                attempt += 1
                if deadline is not None and loop.time() + delay > deadline:
                    raise TimeoutError(f"NATS not reachable at {self.settings.urls} within {timeout}s") from exc
                await asyncio.sleep(delay)
                continue
            break
        self._nc = nc
        self._js = nc.jetstream()
        if self._outage_logged:
            log.warning("NATS connected after an outage")
        self._outage_logged = False
        self._connected.set()

    async def _on_error(self, exc: Exception) -> None:
        if not self._outage_logged and not self._closing:
            log.debug("NATS client error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self._connected.clear()
        self.disconnects += 1
        if not self._outage_logged:
            log.warning("NATS disconnected; reconnecting with backoff (readiness false)")
            self._outage_logged = True
        await self._notify(False)

    async def _on_reconnected(self) -> None:
        self._connected.set()
        self.reconnects += 1
        if self._outage_logged:
            log.warning("NATS reconnected")
        self._outage_logged = False
        await self._notify(True)

    async def _notify(self, up: bool) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(up)
                if result is not None:
                    await result
            except Exception:
                log.exception("connection listener failed")

    async def close(self) -> None:
        """Flushes and closes the connection."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), 5.0)
            except Exception:
                # Draining fails when the server is gone; closing must still end the client's tasks.
                with contextlib.suppress(Exception):
                    await self._nc.close()
        self._connected.clear()


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> None:
    """Cancels `task` and waits for it to end, at most `timeout` seconds (never raises)."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=timeout)

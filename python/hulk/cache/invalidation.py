"""Cross-instance invalidation over Redis pub/sub.

An instance that overwrites or deletes keys publishes one message on the channel, in the same
pipeline as the write itself: `{"src": <instance id>, "keys": [<full keys>]}` (orjson). Every other
instance subscribed to the channel drops those keys from its L1 and L3 when the message arrives.

A flush (`Cache.flush`) publishes `{"src": <instance id>, "keys": [], "flush": <namespace or null>}`:
every other instance drops that namespace (null: everything) from its L1 and L3. An older subscriber
reads it as an invalidation of no key and ignores it.

The bound (documented in `hulk.cache`): while an instance's subscription is up, it stops serving an
overwritten or deleted key from L1 as soon as the message arrives, one Redis hop after the write
(well under a millisecond on a LAN); a read that was in flight when the message arrived does not put
what it read into L1. Pub/sub is fire-and-forget, so a subscriber that was disconnected may have
missed messages: when it subscribes again it clears its whole L1. Whatever happens, no L1 entry is
older than `l1_ttl`, which is the hard bound (for example while Redis itself is down and no message
can be sent at all).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hulk.cache._tasks import stop_task

log = structlog.get_logger("hulk.cache.invalidation")


def encode_message(source: str, keys: list[str]) -> bytes:
    """The invalidation message for `keys`, written by instance `source`."""
    return orjson.dumps({"src": source, "keys": keys})


def encode_flush_message(source: str, namespace: str | None, at: float = 0.0) -> bytes:
    """The message that tells the other instances to drop `namespace` (None: every namespace), flushed at `at`."""
    return orjson.dumps({"src": source, "keys": [], "flush": namespace, "at": at})


class Invalidation(NamedTuple):
    """A decoded message.

    Attributes:
        source: the id of the instance that sent it.
        keys: the full keys ("<namespace>:<key>") to drop.
        flush: True when the message is a flush of `namespace`.
        namespace: the flushed namespace, None for every namespace (only meaningful with `flush`).
        at: when the flush was made (wall-clock epoch seconds; 0.0 when the sender did not say).
    """

    source: str
    keys: list[str]
    flush: bool = False
    namespace: str | None = None
    at: float = 0.0


def parse_message(data: bytes) -> Invalidation | None:
    """The invalidation or flush carried by a message, or None when it is malformed."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    source, keys = message.get("src"), message.get("keys")
    if not isinstance(source, str) or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return None
    if "flush" not in message:
        return Invalidation(source, keys)
    namespace, at = message["flush"], message.get("at", 0.0)
    if (namespace is not None and not isinstance(namespace, str)) or not isinstance(at, int | float):
        return None
    return Invalidation(source, keys, True, namespace, float(at))


def decode_message(data: bytes) -> tuple[str, list[str]] | None:
    """(source, keys) of a message, or None when it is malformed."""
    parsed = parse_message(data)
    return None if parsed is None else (parsed.source, parsed.keys)


class Subscriber:
    """Listens on the invalidation channel and calls back for every key another instance changed.

    Args:
        client: the Redis client (its pool provides the subscription's connection).
        channel: the channel name.
        instance_id: this instance's id (its own messages are ignored).
        on_keys: called with the keys of each message from another instance.
        on_gap: called after (re)subscribing when messages may have been missed.
        on_flush: called with the namespace (None: all) and the time of each flush from another instance.
        is_up: tells whether L2 is believed reachable (the subscriber waits while it is not).
        retry_interval: seconds between subscription attempts while they fail.
    """

    def __init__(
        self,
        client: Redis,
        channel: str,
        *,
        instance_id: str,
        on_keys: Callable[[list[str]], None],
        on_gap: Callable[[], None],
        on_flush: Callable[[str | None, float], None] | None = None,
        is_up: Callable[[], bool],
        retry_interval: float = 0.5,
    ) -> None:
        self.client = client
        self.channel = channel
        self.instance_id = instance_id
        self._on_keys = on_keys
        self._on_gap = on_gap
        self._on_flush = on_flush
        self._is_up = is_up
        self.retry_interval = retry_interval
        self.subscribed = False
        self.received = 0
        self.malformed = 0
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._up = asyncio.Event()

    def start(self) -> None:
        """Starts listening in a background task."""
        self._task = asyncio.create_task(self._run(), name="hulk-cache-invalidation")

    async def wait_subscribed(self, timeout: float) -> bool:
        """Waits until the first subscription is in place (or `timeout` seconds); True if it is."""
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def notify_up(self) -> None:
        """Wakes the subscriber after L2 came back."""
        self._up.set()

    async def close(self) -> None:
        """Stops listening."""
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        gap = False
        while True:
            if not self._is_up():
                self._up.clear()
                if not self._is_up():
                    await self._up.wait()
                gap = True
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                if gap:
                    self.reconnects += 1
                    self._on_gap()
                self._first.set()
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("cache.invalidation.disconnected", channel=self.channel, error=str(exc))
                self.subscribed = False
                gap = True
                # Redis may answer data calls but not this one: try again after a pause, not in a spin.
                await asyncio.sleep(self.retry_interval)
            finally:
                self.subscribed = False
                with contextlib.suppress(RedisError, OSError):
                    # Through Any: redis-py annotates `aclose` in some releases and not in others.
                    await cast(Any, pubsub).aclose()

    async def _listen(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                if not self._is_up():
                    raise ConnectionError("L2 is down")
                continue
            if message.get("type") != "message":
                continue
            decoded = parse_message(message["data"])
            if decoded is None:
                self.malformed += 1
                continue
            if decoded.source == self.instance_id:
                continue
            self.received += 1
            if decoded.flush:
                if self._on_flush is not None:
                    self._on_flush(decoded.namespace, decoded.at)
            else:
                self._on_keys(decoded.keys)

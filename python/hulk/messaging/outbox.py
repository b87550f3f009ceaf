"""A local durable outbox (RocksDB through rocksdict): what could not reach NATS waits here, in order.

Entries are keyed by a big-endian sequence number, so RocksDB's key order is the order they were
produced in; replay publishes from the oldest and deletes each entry only after NATS acknowledged
it, so a crash during replay repeats at most the entry in flight (and its `Nats-Msg-Id` lets the
server drop that duplicate). Writes go to RocksDB's write-ahead log, which survives a process
crash.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import orjson
from rocksdict import Options, Rdict

__all__ = ["Outbox", "OutboxEntry"]

_SEQ = struct.Struct(">Q")
_LEN = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message waiting for NATS."""

    seq: int
    subject: str
    payload: bytes
    headers: dict[str, str]


def _encode(subject: str, payload: bytes, headers: dict[str, str]) -> bytes:
    s = subject.encode()
    h = orjson.dumps(headers)
    return _LEN.pack(len(s), len(h)) + s + h + payload


def _decode(seq: int, raw: bytes) -> OutboxEntry:
    ls, lh = _LEN.unpack_from(raw)
    o = _LEN.size
    subject = raw[o : o + ls].decode()
    headers = orjson.loads(raw[o + ls : o + ls + lh])
    return OutboxEntry(seq, subject, bytes(raw[o + ls + lh :]), headers)


class Outbox:
    """An ordered, durable FIFO of messages on local disk.

    Args:
        path: directory of the RocksDB database (created if missing).

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(self.path), options=opts)
        self._next = self._last_seq() + 1
        self._count = sum(1 for _ in self._db.items())

    def _last_seq(self) -> int:
        it = self._db.iter()
        it.seek_to_last()
        if not it.valid():
            return 0
        key = it.key()
        return int(_SEQ.unpack(key)[0])

    def __len__(self) -> int:
        return self._count

    def append(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Stores one message at the end; returns its sequence number."""
        seq = self._next
        self._next += 1
        self._db[_SEQ.pack(seq)] = _encode(subject, payload, headers)
        self._count += 1
        return seq

    def entries(self, limit: int | None = None) -> Iterator[OutboxEntry]:
        """The stored messages, oldest first (at most `limit`)."""
        for n, (key, raw) in enumerate(self._db.items()):
            if limit is not None and n >= limit:
                return
            yield _decode(int(_SEQ.unpack(cast(bytes, key))[0]), cast(bytes, raw))

    def remove(self, seq: int) -> None:
        """Deletes one message (after NATS acknowledged it)."""
        key = _SEQ.pack(seq)
        if self._db.get(key) is not None:
            del self._db[key]
            self._count -= 1

    async def replay(self, publish: Callable[[OutboxEntry], Awaitable[None]], *, batch: int = 256) -> int:
        """Publishes every stored message in order, removing each once `publish` returned.

        Stops at the first failure (the exception propagates), leaving that message and the ones
        after it in place, so order is kept.

        Returns:
            How many messages were replayed.

        """
        done = 0
        while True:
            chunk = list(self.entries(batch))
            if not chunk:
                return done
            for entry in chunk:
                await publish(entry)
                self.remove(entry.seq)
                done += 1

    def close(self) -> None:
        """Flushes and closes the database."""
        self._db.flush()
        self._db.close()

"""L3: on-disk snapshots of hot entries in RocksDB (through rocksdict), kept across restarts.

Writes are write-behind: every entry that enters L1 (set, computed or back-filled) and every delete
or invalidation is staged in memory, and the stage is written to RocksDB as one batch periodically,
when it grows past `max_pending`, and at shutdown. Reads look at the stage first, so L3 never serves
a value older than the last write made through this instance. Every RocksDB call runs on one worker
thread: the event loop never blocks on the disk. An in-memory set of the keys on disk lets a lookup of
an absent key (the usual case for a new key) answer at once, without the trip to that thread; it
costs about 100 bytes per entry, and L3 only holds what entered L1 within the entries' TTLs.

A database that cannot be opened (corrupt files, a file where the directory should be, another
process holding its lock) is reported, moved aside to `<path>.corrupt-<timestamp>`, and replaced by an
empty one; if even that fails, L3 is disabled and the cache runs on its other levels. Start-up never
crashes because of L3.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog
from rocksdict import Options, Rdict, WriteBatch

from hulk.cache.codec import CorruptRecord, expires_at_of

T = TypeVar("T")

L3Status = Literal["disabled", "closed", "ok", "recovered", "failed"]

log = structlog.get_logger("hulk.cache.l3")


class RocksLevel:
    """The L3 level over one RocksDB directory.

    Args:
        path: the database directory (created when missing).
        max_pending: staged writes that trigger an early snapshot.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pending: int = 10_000) -> None:
        self.path = Path(path)
        self.max_pending = max_pending
        self.status: L3Status = "closed"
        self.error: str | None = None
        self.set_aside: list[str] = []
        self.corrupt_records = 0
        self.meta: dict[str, bytes] = {}
        """The metadata records read when the database was opened (see `put_meta`)."""
        self._db: Any = None
        self._keys: set[bytes] = set()
        self._pending: dict[bytes, bytes | None] = {}
        self._flushing: dict[bytes, bytes | None] = {}
        # Key ranges [begin, end) dropped by `drop_prefix`, deleted on disk by the next snapshot,
        # before (in the same batch as) the writes staged after the drop.
        self._ranges: list[tuple[bytes, bytes]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._flush_lock = asyncio.Lock()
        self.flush_wanted = asyncio.Event()

    @property
    def available(self) -> bool:
        """True when the database is open."""
        return self._db is not None

    @property
    def pending(self) -> int:
        """Staged writes not yet in RocksDB."""
        return len(self._pending) + len(self._flushing)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> L3Status:
        """Opens the database, setting a corrupt or unreadable one aside. Never raises for disk errors.

        Returns:
            "ok", "recovered" (the old database was set aside) or "failed" (L3 disabled).
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hulk-cache-l3")
        self.status = await self._run(self._open_sync)
        return self.status

    def _open_sync(self) -> L3Status:
        try:
            self._db = _open_rdict(self.path)
            self._keys = set()
            for key in self._db.keys():  # noqa: SIM118  # a raw-mode Rdict cannot be iterated directly
                if key.startswith(_META):
                    self.meta[key[len(_META) :].decode(errors="replace")] = self._db[key]
                else:
                    self._keys.add(key)
            return "ok"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.meta = {}
            log.error("cache.l3.unreadable", path=str(self.path), error=self.error)
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            if self.path.exists():
                os.replace(self.path, aside)
                self.set_aside.append(str(aside))
                log.warning("cache.l3.set_aside", path=str(self.path), moved_to=str(aside))
            self._db = _open_rdict(self.path)
            return "recovered"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("cache.l3.disabled", path=str(self.path), error=self.error)
            self._db = None
            return "failed"

    def put(self, key: bytes, record: bytes) -> None:
        """Stages `record` under `key` for the next snapshot."""
        if self._db is not None:
            self._pending[key] = record
            self._keys.add(key)
            if len(self._pending) >= self.max_pending:
                self.flush_wanted.set()

    def delete(self, key: bytes) -> None:
        """Stages the removal of `key`."""
        if self._db is not None:
            self._pending[key] = None
            self._keys.discard(key)
            if len(self._pending) >= self.max_pending:
                self.flush_wanted.set()

    def _staged(self, key: bytes) -> tuple[bool, bytes | None]:
        if key in self._pending:
            return True, self._pending[key]
        if key in self._flushing:
            return True, self._flushing[key]
        return False, None

    def put_meta(self, name: str, value: bytes) -> None:
        """Stages a metadata record (kept apart from the entries: never read as one, never dropped)."""
        if self._db is not None:
            self.meta[name] = value
            self._pending[_META + name.encode()] = value

    def drop_prefix(self, prefix: bytes | None) -> int:
        """Removes every entry whose key starts with `prefix` (every entry when None).

        The entries disappear for readers at once (the in-memory key set and the stage forget them);
        the disk is cleaned by the next snapshot with one range delete, written before anything
        staged afterwards, so a value written after the drop survives it.

        Returns:
            How many entries L3 held under the prefix (on disk or staged).
        """
        if self._db is None:
            return 0
        if prefix is None:
            dropped = len(self._keys)
            self._keys = set()
            self._pending = {}
            self._flushing = {}  # the snapshot in progress keeps its own reference to what it writes
            # Every key is "<namespace>:<key>" in UTF-8 and namespaces are ASCII: all sort below 0xff.
            self._ranges.append((_FIRST_ENTRY, b"\xff"))
        else:
            doomed = {key for key in self._keys if key.startswith(prefix)}
            dropped = len(doomed)
            self._keys -= doomed
            self._pending = {k: v for k, v in self._pending.items() if not k.startswith(prefix)}
            self._flushing = {k: v for k, v in self._flushing.items() if not k.startswith(prefix)}
            self._ranges.append((prefix, _prefix_end(prefix)))
        self.flush_wanted.set()
        return dropped

    def _lookup_in_memory(self, key: bytes) -> tuple[bool, bytes | None]:
        """(answered, record) without touching the disk: from the stage, the key set or the block cache."""
        staged, record = self._staged(key)
        if staged or key not in self._keys:
            return True, record
        # RocksDB's KeyMayExist reads only the memtables and the block cache (no IO): a hot key
        # is answered here, skipping the hop to the worker thread, which costs more than the read.
        found = self._db.key_may_exist(key, True)
        if found[1] is not None:
            value: bytes = found[1]
            return True, value
        return not found[0], None

    async def get(self, key: bytes) -> bytes | None:
        """The record of `key`, from the stage or the disk; None when absent (or L3 is disabled)."""
        if self._db is None:
            return None
        answered, record = self._lookup_in_memory(key)
        if answered:
            return record
        return await self._run(self._get_sync, key)

    def _get_sync(self, key: bytes) -> bytes | None:
        db = self._db
        if db is None:
            return None
        value: bytes | None = db.get(key)
        return value

    async def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The records found among `keys` (absent keys are left out)."""
        if self._db is None:
            return {}
        found: dict[bytes, bytes] = {}
        rest: list[bytes] = []
        for key in keys:
            answered, record = self._lookup_in_memory(key)
            if not answered:
                rest.append(key)
            elif record is not None:
                found[key] = record
        if rest:
            found.update(await self._run(self._get_many_sync, rest))
        return found

    def _get_many_sync(self, keys: list[bytes]) -> dict[bytes, bytes]:
        db = self._db
        if db is None:
            return {}
        values: list[bytes | None] = db.get(keys)
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    async def flush(self) -> int:
        """Writes the staged entries to RocksDB in one batch.

        Returns:
            How many entries were written (0 when nothing was staged or L3 is disabled).
        """
        async with self._flush_lock:
            if self._db is None or not (self._pending or self._ranges):
                self.flush_wanted.clear()
                return 0
            self._flushing, self._pending = self._pending, {}
            ranges, self._ranges = self._ranges, []
            self.flush_wanted.clear()
            try:
                # Shielded: cancelling a job the worker thread has not started would drop the batch
                # (run_in_executor cancels it), and the stage no longer holds it.
                await asyncio.shield(self._run(self._write_sync, self._db, self._flushing, ranges))
            except Exception as exc:
                # Keep what could not be written, unless a newer write replaced it meanwhile.
                self._ranges[:0] = ranges
                for key, record in self._flushing.items():
                    self._pending.setdefault(key, record)
                log.error("cache.l3.snapshot_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}")
                raise
            finally:
                written = len(self._flushing)
                self._flushing = {}
            return written

    @staticmethod
    def _write_sync(db: Any, entries: dict[bytes, bytes | None], ranges: list[tuple[bytes, bytes]]) -> None:
        # `db` is the database of when the batch was taken: a close queued behind this job has
        # already cleared `self._db`, and the batch must still be written before it.
        batch = WriteBatch(raw_mode=True)
        for begin, end in ranges:
            batch.delete_range(begin, end)
        for key, record in entries.items():
            if record is None:
                batch.delete(key)
            else:
                batch.put(key, record)
        db.write(batch)

    async def load_hot(self, limit: int, now: float) -> list[tuple[bytes, bytes]]:
        """Reads the live entries to warm L1 with, dropping expired and corrupt ones from the disk.

        Args:
            limit: at most this many entries (those that live longest are kept).
            now: wall-clock seconds, to judge expiry.

        Returns:
            (key, record) pairs.
        """
        if self._db is None or limit <= 0:
            return []
        hot, dropped = await self._run(self._load_hot_sync, limit, now)
        self._keys.difference_update(dropped)
        # A key dropped by `drop_prefix` may still be on disk until the next snapshot.
        return [(key, record) for key, record in hot if key in self._keys]

    def _load_hot_sync(self, limit: int, now: float) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        db = self._db
        if db is None:
            return [], []
        doomed = WriteBatch(raw_mode=True)
        dropped: list[bytes] = []
        live: list[tuple[float, bytes, bytes]] = []
        for key, record in db.items(from_key=_FIRST_ENTRY):
            try:
                expires_at = expires_at_of(record)
            except CorruptRecord:
                self.corrupt_records += 1
                doomed.delete(key)
                dropped.append(key)
                continue
            if expires_at and expires_at <= now:
                doomed.delete(key)
                dropped.append(key)
                continue
            live.append((expires_at or float("inf"), key, record))
        if dropped:
            db.write(doomed)
        hot = [(key, record) for _, key, record in heapq.nlargest(limit, live, key=lambda item: item[0])]
        return hot, dropped

    async def close(self) -> None:
        """Writes the staged entries, then closes the database and its worker thread."""
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self.flush()
            db, self._db = self._db, None
            await self._run(_close_rdict, db)
            self.status = "closed"
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def note_corrupt(self, keys: Iterable[bytes]) -> None:
        """Counts records found corrupt on read and stages their removal."""
        for key in keys:
            self.corrupt_records += 1
            self.delete(key)


# Metadata keys start with a byte no namespace can start with, and sort before every entry.
_META = b"\x00meta:"
_FIRST_ENTRY = b"\x01"


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with `prefix` (which ends below 0xff: ":")."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _open_rdict(path: Path) -> Any:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return Rdict(str(path), options=options)


def _close_rdict(db: Any) -> None:
    db.flush()
    db.close()

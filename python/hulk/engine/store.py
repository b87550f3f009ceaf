"""Where task status and results are kept: the `StatusStore` protocol and a bounded in-memory store.

The pool feeds the store the same batches of `TaskEvent`s it gives the event sink, through the
non-blocking `record`; reads are async so a networked store (the NATS KV one of the messaging
layer) fits the same protocol. Cancelling goes through the engine (`Hulk.cancel`), not the store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from hulk._native import tasks_entering
from hulk.engine.clock import Clock, SystemClock
from hulk.engine.errors import TaskNotFound
from hulk.engine.events import TaskEvent
from hulk.engine.task import TERMINAL, Task, TaskStatus

__all__ = ["InMemoryStatusStore", "StatusStore"]

_RUNNING = TaskStatus.RUNNING
_RETRYING = TaskStatus.RETRYING
_QUEUED = TaskStatus.QUEUED
_SCHEDULED = TaskStatus.SCHEDULED
_SUCCEEDED = TaskStatus.SUCCEEDED
_DEAD = TaskStatus.DEAD
_CANCELLED = TaskStatus.CANCELLED
_ENDED = (_SUCCEEDED, _DEAD, _CANCELLED)
_DEAD_ONLY = (_DEAD,)
_NEW = (_QUEUED, _SCHEDULED)
# Evicted tasks are cut off the front of the finished line in one slice once this many are
# behind its head: few enough that evicted tasks are freed soon (their memory is reused while
# warm), many enough that moving the kept ones down costs little per task.
_COMPACT = 512


@runtime_checkable
class StatusStore(Protocol):
    """Keeps each task's latest status and outcome.

    `record` is called on the event loop with every batch of transitions, in order; it must not
    block (a networked store writes behind, coalescing a batch to the last state of each task).
    """

    def record(self, events: Sequence[TaskEvent]) -> None:
        """Takes one batch of transitions."""
        ...

    async def get(self, task_id: str) -> Task | None:
        """A copy of the task's record, or None when unknown or expired."""
        ...

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Waits until the task is terminal and returns a copy of its record.

        Raises:
            TaskNotFound: the id is unknown.
            TimeoutError: not terminal after `timeout` seconds (None: no limit).
        """
        ...

    async def dead(self, limit: int = 100) -> list[Task]:
        """The most recent dead tasks, newest first."""
        ...


class InMemoryStatusStore:
    """A `StatusStore` in a dict, bounded and with a TTL.

    Tasks are indexed when they enter the queue (or a delay) and kept until terminal; finished
    ones leave in finishing order once more than `capacity` are kept, or `ttl` seconds after their
    `finished_at` (checked on each `record`; a terminal task without `finished_at` expires at
    once), so memory stays bounded. `get` and `wait` return snapshots, never the live record.

    When the engine gives it `live` (its own index of unfinished tasks, as `Hulk` does), the store
    indexes only finished tasks and asks `live` about the others: one dictionary write fewer per
    task on the hot path.

    Args:
        capacity: finished tasks kept at most.
        ttl: seconds a finished task is kept.
        clock: the clock measuring the TTL (the engine's, so a fake clock drives expiry in tests).
        live: looks up an unfinished task by id (None: the store indexes every task itself).
    """

    def __init__(
        self,
        capacity: int = 10_000,
        ttl: float = 3600.0,
        *,
        clock: Clock | None = None,
        live: Callable[[str], Task | None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"InMemoryStatusStore(capacity) must be >= 1, got {capacity}")
        if not ttl >= 0:
            raise ValueError(f"InMemoryStatusStore(ttl) must be >= 0 seconds, got {ttl}")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock if clock is not None else SystemClock()
        self._tasks: dict[str, Task] = {}
        # Finished tasks in finishing order: `_finished[_head:]` are kept, the ones before the
        # head are evicted (cut off in one slice now and then, not popped one by one).
        self._finished: list[Task] = []
        self._head = 0
        # Finished tasks are indexed by id only when someone reads: `_evicted` counts the tasks
        # that left the front of the line, `_indexed` those (from the front) already in `_tasks`.
        self._evicted = 0
        self._indexed = 0
        self._dead: deque[Task] = deque(maxlen=capacity)
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}
        self.live = live

    def __len__(self) -> int:
        self._catch_up()
        return len(self._tasks)

    def _catch_up(self) -> None:
        finished = self._finished
        start = self._head + self._indexed - self._evicted
        if start < len(finished):
            tasks = self._tasks
            for task in finished[start:]:
                tasks[task.id] = task
            self._indexed = self._evicted + len(finished) - self._head

    def record(self, events: Sequence[TaskEvent]) -> None:
        """Files finished tasks (waking their waiters), and indexes new ones when there is no `live`.

        Finished tasks join a line in finishing order; they are indexed by id on the first read
        after they finished, so a store nobody reads costs no dictionary work per task. The
        events are picked natively (`tasks_entering`): no Python work per event that changes
        nothing here (running, retrying, and queued or scheduled when there is `live`).
        """
        if self.live is None:
            tasks = self._tasks
            for task in tasks_entering(events, _NEW):
                tasks[task.id] = task
        ended = tasks_entering(events, _ENDED)
        if not ended:
            return
        # Tasks, not tuples: one object fewer per kept task for the garbage collector to walk.
        self._finished.extend(ended)
        dead = tasks_entering(events, _DEAD_ONLY)
        if dead:
            self._dead.extend(dead)
        if self._waiters:
            for task in ended:
                self._wake(task)
        self._prune(self._clock.monotonic() + self._clock.wall_offset())

    def _wake(self, task: Task) -> None:
        waiters = self._waiters.pop(task.id, None)
        if waiters:
            snapshot = task.snapshot()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(snapshot)

    def _prune(self, wall: float) -> None:
        excess = len(self._finished) - self._head - self.capacity
        if excess > 0:
            self._evict(excess)
        cutoff = wall - self.ttl
        finished = self._finished
        end = len(finished)
        index = head = self._head
        while index < end and (finished[index].finished_at or 0.0) <= cutoff:
            index += 1
        if index > head:
            self._evict(index - head)

    def _evict(self, count: int) -> None:
        finished = self._finished
        head = self._head
        # Only indexed tasks are in the dictionary (all of them when there is no `live`).
        indexed = count if self.live is None else min(count, self._indexed - self._evicted)
        if indexed > 0:
            tasks = self._tasks
            for task in finished[head : head + indexed]:
                # A newer record under the same id (a resubmitted task) stays.
                if tasks.get(task.id) is task:
                    del tasks[task.id]
        head += count
        if head >= _COMPACT:
            del finished[:head]
            head = 0
        self._head = head
        self._evicted += count
        if self._indexed < self._evicted:
            self._indexed = self._evicted

    def expire(self) -> None:
        """Drops the finished tasks whose TTL has passed (also done on every `record`)."""
        self._prune(self._clock.monotonic() + self._clock.wall_offset())

    def peek(self, task_id: str) -> Task | None:
        """The record of `task_id` without copying (read-only use), or None."""
        self._catch_up()
        task = self._tasks.get(task_id)
        if task is None and self.live is not None:
            task = self.live(task_id)
        return task

    async def get(self, task_id: str) -> Task | None:
        """A snapshot of the task, or None when unknown or expired."""
        task = self.peek(task_id)
        return None if task is None else task.snapshot()

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Waits for a terminal status (see `StatusStore.wait`); `timeout` is in event-loop seconds."""
        task = self.peek(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        if task.status in TERMINAL:
            return task.snapshot()
        fut: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(task_id, [])
        waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._waiters.get(task_id) is waiters:
                del self._waiters[task_id]

    async def dead(self, limit: int = 100) -> list[Task]:
        """The most recent dead tasks still kept, newest first."""
        self._catch_up()
        out: list[Task] = []
        for task in reversed(self._dead):
            if len(out) >= limit:
                break
            if self._tasks.get(task.id) is task:
                out.append(task.snapshot())
        return out

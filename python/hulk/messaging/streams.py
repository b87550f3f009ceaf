"""hulk's JetStream layout: stream names, subjects, configurations, and their idempotent creation.

The blueprint names its streams with dots (`hulk.engine.tasks`), which JetStream forbids in stream
names; each maps to an upper-case name with underscores (see `BLUEPRINT_NAMES` and
docs/messaging.md). No subject is bound to two streams.

| stream                 | blueprint              | subjects                                             | retention  |
|------------------------|------------------------|------------------------------------------------------|------------|
| `HULK_ENGINE_TASKS`    | `hulk.engine.tasks`    | `hulk.intake.>` (one subject per task type)          | work queue |
| `HULK_ENGINE_EVENTS`   | `hulk.engine.events`   | `hulk.task.*`, `hulk.scheduler.tick`, `...health`    | limits     |
| `HULK_SCHEDULER_QUEUE` | `hulk.scheduler.queue` | `hulk.scheduler.delayed.*`, `hulk.scheduler.cron.*`  | limits     |
| `HULK_ERRORS`          | `hulk.errors`          | `hulk.errors.dead.>`, `hulk.errors.poison`           | limits     |
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.manager import JetStreamManager

from hulk.errors import HulkError

__all__ = [
    "BLUEPRINT_NAMES",
    "INTAKE_CONSUMER",
    "STREAM_ERRORS",
    "STREAM_EVENTS",
    "STREAM_SCHEDULER",
    "STREAM_TASKS",
    "SUBJECT_DEAD_PREFIX",
    "SUBJECT_HEALTH",
    "SUBJECT_INTAKE_ALL",
    "SUBJECT_POISON",
    "SUBJECT_TASK_COMPLETED",
    "SUBJECT_TASK_CREATED",
    "SUBJECT_TASK_FAILED",
    "SUBJECT_TICK",
    "ConfigMismatch",
    "StreamSettings",
    "dead_letter_subject",
    "ensure_intake_consumer",
    "ensure_streams",
    "event_subject",
    "intake_consumer_config",
    "intake_subject",
    "stream_configs",
    "validate_task_type",
]

log = logging.getLogger("hulk.messaging")

STREAM_TASKS = "HULK_ENGINE_TASKS"
STREAM_EVENTS = "HULK_ENGINE_EVENTS"
STREAM_SCHEDULER = "HULK_SCHEDULER_QUEUE"
STREAM_ERRORS = "HULK_ERRORS"

BLUEPRINT_NAMES: dict[str, str] = {
    "hulk.engine.tasks": STREAM_TASKS,
    "hulk.engine.events": STREAM_EVENTS,
    "hulk.scheduler.queue": STREAM_SCHEDULER,
    "hulk.errors": STREAM_ERRORS,
}
"""Blueprint stream name -> JetStream stream name."""

SUBJECT_INTAKE_PREFIX = "hulk.intake"
SUBJECT_INTAKE_ALL = "hulk.intake.>"
SUBJECT_TASK_CREATED = "hulk.task.created"
SUBJECT_TASK_COMPLETED = "hulk.task.completed"
SUBJECT_TASK_FAILED = "hulk.task.failed"
SUBJECT_TICK = "hulk.scheduler.tick"
SUBJECT_HEALTH = "hulk.runtime.health"
SUBJECT_DELAYED_PREFIX = "hulk.scheduler.delayed"
SUBJECT_CRON_PREFIX = "hulk.scheduler.cron"
SUBJECT_DEAD_PREFIX = "hulk.errors.dead"
SUBJECT_POISON = "hulk.errors.poison"

INTAKE_CONSUMER = "hulk-workers"
"""Durable pull consumer shared by every instance: one message, one instance."""

_TYPE_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_KIND_RE = re.compile(r"^[a-z_]+$")


class ConfigMismatch(HulkError):
    """A stream or consumer exists with a configuration other than hulk's; nothing was overwritten.

    Attributes:
        name: the stream (or `stream/consumer`) name.
        differences: `{field: (found, wanted)}`.

    """

    def __init__(self, name: str, differences: dict[str, tuple[Any, Any]]) -> None:
        self.name = name
        self.differences = differences
        listed = "; ".join(f"{k}: found {found!r}, wanted {want!r}" for k, (found, want) in differences.items())
        super().__init__(f"{name} exists with another configuration ({listed}); pass update=True to apply hulk's")


@functools.lru_cache(maxsize=4096)
def validate_task_type(task_type: str) -> str:
    """Returns `task_type` if it can be a subject suffix: dot-separated tokens of [A-Za-z0-9_-].

    Raises:
        ValueError: wildcards, spaces, empty tokens or other characters.

    """
    if not _TYPE_RE.match(task_type):
        raise ValueError(f"task_type must be dot-separated tokens of [A-Za-z0-9_-], got {task_type!r}")
    return task_type


@functools.cache
def intake_subject(task_type: str) -> str:
    """Intake subject of a task type (`hulk.intake.<type>`), so consumers can filter by type."""
    return f"{SUBJECT_INTAKE_PREFIX}.{validate_task_type(task_type)}"


@functools.cache
def event_subject(kind: str) -> str:
    """Event subject of a task transition (`hulk.task.<kind>`, e.g. created, completed, failed)."""
    if not _KIND_RE.match(kind):
        raise ValueError(f"event kind must match [a-z_]+, got {kind!r}")
    return f"hulk.task.{kind}"


def dead_letter_subject(task_type: str | None) -> str:
    """Dead-letter subject of a task type; the poison subject when the type is unknown."""
    if task_type is None or not _TYPE_RE.match(task_type):
        return SUBJECT_POISON
    return f"{SUBJECT_DEAD_PREFIX}.{task_type}"


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """Operator-set limits of hulk's streams (mapped from configuration).

    Args:
        replicas: stream replicas (1 for one server, 3 for an R3 cluster).
        max_age: seconds events, errors and scheduler entries are kept (0: forever); intake tasks
            never age out.
        max_bytes: byte limit per stream (-1: none). A full intake stream refuses new tasks.
        duplicate_window: seconds within which a repeated `Nats-Msg-Id` is dropped.
        intake_max_msgs: message limit of the intake stream (-1: none); producers get an error past it.
        storage: "file" or "memory".

    """

    replicas: int = 1
    max_age: float = 7 * 24 * 3600.0
    max_bytes: int = -1
    duplicate_window: float = 120.0
    intake_max_msgs: int = -1
    storage: str = "file"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.replicas > 5:
            raise ValueError(f"replicas must be 1..5, got {self.replicas}")
        if self.max_age < 0 or math.isnan(self.max_age):
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if self.duplicate_window <= 0:
            raise ValueError(f"duplicate_window must be > 0, got {self.duplicate_window}")
        if self.max_age and self.duplicate_window > self.max_age:
            raise ValueError(f"duplicate_window ({self.duplicate_window}) must be <= max_age ({self.max_age})")
        if self.storage not in ("file", "memory"):
            raise ValueError(f"storage must be 'file' or 'memory', got {self.storage!r}")


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    """The four stream configurations for `settings`, in creation order."""
    storage = StorageType(settings.storage)
    common: dict[str, Any] = {
        "num_replicas": settings.replicas,
        "storage": storage,
        "max_bytes": settings.max_bytes,
        "duplicate_window": settings.duplicate_window,
    }
    return [
        StreamConfig(
            name=STREAM_TASKS,
            description="hulk.engine.tasks: task intake, one subject per task type",
            subjects=[SUBJECT_INTAKE_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            max_msgs=settings.intake_max_msgs,
            max_age=0,
            **common,
        ),
        StreamConfig(
            name=STREAM_EVENTS,
            description="hulk.engine.events: task transitions, scheduler ticks, instance heartbeats",
            subjects=["hulk.task.*", SUBJECT_TICK, SUBJECT_HEALTH],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=settings.max_age,
            **common,
        ),
        StreamConfig(
            name=STREAM_SCHEDULER,
            description="hulk.scheduler.queue: delayed and periodic (cron) tasks",
            subjects=[f"{SUBJECT_DELAYED_PREFIX}.*", f"{SUBJECT_CRON_PREFIX}.*"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            # One entry per delayed task id / cron name: writing it again replaces it.
            max_msgs_per_subject=1,
            max_age=0,
            **common,
        ),
        StreamConfig(
            name=STREAM_ERRORS,
            description="hulk.errors: dead letters (per task type) and poison messages",
            subjects=[f"{SUBJECT_DEAD_PREFIX}.>", SUBJECT_POISON],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=settings.max_age,
            **common,
        ),
    ]


_STREAM_FIELDS = (
    "subjects",
    "retention",
    "discard",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_msgs_per_subject",
    "duplicate_window",
    "num_replicas",
    "storage",
)


def _norm(name: str, value: Any) -> Any:
    if name == "subjects":
        return sorted(value or [])
    if name in ("max_age", "duplicate_window", "ack_wait"):
        return round(float(value or 0), 3)
    if name in ("max_msgs", "max_bytes", "max_deliver", "max_msgs_per_subject") and value in (None, 0):
        return -1
    if hasattr(value, "value"):
        return value.value
    return value


def _diff(found: Any, wanted: Any, fields: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for name in fields:
        want = getattr(wanted, name)
        if want is None:
            continue
        a, b = _norm(name, getattr(found, name)), _norm(name, want)
        if a != b:
            out[name] = (a, b)
    return out


async def ensure_streams(jsm: JetStreamManager, settings: StreamSettings, *, update: bool = False) -> dict[str, str]:
    """Creates hulk's streams, or checks the ones that exist (idempotent; safe from every instance).

    Args:
        jsm: a JetStream context (manager API).
        settings: the limits to apply.
        update: apply hulk's configuration to a stream that differs, instead of refusing.

    Returns:
        `{stream: "created" | "unchanged" | "updated"}`.

    Raises:
        ConfigMismatch: a stream differs and `update` is False (nothing is overwritten).

    """
    report: dict[str, str] = {}
    for cfg in stream_configs(settings):
        assert cfg.name is not None
        try:
            info = await jsm.stream_info(cfg.name)
        except NotFoundError:
            await jsm.add_stream(cfg)
            report[cfg.name] = "created"
            continue
        diffs = _diff(info.config, cfg, _STREAM_FIELDS)
        if not diffs:
            report[cfg.name] = "unchanged"
        elif update:
            log.warning("updating stream %s: %s", cfg.name, diffs)
            await jsm.update_stream(cfg)
            report[cfg.name] = "updated"
        else:
            raise ConfigMismatch(cfg.name, diffs)
    return report


def intake_consumer_config(
    *,
    ack_wait: float,
    max_deliver: int,
    max_ack_pending: int,
    filter_subject: str = SUBJECT_INTAKE_ALL,
    durable: str = INTAKE_CONSUMER,
) -> ConsumerConfig:
    """Configuration of the shared durable pull consumer of the intake stream.

    Args:
        ack_wait: seconds before an unacknowledged task is redelivered; running tasks send progress
            acks, so this stays short while a task may run longer.
        max_deliver: delivery cap (attempts + 1: the extra one dead-letters a task whose last
            attempt crashed its instance); caps crash loops.
        max_ack_pending: the execution slots of all instances together.
        filter_subject: intake subjects this consumer takes.
        durable: consumer name.

    """
    if ack_wait <= 0:
        raise ValueError(f"ack_wait must be > 0, got {ack_wait}")
    if max_deliver < 1:
        raise ValueError(f"max_deliver must be >= 1, got {max_deliver}")
    if max_ack_pending < 1:
        raise ValueError(f"max_ack_pending must be >= 1, got {max_ack_pending}")
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        filter_subject=filter_subject,
        max_waiting=512,
    )


_CONSUMER_FIELDS = ("ack_wait", "max_deliver", "max_ack_pending", "filter_subject")


async def ensure_intake_consumer(
    jsm: JetStreamManager, config: ConsumerConfig, *, update: bool = False, stream: str = STREAM_TASKS
) -> str:
    """Creates the shared intake consumer, or checks it (idempotent).

    Returns:
        "created", "unchanged" or "updated".

    Raises:
        ConfigMismatch: it differs and `update` is False.

    """
    assert config.durable_name is not None
    try:
        info = await jsm.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await jsm.add_consumer(stream, config)
        return "created"
    diffs = _diff(info.config, config, _CONSUMER_FIELDS)
    if not diffs:
        return "unchanged"
    if not update:
        raise ConfigMismatch(f"{stream}/{config.durable_name}", diffs)
    log.warning("updating consumer %s/%s: %s", stream, config.durable_name, diffs)
    await jsm.add_consumer(stream, config)
    return "updated"

"""The wire format of a task on NATS: a JSON body and a few headers.

Body (JSON): `{"id", "type", "tenant", "payload", "created_at"}`. Headers: `Nats-Msg-Id` (the
idempotency key: the server drops a duplicate within the stream's duplicate window), `traceparent`
(W3C), and `Hulk-Attempt-Offset` when a copy was
re-published (deferred by an open breaker, or retried after a long delay) so attempts keep counting
from where they were. Id, type and tenant travel in the body only (every header costs the consumer
parsing time); dead letters and scheduler entries add them as `Hulk-Task-Id`, `Hulk-Task-Type`,
`Hulk-Tenant` headers.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Annotated, Any

import msgspec
import orjson
from opentelemetry import trace

from hulk.messaging.kvstore import is_valid_key
from hulk.messaging.streams import validate_task_type
from hulk.observability import tracing as _tracing

__all__ = [
    "HDR_ATTEMPT_OFFSET",
    "HDR_MSG_ID",
    "HDR_TASK_ID",
    "HDR_TASK_TYPE",
    "HDR_TENANT",
    "PoisonMessage",
    "TaskEnvelope",
    "batch_body",
    "inject_trace",
]

HDR_MSG_ID = "Nats-Msg-Id"
HDR_TASK_ID = "Hulk-Task-Id"
HDR_TASK_TYPE = "Hulk-Task-Type"
HDR_TENANT = "Hulk-Tenant"
HDR_ATTEMPT_OFFSET = "Hulk-Attempt-Offset"
HDR_REASON = "Hulk-Dead-Reason"
HDR_ERROR = "Hulk-Last-Error"
HDR_DELIVERIES = "Hulk-Deliveries"
HDR_BATCH = "Hulk-Batch"


def inject_trace(headers: dict[str, str]) -> None:
    """Adds the current span's `traceparent` to `headers`, unless they carry one or no span is active."""
    # The W3C propagator costs microseconds even with no span: skip it when there is none.
    if "traceparent" not in headers and trace.get_current_span().get_span_context().is_valid:
        _tracing.inject(headers)


def _trace_headers(hdrs: dict[str, str]) -> dict[str, str]:
    tp = hdrs.get("traceparent")
    if tp is None:
        return {}
    out = {"traceparent": tp}
    ts = hdrs.get("tracestate")
    if ts is not None:
        out["tracestate"] = ts
    return out


class PoisonMessage(ValueError):
    """A message on an intake subject that is not a task hulk can read."""


def _attempt_offset(hdrs: dict[str, str]) -> int:
    raw = hdrs.get(HDR_ATTEMPT_OFFSET)
    if raw is None:
        return 0
    if not raw.isdigit():
        raise PoisonMessage(f"{HDR_ATTEMPT_OFFSET} must be a whole number, got {raw!r}")
    return int(raw)


class _WireTask(msgspec.Struct, frozen=True):
    """A task body as it arrives, decoded and type-checked by msgspec in one pass (C, no dict per task).

    Ranges are checked here too; the id and type are checked by `TaskEnvelope.__post_init__` (a
    compiled regex and a cache of known types are faster than msgspec's per-field patterns).
    Unknown fields are ignored.
    """

    id: str
    type: str
    tenant: str | None = None
    payload: Any = None
    created_at: float | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0


_decode_one = msgspec.json.Decoder(_WireTask).decode
_decode_many = msgspec.json.Decoder(list[_WireTask]).decode
# Few distinct types go by: the valid ones are remembered, so the regex runs once per type.
_check_type = functools.lru_cache(maxsize=4096)(validate_task_type)


def _check_options(timeout: object, max_retries: object, priority: object) -> None:
    """Refuses task options no engine could apply (a message carrying them is poison)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 86400
    ):
        raise ValueError(f"timeout must be a number of seconds in (0, 86400], got {timeout!r}")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an integer from 0 to 9, got {priority!r}")


class TaskEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A task as it travels on NATS.

    A frozen msgspec struct rather than a dataclass: one is built for every task a producer sends
    and every task the intake reads, and a struct is built in C (a frozen dataclass sets each
    field through `object.__setattr__`).

    Args:
        type: registered task type (also the intake subject suffix).
        payload: JSON-serialisable arguments.
        id: task id (default: a new UUID4 hex); a valid KV key.
        tenant: tenant the task belongs to.
        idempotency_key: `Nats-Msg-Id`; defaults to the task id.
        created_at: wall-clock seconds of creation.
        attempt_offset: attempts already spent by earlier copies of this task.
        headers: extra headers carried as they are (e.g. a traceparent received with the task).
        timeout: seconds an attempt may run (None: the task type's).
        max_retries: retries after the first attempt (None: the task type's).
        priority: 0-9, recorded with the task (the intake runs tasks in stream order).

    Raises:
        ValueError: an invalid type, id or option.
    """

    type: str
    payload: Any = None
    id: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str = "default"
    idempotency_key: str | None = None
    created_at: float = msgspec.field(default_factory=time.time)
    attempt_offset: int = 0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float | None = None
    max_retries: int | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        _check_type(self.type)
        if not is_valid_key(self.id):
            raise ValueError(
                f"id must be a valid KV key ([-/_=.a-zA-Z0-9]+, no leading or trailing dot), got {self.id!r}"
            )
        priority = self.priority
        if self.timeout is not None or self.max_retries is not None or priority or type(priority) is not int:
            _check_options(self.timeout, self.max_retries, priority)

    @property
    def msg_id(self) -> str:
        """The `Nats-Msg-Id` of this task."""
        return self.idempotency_key or self.id

    def body(self) -> bytes:
        """The JSON body."""
        return orjson.dumps(self.body_dict())

    def to_headers(self, *, trace: bool = True) -> dict[str, str]:
        """The headers of a publish (with the current trace context when `trace`)."""
        hdrs = dict(self.headers)
        hdrs[HDR_MSG_ID] = self.msg_id
        if self.attempt_offset:
            hdrs[HDR_ATTEMPT_OFFSET] = str(self.attempt_offset)
        if trace:
            inject_trace(hdrs)
        return hdrs

    @classmethod
    def decode(cls, data: bytes, headers: dict[str, str] | None) -> TaskEnvelope:
        """Reads a task from a message.

        Raises:
            PoisonMessage: not JSON, not an object, or a field that is missing or invalid (an id that
                cannot be a KV key, a type that cannot be a subject, options no engine could apply).
        """
        try:
            wire = _decode_one(data)
        except msgspec.ValidationError as exc:
            raise PoisonMessage(f"invalid task body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PoisonMessage(f"body is not JSON: {exc}") from None
        hdrs = headers or {}
        return cls._from_wire(wire, hdrs, _attempt_offset(hdrs), hdrs.get(HDR_MSG_ID))

    @classmethod
    def decode_batch(cls, data: bytes, headers: dict[str, str] | None) -> list[TaskEnvelope]:
        """Reads the tasks of a batch message (a JSON array of task bodies, see `batch_body`).

        Raises:
            PoisonMessage: not a non-empty JSON array of valid task bodies.
        """
        try:
            wires = _decode_many(data)
        except msgspec.ValidationError as exc:
            raise PoisonMessage(f"invalid batch body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PoisonMessage(f"body is not JSON: {exc}") from None
        if not wires:
            raise PoisonMessage("batch body is an empty JSON array")
        hdrs = headers or {}
        offset = _attempt_offset(hdrs)
        from_wire = cls._from_wire
        return [from_wire(wire, hdrs, offset, None) for wire in wires]

    @classmethod
    def from_body(cls, body: Any, hdrs: dict[str, str], *, idempotency_key: str | None) -> TaskEnvelope:
        """Builds a task from an already decoded JSON body and its message's headers.

        Raises:
            PoisonMessage: not an object with a valid id and type, or invalid options.
        """
        try:
            wire = msgspec.convert(body, _WireTask)
        except msgspec.ValidationError as exc:
            raise PoisonMessage(f"invalid task body: {exc}") from None
        return cls._from_wire(wire, hdrs, _attempt_offset(hdrs), idempotency_key)

    @classmethod
    def _from_wire(
        cls, wire: _WireTask, hdrs: dict[str, str], offset: int, idempotency_key: str | None
    ) -> TaskEnvelope:
        try:
            return cls(
                type=wire.type,
                payload=wire.payload,
                id=wire.id,
                tenant=wire.tenant or "default",
                idempotency_key=idempotency_key,
                created_at=wire.created_at or 0.0,
                attempt_offset=offset,
                headers=_trace_headers(hdrs) if "traceparent" in hdrs else {},
                timeout=wire.timeout,
                max_retries=wire.max_retries,
                priority=wire.priority,
            )
        except ValueError as exc:
            raise PoisonMessage(str(exc)) from None

    def body_dict(self) -> dict[str, Any]:
        """The JSON body as a dict (an item of a batch body); options only when set."""
        body = {
            "id": self.id,
            "type": self.type,
            "tenant": self.tenant,
            "payload": self.payload,
            "created_at": self.created_at,
        }
        if self.timeout is not None:
            body["timeout"] = self.timeout
        if self.max_retries is not None:
            body["max_retries"] = self.max_retries
        if self.priority:
            body["priority"] = self.priority
        return body


def batch_body(tasks: list[TaskEnvelope]) -> bytes:
    """The body of a batch message: a JSON array of task bodies."""
    return orjson.dumps([t.body_dict() for t in tasks])

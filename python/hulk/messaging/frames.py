"""Many NATS publishes handed to nats-py's outgoing buffer at once, and acknowledgements batched per loop turn.

nats-py publishes message by message: every `publish` validates its subjects, formats one frame,
counts statistics, appends to the outgoing buffer and may create a flush future, which is about
3 µs of the event loop per message. The worker's hot path sends two messages per task (a status
record and an acknowledgement), so that was the largest per-task cost left in it. Here the frames
of many messages are formatted together and appended as one buffer entry, with one flush request;
`frames_of` has the native core format a group (`hulk._native.pub_frames`) and keeps the Python
`frame` for groups with a part only nats-py's rules can settle.

This relies on internals of nats-py's `Client` that every 2.x release has: `_send_command`
(append to the outgoing buffer), `_flush_pending` (wake the flusher), and the buffer's size and
limit and the flusher's queue, read as `publish` reads them. `supported(nc)` tells whether a client
has them all; callers fall back to `publish` when it does not. Subjects are not
validated here: callers pass subjects hulk built (KV keys checked at intake) or that the server
gave (acknowledgement subjects).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    MaxPayloadError,
    OutboundBufferLimitError,
)

from hulk._native import pub_frames, pub_group_frames

__all__ = ["AckBatcher", "check_payload", "frame", "frames_of", "send_frames", "supported"]

log = logging.getLogger("hulk.messaging")

_HEADER_LINE = b"NATS/1.0\r\n"


# As nats-py does: header names are RFC 7230 tokens, values are trimmed and CR/LF become spaces (a
# value can never end the header block early).
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_HEADER_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_SUBJECT_INVALID = re.compile(r"\s").search


@functools.lru_cache(maxsize=1024)
def _header_name(key: str) -> bytes:
    # Few distinct names go by: each is checked and encoded once.
    if _HEADER_KEY(key) is None:
        raise BadHeaderError(key)
    return key.encode()


def _header_line(key: str, value: str) -> bytes:
    return b"%s: %s\r\n" % (_header_name(key), value.strip().translate(_HEADER_VALUE_NEWLINES).encode())


def frame(subject: str, payload: bytes, reply: str = "", headers: Mapping[str, str] | None = None) -> bytes:
    """The protocol frame of one message: `PUB`, or `HPUB` when it has headers.

    Raises:
        nats.errors.BadSubjectError: an empty subject, or white space in the subject or reply.
        nats.errors.BadHeaderError: a header name that is not an HTTP token.
    """
    # As nats-py checks: a subject with white space or CR/LF would inject protocol commands.
    if not subject or _SUBJECT_INVALID(subject) or (reply and _SUBJECT_INVALID(reply)):
        raise BadSubjectError
    head = subject.encode() + b" " + reply.encode() if reply else subject.encode()
    if not headers:
        return b"PUB %s %d\r\n%s\r\n" % (head, len(payload), payload)
    block = _HEADER_LINE + b"".join(_header_line(k, v) for k, v in headers.items()) + b"\r\n"
    size = len(block)
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (head, size, size + len(payload), block, payload)


_INTERNALS = ("_flush_queue", "_max_pending_size", "_pending_data_size")


def supported(nc: Any) -> bool:
    """True when `nc` (a nats-py `Client`) has the internals `send_frames` uses."""
    return (
        callable(getattr(nc, "_send_command", None))
        and callable(getattr(nc, "_flush_pending", None))
        and all(hasattr(nc, name) for name in _INTERNALS)
    )


def check_payload(nc: Any, payload: bytes) -> None:
    """Refuses a payload larger than the server takes (it would close the connection), as `publish` does.

    Raises:
        nats.errors.MaxPayloadError: `payload` is larger than the server's `max_payload`.
    """
    if len(payload) > nc.max_payload:
        raise MaxPayloadError


def frames_of(nc: Any, messages: Sequence[tuple[str, bytes, str, Mapping[str, str] | None]]) -> tuple[bytes, int]:
    """The frames of `(subject, payload, reply, headers)` messages in one buffer, and their payload bytes.

    Formatted natively (`hulk._native.pub_frames`) when every part is plain; a group with a part
    that needs nats-py's rules is formatted here, message by message.

    Raises:
        nats.errors.MaxPayloadError: a payload is larger than the server takes.
        nats.errors.BadSubjectError: an empty subject, or white space in a subject or reply.
        nats.errors.BadHeaderError: a header name that is not an HTTP token.
    """
    try:
        return pub_frames(messages, nc.max_payload)
    except (ValueError, TypeError):
        return _frames_by_nats_rules(nc, messages)


def _frames_by_nats_rules(
    nc: Any, messages: Sequence[tuple[str, bytes, str, Mapping[str, str] | None]]
) -> tuple[bytes, int]:
    """`frames_of`, message by message with nats-py's rules (which raise nats-py's errors)."""
    for message in messages:
        check_payload(nc, message[1])
    out = b"".join([frame(subject, payload, reply, headers) for subject, payload, reply, headers in messages])
    return out, sum(len(message[1]) for message in messages)


def group_frames_of(
    nc: Any, messages: Sequence[tuple[str, bytes]], headers: Mapping[str, str] | None, reply: str
) -> tuple[bytes, int]:
    """`frames_of` for a group: `(subject, payload)` messages sharing `headers`, only the last with `reply`.

    Formatted natively in one pass (`hulk._native.pub_group_frames`, no tuple per message) when
    every part is plain; otherwise as `frames_of` formats the same messages.

    Raises:
        The errors of `frames_of`.
    """
    try:
        return pub_group_frames(messages, headers, reply, nc.max_payload)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        last = len(messages) - 1
        return _frames_by_nats_rules(
            nc,
            [
                (subject, payload, reply if index == last else "", headers)
                for index, (subject, payload) in enumerate(messages)
            ],
        )


async def send_frames(nc: Any, data: bytes, count: int = 1, payload_bytes: int = 0) -> None:
    """Appends `data`, the frames of `count` messages, to the client's outgoing buffer and asks for a flush.

    The caller checks each payload with `check_payload` first (`frames_of` does).

    Raises:
        nats.errors.ConnectionClosedError: the client is closed.
        nats.errors.OutboundBufferLimitError: disconnected, and the reconnect buffer is full or off
            (as `publish` would raise).
    """
    if nc.is_closed:
        raise ConnectionClosedError
    if not nc.is_connected and (nc._max_pending_size <= 0 or len(data) + nc._pending_data_size > nc._max_pending_size):
        raise OutboundBufferLimitError
    stats = nc.stats
    stats["out_msgs"] += count
    stats["out_bytes"] += payload_bytes
    await nc._send_command(data)
    flush_queue = nc._flush_queue
    if flush_queue is not None and flush_queue.empty():
        await nc._flush_pending()


class AckBatcher:
    """JetStream acknowledgements gathered during one event-loop turn and sent as one buffer append.

    `add(msg)` marks the message acknowledged at once (as `Msg.ack` would) and its `+ACK` leaves
    with the others of the turn. A failed send is logged: the server then redelivers those
    messages after their ack wait, as it would for any lost acknowledgement.

    Args:
        conn: what holds the nats-py client the messages came from (its `nc`, read at each send,
            so a client replaced on reconnection is the one used).
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._replies: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.sent = 0

    def add(self, msg: Any) -> None:
        """Acknowledges `msg` (a JetStream message) with this turn's other acknowledgements.

        A message that cannot be acknowledged (not from JetStream, or acknowledged already) is
        logged and skipped: the caller is settling a task and must go on with the others.
        """
        try:
            msg._check_reply()
        except Exception as exc:
            log.warning("not acknowledging %s: %r", getattr(msg, "subject", "?"), exc)
            return
        msg._ackd = True
        loop = asyncio.get_running_loop()
        # Compared with the loop, not "is a send scheduled": a send scheduled on a loop that has
        # ended since would never run, and these acknowledgements with it.
        if self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self._send)
        self._replies.append(msg.reply)

    def _send(self) -> None:
        self._scheduled_on = None
        replies, self._replies = self._replies, []
        if replies:
            task = asyncio.get_running_loop().create_task(self._write(replies))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _write(self, replies: list[str]) -> None:
        try:
            nc = self._conn.nc
            if supported(nc):
                await send_frames(
                    nc, b"".join([b"PUB %s 0\r\n\r\n" % reply.encode() for reply in replies]), len(replies)
                )
            else:
                for reply in replies:
                    await nc.publish(reply)
            self.sent += len(replies)
        except Exception as exc:
            log.warning("%d acknowledgements not sent (%r): the server will redeliver them", len(replies), exc)

    async def wait(self) -> None:
        """Sends what is gathered now and waits until every acknowledgement is handed to the client."""
        self._send()
        while self._sending:
            await asyncio.wait(set(self._sending))

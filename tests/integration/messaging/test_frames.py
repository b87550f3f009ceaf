"""hulk.messaging.frames against a real nats-server: grouped frames arrive intact; batched acks settle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.errors import BadHeaderError, BadSubjectError, ConnectionClosedError, MaxPayloadError
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from hulk._native import pub_frames, pub_group_frames
from hulk.messaging.connection import NatsConnection
from hulk.messaging.frames import AckBatcher, frame, frames_of, group_frames_of, send_frames, supported


def test_header_values_cannot_break_the_frame_and_bad_names_are_refused() -> None:
    assert frame("a", b"", headers={"K": " x\r\ny "}) == b"HPUB a 21 21\r\nNATS/1.0\r\nK: x  y\r\n\r\n\r\n"
    with pytest.raises(BadHeaderError):
        frame("a", b"", headers={"bad name": "v"})


def test_frames_are_the_protocol_lines() -> None:
    assert frame("a.b", b"hi") == b"PUB a.b 2\r\nhi\r\n"
    assert frame("a.b", b"", reply="_INBOX.x") == b"PUB a.b _INBOX.x 0\r\n\r\n"
    headers = b"NATS/1.0\r\nK: v\r\n\r\n"
    assert frame("a", b"xy", headers={"K": "v"}) == b"HPUB a %d %d\r\n%sxy\r\n" % (
        len(headers),
        len(headers) + 2,
        headers,
    )


class _Client:
    max_payload = 64


@pytest.mark.parametrize(
    "messages",
    [
        [("a.b", b"hi", "", None)],
        [("a.b", b"", "_INBOX.x", None), ("$KV.b.0193-x", b"{}", "", {"traceparent": "00-ab-cd-01"})],
        [("a", b"xy", "r", {"K": "v", "Nats-Msg-Id": ""})],
    ],
)
def test_native_frames_are_the_python_frames(messages: list[Any]) -> None:
    expected = b"".join(frame(*m) for m in messages)
    assert pub_frames(messages, 64) == (expected, sum(len(m[1]) for m in messages))
    assert frames_of(_Client(), messages) == (expected, sum(len(m[1]) for m in messages))


@pytest.mark.parametrize("headers", [None, {"traceparent": "00-ab-cd-01"}])
@pytest.mark.parametrize("reply", ["", "_INBOX.x.1f"])
def test_group_frames_are_the_frames_of_each_message(headers: dict[str, str] | None, reply: str) -> None:
    group = [("$KV.b.a", b"{}"), ("$KV.b.b", b"[1]"), ("$KV.b.c", b"")]
    each = [(subject, payload, reply if i == 2 else "", headers) for i, (subject, payload) in enumerate(group)]
    expected = b"".join(frame(*m) for m in each)
    assert pub_group_frames(group, headers, reply, 64) == (expected, 5)
    assert group_frames_of(_Client(), group, headers, reply) == (expected, 5)
    assert pub_group_frames([], headers, reply, 64) == (b"", 0)


@pytest.mark.parametrize(
    ("group", "headers", "reply"),
    [
        ([("a", b"")], {"K": " x\r\ny "}, ""),  # a header value nats-py cleans
        ([("sujet.é", b"")], None, ""),  # non-ASCII subject
        ([("a", b"")], None, "bad reply"),  # a reply nats-py refuses
        ([("a", bytearray(b"xy"))], None, ""),  # not bytes
        ([("a", b"", "")], None, ""),  # not a pair
    ],
)
def test_group_parts_the_native_path_does_not_vouch_for_go_the_frames_of_way(
    group: list[Any], headers: dict[str, str] | None, reply: str
) -> None:
    with pytest.raises((ValueError, TypeError)):
        pub_group_frames(group, headers, reply, 64)
    if reply:
        # nats-py's rules refuse it too, with nats-py's error.
        with pytest.raises(BadSubjectError):
            group_frames_of(_Client(), group, headers, reply)
    elif len(group[0]) == 2:
        expected = b"".join(frame(subject, payload, reply, headers) for subject, payload in group)
        assert group_frames_of(_Client(), group, headers, reply) == (expected, sum(len(p) for _s, p in group))


@pytest.mark.parametrize(
    "odd",
    [
        ("a", b"", "", {"K": " x\r\ny "}),  # a value nats-py trims and cleans
        ("sujet.é", b"", "", None),  # non-ASCII subject: nats-py sends it as UTF-8
        ("a", bytearray(b"xy"), "", None),  # not bytes
    ],
)
def test_groups_the_native_path_does_not_vouch_for_are_framed_by_nats_py_rules(odd: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        pub_frames([odd], 64)
    assert frames_of(_Client(), [("ok", b"1", "", None), odd]) == (frame("ok", b"1") + frame(*odd), 1 + len(odd[1]))


def test_frames_of_raises_nats_errors() -> None:
    with pytest.raises(BadHeaderError):
        frames_of(_Client(), [("a", b"", "", {"bad name": "v"})])
    with pytest.raises(BadSubjectError):
        frames_of(_Client(), [("a b", b"", "", None)])
    with pytest.raises(MaxPayloadError):
        frames_of(_Client(), [("a", b"x" * 65, "", None)])


async def test_a_group_of_frames_arrives_in_order_with_headers(conn: NatsConnection) -> None:
    nc = conn.nc
    assert supported(nc)
    got: list[Any] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        got.append(msg)
        if len(got) == 3:
            done.set()

    await nc.subscribe("frames.>", cb=on_msg)
    await nc.flush()
    data, size = frames_of(
        nc, [("frames.1", b"one", "", None), ("frames.2", b"two", "", {"Hulk-X": "y"}), ("frames.3", b"", "", None)]
    )
    assert size == 6
    await send_frames(nc, data, 3, size)
    await asyncio.wait_for(done.wait(), 5)
    assert [(m.subject, m.data) for m in got] == [("frames.1", b"one"), ("frames.2", b"two"), ("frames.3", b"")]
    assert got[1].headers == {"Hulk-X": "y"}


async def test_batched_acks_settle_jetstream_messages(conn: NatsConnection) -> None:
    js = conn.js
    await js.add_stream(StreamConfig(name="FRAMES", subjects=["fr.>"]))
    await js.add_consumer("FRAMES", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    for i in range(20):
        await js.publish("fr.t", b"%d" % i)
    sub = await js.pull_subscribe_bind("w", "FRAMES")
    msgs = await sub.fetch(20, timeout=5)
    batcher = AckBatcher(conn)
    for msg in msgs:
        batcher.add(msg)
    await batcher.wait()
    assert batcher.sent == 20

    async def settled() -> None:
        # The server applies acks asynchronously: poll its count, bounded by wait_for.
        while True:
            info = await js.consumer_info("FRAMES", "w")
            if info.num_ack_pending == 0 and info.num_pending == 0:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(settled(), 5)


async def test_send_frames_refuses_a_closed_client(conn: NatsConnection) -> None:
    nc = conn.nc
    await nc.close()
    with pytest.raises(ConnectionClosedError):
        await send_frames(nc, frame("x", b""))


async def test_acks_of_a_loop_that_ended_still_leave_on_the_next_one(conn: NatsConnection) -> None:
    class FakeMsg:
        def __init__(self, reply: str) -> None:
            self.reply = reply
            self._ackd = False

        def _check_reply(self) -> None:
            assert self.reply

    batcher = AckBatcher(conn)
    # A send scheduled on another loop (one that ended before running it) must not hold the acks.
    ended = asyncio.new_event_loop()
    ended.close()
    batcher._scheduled_on = ended
    try:
        got = await conn.nc.subscribe("acks.late")
        batcher.add(FakeMsg("acks.late"))
        await batcher.wait()
        assert (await got.next_msg(timeout=5)).data == b""
    finally:
        assert batcher._scheduled_on is None


async def test_bad_subjects_and_oversized_payloads_are_refused_before_sending(conn: NatsConnection) -> None:
    from hulk.messaging.pipeline import AckPipeline

    with pytest.raises(BadSubjectError):
        frame("a b", b"")
    with pytest.raises(BadSubjectError):
        frame("", b"")
    pipe = AckPipeline(conn, timeout=5.0)
    too_big = b"x" * (conn.nc.max_payload + 1)
    with pytest.raises(MaxPayloadError):
        await pipe.publish("frames.big", too_big)
    with pytest.raises(MaxPayloadError):
        await pipe.publish_many([("frames.ok", b"", None), ("frames.big", too_big, None)])
    with pytest.raises(BadSubjectError):
        await pipe.publish_many([("frames.ok", b"", None), ("bad subject", b"", None)])
    assert pipe.pending == 0
    assert conn.nc.is_connected  # nothing malformed reached the server
    await pipe.close()


async def test_a_message_that_cannot_be_acked_is_skipped_not_raised(conn: NatsConnection) -> None:
    class Acked:
        subject = "x"
        reply = "acks.done"

        def _check_reply(self) -> None:
            raise RuntimeError("already acknowledged")

    batcher = AckBatcher(conn)
    batcher.add(Acked())
    await batcher.wait()
    assert batcher.sent == 0


def test_a_client_without_the_internals_is_not_supported() -> None:
    class Plain:
        async def _send_command(self, data: bytes) -> None:
            pass

        async def _flush_pending(self) -> None:
            pass

    assert not supported(Plain())
    assert not supported(object())

"""UUIDv7 ids: sortable, unique, well-formed, reproducible with a seed."""

from __future__ import annotations

import uuid

from hulk.engine import IdGenerator


def test_ids_are_uuid7_sorted_and_unique() -> None:
    gen = IdGenerator()
    ids = [gen() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert len(ids[0]) == 36


def test_timestamp_is_the_given_millisecond() -> None:
    gen = IdGenerator(seed=1)
    ms = 1_700_000_000_123
    assert uuid.UUID(gen(ms)).int >> 80 == ms


def test_seed_and_clock_make_ids_reproducible() -> None:
    def ids() -> list[str]:
        clock = iter(range(10**15, 10**15 + 10**9, 400_000))
        gen = IdGenerator(seed=5, time_ns=lambda: next(clock))
        return [gen() for _ in range(10)]

    assert ids() == ids()


def test_a_clock_going_back_keeps_ids_increasing() -> None:
    gen = IdGenerator(seed=2)
    first = gen(2_000_000)
    second = gen(1_000_000)
    assert second > first


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    gen = IdGenerator(seed=3)
    first = gen(5_000)
    gen._counter = (1 << 48) - 1
    gen._ids = iter(())
    second = gen(5_000)
    assert second > first
    assert uuid.UUID(second).int >> 80 == 5_001


def test_hot_path_blocks_are_refreshed_when_stale() -> None:
    gen = IdGenerator(seed=4, max_age=0.002)
    first = gen.next(1000.0)
    same_block = gen.next(1000.001)
    fresh = gen.next(1000.003)
    assert first < same_block < fresh
    assert uuid.UUID(same_block).int >> 80 == 1_000_000
    assert uuid.UUID(fresh).int >> 80 == 1_000_003
    ids = [gen.next(1000.003) for _ in range(600)]  # several blocks within one millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == 600


def test_a_block_is_its_head_and_two_hex_digits() -> None:
    gen = IdGenerator(seed=6)
    head, expires = gen.block(1000.0)
    assert len(head) == 34
    assert expires == 1000.0 + 0.002
    first = head + "00"
    assert uuid.UUID(first).version == 7
    assert uuid.UUID(first).int >> 80 == 1_000_000
    next_head, _ = gen.block(1000.0)
    assert next_head + "00" > head + "ff"

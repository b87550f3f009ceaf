import time
from pathlib import Path

from hulk.cache.codec import encode
from hulk.cache.l3_rocks import RocksLevel


def _exists(path: str) -> bool:
    return Path(path).exists()


async def test_staged_writes_are_readable_before_and_after_a_snapshot(tmp_path: Path) -> None:
    level = RocksLevel(tmp_path / "l3")
    assert await level.open() == "ok"
    try:
        level.put(b"a", b"record-a")
        level.put(b"b", b"record-b")
        assert level.pending == 2
        assert await level.get(b"a") == b"record-a"
        assert await level.flush() == 2
        assert level.pending == 0
        assert await level.get(b"a") == b"record-a"
        assert await level.get_many([b"a", b"b", b"zz"]) == {b"a": b"record-a", b"b": b"record-b"}
        level.delete(b"a")
        assert await level.get(b"a") is None
        assert await level.get_many([b"a", b"b"]) == {b"b": b"record-b"}
        assert await level.flush() == 1
        assert await level.get(b"a") is None
        assert await level.flush() == 0
    finally:
        await level.close()


async def test_entries_survive_a_restart_and_close_writes_the_stage(tmp_path: Path) -> None:
    level = RocksLevel(tmp_path / "l3")
    await level.open()
    level.put(b"k", b"v")
    await level.close()
    assert level.status == "closed"
    again = RocksLevel(tmp_path / "l3")
    await again.open()
    try:
        assert await again.get(b"k") == b"v"
    finally:
        await again.close()


async def test_many_staged_writes_ask_for_an_early_snapshot(tmp_path: Path) -> None:
    level = RocksLevel(tmp_path / "l3", max_pending=3)
    await level.open()
    try:
        level.put(b"1", b"x")
        level.delete(b"2")
        assert not level.flush_wanted.is_set()
        level.put(b"3", b"x")
        assert level.flush_wanted.is_set()
        await level.flush()
        assert not level.flush_wanted.is_set()
        level.delete(b"4")
        level.delete(b"5")
        level.delete(b"6")
        assert level.flush_wanted.is_set()
    finally:
        await level.close()


async def test_load_hot_keeps_live_entries_and_drops_expired_and_corrupt_ones(tmp_path: Path) -> None:
    now = time.time()
    level = RocksLevel(tmp_path / "l3")
    await level.open()
    try:
        level.put(b"forever", encode(1, 0.0))
        level.put(b"soon", encode(2, now + 10))
        level.put(b"later", encode(3, now + 100))
        level.put(b"expired", encode(4, now - 1))
        level.put(b"corrupt", b"x")
        await level.flush()
        hot = await level.load_hot(2, now)
        assert [key for key, _ in hot] == [b"forever", b"later"]
        assert level.corrupt_records == 1
        assert await level.get(b"expired") is None
        assert await level.get(b"corrupt") is None
        assert len(await level.load_hot(10, now)) == 3
        assert await level.load_hot(0, now) == []
    finally:
        await level.close()


async def test_a_corrupt_database_is_set_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "l3"
    level = RocksLevel(path)
    await level.open()
    level.put(b"k", b"v")
    await level.close()
    (path / "CURRENT").write_bytes(b"MANIFEST-999999\n")  # points at a manifest that does not exist
    broken = RocksLevel(path)
    try:
        assert await broken.open() == "recovered"
        assert broken.error is not None
        assert len(broken.set_aside) == 1
        assert _exists(broken.set_aside[0])
        assert await broken.get(b"k") is None
        broken.put(b"k2", b"v2")
        assert await broken.flush() == 1
    finally:
        await broken.close()


async def test_a_file_in_place_of_the_directory_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "l3"
    path.write_bytes(b"not a database")
    level = RocksLevel(path)
    try:
        assert await level.open() == "recovered"
        assert path.is_dir()
    finally:
        await level.close()


async def test_an_unusable_path_disables_l3_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    level = RocksLevel(blocker / "l3")
    try:
        assert await level.open() == "failed"
        assert not level.available
        level.put(b"k", b"v")
        level.delete(b"k")
        assert level.pending == 0
        assert await level.get(b"k") is None
        assert await level.get_many([b"k"]) == {}
        assert await level.flush() == 0
        assert await level.load_hot(10, time.time()) == []
    finally:
        await level.close()


async def test_drop_prefix_forgets_staged_and_stored_entries_and_keeps_later_writes(tmp_path: Path) -> None:
    level = RocksLevel(tmp_path / "l3")
    assert await level.open() == "ok"
    try:
        level.put(b"a:1", b"old-1")
        level.put(b"b:1", b"kept")
        await level.flush()
        level.put(b"a:2", b"old-2")  # staged only
        level.delete(b"a:3")  # a staged delete is not an entry
        assert level.drop_prefix(b"a:") == 2
        assert await level.get(b"a:1") is None
        assert await level.get_many([b"a:1", b"a:2", b"b:1"]) == {b"b:1": b"kept"}
        assert level.flush_wanted.is_set()
        level.put(b"a:1", b"new-1")  # after the drop: must survive the range delete
        assert await level.flush() == 1
        await level.close()

        level = RocksLevel(tmp_path / "l3")
        await level.open()
        assert await level.get(b"a:1") == b"new-1"
        assert await level.get(b"a:2") is None
        assert await level.get(b"b:1") == b"kept"
        assert level.drop_prefix(None) == 2
        assert await level.get(b"b:1") is None
        await level.flush()
        await level.close()

        level = RocksLevel(tmp_path / "l3")
        await level.open()
        assert await level.get_many([b"a:1", b"b:1"]) == {}
        assert RocksLevel(tmp_path / "never-opened").drop_prefix(b"a:") == 0
    finally:
        await level.close()


async def test_a_cached_block_is_read_without_the_worker_thread(tmp_path: Path) -> None:
    level = RocksLevel(tmp_path / "l3")
    await level.open()
    level.put(b"k", b"v")
    await level.close()
    level = RocksLevel(tmp_path / "l3")
    await level.open()
    try:
        assert await level.get(b"k") == b"v"  # from the disk, through the worker thread
        answered, record = level._lookup_in_memory(b"k")  # now in the block cache
        assert (answered, record) == (True, b"v")
        assert await level.get_many([b"k"]) == {b"k": b"v"}
    finally:
        await level.close()

"""hulk's multi-level cache: L1 in process memory, L2 in Redis, L3 as RocksDB snapshots on disk.

One async API, used by the runtime's handlers (through their task context) and by user code alike:

    cache = Cache(l1_size=100_000, l2_url="redis://:secret@redis:6379/0", l3_path="/var/lib/hulk/l3")
    await cache.start()
    tenant = cache.namespace("tenant-42")          # keys never cross namespaces
    report = await tenant.get_or_compute("report:7", build_report, ttl=300)
    await tenant.set("greeting", {"text": "hi"})
    await tenant.delete("greeting")
    await cache.stop()                             # writes the L3 snapshot, closes Redis

Levels and modes:
- Read path L1 → L2 → L3 → compute, filling the upper levels on the way back; writes go through every
  level (L3 write-behind, snapshotted every `snapshot_interval` seconds and at `stop()`); a restarted
  instance warms its L1 from L3 (checked against Redis when it answers).
- With no `l2_url`, or a Redis that does not answer, the cache runs on L1 + L3, logs it once, and
  `health()` reports "degraded". A native `CircuitBreaker` guards L2: after a few failed calls it
  opens and calls skip Redis at once; a background probe closes it again when Redis is back, and the
  keys written meanwhile are re-synced to Redis.
- Deleted keys leave a tombstone in Redis for `tombstone_ttl`, so no instance's L3 resurrects them.
- Computed values reach Redis in background batches, only where it holds no live value; concurrent
  L2 reads share MGETs. See docs/cache.md for the details.

Invalidation bound: after an instance overwrites or deletes a key, every other instance whose
invalidation subscription (Redis pub/sub) is up drops the key from its L1 and L3 as soon as the
message arrives, one Redis hop after the write; an instance whose subscription broke clears its whole
L1 when it subscribes again. In every case no L1 entry outlives `l1_ttl` (default 60 s): that is the
hard bound, and the one that holds while Redis is down.

Cacheable tasks: `result_key(task_type, payload)` gives the key under which the runtime stores a task
type's result in the tenant's namespace.
"""

from hulk.cache.codec import result_key
from hulk.cache.multilevel import Cache, CacheNamespace

__all__ = ["Cache", "CacheNamespace", "result_key"]

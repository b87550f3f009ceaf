"""hulk: the service itself (`hulk serve`) as the worker, hulk's TaskProducer as the producer.

The worker is the product as users run it: `hulk serve` with its defaults (but `engine.workers`,
below), pointed at the bench's nats-server (`HULK_NATS__URLS`, `HULK_NATS__EMBEDDED=false`) and
given the no-op handler module (`HULK_ENGINE__HANDLERS=bench.peers.hulk_handlers`). Every task
goes the durable path: the intake stream (file storage), a slot-bounded pull, the engine's worker
pool, status and completion event recorded, ack after the terminal state. The harness waits for
`GET /ready` 200 before producing.

The producer is hulk's client: `TaskProducer.submit_many` (tasks pipelined, `window` unacknowledged,
each with its `Nats-Msg-Id`), on one `NatsConnection`.

Run: .venv/bin/python -m bench.peers.hulk_peer --tasks 20000
"""

from __future__ import annotations

from collections.abc import Callable

from bench.peers.harness import PeerSpec, main
from bench.service import hulk_serve_argv
from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.publisher import TaskProducer

TASK_TYPE = "bench.noop"
# engine.workers (= the intake's slots). The default, CPUs × 2, is 4 here: a no-op workload is all
# round trips, so hulk needs the kind of concurrency the peers get (a 256-message fetch and up to
# 1,024 unacknowledged for raw nats-py, 256 async tasks for Taskiq and arq, a 256-message batch for
# FastStream). A slot is held from fetch until the ack, and hulk acks only after the terminal record
# is stored (one more round trip than raw's ack-after-run), so it takes more slots to keep the
# pipe full. Measured 2026-12-05 with 30,000 tasks on the quiet 2-core box, raw nats-py 27k–31k/s
# in the same series: 128 → 22.6k tasks/s, 256 → 22.3k–25.0k, 512 → 24.5k–26.4k (the bulk peer
# is the same at 128 and 512).
WORKERS = 512


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    producer = TaskProducer(conn)
    tasks = [TaskEnvelope(type=TASK_TYPE, payload={"n": i}) for i in range(n)]
    mark_start()
    await producer.submit_many(tasks, window=window)
    await conn.close()


SPEC = PeerSpec(
    name="hulk",
    module="bench.peers.hulk_peer",
    server="nats",
    packages=("hulk", "nats-py"),
    config={
        "worker": f"hulk serve, defaults but HULK_ENGINE__WORKERS={WORKERS} (default CPUs × 2), "
        "HULK_NATS__URLS=<bench server>, HULK_NATS__EMBEDDED=false, HULK_ENGINE__HANDLERS=bench.peers.hulk_handlers",
        "ack": "after the task's terminal status record is stored by the KV stream (or safe in the outbox)",
        "producer": "TaskProducer.submit_many(tasks, window=256) (Nats-Msg-Id per task, every stream ack awaited)",
    },
    worker_argv=hulk_serve_argv,
    worker_env={
        "HULK_NATS__URLS": "{url}",
        "HULK_NATS__EMBEDDED": "false",
        "HULK_ENGINE__HANDLERS": "bench.peers.hulk_handlers",
        "HULK_SERVER__HOST": "127.0.0.1",
        "HULK_ENGINE__WORKERS": str(WORKERS),
    },
    ready_port_env="HULK_SERVER__PORT",
    produce=produce,
    durable="stored in hulk's file-backed intake stream before submit returns; acked after the terminal state",
)

if __name__ == "__main__":
    main(SPEC)

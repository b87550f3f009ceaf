"""A small hulk worker process for the fault tests: `python worker_script.py URLS ID DATA_DIR [ACK_WAIT]`.

Task types: "noop" (returns at once) and "sleep" (sleeps `payload` seconds). Prints `READY` once
started and `START <task id> <attempt>` when a task begins, so the test knows what is in flight.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from hulk.messaging.connection import ConnectionSettings
from hulk.messaging.intake import NatsDelivery
from hulk.messaging.node import MessagingNode, NodeSettings, SimpleExecutor


async def noop(payload: Any) -> Any:
    return payload


async def sleep(payload: Any) -> None:
    await asyncio.sleep(float(payload or 0))


async def main() -> None:
    urls, instance, data_dir = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3])
    ack_wait = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    executor = SimpleExecutor({"noop": noop, "sleep": sleep})

    def handler(d: NatsDelivery) -> None:
        print(f"START {d.task.id} {d.attempt}", flush=True)
        executor(d)

    node = MessagingNode(
        NodeSettings(
            instance_id=instance,
            data_dir=data_dir,
            connection=ConnectionSettings(urls=tuple(urls), reconnect_base=0.05, reconnect_max=0.5),
            slots=8,
            cluster_slots=64,
            ack_wait=ack_wait,
            scheduler=False,
            heartbeat_interval=0.5,
        ),
        handler,
    )
    executor.bind(node)
    await node.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await node.drain(10)
    await node.stop()


if __name__ == "__main__":
    asyncio.run(main())

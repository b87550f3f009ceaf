"""Real nats-server processes for tests: one server or a loopback cluster, on free ports, temp dirs.

Each server logs to its own directory; readiness is read from that log. Tests can stop, kill and
restart servers; a restarted server keeps its port and its JetStream store.
"""

from __future__ import annotations

import socket
from pathlib import Path

from hulk.messaging.embedded import NatsServerProcess

__all__ = ["NatsCluster", "NatsServer", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer(NatsServerProcess):
    """A single JetStream server on a free port (`--port -1`), store and log under `root`."""

    def __init__(self, root: Path, **kwargs: object) -> None:
        super().__init__(store_dir=root, port=-1, **kwargs)  # type: ignore[arg-type]


class NatsCluster:
    """Three (or `size`) JetStream servers clustered over loopback routes."""

    def __init__(self, root: Path, size: int = 3, name: str = "hulk-test") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.servers: list[NatsServerProcess] = []
        for i in range(size):
            routes = [f"nats-route://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i]
            self.servers.append(
                NatsServerProcess(
                    store_dir=root / f"n{i}",
                    port=free_port(),
                    server_name=f"n{i}",
                    cluster_name=name,
                    cluster_port=cluster_ports[i],
                    routes=routes,
                )
            )

    @property
    def urls(self) -> list[str]:
        """Client URLs of every member."""
        return [s.url for s in self.servers]

    def start(self) -> None:
        """Starts every member (each returns once its log says ready)."""
        for s in self.servers:
            s.start(timeout=30.0)

    def stop(self) -> None:
        """Stops every member."""
        for s in self.servers:
            s.stop()

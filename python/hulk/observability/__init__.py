"""hulk's observability: structured logs, OpenTelemetry traces, Prometheus metrics, event-loop lag.

Plain modules that the service bootstrap wires from `Settings`:

    configure_logging(level=s.logging.level, fmt=s.logging.format)
    tracing = setup_tracing(s.telemetry, instance_id=instance)
    metrics = Metrics(instance=instance)
    lag = LoopLagMonitor(threshold=s.telemetry.loop_lag_threshold); lag.start()
    metrics.add_source(lag.metrics_source())

The engine knows none of them: it exposes native counters that `metrics` reads at scrape time.
"""

from __future__ import annotations

import os
import socket
import uuid

from hulk.observability.logging import configure_logging, get_level, get_logger, set_level
from hulk.observability.looplag import LoopLagMonitor
from hulk.observability.metrics import Metrics
from hulk.observability.tracing import Tracing, extract, inject, setup_tracing

__all__ = [
    "LoopLagMonitor",
    "Metrics",
    "Tracing",
    "configure_logging",
    "extract",
    "get_level",
    "get_logger",
    "inject",
    "new_instance_id",
    "set_level",
    "setup_tracing",
]


def new_instance_id() -> str:
    """An id for this process, unique across restarts: "<host>-<pid>-<8 hex>"."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

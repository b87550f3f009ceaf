"""Event-loop lag: how late a periodic callback runs, the health signal readiness uses.

A callback is scheduled every `interval` seconds with `loop.call_at`; when it runs, the lag is how
much later than its due time it ran. Anything that blocks the loop (a synchronous call, a CPU-bound
handler, a huge JSON document) shows up as lag. The monitor keeps the current and maximum lag, fills a
native histogram for `/metrics`, and sets `blocked` while lag exceeds the threshold, logging one
warning when an episode starts and one info line when it ends (never a line per tick).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from hulk._native import Histogram
from hulk.observability.logging import get_logger
from hulk.observability.metrics import HULK_METRICS, MetricSource, histogram_family

__all__ = ["LAG_BUCKETS", "LoopLagMonitor"]

LAG_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
"""Upper bounds (seconds) of the lag histogram."""


class _Logger(Protocol):
    def warning(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...


class LoopLagMonitor:
    """Measures the lag of an asyncio event loop with a periodic callback.

    Args:
        threshold: seconds of lag above which the loop counts as blocked (`telemetry.loop_lag_threshold`).
        interval: seconds between measurements.
        logger: where the episode warnings go (default the `hulk.observability.looplag` logger).
    """

    def __init__(self, *, threshold: float = 0.5, interval: float = 0.1, logger: _Logger | None = None) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold: expected seconds > 0, got {threshold!r}")
        if not interval > 0:
            raise ValueError(f"interval: expected seconds > 0, got {interval!r}")
        self.threshold = threshold
        self.interval = interval
        self.histogram = Histogram(buckets=LAG_BUCKETS)
        self._log: _Logger = logger if logger is not None else get_logger("hulk.observability.looplag")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._current = 0.0
        self._max = 0.0
        self._episode_max = 0.0
        self._in_episode = False
        self._episodes = 0
        self._samples = 0
        self._waiters: list[asyncio.Future[float]] = []

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Starts measuring on `loop` (default the running loop); a second call does nothing."""
        if self._handle is not None:
            return
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        """Stops measuring; pending `next_sample()` waiters are cancelled."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._handle is not None

    # --- readings ------------------------------------------------------------------------------------

    @property
    def current(self) -> float:
        """The lag of the last measurement, in seconds."""
        return self._current

    @property
    def max(self) -> float:
        """The largest lag measured since start or `reset_max()`."""
        return self._max

    @property
    def samples(self) -> int:
        """How many measurements were taken."""
        return self._samples

    @property
    def episodes(self) -> int:
        """How many blocked episodes began."""
        return self._episodes

    @property
    def blocked(self) -> bool:
        """True while lag is above the threshold.

        Also true while the loop is stuck right now (the next measurement is overdue by more than
        the threshold), so a probe answered from another thread sees a loop that is blocked now.
        """
        if self._in_episode:
            return True
        return self._loop is not None and self.running and self._loop.time() - self._due > self.threshold

    def reset_max(self) -> float:
        """Returns the maximum lag and starts a new maximum."""
        value, self._max = self._max, 0.0
        return value

    def next_sample(self) -> asyncio.Future[float]:
        """A future resolved with the lag of the next measurement (for tests and diagnostics).

        The future is registered when this is called, so `await monitor.next_sample()` never misses
        a measurement taken between the call and the await. `stop()` cancels it.

        Raises:
            RuntimeError: the monitor is not running.
        """
        if self._loop is None or self._handle is None:
            raise RuntimeError("LoopLagMonitor.next_sample: the monitor is not running; call start() first")
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._waiters.append(waiter)
        return waiter

    # --- the periodic callback -----------------------------------------------------------------------

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - only scheduled after start() set the loop
            return
        now = loop.time()
        lag = max(0.0, now - self._due)
        self._current = lag
        self._max = max(self._max, lag)
        self._samples += 1
        self.histogram.observe(lag)
        if lag > self.threshold:
            if not self._in_episode:
                self._in_episode = True
                self._episodes += 1
                self._episode_max = lag
                self._log.warning("event_loop.blocked", lag_seconds=round(lag, 6), threshold_seconds=self.threshold)
            else:
                self._episode_max = max(self._episode_max, lag)
        elif self._in_episode:
            self._in_episode = False
            self._log.info("event_loop.recovered", max_lag_seconds=round(self._episode_max, 6))
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(lag)

    # --- metrics -------------------------------------------------------------------------------------

    def metrics_source(self) -> MetricSource:
        """`hulk_event_loop_lag_seconds` (histogram) and `hulk_event_loop_blocked` (0 or 1) for `Metrics`."""
        return _LoopLagSource(self)


class _LoopLagSource:
    def __init__(self, monitor: LoopLagMonitor) -> None:
        self._monitor = monitor
        self._histogram = histogram_family("hulk_event_loop_lag_seconds", (), {(): monitor.histogram})

    def collect(self) -> Iterable[Metric]:
        yield from self._histogram.collect()
        name = "hulk_event_loop_blocked"
        yield GaugeMetricFamily(name, HULK_METRICS[name][2], value=1.0 if self._monitor.blocked else 0.0)

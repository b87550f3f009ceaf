"""hulk.observability.looplag: lag measured from a deliberately blocked loop, episodes, metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import CapturingLogger

from hulk.observability.looplag import LoopLagMonitor
from hulk.observability.metrics import Metrics

THRESHOLD = 0.05
INTERVAL = 0.01
BLOCK = 0.2  # > THRESHOLD + INTERVAL, so a tick delayed by it is always over the threshold


def block_loop(seconds: float) -> None:
    """Blocks the event loop on purpose: the behaviour under test."""
    time.sleep(seconds)


async def settle(monitor: LoopLagMonitor, max_samples: int = 200) -> None:
    """Waits for a tick under the threshold (the loop is free again)."""
    for _ in range(max_samples):
        if not monitor.blocked:
            return
        await monitor.next_sample()
    raise AssertionError("the loop never came back under the lag threshold")


def events(logger: CapturingLogger) -> list[tuple[str, str]]:
    return [(call.method_name, call.args[0]) for call in logger.calls]


async def test_a_blocked_loop_shows_lag_and_one_warning() -> None:
    logger = CapturingLogger()
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL, logger=logger)
    monitor.start()
    try:
        await monitor.next_sample()
        await settle(monitor)
        block_loop(BLOCK)
        lag = await monitor.next_sample()
        assert lag >= BLOCK - INTERVAL
        assert monitor.current == lag
        assert monitor.max >= lag
        assert monitor.blocked
        assert monitor.episodes == 1
        assert events(logger) == [("warning", "event_loop.blocked")]
        assert logger.calls[0].kwargs["threshold_seconds"] == THRESHOLD
        assert logger.calls[0].kwargs["lag_seconds"] >= BLOCK - INTERVAL
    finally:
        monitor.stop()


async def test_one_warning_per_episode_and_one_line_at_recovery() -> None:
    logger = CapturingLogger()
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL, logger=logger)
    monitor.start()
    try:
        await settle(monitor)
        block_loop(BLOCK)
        await monitor.next_sample()
        block_loop(BLOCK)  # still the same episode
        await monitor.next_sample()
        assert events(logger) == [("warning", "event_loop.blocked")]
        await settle(monitor)
        assert events(logger) == [("warning", "event_loop.blocked"), ("info", "event_loop.recovered")]
        assert logger.calls[1].kwargs["max_lag_seconds"] >= BLOCK - INTERVAL
        block_loop(BLOCK)  # a new episode
        await monitor.next_sample()
        assert monitor.episodes == 2
        assert [e for e in events(logger) if e[0] == "warning"] == [("warning", "event_loop.blocked")] * 2
    finally:
        monitor.stop()


async def test_blocked_is_true_while_the_loop_is_stuck_now() -> None:
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL, logger=CapturingLogger())
    monitor.start()
    try:
        await settle(monitor)
        block_loop(BLOCK)
        assert monitor.blocked  # read before the loop gets a chance to run the overdue tick
    finally:
        monitor.stop()


async def test_lag_feeds_the_histogram_and_the_metrics() -> None:
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL, logger=CapturingLogger())
    metrics = Metrics(instance="i")
    metrics.add_source(monitor.metrics_source())
    monitor.start()
    try:
        await settle(monitor)
        block_loop(BLOCK)
        await monitor.next_sample()
        snapshot = monitor.histogram.snapshot()
        assert snapshot["count"] == monitor.samples
        assert snapshot["sum"] >= BLOCK - INTERVAL
        body, _ = metrics.render()
        parsed = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert parsed["hulk_event_loop_blocked"].samples[0].value == 1.0
        count = next(s for s in parsed["hulk_event_loop_lag_seconds"].samples if s.name.endswith("_count"))
        assert count.value == monitor.samples
        await settle(monitor)
        body, _ = metrics.render()
        parsed = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert parsed["hulk_event_loop_blocked"].samples[0].value == 0.0
    finally:
        monitor.stop()


async def test_reset_max_starts_a_new_maximum() -> None:
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL, logger=CapturingLogger())
    monitor.start()
    try:
        block_loop(BLOCK)
        await monitor.next_sample()
        assert monitor.reset_max() >= BLOCK - INTERVAL
        assert monitor.max == 0.0
    finally:
        monitor.stop()


async def test_life_cycle() -> None:
    monitor = LoopLagMonitor(threshold=THRESHOLD, interval=INTERVAL)
    with pytest.raises(RuntimeError, match="not running"):
        monitor.next_sample()
    assert not monitor.running
    assert not monitor.blocked
    monitor.start(asyncio.get_running_loop())
    monitor.start()  # idempotent
    assert monitor.running
    await monitor.next_sample()
    assert monitor.samples >= 1
    waiter = monitor.next_sample()
    monitor.stop()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not monitor.running
    monitor.stop()  # idempotent


@pytest.mark.parametrize(("threshold", "interval"), [(0.0, 0.1), (-1.0, 0.1), (0.5, 0.0)])
def test_bad_arguments(threshold: float, interval: float) -> None:
    with pytest.raises(ValueError, match=r"threshold|interval"):
        LoopLagMonitor(threshold=threshold, interval=interval)

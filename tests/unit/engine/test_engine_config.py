"""Engine settings: defaults, "auto" counts and validation messages that name the bad value."""

from __future__ import annotations

import os
from typing import Any

import pytest

from hulk.engine import BackoffPolicy, BreakerPolicy, EngineConfig
from hulk.engine.config import resolve_count


def test_defaults() -> None:
    config = EngineConfig()
    cpus = os.cpu_count() or 1
    assert config.worker_count == cpus * 2
    assert config.worker_bounds == (cpus * 2, cpus * 2)
    assert config.queue_size == 2000
    assert config.timeout == 20.0
    assert config.thread_count == min(32, cpus + 4)
    assert config.process_count == cpus


def test_explicit_counts() -> None:
    config = EngineConfig(workers=3, min_workers=1, max_workers=8, sync_threads=2, process_workers=1)
    assert config.worker_bounds == (1, 8)
    assert (config.thread_count, config.process_count) == (2, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"workers": "many"}, "workers must be 'auto' or an integer"),
        ({"workers": 4, "min_workers": 5}, "min_workers <= workers <= max_workers"),
        ({"workers": 4, "max_workers": 2}, "min_workers <= workers <= max_workers"),
        ({"queue_size": 0}, "queue_size must be an integer >= 1, got 0"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, got -1"),
        ({"handlers": "pkg.tasks"}, "handlers must be a sequence of import paths"),
        ({"timeout": 0}, "timeout must be a finite number of seconds > 0, got 0"),
        ({"timeout": float("nan")}, "timeout must be a finite number"),
        ({"tick_interval": -1.0}, "tick_interval must be"),
        ({"store_ttl": float("inf")}, "store_ttl must be"),
        ({"batch_size": True}, "batch_size must be an integer"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EngineConfig(**kwargs)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: BackoffPolicy(base=-1), "BackoffPolicy.base"),
        (lambda: BackoffPolicy(factor=0.5), "BackoffPolicy.factor"),
        (lambda: BackoffPolicy(jitter="weird"), "BackoffPolicy.jitter"),  # type: ignore[arg-type]
        (lambda: BreakerPolicy(wait_open=0), "BreakerPolicy.wait_open"),
        (lambda: BreakerPolicy(minimum_calls=0), "BreakerPolicy.minimum_calls"),
    ],
)
def test_bad_policies_are_named(factory: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_breaker_policy_maps_to_native_kwargs() -> None:
    kwargs = BreakerPolicy(wait_open=5.0, fail_fast=True).native_kwargs()
    assert kwargs["wait_open"] == 5.0
    assert "fail_fast" not in kwargs


def test_resolve_count() -> None:
    assert resolve_count("x", "auto", 3) == (os.cpu_count() or 1) * 3
    assert resolve_count("x", 7, 3) == 7

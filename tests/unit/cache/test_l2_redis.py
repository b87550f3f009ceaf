"""The L2 level with nothing listening: every call is refused at once, the probe keeps trying."""

from hulk._native import CircuitBreaker
from hulk.cache.l2_redis import UNAVAILABLE, RedisLevel, glob_escape, redact_url
from hulk.cache.metrics import CacheMetrics
from tests.integration.cache.helpers import wait_until
from tests.servers import free_port


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def test_unavailable_is_falsy_and_named() -> None:
    assert not UNAVAILABLE
    assert repr(UNAVAILABLE) == "UNAVAILABLE"


async def test_a_dead_redis_costs_callers_nothing_and_the_probe_keeps_trying() -> None:
    breaker = CircuitBreaker(name="t", failure_count_threshold=1, wait_open=0.01, half_open_calls=1)
    metrics = CacheMetrics()
    level = RedisLevel(f"redis://127.0.0.1:{free_port()}/0", breaker=breaker, metrics=metrics)
    try:
        assert await level.start() is False
        assert not level.up
        assert level.outages == 1
        assert await level.get("k") is UNAVAILABLE
        assert await level.get_many(["k"]) is UNAVAILABLE
        assert await level.write([("k", b"r", None)]) is False
        assert await level.publish("c", b"m") is False
        assert metrics.l2_skipped.value == 4
        assert metrics.l2_error.value == 0
        # The probe fails against the closed port, again and again.
        await wait_until(lambda: level.probes >= 2, what="a second failed probe")
        assert level.last_error is not None
        assert level.outages == 1
    finally:
        await level.close()


def test_glob_escape_makes_a_prefix_literal() -> None:
    assert glob_escape("app[1]:*?\\") == "app\\[1\\]:\\*\\?\\\\"
    assert glob_escape("hulk:cache:") == "hulk:cache:"

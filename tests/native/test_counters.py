import math
import threading

import pytest

from hulk._native import Counter, Histogram


def test_counter_starts_at_zero_and_adds() -> None:
    c = Counter()
    assert c.value == 0
    c.inc()
    c.inc(41)
    assert c.value == 42
    assert repr(c) == "Counter(value=42)"


def test_counter_rejects_negative_amounts() -> None:
    with pytest.raises(OverflowError):
        Counter().inc(-1)


def test_counter_is_exact_under_threads() -> None:
    c = Counter()

    def bump() -> None:
        for _ in range(10_000):
            c.inc()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value == 40_000


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram(buckets=[0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 2.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap["buckets"] == [0.1, 1.0]
    assert snap["counts"] == [2, 3, 4]
    assert snap["count"] == 4
    assert math.isclose(snap["sum"], 2.65)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([], "at least one"),
        ([1.0, 0.5], "strictly increasing"),
        ([1.0, 1.0], "strictly increasing"),
        ([math.inf], "finite"),
        ([math.nan], "finite"),
    ],
)
def test_histogram_rejects_bad_buckets(buckets: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Histogram(buckets=buckets)


def test_histogram_rejects_nan_observation() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Histogram(buckets=[1.0]).observe(math.nan)


def test_histogram_takes_keyword_buckets_only() -> None:
    with pytest.raises(TypeError):
        Histogram([1.0])  # type: ignore[call-arg]

"""The cache's figures: native counters bumped on the hot path and read only at scrape time.

No Prometheus call is made here: the observability layer reads `CacheMetrics.snapshot()` (through
`Cache.metrics_snapshot()`) when it is scraped and names the series itself.
"""

from __future__ import annotations

from typing import Any

from hulk._native import Counter, Histogram

LEVELS = ("l1", "l2", "l3")

# Seconds, from a sub-microsecond L1 hit to a Redis call at its timeout.
LATENCY_BUCKETS = [
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
]

# One L1 hit in this many is timed: timing every hit would cost more than the hit itself.
L1_LATENCY_SAMPLE = 64


class CacheMetrics:
    """Counters and latency histograms of one cache (shared by its namespaces)."""

    def __init__(self) -> None:
        self.l1_hit = Counter()
        self.l1_miss = Counter()
        self.l2_hit = Counter()
        self.l2_miss = Counter()
        self.l2_error = Counter()
        self.l2_skipped = Counter()
        self.l3_hit = Counter()
        self.l3_miss = Counter()
        self.l3_error = Counter()
        self.computes = Counter()
        self.compute_errors = Counter()
        self.sets = Counter()
        self.deletes = Counter()
        self.invalidations_sent = Counter()
        self.invalidations_received = Counter()
        self.l2_resynced = Counter()
        self.l3_snapshots = Counter()
        self.l3_snapshot_entries = Counter()
        self.corrupt_records = Counter()
        self.l3_warmed = Counter()
        self.latency = {level: Histogram(buckets=LATENCY_BUCKETS) for level in ("l1", "l2", "l3", "compute")}

    def requests(self) -> dict[tuple[str, str], Counter]:
        """{(level, result): counter}, for `hulk_cache_requests_total{level, result}`."""
        return {
            ("l1", "hit"): self.l1_hit,
            ("l1", "miss"): self.l1_miss,
            ("l2", "hit"): self.l2_hit,
            ("l2", "miss"): self.l2_miss,
            ("l2", "error"): self.l2_error,
            ("l2", "skipped"): self.l2_skipped,
            ("l3", "hit"): self.l3_hit,
            ("l3", "miss"): self.l3_miss,
            ("l3", "error"): self.l3_error,
        }

    def latencies(self) -> dict[tuple[str], Histogram]:
        """{(level,): histogram} of seconds per level ("l1" sampled, "l2", "l3", "compute")."""
        return {(level,): hist for level, hist in self.latency.items()}

    def snapshot(self) -> dict[str, Any]:
        """Every figure as plain data: requests by level and result, hit ratios, latencies, events."""
        requests = {
            "l1": {"hit": self.l1_hit.value, "miss": self.l1_miss.value},
            "l2": {
                "hit": self.l2_hit.value,
                "miss": self.l2_miss.value,
                "error": self.l2_error.value,
                "skipped": self.l2_skipped.value,
            },
            "l3": {"hit": self.l3_hit.value, "miss": self.l3_miss.value, "error": self.l3_error.value},
        }
        hit_ratio = {}
        for level, counts in requests.items():
            total = sum(counts.values())
            hit_ratio[level] = counts["hit"] / total if total else 0.0
        return {
            "requests": requests,
            "hit_ratio": hit_ratio,
            "latency_seconds": {level: hist.snapshot() for level, hist in self.latency.items()},
            "computes": self.computes.value,
            "compute_errors": self.compute_errors.value,
            "sets": self.sets.value,
            "deletes": self.deletes.value,
            "invalidations": {"sent": self.invalidations_sent.value, "received": self.invalidations_received.value},
            "l2_resynced": self.l2_resynced.value,
            "corrupt_records": self.corrupt_records.value,
            "l3": {
                "snapshots": self.l3_snapshots.value,
                "snapshot_entries": self.l3_snapshot_entries.value,
                "warmed": self.l3_warmed.value,
            },
        }

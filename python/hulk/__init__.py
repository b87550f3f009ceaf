"""hulk: a Python task runtime whose hot path is Rust.

The native core (queue, backoff scheduler, circuit breaker, L1 cache, counters) is importable as
`hulk.native`; the engine, messaging, cache and service layers build on it.
"""

from hulk._native import __version__, build_profile

__all__ = ["__version__", "build_profile"]

"""One table from hulk's exceptions to HTTP status codes, so every route maps errors the same way."""

from __future__ import annotations

import math

from hulk import errors

# Most specific first: the first class the error is an instance of decides.
_TABLE: list[tuple[type[BaseException], int, str]] = [
    (errors.QueueFull, 429, "queue_full"),
    (errors.QueueClosed, 503, "draining"),
    (errors.BreakerOpen, 503, "breaker_open"),
]


def register(exc_type: type[BaseException], status: int, code: str) -> None:
    """Maps `exc_type` (and subclasses) to `status` with a stable error `code`; later layers call this."""
    _TABLE.insert(0, (exc_type, status, code))


def status_for(exc: BaseException) -> tuple[int, str, dict[str, str] | None]:
    """The status, code and extra headers for an exception (500 `internal_error` when unmapped).

    Backpressure (`QueueFull`) and open breakers carry `Retry-After` in whole seconds.
    """
    for exc_type, status, code in _TABLE:
        if isinstance(exc, exc_type):
            headers = None
            if status in (429, 503):
                retry_after = getattr(exc, "retry_after", 1.0)
                headers = {"Retry-After": str(max(1, math.ceil(float(retry_after))))}
            return status, code, headers
    return 500, "internal_error", None

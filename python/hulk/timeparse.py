"""Durations as people write them: `30s`, `250ms`, `2m`, `1h`, `1d`, or a plain number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: str | float | int) -> float:
    """Returns `value` in seconds.

    Args:
        value: a number of seconds, or a string such as `"30s"`, `"250ms"`, `"1.5h"`.

    Raises:
        ValueError: negative, not finite, or not a duration; the message quotes the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"expected a duration such as '30s', '250ms', '2m', '1h' or seconds, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
    return seconds

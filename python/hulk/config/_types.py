"""Value types of the configuration: durations, sizes, counts, import paths and URL lists.

Each type is an `Annotated` alias whose validator runs before pydantic's own and raises `ValueError`
with the *expected* form as its message; `hulk.config` turns that into a `ConfigError` naming the key
path and the bad value. Values from environment variables arrive as strings, so every parser also
accepts the string form of its type.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer
from pydantic_settings import NoDecode

__all__ = [
    "Count",
    "Duration",
    "ImportPath",
    "NonNegativeCount",
    "PositiveDuration",
    "Ratio",
    "Size",
    "StringList",
    "StringMap",
    "number_of_cpus",
    "parse_duration",
    "parse_size",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

_DURATION_HELP = "a duration such as '30s', '250ms', '2m', '1h', '1h30m' or a number of seconds"


def parse_duration(value: object, *, allow_zero: bool = True) -> float:
    """Parses a duration into seconds.

    Args:
        value: a number of seconds (int or float), or a string: a plain number, or one or more
            number-unit pairs with units ms, s, m, h, d ("250ms", "30s", "1h30m").
        allow_zero: whether 0 is acceptable.

    Returns:
        The duration in seconds, finite and >= 0 (> 0 when `allow_zero` is False).

    Raises:
        ValueError: the value is not a duration; the message says what was expected.
    """
    expected = _DURATION_HELP if allow_zero else "a positive duration (> 0) such as '30s', '250ms', '2m', '1h'"
    seconds: float
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION_FULL.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        else:
            raise ValueError(expected)
    else:
        raise ValueError(expected)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(expected)
    return seconds


def parse_size(value: object) -> int:
    """Parses a size into bytes.

    Args:
        value: an integer number of bytes, or a string: a number with an optional unit, B, KB, MB,
            GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), case-insensitive.

    Returns:
        The size in bytes, >= 0.

    Raises:
        ValueError: the value is not a size; the message says what was expected.
    """
    expected = "a size in bytes such as 1048576, '512KiB', '1MiB', '2GB'"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(expected)
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if match and match.group(2) in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(expected)


def _count(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        expected = f"an integer >= {minimum}"
        if isinstance(value, bool):
            raise ValueError(expected)
        number: int
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value.strip())
        else:
            raise ValueError(expected)
        if number < minimum:
            raise ValueError(expected)
        return number

    return parse


def _ratio(value: object) -> float:
    expected = "a number between 0.0 and 1.0"
    if isinstance(value, bool):
        raise ValueError(expected)
    try:
        ratio = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(expected)
    return ratio


def _string_list(value: object) -> object:
    """Accepts a list, or (from the environment) a JSON list or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("a JSON list of strings") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _string_map(value: object) -> object:
    """Accepts a mapping, or (from the environment) a JSON object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("a JSON object of strings to strings") from None
    return value


def _freeze_map(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?")


def _import_path(value: object) -> object:
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value.strip()):
        raise ValueError("an import path such as 'myapp.tasks' or 'myapp.tasks:registry'")
    return value.strip()


def _positive_duration(value: object) -> float:
    return parse_duration(value, allow_zero=False)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds >= 0, written as "30s", "250ms", "2m", "1h", "1h30m" or a number."""

PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
"""Seconds > 0, same forms as `Duration`."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes >= 0, written as an integer or "512KiB", "1MiB", "2GB"."""

Count = Annotated[int, BeforeValidator(_count(1))]
"""An integer >= 1."""

NonNegativeCount = Annotated[int, BeforeValidator(_count(0))]
"""An integer >= 0."""

Ratio = Annotated[float, BeforeValidator(_ratio)]
"""A float in [0, 1]."""

ImportPath = Annotated[str, BeforeValidator(_import_path)]
"""A dotted module path, optionally with ":attribute"."""

StringList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_string_list)]
"""An immutable list of strings; from the environment a JSON list or a comma-separated string."""

StringMap = Annotated[
    Mapping[str, str],
    NoDecode,
    BeforeValidator(_string_map),
    AfterValidator(_freeze_map),
    PlainSerializer(dict, return_type=dict[str, str]),
]
"""An immutable mapping of strings; from the environment a JSON object."""


def number_of_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity call
        return os.cpu_count() or 1

"""Cache keys shared by the engine and the cache layer (dependency-free, so either may import it).

A cacheable task type's result lives under `result_key(type, canonical_payload(payload))` in the
namespace of the task's tenant; user code can compute the same key to read or drop a cached result.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["canonical_payload", "result_key"]


def canonical_payload(payload: Any) -> bytes:
    """The payload's JSON bytes with object keys sorted, so equal payloads give equal bytes.

    Raises:
        TypeError: orjson cannot serialise `payload`.
    """
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def result_key(task_type: str, payload: bytes | bytearray | memoryview) -> str:
    """The cache key of a task's result: the same (type, payload) always gives the same key.

    A cacheable task type stores its result under this key in the tenant's namespace; an identical
    task submitted within the entry's TTL reads the result instead of running. The payload is
    hashed as given (the engine passes `canonical_payload(payload)`), with BLAKE2b-128.

    Args:
        task_type: the registered task type (non-empty).
        payload: the task's payload bytes.

    Returns:
        `"result:<task_type>:<32 hex digits>"`.

    Raises:
        ValueError: `task_type` is empty.
        TypeError: `payload` is not bytes.
    """
    if not task_type:
        raise ValueError(f"task_type must be a non-empty string, got {task_type!r}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    digest = hashlib.blake2b(payload, digest_size=16, person=b"hulk-result-v1").hexdigest()
    return f"result:{task_type}:{digest}"

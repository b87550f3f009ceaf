"""The record format shared by L2 (Redis) and L3 (RocksDB), and cache key helpers.

A record is a 9-byte header, then the payload:

    tag (1 byte)   b"j": orjson payload · b"b": raw bytes payload · b"t": tombstone (a deleted key)
    expires_at     little-endian float64, wall-clock seconds since the epoch; 0.0 means never

Carrying the expiry in the record lets any level derive the remaining time to live of a value it
back-fills, with one GET and no PTTL round trip, and lets L3 drop expired entries by itself.
"""

from __future__ import annotations

import re
import struct
from typing import Any, NamedTuple

import orjson

from hulk.keys import result_key as result_key  # re-exported: the key helper of cacheable tasks

TAG_JSON = ord("j")
TAG_BYTES = ord("b")
TAG_TOMBSTONE = ord("t")

_HEADER = struct.Struct("<Bd")
HEADER_SIZE = _HEADER.size
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class CorruptRecord(ValueError):
    """A stored record that cannot be decoded (bad header, unknown tag or bad JSON)."""


class Record(NamedTuple):
    """A decoded record.

    Attributes:
        tombstone: True when the key was deleted (no value).
        expires_at: wall-clock expiry in epoch seconds, 0.0 for never.
        value: the decoded value (None for a tombstone).
    """

    tombstone: bool
    expires_at: float
    value: Any


def encode(value: object, expires_at: float) -> bytes:
    """Serialises `value` into a record: bytes pass through, anything else goes through orjson.

    Raises:
        TypeError: orjson cannot serialise `value`.
    """
    if type(value) is bytes:
        return _HEADER.pack(TAG_BYTES, expires_at) + value
    return _HEADER.pack(TAG_JSON, expires_at) + orjson.dumps(value)


def tombstone(expires_at: float) -> bytes:
    """A record that says the key was deleted, until `expires_at`."""
    return _HEADER.pack(TAG_TOMBSTONE, expires_at)


def decode(record: bytes) -> Record:
    """Parses a record.

    Raises:
        CorruptRecord: the record is truncated, has an unknown tag or holds invalid JSON.
    """
    if len(record) < HEADER_SIZE:
        raise CorruptRecord(f"record of {len(record)} bytes is shorter than its header")
    tag, expires_at = _HEADER.unpack_from(record)
    if tag == TAG_JSON:
        try:
            return Record(False, expires_at, orjson.loads(memoryview(record)[HEADER_SIZE:]))
        except orjson.JSONDecodeError as exc:
            raise CorruptRecord(f"invalid JSON payload: {exc}") from None
    if tag == TAG_BYTES:
        return Record(False, expires_at, record[HEADER_SIZE:])
    if tag == TAG_TOMBSTONE:
        return Record(True, expires_at, None)
    raise CorruptRecord(f"unknown record tag {tag!r}")


def expires_at_of(record: bytes) -> float:
    """The expiry of a record without decoding its payload.

    Raises:
        CorruptRecord: the record is shorter than its header.
    """
    if len(record) < HEADER_SIZE:
        raise CorruptRecord(f"record of {len(record)} bytes is shorter than its header")
    expires_at: float = _HEADER.unpack_from(record)[1]
    return expires_at


def check_namespace(namespace: str) -> str:
    """Returns `namespace` if it is 1–128 characters of letters, digits, `_`, `.` and `-`.

    The separator `:` is excluded, so `<namespace>:<key>` can never collide across namespaces.

    Raises:
        ValueError: the namespace is empty, too long or holds another character.
    """
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"namespace must be 1-128 characters of [A-Za-z0-9_.-], got {namespace!r}")
    return namespace

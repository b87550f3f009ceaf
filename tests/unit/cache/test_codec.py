import struct

import pytest

from hulk.cache import result_key
from hulk.cache.codec import (
    HEADER_SIZE,
    CorruptRecord,
    check_namespace,
    decode,
    encode,
    expires_at_of,
    tombstone,
)


@pytest.mark.parametrize("value", [{"a": [1, 2, {"b": None}]}, [1, "x"], "text", 3, 2.5, True, None])
def test_json_values_round_trip(value: object) -> None:
    record = decode(encode(value, 123.5))
    assert record == (False, 123.5, value)


def test_bytes_pass_through_untouched() -> None:
    raw = b"\x00\xff not json"
    record = encode(raw, 0.0)
    assert record[HEADER_SIZE:] == raw
    assert decode(record) == (False, 0.0, raw)


def test_tuples_come_back_as_lists() -> None:
    assert decode(encode((1, 2), 0.0)).value == [1, 2]


def test_unserialisable_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        encode(object(), 0.0)


def test_tombstone_has_no_value() -> None:
    assert decode(tombstone(9.0)) == (True, 9.0, None)
    assert expires_at_of(tombstone(9.0)) == 9.0


@pytest.mark.parametrize(
    "record",
    [b"", b"j", struct.pack("<Bd", ord("j"), 0.0) + b"{not json", struct.pack("<Bd", ord("z"), 0.0)],
)
def test_corrupt_records_raise(record: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode(record)


def test_expires_at_of_short_record_raises() -> None:
    with pytest.raises(CorruptRecord):
        expires_at_of(b"jx")


@pytest.mark.parametrize("name", ["default", "tenant-42", "a.b_c", "x" * 128])
def test_valid_namespaces(name: str) -> None:
    assert check_namespace(name) == name


@pytest.mark.parametrize("name", ["", "a:b", "x" * 129, "space here", 7])
def test_invalid_namespaces_name_the_value(name: object) -> None:
    with pytest.raises(ValueError, match="namespace"):
        check_namespace(name)  # type: ignore[arg-type]


def test_result_key_is_stable_and_distinguishes_type_and_payload() -> None:
    key = result_key("resize", b'{"w":1}')
    assert key == result_key("resize", b'{"w":1}')
    assert key.startswith("result:resize:")
    assert len(key.rsplit(":", 1)[1]) == 32
    assert key != result_key("resize", b'{"w":2}')
    assert key != result_key("crop", b'{"w":1}')
    assert result_key("t", bytearray(b"p")) == result_key("t", b"p")


def test_result_key_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="task_type"):
        result_key("", b"x")
    with pytest.raises(TypeError, match="payload"):
        result_key("t", "not bytes")  # type: ignore[arg-type]

"""Fixtures of the observability tests: log output captured as JSON lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from hulk.observability.logging import configure_logging, reset_logging


@pytest.fixture
def output() -> Iterator[io.BytesIO]:
    """hulk's log output, JSON lines at info level, into a buffer; logging restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.BytesIO()
    configure_logging(level="info", fmt="json", stream=buffer)
    try:
        yield buffer
    finally:
        reset_logging()
        root.setLevel(level)
        root.handlers[:] = handlers


def lines(buffer: io.BytesIO) -> list[dict[str, Any]]:
    """The JSON log lines written to `buffer` so far."""
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]

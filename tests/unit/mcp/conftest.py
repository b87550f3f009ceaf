"""Fixtures of the hulk-mcp tests: a live API per test (real uvicorn, in-memory backend), a clean environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.cli.ops_live import LiveApi, serve_api


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HULK_URL", "HULK_TOKEN", "HULK_ADMIN_TOKEN", "HULK_TENANT", "HULK_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def live() -> Iterator[LiveApi]:
    with serve_api() as api:
        yield api

"""Shared set-up for the pytest-benchmark suites in bench/: refuse to measure a debug build."""

import pytest

import hulk._native as native


def pytest_configure(config: pytest.Config) -> None:
    """Stops the run when the native module is a debug build: its figures would mean nothing."""
    if native.build_profile != "release":
        raise pytest.UsageError("bench/ refuses a debug build of hulk._native: run `make build-dev` (release)")

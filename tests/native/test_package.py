"""The package around the native module: version, build profile, exception tree, clock."""

import importlib.metadata
import time

import hulk
import hulk._native as native
import hulk.errors as errors


def test_installed_version_matches_native_version() -> None:
    assert importlib.metadata.version("hulk") == native.__version__ == hulk.__version__


def test_build_profile_is_known() -> None:
    assert native.build_profile in ("debug", "release")


def test_exception_tree_is_rooted_at_hulk_error() -> None:
    for exc in (errors.QueueEmpty, errors.QueueFull, errors.QueueClosed, errors.BreakerOpen):
        assert issubclass(exc, errors.HulkError)
        assert exc.__module__ == "hulk.errors"
    assert issubclass(errors.HulkError, Exception)


def test_native_clock_agrees_with_time_monotonic() -> None:
    before = time.monotonic()
    now = native.monotonic()
    after = time.monotonic()
    assert before <= now <= after

"""hulk.observability: the package's public surface."""

from __future__ import annotations

import os
import socket

import hulk.observability as observability


def test_instance_ids_name_host_and_process_and_never_repeat() -> None:
    first, second = observability.new_instance_id(), observability.new_instance_id()
    assert first.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert first != second


def test_public_names_are_importable() -> None:
    for name in observability.__all__:
        assert getattr(observability, name) is not None

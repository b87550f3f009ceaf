"""Fixtures for the service tests: real nats-server and redis-server processes, and real `hulk serve` ones.

Every service runs in its own temp dir (its relative data dirs land there), binds port 0 and is stopped
in `finally` (SIGTERM, SIGKILL after a deadline), whatever the test did. Module-scoped services serve
the read-mostly API tests; tests that stop NATS or the service itself get their own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.service.helpers import ServiceProcess, admin_headers, service_env
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

ServiceFactory = Callable[..., ServiceProcess]


@contextlib.contextmanager
def _nats(root: Path) -> Iterator[NatsServer]:
    server = NatsServer(root)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def _services(root: Path) -> Iterator[ServiceFactory]:
    made: list[ServiceProcess] = []
    counter = itertools.count(1)

    def make(
        nats: NatsServer | None = None,
        *,
        wait_ready: bool = True,
        wrapper: list[str] | None = None,
        env: dict[str, str] | None = None,
        **overrides: str,
    ) -> ServiceProcess:
        """Starts `hulk serve` on `nats` (or with `env` as the whole environment); returns when ready."""
        if env is None:
            if nats is not None:
                overrides = {"HULK_NATS__URLS": nats.url, "HULK_NATS__EMBEDDED": "false", **overrides}
            env = service_env(**overrides)
        service = ServiceProcess(root / f"svc{next(counter)}", env, wrapper=wrapper)
        made.append(service)
        service.start(wait_ready=wait_ready)
        return service

    try:
        yield make
    finally:
        for service in made:
            service.stop(timeout=30.0)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private JetStream server for one test (the test may stop and restart it)."""
    with _nats(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Starts `hulk serve` processes for one test; every one is stopped after it."""
    with _services(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A JetStream server shared by one test module (tests must not stop it)."""
    with _nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def module_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceFactory]:
    """Starts `hulk serve` processes shared by one test module; stopped after its last test."""
    with _services(tmp_path_factory.mktemp("services")) as make:
        yield make


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers carrying the admin token."""
    return admin_headers()

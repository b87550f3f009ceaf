"""A real `hulk serve` process against a real nats-server, for the thor and hulk-mcp integration tests.

The service listens on a port it picks (`server.port: 0`) and says where in its `hulk.ready` log line;
the fixture reads that line (never a sleep), and stops the service with SIGTERM in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.cli.ops_live import nats_server

ADMIN_TOKEN = "integration-admin-s3cret"


@dataclass
class HulkService:
    """A running service: its URL, admin token, NATS URL, instance id and configuration file."""

    url: str
    nats_url: str
    instance: str
    config: Path
    admin_token: str = ADMIN_TOKEN
    log: list[str] = field(default_factory=list)


def _write_config(root: Path, nats_url: str) -> Path:
    path = root / "hulk.yaml"
    path.write_text(
        f"""\
server:
  host: 127.0.0.1
  port: 0
  admin_token: "{ADMIN_TOKEN}"
engine:
  workers: 4
  max_retries: 0
  drain_timeout: 5s
nats:
  urls: ["{nats_url}"]
  embedded: false
cache:
  l3_path: "{root / "cache"}"
logging:
  level: info
  format: json
telemetry:
  tracing:
    enabled: false
"""
    )
    return path


@contextlib.contextmanager
def hulk_serve(root: Path) -> Iterator[HulkService]:
    """Starts nats-server and `hulk serve` under `root`; yields once the service logged `hulk.ready`."""
    with nats_server(root / "nats") as nats_url:
        config = _write_config(root, nats_url)
        hulk = str(Path(sys.executable).parent / "hulk")
        proc = subprocess.Popen(
            [hulk, "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=root,
        )
        log: list[str] = []
        try:
            assert proc.stdout is not None
            ready = None
            for line in proc.stdout:
                log.append(line)
                if '"hulk.ready"' in line:
                    ready = json.loads(line)
                    break
            if ready is None:
                raise RuntimeError("hulk serve exited before it was ready:\n" + "".join(log))
            stdout = proc.stdout
            threading.Thread(target=lambda: log.extend(stdout), name="hulk-log", daemon=True).start()
            yield HulkService(url=ready["url"], nats_url=nats_url, instance=ready["instance"], config=config, log=log)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HulkService]:
    """One service for a test module (tests there must not drain it)."""
    with hulk_serve(tmp_path_factory.mktemp("hulk")) as running:
        yield running


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[HulkService]:
    """A service of the test's own, for tests that drain it."""
    with hulk_serve(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HULK_URL", "HULK_TOKEN", "HULK_ADMIN_TOKEN", "HULK_TENANT", "HULK_CONFIG", "HULK_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")

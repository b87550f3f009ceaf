"""`hulk.service.wiring`: one validated `Settings` mapped onto each layer's constructor arguments."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hulk.config import DEFAULT_NATS_URL, Settings
from hulk.service import wiring


def settings(**sections: object) -> Settings:
    return Settings.model_validate(sections)


def test_engine_config_maps_every_key() -> None:
    s = settings(
        engine={
            "workers": 6,
            "min_workers": 2,
            "max_workers": 10,
            "queue_size": 50,
            "timeout": "3s",
            "max_retries": 4,
            "backoff": {"base": "100ms", "factor": 3, "max_delay": "5s", "jitter": "equal"},
            "handlers": ["hulk.engine.builtins"],
            "drain_timeout": "7s",
        },
        nats={"stream": {"max_deliver": 6}},
    )
    cfg = wiring.engine_config(s)
    assert (cfg.workers, cfg.min_workers, cfg.max_workers) == (6, 2, 10)
    assert (cfg.queue_size, cfg.timeout, cfg.max_retries, cfg.drain_timeout) == (50, 3.0, 4, 7.0)
    assert (cfg.backoff.base, cfg.backoff.factor, cfg.backoff.max_delay) == (0.1, 3.0, 5.0)
    assert cfg.backoff.jitter == "equal"
    assert cfg.handlers == ("hulk.engine.builtins",)


def test_engine_config_without_max_workers_is_a_fixed_pool() -> None:
    cfg = wiring.engine_config(settings(engine={"workers": 3, "min_workers": 1}))
    assert (cfg.workers, cfg.min_workers, cfg.max_workers) == (3, 1, 3)


def test_embedded_nats_explicit_choices() -> None:
    assert wiring.use_embedded_nats(settings(nats={"embedded": True, "urls": ["nats://10.0.0.1:4222"]})) is True
    assert wiring.use_embedded_nats(settings(nats={"embedded": False})) is False


def test_embedded_auto_never_shadows_a_configured_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "_port_answers", lambda url, timeout=0.3: False)
    assert wiring.use_embedded_nats(settings(nats={"embedded": "auto", "urls": ["nats://nats-1:4222"]})) is False
    assert wiring.use_embedded_nats(settings(nats={"embedded": "auto"})) is True


def test_embedded_auto_uses_a_local_server_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def answers(url: str, timeout: float = 0.3) -> bool:
        asked.append(url)
        return True

    monkeypatch.setattr(wiring, "_port_answers", answers)
    assert wiring.use_embedded_nats(settings()) is False
    assert asked == [DEFAULT_NATS_URL]


def test_port_answers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert wiring._port_answers(f"nats://127.0.0.1:{port}")
        assert wiring._port_answers(f"nats://user:pass@127.0.0.1:{port}")
    assert not wiring._port_answers(f"nats://127.0.0.1:{port}", timeout=0.2)


def test_node_settings() -> None:
    s = settings(
        nats={
            "urls": ["nats://a:4222", "nats://b:4222"],
            "user": "svc",
            "pass": "pw",
            "tls": {"ca_file": "/ca.pem"},
            "data_dir": "/var/hulk/nats",
            "stream": {"replicas": 3, "ack_wait": "10s", "max_deliver": 9, "duplicate_window": "1m"},
        },
        engine={"workers": 100, "max_retries": 2},
        scheduler={"tick_interval": "2s", "lease_ttl": "9s"},
    )
    node = wiring.node_settings(s, instance_id="i-1", embedded=False)
    conn = node.connection
    assert conn.urls == ("nats://a:4222", "nats://b:4222")
    assert (conn.user, conn.password, conn.token, conn.creds_file) == ("svc", "pw", None, None)
    assert (conn.tls_ca_file, conn.tls_cert_file, conn.tls_key_file) == ("/ca.pem", None, None)
    assert conn.name == "hulk-i-1"
    assert node.data_dir == Path("/var/hulk/nats")
    assert (node.streams.replicas, node.streams.duplicate_window) == (3, 60.0)
    assert (node.slots, node.cluster_slots) == (100, 1600)
    assert (node.ack_wait, node.max_attempts, node.max_deliver) == (10.0, 3, 9)
    assert (node.tick_interval, node.lease_ttl) == (2.0, 9.0)
    assert node.embedded is False


def test_node_settings_small_pool_keeps_room_for_other_instances() -> None:
    node = wiring.node_settings(settings(engine={"workers": 4}), instance_id="i", embedded=True)
    assert (node.slots, node.cluster_slots, node.embedded) == (4, 1024, True)
    assert node.connection.token is None


def test_cache_kwargs() -> None:
    kwargs = wiring.cache_kwargs(settings(), instance_id="i-2")
    assert kwargs["l2_url"] is None
    assert kwargs["l3_path"] == "data/cache"
    assert kwargs["instance_id"] == "i-2"
    s = settings(cache={"l2_url": "redis://r:6379/1", "l3_path": "", "l1_size": 7, "l1_ttl": "2s"})
    kwargs = wiring.cache_kwargs(s, instance_id="i")
    assert (kwargs["l2_url"], kwargs["l3_path"], kwargs["l1_size"], kwargs["l1_ttl"]) == (
        "redis://r:6379/1",
        None,
        7,
        2.0,
    )


def test_http_options() -> None:
    s = settings(
        server={
            "admin_token": "adm",
            "tenant_tokens": {"t1": "acme"},
            "tenant_header": "X-Org",
            "body_limit": "2KiB",
            "request_timeout": "4s",
        }
    )
    opts = wiring.http_options(s)
    assert (opts.admin_token, dict(opts.tenant_tokens), opts.tenant_header) == ("adm", {"t1": "acme"}, "x-org")
    assert (opts.body_limit, opts.request_timeout) == (2048, 4.0)

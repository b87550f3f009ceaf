"""From one validated `Settings` to each layer's own constructor arguments.

Every layer takes explicit parameters (so it is usable and testable alone); this module is the one
place that knows how configuration keys map onto them.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from hulk._native import __version__
from hulk.config import DEFAULT_NATS_URL, Settings
from hulk.engine import BackoffPolicy, EngineConfig
from hulk.http import HttpOptions
from hulk.messaging.connection import ConnectionSettings
from hulk.messaging.node import NodeSettings
from hulk.messaging.streams import StreamSettings


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's configuration from `engine.*`."""
    e = settings.engine
    backoff = BackoffPolicy(
        base=e.backoff.base,
        factor=e.backoff.factor,
        max_delay=e.backoff.max_delay,
        jitter=e.backoff.jitter,  # type: ignore[arg-type]
    )
    max_workers = e.max_workers if e.max_workers is not None else e.workers
    return EngineConfig(
        workers=e.workers,
        min_workers=min(e.min_workers, e.workers),
        max_workers=max(max_workers, e.workers),
        queue_size=e.queue_size,
        timeout=e.timeout,
        max_retries=e.max_retries,
        backoff=backoff,
        handlers=tuple(e.handlers),
        drain_timeout=e.drain_timeout,
    )


def _port_answers(url: str, timeout: float = 0.3) -> bool:
    host_port = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 4222)), timeout=timeout):
            return True
    except OSError:
        return False


def use_embedded_nats(settings: Settings) -> bool:
    """Whether to start the bundled nats-server: `nats.embedded` true, or "auto" with nothing answering.

    "auto" embeds only when `nats.urls` is the default and no server answers there, so a laptop
    with no NATS gets one, and a configured cluster is never shadowed by a local server.
    """
    embedded = settings.nats.embedded
    if embedded == "auto":
        return tuple(settings.nats.urls) == (DEFAULT_NATS_URL,) and not _port_answers(DEFAULT_NATS_URL)
    return bool(embedded)


def node_settings(settings: Settings, *, instance_id: str, embedded: bool) -> NodeSettings:
    """The messaging node's settings from `nats.*`, `scheduler.*` and `engine.*`."""
    n = settings.nats
    tls = n.tls
    connection = ConnectionSettings(
        urls=tuple(n.urls),
        user=n.user or None,
        password=n.password.get_secret_value() or None,
        token=n.token.get_secret_value() or None,
        creds_file=n.creds_file or None,
        tls_ca_file=tls.ca_file or None,
        tls_cert_file=tls.cert_file or None,
        tls_key_file=tls.key_file or None,
        name=f"hulk-{instance_id}",
    )
    streams = StreamSettings(
        replicas=n.stream.replicas,
        max_age=n.stream.max_age,
        max_bytes=n.stream.max_bytes,
        duplicate_window=n.stream.duplicate_window,
    )
    workers = settings.engine.workers
    return NodeSettings(
        instance_id=instance_id,
        data_dir=Path(n.data_dir),
        connection=connection,
        streams=streams,
        embedded=embedded,
        slots=workers,
        cluster_slots=max(1024, workers * 16),
        ack_wait=n.stream.ack_wait,
        max_attempts=settings.engine.max_retries + 1,
        max_deliver=n.stream.max_deliver,
        tick_interval=settings.scheduler.tick_interval,
        lease_ttl=settings.scheduler.lease_ttl,
        version=__version__,
    )


def cache_kwargs(settings: Settings, *, instance_id: str) -> dict[str, Any]:
    """The multi-level cache's arguments from `cache.*`."""
    c = settings.cache
    return {
        "l1_size": c.l1_size,
        "l1_ttl": c.l1_ttl,
        "l2_url": c.l2_url or None,
        "l2_ttl": c.l2_ttl,
        "l3_path": c.l3_path or None,
        "snapshot_interval": c.snapshot_interval,
        "instance_id": instance_id,
    }


def http_options(settings: Settings) -> HttpOptions:
    """The HTTP layer's options from `server.*`."""
    s = settings.server
    return HttpOptions(
        body_limit=s.body_limit,
        request_timeout=s.request_timeout,
        admin_token=s.admin_token.get_secret_value(),
        tenant_tokens={token: tenant for token, tenant in s.tenant_tokens.items()},
        tenant_header=s.tenant_header.lower(),
    )

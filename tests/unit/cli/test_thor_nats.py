"""hulk.cli._nats against real nats-servers: authentication options, a server without JetStream, masking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hulk.cli._nats import NatsTarget, NatsUnavailable, _mask, instances, stream_report
from tests.unit.cli.ops_live import nats_server, plain_nats_server


def test_label_masks_passwords() -> None:
    assert _mask("nats://u:pw@h:4222") == "nats://u:***@h:4222"
    assert _mask("nats://h:4222") == "nats://h:4222"
    assert _mask("h:4222") == "h:4222"
    target = NatsTarget(urls=("nats://a:1", "tls://u:p@b:2"))
    assert target.label == "nats://a:1,tls://u:***@b:2"


def test_authentication_options(tmp_path: Path) -> None:
    with nats_server(tmp_path / "up", user="ops", password="pw") as url:
        assert asyncio.run(stream_report(NatsTarget(urls=(url,), user="ops", password="pw"))) == []
        with pytest.raises(NatsUnavailable, match=r"(?i)authorization"):
            asyncio.run(stream_report(NatsTarget(urls=(url,), user="ops", password="wrong", timeout=1.0)))
    with nats_server(tmp_path / "token", token="s3cret") as url:
        assert asyncio.run(instances(NatsTarget(urls=(url,), token="s3cret"))) == []


def test_unreadable_credentials_file(tmp_path: Path) -> None:
    target = NatsTarget(urls=("nats://127.0.0.1:4222",), creds_file=str(tmp_path / "missing.creds"))
    with pytest.raises(NatsUnavailable) as failed:
        asyncio.run(stream_report(target))
    assert failed.value.url == "nats://127.0.0.1:4222"


def test_server_without_jetstream() -> None:
    with plain_nats_server() as url:
        target = NatsTarget(urls=(url,), timeout=1.0)
        with pytest.raises(NatsUnavailable, match="JetStream not available"):
            asyncio.run(stream_report(target))
        with pytest.raises(NatsUnavailable, match="JetStream not available"):
            asyncio.run(instances(target))

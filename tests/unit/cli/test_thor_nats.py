"""hulk.cli._nats against real nats-servers: authentication options, a server without JetStream, masking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hulk.cli._nats import NatsTarget, NatsUnavailable, _mask, instances, stream_report
from tests.unit.cli.ops_live import nats_server


def test_label_masks_passwords() -> None:
    assert _mask("nats://u:pw@h:4222") == "nats://u:***@h:4222"
    assert _mask("nats://h:4222") == "nats://h:4222"
    assert _mask("h:4222") == "h:4222"
    target = NatsTarget(urls=("nats://a:1", "tls://u:p@b:2"))
    assert target.label == "nats://a:1,tls://u:***@b:2"


def test_authentication_options_reach_the_server(nats_url: str) -> None:
    # The server has no authorization configured, so it accepts any credentials: the options are sent.
    for target in (
        NatsTarget(urls=(nats_url,), user="u", password="p"),
        NatsTarget(urls=(nats_url,), token="t"),
    ):
        report = asyncio.run(stream_report(target))
        assert {s["name"] for s in report} == {"HULK_ENGINE_EVENTS", "HULK_ENGINE_TASKS"}


def test_unreadable_credentials_file(nats_url: str, tmp_path: Path) -> None:
    target = NatsTarget(urls=(nats_url,), creds_file=str(tmp_path / "missing.creds"))
    with pytest.raises(NatsUnavailable) as failed:
        asyncio.run(stream_report(target))
    assert failed.value.url == nats_url


def test_server_without_jetstream(tmp_path: Path) -> None:
    with nats_server(tmp_path, jetstream=False) as url:
        target = NatsTarget(urls=(url,), timeout=1.0)
        with pytest.raises(NatsUnavailable, match="JetStream not available"):
            asyncio.run(stream_report(target))
        with pytest.raises(NatsUnavailable, match="JetStream not available"):
            asyncio.run(instances(target))

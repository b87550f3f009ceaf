"""hulk's configuration: one validated, immutable `Settings` read once at start-up and passed down.

Sources, lowest to highest priority: the defaults documented in `config.example.yaml`, the YAML file,
then environment variables `HULK_<SECTION>__<KEY>`. No other hulk module reads environment variables.
Importing this package pulls in pydantic and PyYAML only (no server library).

Example:
    >>> from hulk.config import load_settings
    >>> settings = load_settings(None, env={"HULK_ENGINE__WORKERS": "8"})
    >>> settings.engine.workers
    8
"""

from __future__ import annotations

from typing import Any

from hulk.config._load import CONFIG_ENV_VAR, ConfigError, Problem, load_settings
from hulk.config._models import (
    DEFAULT_NATS_URL,
    BackoffSettings,
    CacheSettings,
    EngineSettings,
    LoggingSettings,
    MetricsSettings,
    NatsSettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    StreamSettings,
    TelemetrySettings,
    TlsSettings,
    TracingSettings,
)
from hulk.config._redact import mask_url, redact_model
from hulk.config._types import parse_duration, parse_size

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_NATS_URL",
    "BackoffSettings",
    "CacheSettings",
    "ConfigError",
    "EngineSettings",
    "LoggingSettings",
    "MetricsSettings",
    "NatsSettings",
    "Problem",
    "SchedulerSettings",
    "ServerSettings",
    "Settings",
    "StreamSettings",
    "TelemetrySettings",
    "TlsSettings",
    "TracingSettings",
    "load_settings",
    "mask_url",
    "parse_duration",
    "parse_size",
    "redacted",
]


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as a plain dict (YAML key names) safe to log: every secret shown as "***".

    Secrets are `server.admin_token`, the tokens of `server.tenant_tokens` (the tenants stay
    visible), `nats.pass`, `nats.token`, and any password in a URL (`cache.l2_url`, `nats.urls`, …).
    Empty secrets stay empty, so the output also tells which ones are set.
    """
    return redact_model(settings)

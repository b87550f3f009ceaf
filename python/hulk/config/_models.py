"""The settings sections: one frozen pydantic model per section of the YAML file.

Defaults here are the documented ones (config.example.yaml repeats them with comments; a test keeps the
two in step). Cross-field rules raise `RelationError`, which names the offending key so the error
message can point at it rather than at the whole section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from hulk.config._redact import mask_value
from hulk.config._types import (
    Count,
    Duration,
    ImportPath,
    NonNegativeCount,
    PositiveDuration,
    Ratio,
    Size,
    StringMap,
    _string_list,
    number_of_cpus,
)

__all__ = [
    "DEFAULT_NATS_URL",
    "BackoffSettings",
    "CacheSettings",
    "EngineSettings",
    "LoggingSettings",
    "MetricsSettings",
    "NatsSettings",
    "RelationError",
    "SchedulerSettings",
    "ServerSettings",
    "Settings",
    "StreamSettings",
    "TelemetrySettings",
    "TlsSettings",
    "TracingSettings",
]

MiB = 1024 * 1024
DEFAULT_NATS_URL = "nats://localhost:4222"


class RelationError(ValueError):
    """A value that is fine alone but inconsistent with another key.

    Args:
        key: the offending key, relative to the model that raised it (e.g. "min_workers").
        value: the offending value.
        expected: what the value should be, naming the other key.
    """

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(expected)
        self.key = key
        self.value = value
        self.expected = expected


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError("true or false")


def _port(value: object) -> int:
    expected = "a TCP port number from 0 to 65535 (0: any free port)"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(expected)
    if isinstance(value, str) and not value.strip().isdigit():
        raise ValueError(expected)
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(expected)
    return port


def _non_empty(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value.strip()


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> BeforeValidator:
    names = ", ".join(repr(c) for c in choices)

    def parse(value: object) -> str:
        if isinstance(value, str):
            text = value.strip().lower()
            text = (aliases or {}).get(text, text)
            if text in choices:
                return text
        raise ValueError(f"one of {names}")

    return BeforeValidator(parse)


def _embedded(value: object) -> bool | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _flag(value)
    except ValueError:
        raise ValueError("true, false or 'auto'") from None


Flag = Annotated[bool, BeforeValidator(_flag)]
Port = Annotated[int, BeforeValidator(_port)]
NonEmpty = Annotated[str, BeforeValidator(_non_empty)]
ImportPaths = Annotated[tuple[ImportPath, ...], NoDecode, BeforeValidator(_string_list)]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, instances are immutable, repr hides secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_value(name or "", value)


class ServerSettings(_Section):
    """The HTTP service (`server:`)."""

    host: NonEmpty = "127.0.0.1"
    port: Port = 8080
    read_timeout: PositiveDuration = 30.0
    write_timeout: PositiveDuration = 30.0
    request_timeout: PositiveDuration = 30.0
    body_limit: Size = 1 * MiB
    admin_token: SecretStr = SecretStr("")
    tenant_tokens: StringMap = Field(default_factory=dict)
    tenant_header: str = "X-Hulk-Tenant"

    @field_validator("tenant_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
            raise ValueError("an HTTP header name such as 'X-Hulk-Tenant'")
        return value

    @field_validator("body_limit")
    @classmethod
    def _positive_body_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError("a size of at least 1 byte such as '1MiB'")
        return value


class BackoffSettings(_Section):
    """Delays between retries of a failed task (`engine.backoff:`), as in `BackoffScheduler`."""

    base: PositiveDuration = 1.0
    factor: float = 2.0
    max_delay: PositiveDuration = 60.0
    jitter: Annotated[str, _choice("none", "full", "equal", "decorrelated")] = "full"

    @field_validator("factor", mode="before")
    @classmethod
    def _factor(cls, value: object) -> float:
        try:
            factor = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            factor = 0.0
        if isinstance(value, bool) or not factor >= 1.0 or factor == float("inf"):
            raise ValueError("a number >= 1.0")
        return factor

    @model_validator(mode="after")
    def _max_above_base(self) -> BackoffSettings:
        if self.max_delay < self.base:
            raise RelationError("max_delay", self.max_delay, f">= engine.backoff.base ({self.base:g}s)")
        return self


def _workers(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return number_of_cpus() * 2
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("'auto' or an integer >= 1")
    text = str(value).strip()
    if not text.lstrip("+-").isdigit() or int(text) < 1:
        raise ValueError("'auto' or an integer >= 1")
    return int(text)


class EngineSettings(_Section):
    """The worker pool and retry policy (`engine:`)."""

    workers: Annotated[int, BeforeValidator(_workers)] = Field(default_factory=lambda: number_of_cpus() * 2)
    min_workers: Count = 1
    max_workers: Count | None = None
    queue_size: Count = 2000
    timeout: PositiveDuration = 20.0
    max_retries: NonNegativeCount = 3
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    handlers: ImportPaths = ()
    drain_timeout: PositiveDuration = 30.0

    @model_validator(mode="after")
    def _pool_bounds(self) -> EngineSettings:
        if self.min_workers > self.workers:
            raise RelationError("min_workers", self.min_workers, f"<= engine.workers ({self.workers})")
        if self.max_workers is not None and self.max_workers < self.workers:
            raise RelationError("max_workers", self.max_workers, f">= engine.workers ({self.workers}) or null")
        return self


def _redis_url(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ""
        parts = urlsplit(text)
        if (parts.scheme in ("redis", "rediss") and parts.hostname) or (parts.scheme == "unix" and parts.path):
            return text
    raise ValueError("'' (no L2) or a Redis URL such as 'redis://localhost:6379/0', 'rediss://…' or 'unix:///path'")


class CacheSettings(_Section):
    """The multi-level cache (`cache:`): L1 in-process, L2 Redis, L3 RocksDB snapshots."""

    l1_size: Count = 5000
    l1_ttl: PositiveDuration = 60.0
    l2_url: Annotated[str, BeforeValidator(_redis_url)] = ""
    l2_ttl: PositiveDuration = 3600.0
    l3_path: str = "data/cache"
    snapshot_interval: PositiveDuration = 60.0


def _nats_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("nats", "tls", "ws", "wss") and parts.hostname:
            return value.strip()
    raise ValueError("a NATS URL such as 'nats://localhost:4222' (schemes nats, tls, ws, wss)")


NatsUrl = Annotated[str, BeforeValidator(_nats_url)]


class TlsSettings(_Section):
    """TLS files for the NATS connection (`nats.tls:`); empty strings mean unset."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            expected = "set together with nats.tls.cert_file / nats.tls.key_file (a client certificate needs both)"
            raise RelationError(missing, "", expected)
        return self


class StreamSettings(_Section):
    """The JetStream streams and consumers hulk creates (`nats.stream:`)."""

    replicas: Count = 1
    max_age: Duration = 86400.0
    max_bytes: Size = 1024 * MiB
    duplicate_window: PositiveDuration = 120.0
    ack_wait: PositiveDuration = 30.0
    max_deliver: Count = 5

    @model_validator(mode="after")
    def _limits(self) -> StreamSettings:
        if self.replicas > 5:
            raise RelationError("replicas", self.replicas, "an integer from 1 to 5 (JetStream's limit)")
        if self.max_age and self.duplicate_window > self.max_age:
            raise RelationError(
                "duplicate_window", self.duplicate_window, f"<= nats.stream.max_age ({self.max_age:g}s)"
            )
        return self


class NatsSettings(_Section):
    """The NATS connection and JetStream (`nats:`)."""

    urls: Annotated[tuple[NatsUrl, ...], NoDecode, BeforeValidator(_string_list)] = (DEFAULT_NATS_URL,)
    user: str = ""
    password: SecretStr = Field(default=SecretStr(""), alias="pass")
    token: SecretStr = SecretStr("")
    creds_file: str = ""
    tls: TlsSettings = Field(default_factory=TlsSettings)
    embedded: Annotated[bool | Literal["auto"], BeforeValidator(_embedded)] = "auto"
    data_dir: str = "data/nats"
    stream: StreamSettings = Field(default_factory=StreamSettings)

    @field_validator("urls")
    @classmethod
    def _at_least_one(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one NATS URL")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> NatsSettings:
        if self.password.get_secret_value() and not self.user:
            raise RelationError("user", self.user, "a user name when nats.pass is set")
        methods = [bool(self.user), bool(self.token.get_secret_value()), bool(self.creds_file)]
        if sum(methods) > 1:
            key = "token" if self.token.get_secret_value() else "creds_file"
            raise RelationError(key, "***", "only one of user/pass, token, creds_file")
        return self

    @property
    def uses_default_url(self) -> bool:
        """True when `urls` is the single default local URL (what `embedded: auto` looks at)."""
        return self.urls == (DEFAULT_NATS_URL,)


class SchedulerSettings(_Section):
    """The leader-elected scheduler of delayed and cron tasks (`scheduler:`)."""

    tick_interval: PositiveDuration = 1.0
    lease_ttl: PositiveDuration = 5.0

    @model_validator(mode="after")
    def _lease_outlives_tick(self) -> SchedulerSettings:
        if self.lease_ttl <= self.tick_interval:
            raise RelationError(
                "lease_ttl", self.lease_ttl, f"> scheduler.tick_interval ({self.tick_interval:g}s), ideally several"
            )
        return self


LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error", "critical")


class LoggingSettings(_Section):
    """Log output (`logging:`)."""

    level: Annotated[LogLevel, _choice(*LOG_LEVELS, aliases={"warn": "warning"})] = "info"
    format: Annotated[Literal["json", "console", "auto"], _choice("json", "console", "auto")] = "auto"


def _http_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
    raise ValueError("an http(s) URL such as 'http://localhost:4318/v1/traces'")


class TracingSettings(_Section):
    """OpenTelemetry traces (`telemetry.tracing:`)."""

    enabled: Flag = True
    exporter: Annotated[Literal["otlp"], _choice("otlp", aliases={"jaeger": "otlp"})] = "otlp"
    endpoint: Annotated[str, BeforeValidator(_http_url)] = "http://localhost:4318/v1/traces"
    # One new trace in ten: a recorded span costs tens of microseconds of the one event loop (three per
    # submitted task), while a caller's sampled traceparent is always followed in full.
    sample_ratio: Ratio = 0.1


class MetricsSettings(_Section):
    """Prometheus metrics at /metrics (`telemetry.metrics:`)."""

    enabled: Flag = True


class TelemetrySettings(_Section):
    """Traces, metrics and event-loop health (`telemetry:`)."""

    service_name: NonEmpty = "hulk"
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    loop_lag_threshold: PositiveDuration = 0.5


class Settings(BaseSettings):
    """Every setting of a hulk process, validated and immutable; build it with `load_settings`.

    Constructing `Settings()` directly gives the defaults: it reads no environment variable and no
    file (only `load_settings` does, once, at start-up).
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="HULK_",
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keeps only the constructor's arguments: `load_settings` is the one reader of files and env."""
        return (init_settings,)

    @model_validator(mode="after")
    def _across_sections(self) -> Settings:
        attempts = self.engine.max_retries + 1
        if self.nats.stream.max_deliver < attempts:
            raise RelationError(
                "nats.stream.max_deliver",
                self.nats.stream.max_deliver,
                f">= engine.max_retries + 1 ({attempts}), or JetStream stops redelivering before the last retry",
            )
        return self

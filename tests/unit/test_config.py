"""hulk.config: every key type, every bad value, precedence, unknown keys, redaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from hulk.config import (
    ConfigError,
    Settings,
    load_settings,
    mask_url,
    parse_duration,
    parse_size,
    redacted,
)
from hulk.config._types import number_of_cpus
from hulk.errors import HulkError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"


def nested(path: str, value: object) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b"."""
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def write(tmp_path: Path, data: object, name: str = "hulk.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def get(settings: Settings, path: str) -> Any:
    node: Any = settings
    for part in path.split("."):
        node = getattr(node, "password" if part == "pass" else part)
    return node


# --- good values: (key path, value in the file, value in Settings) --------------------------------

GOOD = [
    ("server.host", "0.0.0.0", "0.0.0.0"),
    ("server.port", 0, 0),
    ("server.port", "9000", 9000),
    ("server.read_timeout", "250ms", 0.25),
    ("server.read_timeout", "2m", 120.0),
    ("server.read_timeout", 5, 5.0),
    ("server.read_timeout", 0.5, 0.5),
    ("server.write_timeout", "1h30m", 5400.0),
    ("server.request_timeout", "1d", 86400.0),
    ("server.request_timeout", "12", 12.0),
    ("server.body_limit", "1MiB", 1048576),
    ("server.body_limit", "512KiB", 524288),
    ("server.body_limit", "2GB", 2_000_000_000),
    ("server.body_limit", "1.5MiB", 1572864),
    ("server.body_limit", 2048, 2048),
    ("server.body_limit", 4096.0, 4096),
    ("server.tenant_header", "X-Tenant", "X-Tenant"),
    ("engine.workers", 4, 4),
    ("engine.workers", "auto", number_of_cpus() * 2),
    ("engine.workers", "AUTO", number_of_cpus() * 2),
    ("engine.queue_size", "10", 10),
    ("engine.queue_size", 10.0, 10),
    ("engine.max_retries", 0, 0),
    ("engine.timeout", "1.5s", 1.5),
    ("engine.backoff.base", "100ms", 0.1),
    ("engine.backoff.factor", 1, 1.0),
    ("engine.backoff.factor", "3.5", 3.5),
    ("engine.backoff.jitter", "Equal", "equal"),
    ("engine.backoff.jitter", "decorrelated", "decorrelated"),
    ("engine.handlers", ["myapp.tasks", "billing.jobs:registry"], ("myapp.tasks", "billing.jobs:registry")),
    ("engine.handlers", "a.b, c", ("a.b", "c")),
    ("engine.drain_timeout", "45s", 45.0),
    ("cache.l1_size", 1, 1),
    ("cache.l1_ttl", "5m", 300.0),
    ("cache.l2_url", "redis://:pw@localhost:6379/0", "redis://:pw@localhost:6379/0"),
    ("cache.l2_url", "rediss://cache.example:6380", "rediss://cache.example:6380"),
    ("cache.l2_url", "unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("cache.l2_url", "  ", ""),
    ("cache.l3_path", "/var/lib/hulk", "/var/lib/hulk"),
    ("cache.snapshot_interval", 10, 10.0),
    ("nats.urls", ["nats://a:4222", "tls://b:4222"], ("nats://a:4222", "tls://b:4222")),
    ("nats.urls", "nats://a:4222", ("nats://a:4222",)),
    ("nats.urls", '["ws://a:8080"]', ("ws://a:8080",)),
    ("nats.token", "t0k", pydantic.SecretStr("t0k")),
    ("nats.creds_file", "/etc/hulk.creds", "/etc/hulk.creds"),
    ("nats.tls.ca_file", "ca.pem", "ca.pem"),
    ("nats.embedded", True, True),
    ("nats.embedded", False, False),
    ("nats.embedded", "auto", "auto"),
    ("nats.embedded", "no", False),
    ("nats.data_dir", "/tmp/nats", "/tmp/nats"),
    ("nats.stream.replicas", 3, 3),
    ("nats.stream.max_age", 0, 0.0),
    ("nats.stream.max_bytes", 0, 0),
    ("nats.stream.duplicate_window", "30s", 30.0),
    ("nats.stream.ack_wait", "1m", 60.0),
    ("nats.stream.max_deliver", 10, 10),
    ("scheduler.tick_interval", "500ms", 0.5),
    ("scheduler.lease_ttl", "10s", 10.0),
    ("logging.level", "DEBUG", "debug"),
    ("logging.level", "warn", "warning"),
    ("logging.format", "console", "console"),
    ("logging.format", "json", "json"),
    ("telemetry.service_name", "orders", "orders"),
    ("telemetry.tracing.enabled", False, False),
    ("telemetry.tracing.enabled", "off", False),
    ("telemetry.tracing.exporter", "jaeger", "otlp"),
    ("telemetry.tracing.exporter", "OTLP", "otlp"),
    ("telemetry.tracing.endpoint", "https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ("telemetry.tracing.sample_ratio", 0, 0.0),
    ("telemetry.tracing.sample_ratio", "0.25", 0.25),
    ("telemetry.metrics.enabled", "yes", True),
    ("telemetry.loop_lag_threshold", "100ms", 0.1),
]


@pytest.mark.parametrize(("key", "raw", "parsed"), GOOD, ids=[f"{k}={r!r}" for k, r, _ in GOOD])
def test_good_value_from_file(tmp_path: Path, key: str, raw: object, parsed: object) -> None:
    settings = load_settings(write(tmp_path, nested(key, raw)), env={})
    assert get(settings, key) == parsed


def test_secrets_and_maps_from_file(tmp_path: Path) -> None:
    data = {
        "server": {"admin_token": "adm", "tenant_tokens": {"t1": "acme", "t2": "globex"}},
        "nats": {"user": "bob", "pass": "pw"},
    }
    settings = load_settings(write(tmp_path, data), env={})
    assert settings.server.admin_token.get_secret_value() == "adm"
    assert dict(settings.server.tenant_tokens) == {"t1": "acme", "t2": "globex"}
    assert settings.nats.user == "bob"
    assert settings.nats.password.get_secret_value() == "pw"
    assert settings.nats.uses_default_url


def test_max_workers_bounds(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"engine": {"workers": 4, "min_workers": 2, "max_workers": 8}}), env={})
    assert (settings.engine.min_workers, settings.engine.workers, settings.engine.max_workers) == (2, 4, 8)


# --- bad values: (key path, value, words of the expectation) ------------------------------------

BAD = [
    ("server.host", "", "non-empty string"),
    ("server.host", 5, "non-empty string"),
    ("server.port", 70000, "0 to 65535"),
    ("server.port", -1, "0 to 65535"),
    ("server.port", "http", "0 to 65535"),
    ("server.port", True, "0 to 65535"),
    ("server.port", 1.5, "0 to 65535"),
    ("server.read_timeout", "30 seconds", "positive duration"),
    ("server.read_timeout", -1, "positive duration"),
    ("server.read_timeout", 0, "positive duration"),
    ("server.read_timeout", "abc", "positive duration"),
    ("server.read_timeout", True, "positive duration"),
    ("server.read_timeout", [1], "positive duration"),
    ("server.read_timeout", ".inf", "positive duration"),
    ("server.body_limit", "1XB", "size in bytes"),
    ("server.body_limit", -5, "size in bytes"),
    ("server.body_limit", 1.5, "size in bytes"),
    ("server.body_limit", False, "size in bytes"),
    ("server.body_limit", 0, "at least 1 byte"),
    ("server.tenant_header", "X Hulk", "HTTP header name"),
    ("server.tenant_tokens", ["a"], "a mapping (key: value)"),
    ("server.tenant_tokens", '{"a":', "JSON object"),
    ("engine.workers", 0, "'auto' or an integer >= 1"),
    ("engine.workers", "many", "'auto' or an integer >= 1"),
    ("engine.workers", 1.5, "'auto' or an integer >= 1"),
    ("engine.workers", True, "'auto' or an integer >= 1"),
    ("engine.min_workers", 0, "integer >= 1"),
    ("engine.max_workers", "x", "integer >= 1"),
    ("engine.queue_size", 0, "integer >= 1"),
    ("engine.queue_size", 1.5, "integer >= 1"),
    ("engine.queue_size", "1e3", "integer >= 1"),
    ("engine.queue_size", None, "integer >= 1"),
    ("engine.max_retries", -1, "integer >= 0"),
    ("engine.max_retries", False, "integer >= 0"),
    ("engine.timeout", "10x", "positive duration"),
    ("engine.backoff.base", 0, "positive duration"),
    ("engine.backoff.factor", 0.5, ">= 1.0"),
    ("engine.backoff.factor", "x", ">= 1.0"),
    ("engine.backoff.factor", True, ">= 1.0"),
    ("engine.backoff.factor", ".inf", ">= 1.0"),
    ("engine.backoff.jitter", "random", "'none', 'full', 'equal', 'decorrelated'"),
    ("engine.backoff.jitter", 1, "'none', 'full', 'equal', 'decorrelated'"),
    ("engine.handlers", ["not a path"], "import path"),
    ("engine.handlers", ["a.b:"], "import path"),
    ("engine.handlers", "[oops", "JSON list"),
    ("engine.drain_timeout", "", "positive duration"),
    ("cache.l1_size", 0, "integer >= 1"),
    ("cache.l1_ttl", "forever", "positive duration"),
    ("cache.l2_url", "http://cache:6379", "Redis URL"),
    ("cache.l2_url", 6379, "Redis URL"),
    ("cache.l2_ttl", -3, "positive duration"),
    ("cache.l3_path", 3, "valid string"),
    ("nats.urls", [], "at least one NATS URL"),
    ("nats.urls", ["http://x:4222"], "NATS URL"),
    ("nats.urls", [5], "NATS URL"),
    ("nats.embedded", "maybe", "true, false or 'auto'"),
    ("nats.embedded", 2, "true, false or 'auto'"),
    ("nats.tls", "on", "a mapping"),
    ("nats.stream.replicas", 7, "from 1 to 5"),
    ("nats.stream.replicas", 0, "integer >= 1"),
    ("nats.stream.max_age", -1, "duration"),
    ("nats.stream.max_bytes", "lots", "size in bytes"),
    ("nats.stream.duplicate_window", 0, "positive duration"),
    ("nats.stream.duplicate_window", "2d", "<= nats.stream.max_age"),
    ("nats.stream.ack_wait", "soon", "positive duration"),
    ("nats.stream.max_deliver", 2, ">= engine.max_retries + 1"),
    ("scheduler.tick_interval", 0, "positive duration"),
    ("scheduler.lease_ttl", "1s", "> scheduler.tick_interval"),
    ("logging.level", "loud", "'debug', 'info', 'warning', 'error', 'critical'"),
    ("logging.format", "xml", "'json', 'console', 'auto'"),
    ("telemetry.service_name", " ", "non-empty string"),
    ("telemetry.tracing.enabled", "perhaps", "true or false"),
    ("telemetry.tracing.enabled", 3, "true or false"),
    ("telemetry.tracing.exporter", "zipkin", "'otlp'"),
    ("telemetry.tracing.endpoint", "localhost:4318", "http(s) URL"),
    ("telemetry.tracing.sample_ratio", 1.5, "between 0.0 and 1.0"),
    ("telemetry.tracing.sample_ratio", "half", "between 0.0 and 1.0"),
    ("telemetry.tracing.sample_ratio", True, "between 0.0 and 1.0"),
    ("telemetry.metrics", [], "a mapping"),
    ("telemetry.loop_lag_threshold", 0, "positive duration"),
]


@pytest.mark.parametrize(("key", "raw", "expected"), BAD, ids=[f"{k}={r!r}" for k, r, _ in BAD])
def test_bad_value_names_key_value_and_expectation(tmp_path: Path, key: str, raw: object, expected: str) -> None:
    path = write(tmp_path, nested(key, raw))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    error = info.value
    assert isinstance(error, HulkError)
    assert error.key == key or error.key == f"{key}[0]"  # list items are named by index
    assert expected in error.expected
    message = str(error)
    assert f"{error.key}: got " in message
    assert expected in message
    assert str(path) in message  # where the value came from
    if raw is not None and not isinstance(raw, list | dict):
        assert repr(raw) in message or repr(str(raw)) in message or repr(error.value) in message


BAD_RELATIONS = [
    ({"engine": {"workers": 2, "min_workers": 3}}, "engine.min_workers", 3, "<= engine.workers (2)"),
    ({"engine": {"workers": 4, "max_workers": 2}}, "engine.max_workers", 2, ">= engine.workers (4)"),
    ({"engine": {"backoff": {"base": "2m", "max_delay": "1m"}}}, "engine.backoff.max_delay", 60.0, ">= engine.backoff"),
    ({"nats": {"pass": "pw"}}, "nats.user", "", "a user name when nats.pass is set"),
    ({"nats": {"user": "u", "pass": "p", "token": "t"}}, "nats.token", "***", "only one of"),
    ({"nats": {"token": "t", "creds_file": "c"}}, "nats.token", "***", "only one of"),
    ({"nats": {"user": "u", "creds_file": "c"}}, "nats.creds_file", "***", "only one of"),
    ({"nats": {"tls": {"cert_file": "c.pem"}}}, "nats.tls.key_file", "", "a client certificate needs both"),
    ({"nats": {"tls": {"key_file": "k.pem"}}}, "nats.tls.cert_file", "", "a client certificate needs both"),
    ({"engine": {"max_retries": 9}}, "nats.stream.max_deliver", 5, ">= engine.max_retries + 1 (10)"),
]


@pytest.mark.parametrize(("data", "key", "value", "expected"), BAD_RELATIONS, ids=[r[1] for r in BAD_RELATIONS])
def test_inconsistent_values_name_the_key(
    tmp_path: Path, data: dict[str, Any], key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data), env={})
    assert (info.value.key, info.value.value) == (key, value)
    assert expected in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = {"server": {"port": -1}, "engine": {"queue_size": 0}, "logging": {"level": "loud"}}
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data), env={})
    assert sorted(p.key for p in info.value.problems) == ["engine.queue_size", "logging.level", "server.port"]
    assert len(str(info.value).splitlines()) == 4


# --- unknown keys and bad files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "hint"),
    [
        ({"servr": {"port": 1}}, "servr", "did you mean 'server'?"),
        ({"engine": {"queue_sise": 5}}, "engine.queue_sise", "did you mean 'queue_size'?"),
        ({"engine": {"backoff": {"jiter": "none"}}}, "engine.backoff.jiter", "did you mean 'jitter'?"),
        ({"nats": {"password": "x"}}, "nats.password", "pass"),
        ({"telemetry": {"tracing": {"zzz": 1}}}, "telemetry.tracing.zzz", "sample_ratio"),
    ],
)
def test_unknown_key_is_an_error(tmp_path: Path, data: dict[str, Any], key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data), env={})
    assert info.value.key == key
    assert info.value.problems[0].unknown
    assert f"{key}: unknown key" in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("server:\n  port: [1\n", "valid YAML"),
        ("server:\n  port: 1\n  port: 2\n", "duplicate key 'port'"),
        ("- a\n- b\n", "a mapping of sections"),
        ("server: !!python/object:os.system x\n", "valid YAML"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert words in str(info.value)


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 3"):
        load_settings(write(tmp_path, "server:\n  port: 1\n\thost: x\n"), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable YAML file"):
        load_settings(tmp_path / "absent.yaml", env={})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env={}) == Settings()


# --- environment ------------------------------------------------------------------------------------


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"engine": {"workers": 4, "queue_size": 10}, "nats": {"urls": ["nats://file:4222"]}})
    env = {
        "HULK_ENGINE__WORKERS": "8",
        "HULK_NATS__URLS": '["nats://a:4222", "nats://b:4222"]',
        "HULK_NATS__STREAM__MAX_DELIVER": "9",
        "HULK_TELEMETRY__TRACING__ENABLED": "false",
    }
    settings = load_settings(path, env=env)
    assert settings.engine.workers == 8
    assert settings.engine.queue_size == 10  # from the file, not overridden
    assert settings.nats.urls == ("nats://a:4222", "nats://b:4222")
    assert settings.nats.stream.max_deliver == 9
    assert settings.telemetry.tracing.enabled is False


@pytest.mark.parametrize(
    ("env", "key", "parsed"),
    [
        ({"HULK_NATS__URLS": "nats://a:1, nats://b:2"}, "nats.urls", ("nats://a:1", "nats://b:2")),
        ({"HULK_NATS__PASS": "pw", "HULK_NATS__USER": "u"}, "nats.pass", pydantic.SecretStr("pw")),
        ({"hulk_server__port": "81"}, "server.port", 81),
        ({"HULK_SERVER__TENANT_TOKENS": '{"tok": "acme"}'}, "server.tenant_tokens", {"tok": "acme"}),
        ({"HULK_ENGINE__HANDLERS": "a.tasks,b.tasks:reg"}, "engine.handlers", ("a.tasks", "b.tasks:reg")),
        ({"HULK_CACHE__L2_URL": ""}, "cache.l2_url", ""),
        ({"HULK_NATS__EMBEDDED": "true"}, "nats.embedded", True),
        ({"HULK_UNRELATED": "x", "HULK_CONFIGURED": "y", "PATH": "/bin"}, "server.port", 8080),
    ],
)
def test_environment_values(env: dict[str, str], key: str, parsed: object) -> None:
    assert get(load_settings(None, env=env), key) == parsed


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"HULK_ENGINE__QUEUE_SIZE": "-1"})
    line = "engine.queue_size: got '-1', expected an integer >= 1 (from HULK_ENGINE__QUEUE_SIZE)"
    assert str(info.value).splitlines()[1].strip() == line


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"HULK_ENGIN__WORKERS": "1"}, "engin"),
        ({"HULK_ENGINE__QUEUE_SIZ": "1"}, "engine.queue_siz"),
        ({"HULK_NATS__STREAM__REPLICA": "1"}, "nats.stream.replica"),
    ],
)
def test_unknown_environment_key_is_an_error(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env=env)
    assert info.value.key == key
    assert f"(from {next(iter(env))})" in str(info.value)


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, {"server": {"port": 1234}})
    assert load_settings(None, env={"HULK_CONFIG": str(path)}).server.port == 1234


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULK_SERVER__PORT", "4321")
    assert load_settings(None).server.port == 4321


def test_settings_constructor_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULK_SERVER__PORT", "4321")
    assert Settings().server.port == 8080


# --- the object itself ------------------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={"HULK_SERVER__TENANT_TOKENS": '{"t": "acme"}'})
    with pytest.raises(pydantic.ValidationError):
        setattr(settings.engine, "workers", 3)  # noqa: B010 - mypy does not know the model is frozen
    with pytest.raises(TypeError):
        settings.server.tenant_tokens["u"] = "evil"  # type: ignore[index]
    assert isinstance(settings.nats.urls, tuple)
    assert hash(settings.logging) == hash(settings.logging.model_copy())


def test_example_file_documents_every_key_with_its_default() -> None:
    assert load_settings(EXAMPLE, env={}) == Settings()

    def keys(node: object, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return set()
        found = set()
        for key, value in node.items():
            path = f"{prefix}{key}"
            found.add(path)
            if key != "tenant_tokens":
                found |= keys(value, path + ".")
        return found

    def model_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for key, value in data.items():
            found.add(f"{prefix}{key}")
            if isinstance(value, dict) and key != "tenant_tokens":
                found |= model_keys(value, f"{prefix}{key}.")
        return found

    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert keys(example) == model_keys(redacted(Settings()))


# --- redaction --------------------------------------------------------------------------------------

SECRET_ENV = {
    "HULK_SERVER__ADMIN_TOKEN": "admin-s3cret",
    "HULK_SERVER__TENANT_TOKENS": '{"tenant-s3cret": "acme"}',
    "HULK_NATS__URLS": "nats://bob:url-s3cret@a:4222,nats://token-s3cret@b:4222",
    "HULK_NATS__USER": "bob",
    "HULK_NATS__PASS": "pass-s3cret",
    "HULK_CACHE__L2_URL": "redis://:redis-s3cret@cache:6379/0",
    "HULK_TELEMETRY__TRACING__ENDPOINT": "https://u:otel-s3cret@otel:4318/v1/traces",
}


def test_redacted_hides_every_secret() -> None:
    settings = load_settings(None, env=SECRET_ENV)
    out = redacted(settings)
    assert "s3cret" not in repr(out)
    assert out["server"]["admin_token"] == "***"
    assert out["server"]["tenant_tokens"] == {"***1": "acme"}
    assert out["nats"]["pass"] == "***"
    assert out["nats"]["token"] == ""  # unset secrets stay visibly unset
    assert out["nats"]["urls"] == ["nats://bob:***@a:4222", "nats://***@b:4222"]
    assert out["cache"]["l2_url"] == "redis://:***@cache:6379/0"
    assert out["telemetry"]["tracing"]["endpoint"] == "https://u:***@otel:4318/v1/traces"
    assert out["engine"]["workers"] == settings.engine.workers


def test_repr_and_str_hide_secrets() -> None:
    settings = load_settings(None, env=SECRET_ENV)
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)
    assert "admin_token='***'" in repr(settings.server)


def test_errors_hide_secret_values(tmp_path: Path) -> None:
    data = {"server": {"admin_token": 12345}, "cache": {"l2_url": "http://:pw-s3cret@x"}}
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data), env={})
    message = str(info.value)
    assert "server.admin_token: got '***'" in message
    assert "12345" not in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h", "redis://user:***@h"),
        ("nats://tok@h:4222", "nats://***@h:4222"),
        ("nats://h:4222", "nats://h:4222"),
        ("not a url @ all", "not a url @ all"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# --- the parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0), ("1h30m", 5400.0), (" 2D ", 172800.0),
     ("0", 0.0), (0, 0.0), (1.25, 1.25), ("1.5", 1.5), ("1e1", 10.0)],
)  # fmt: skip
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10 s", "1x", "-1s", "-2", "nan", None, True, [1], float("inf")])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_duration_zero_can_be_refused() -> None:
    with pytest.raises(ValueError, match="positive duration"):
        parse_duration("0s", allow_zero=False)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1MiB", 1 << 20), ("1mib", 1 << 20), ("2KiB", 2048), ("1GiB", 1 << 30), ("1TiB", 1 << 40), ("3KB", 3000),
     ("1MB", 10**6), ("1GB", 10**9), ("1TB", 10**12), ("10B", 10), ("42", 42), (42, 42), (0, 0), ("1 MiB", 1 << 20)],
)  # fmt: skip
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "1XiB", "-1", -1, 1.5, True, None, "1.5.2MB"])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="size in bytes"):
        parse_size(text)


def test_importable_without_server_libraries() -> None:
    code = (
        "import sys, hulk.config\n"
        "heavy = {'nats', 'uvicorn', 'redis', 'starlette', 'opentelemetry', 'prometheus_client', 'rocksdict'}\n"
        "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

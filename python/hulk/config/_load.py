"""Reading the YAML file and the environment into one validated `Settings`, with clear errors."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import EnvSettingsSource, SettingsError

from hulk.config._models import RelationError, Settings
from hulk.config._redact import MASK, SECRET_KEYS, mask_url
from hulk.errors import HulkError

__all__ = ["CONFIG_ENV_VAR", "ConfigError", "Problem", "load_settings"]

CONFIG_ENV_VAR = "HULK_CONFIG"
"""Environment variable naming the config file when `load_settings` gets no path."""

_ENV_PREFIX = "HULK_"
_DELIMITER = "__"


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad setting.

    Attributes:
        key: dotted key path, e.g. "engine.queue_size" or "nats.urls[0]".
        value: the value found ("***" for secrets), or None when the key is missing or unknown.
        expected: what would have been accepted.
        source: where the value came from: the file path or the environment variable's name.
        unknown: the key itself is unknown (a typo or a key of another section).
    """

    key: str
    value: object
    expected: str
    source: str | None = None
    unknown: bool = False

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        if self.unknown:
            return f"{self.key}: unknown key, expected {self.expected}{where}"
        return f"{self.key}: got {self.value!r}, expected {self.expected}{where}"


class ConfigError(HulkError):
    """The configuration file or environment holds a bad or unknown setting.

    The message lists every problem found, one per line, each naming the key path, the value and
    what was expected. `problems` holds them as `Problem`s; `key`, `value` and `expected` are the
    first problem's, for the common one-problem case.
    """

    def __init__(self, problems: list[Problem], *, header: str = "invalid configuration") -> None:
        self.problems = problems
        first = problems[0] if problems else Problem("", None, "")
        self.key = first.key
        self.value = first.value
        self.expected = first.expected
        super().__init__(header + ":\n" + "\n".join(f"  {p}" for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key written twice in one mapping (usually a mistake)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("(file)", source, f"a readable YAML file ({exc.strerror or exc})")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem("(file)", source, f"valid YAML; {problem}{where}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("(file)", type(data).__name__, "a mapping of sections at the top level", source)])
    return data


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading an injected mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[Settings], env: Mapping[str, str]) -> None:
        self._injected = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Settings is case-insensitive (model_config), so names are compared in lower case.
        return {name.lower(): value for name, value in self._injected.items()}


def _check_env_sections(env: Mapping[str, str]) -> None:
    """`HULK_<SECTION>__KEY` with an unknown section is a typo, not someone else's variable."""
    sections = set(Settings.model_fields)
    problems = []
    for name in sorted(env):
        upper = name.upper()
        if upper.startswith(_ENV_PREFIX) and _DELIMITER in upper[len(_ENV_PREFIX) :]:
            section = upper[len(_ENV_PREFIX) :].split(_DELIMITER, 1)[0].lower()
            if section not in sections:
                problems.append(Problem(section, None, _unknown_key_hint(section, sections), name, unknown=True))
    if problems:
        raise ConfigError(problems)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _unknown_key_hint(key: str, known: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"one of: {', '.join(sorted(known))}{hint}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or not isinstance(part, str):
            return []
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _expected(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    exc = ctx.get("error")
    if isinstance(exc, ValueError):
        return str(exc)
    message = error["msg"]
    if error["type"] in ("model_type", "model_attributes_type"):
        return "a mapping of keys (a section)"
    if error["type"] == "dict_type":
        return "a mapping (key: value)"
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[:1].lower() + message[1:]


def _shown(key: str, value: object) -> object:
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if leaf in SECRET_KEYS and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    return value


def _env_name(loc: tuple[int | str, ...], env: Mapping[str, str]) -> str | None:
    names = {name.upper(): name for name in env}
    parts = [str(p).upper() for p in loc if isinstance(p, str)]
    # The longest prefix of the key path that is set in the environment is where the value came from.
    for end in range(len(parts), 0, -1):
        candidate = _ENV_PREFIX + _DELIMITER.join(parts[:end])
        if candidate in names:
            return names[candidate]
    return None


def _problems(exc: ValidationError, env: Mapping[str, str], file: str | None) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        relation = ctx.get("error")
        value: object = error.get("input")
        unknown = False
        if isinstance(relation, RelationError):
            loc = (*loc, *relation.key.split("."))
            value = relation.value
            expected = relation.expected
        elif error["type"] == "extra_forbidden":
            expected = _unknown_key_hint(str(loc[-1]), _known_keys(loc[:-1]))
            unknown = True
        else:
            expected = _expected(error)
        key = _key_path(loc)
        problems.append(Problem(key, _shown(key, value), expected, _env_name(loc, env) or file, unknown))
    return problems


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Reads the configuration once: defaults, then the YAML file, then `HULK_*` environment variables.

    Environment variables override the file: `HULK_<SECTION>__<KEY>` (nested sections add more
    `__<KEY>` parts), e.g. `HULK_ENGINE__WORKERS=8`, `HULK_NATS__STREAM__MAX_DELIVER=10`; lists and
    maps take JSON (`HULK_NATS__URLS='["nats://a:4222"]'`), lists also a comma-separated string.

    Args:
        path: the YAML file; None means the file named by `HULK_CONFIG`, or no file (defaults).
        env: the environment to read (default `os.environ`); tests inject a dict.

    Returns:
        The validated, immutable settings.

    Raises:
        ConfigError: the file cannot be read or parsed, a key is unknown, or a value is invalid; the
            message names each key path, its value and what was expected.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None and environ.get(CONFIG_ENV_VAR):
        path = environ[CONFIG_ENV_VAR]
    file_data = _read_file(Path(path)) if path is not None else {}
    file_label = str(path) if path is not None else None
    _check_env_sections(environ)
    try:
        env_data = _MappingEnvSource(Settings, environ)()
    except SettingsError as exc:  # pragma: no cover - every complex field parses its own env strings
        raise ConfigError([Problem("(environment)", None, str(exc))]) from None
    try:
        return Settings.model_validate(_merge(file_data, env_data))
    except ValidationError as exc:
        raise ConfigError(_problems(exc, environ, file_label)) from None

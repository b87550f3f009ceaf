"""Hiding secrets: passwords in URLs, secret strings, tenant tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

__all__ = ["MASK", "SECRET_KEYS", "mask_url", "mask_value", "redact_model"]

MASK = "***"

SECRET_KEYS = frozenset({"admin_token", "tenant_tokens", "pass", "password", "token"})
"""Field names (or YAML keys) whose values are secrets wherever they appear."""

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")


def mask_url(text: str) -> str:
    """Masks the secret part of a URL's user info.

    "redis://:pw@h" -> "redis://:***@h", "nats://u:pw@h" -> "nats://u:***@h", and a lone user info
    (a NATS token: "nats://tok@h") -> "nats://***@h". Text that is not such a URL is returned as is.
    """
    match = _USERINFO.match(text)
    if not match:
        return text
    user, sep, _ = match.group("userinfo").partition(":")
    masked = f"{user}:{MASK}" if sep else MASK
    return f"{match.group('scheme')}{masked}@{text[match.end() :]}"


def mask_value(key: str, value: Any) -> Any:
    """Returns `value` with secrets masked, given the key it is stored under."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if key in SECRET_KEYS:
        if isinstance(value, Mapping):
            return {f"{MASK}{i}": mask_value("", v) for i, v in enumerate(value.values(), 1)}
        return MASK if value else value
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, tuple | list):
        return [mask_value(key, item) for item in value]
    return value


def redact_model(model: BaseModel) -> dict[str, Any]:
    """A plain dict of `model` (YAML key names) with every secret replaced by "***"."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        value = getattr(model, name)
        out[key] = redact_model(value) if isinstance(value, BaseModel) else mask_value(key, value)
    return out

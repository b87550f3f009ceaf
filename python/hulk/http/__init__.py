"""The HTTP surface of hulk: a thin Starlette app, its middlewares, models and OpenAPI document."""

from hulk.http.app import HttpOptions, create_app
from hulk.http.backend import TaskBackend

__all__ = ["HttpOptions", "TaskBackend", "create_app"]

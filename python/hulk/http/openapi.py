"""The OpenAPI 3.1 document of the API, generated from the msgspec models (never written by hand twice)."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from hulk._native import __version__
from hulk.http.models import BatchAccepted, ErrorBody, LogLevel, SubmitBatch, SubmitTask, TaskAccepted, TaskView

_MODELS: tuple[type[msgspec.Struct], ...] = (
    SubmitTask,
    SubmitBatch,
    TaskAccepted,
    BatchAccepted,
    TaskView,
    ErrorBody,
    LogLevel,
)
_ERRORS = {
    "400": "malformed JSON or bad query parameter",
    "401": "missing or unknown bearer token",
    "403": "admin API disabled",
    "404": "not found",
    "413": "body too large",
    "415": "not application/json",
    "422": "a field is invalid (the body names it)",
    "429": "queue full: retry after `Retry-After` seconds",
    "500": "internal error (the body has the request id)",
    "503": "not ready, draining, or breaker open",
    "504": "request timeout",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: tuple[str, dict[str, Any]],
    errors: tuple[str, ...],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    responses = {ok[0]: ok[1]}
    for code in errors:
        responses[code] = _json(_ref("ErrorBody"), _ERRORS[code])
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    if secured:
        op["security"] = [{"bearer": []}, {}]
    return op


_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "wait up to this long (e.g. `2s`, at most 60s) for a terminal state",
    "schema": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m)?$"},
}
_ANY = {"type": "object"}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at `/openapi.json`."""
    _, components = msgspec.json.schema_components(_MODELS, ref_template="#/components/schemas/{name}")
    admin = ("401", "403", "500")
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness", ("200", _json(_ANY, "alive")), ("500",), secured=False)},
        "/ready": {"get": _op("Readiness", ("200", _json(_ANY, "ready")), ("500", "503"), secured=False)},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
            }
        },
        "/v1/tasks": {
            "post": _op(
                "Submit a task",
                ("202", _json(_ref("TaskAccepted"), "accepted")),
                ("400", "401", "413", "415", "422", "429", "500", "503", "504"),
                body="SubmitTask",
                params=[_WAIT],
            )
        },
        "/v1/tasks/batch": {
            "post": _op(
                "Submit several tasks",
                ("202", _json(_ref("BatchAccepted"), "each task accepted or refused")),
                ("400", "401", "413", "415", "422", "500", "504"),
                body="SubmitBatch",
            )
        },
        "/v1/tasks/dead": {
            "get": _op(
                "Dead tasks",
                ("200", _json(_ANY, "dead tasks, newest first")),
                ("400", "401", "500"),
                params=[{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            )
        },
        "/v1/tasks/{task_id}": {
            "get": _op(
                "Get a task",
                ("200", _json(_ref("TaskView"), "the task")),
                ("400", "401", "404", "500"),
                params=[_ID, _WAIT],
            ),
            "delete": _op(
                "Cancel a task", ("200", _json(_ref("TaskView"), "the task")), ("401", "404", "500"), params=[_ID]
            ),
        },
        "/v1/tasks/{task_id}/replay": {
            "post": _op(
                "Replay a dead task",
                ("202", _json(_ref("TaskAccepted"), "resubmitted")),
                ("401", "404", "429", "500"),
                params=[_ID],
            )
        },
        "/v1/runtime": {"get": _op("Runtime status", ("200", _json(_ANY, "runtime")), ("401", "500"))},
        "/v1/admin/breakers": {"get": _op("Breakers", ("200", _json(_ANY, "breakers")), admin)},
        "/v1/admin/breakers/{name}/{action}": {
            "post": _op(
                "Reset or force open a breaker",
                ("200", _json(_ANY, "done")),
                ("401", "403", "404", "500"),
                params=[
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "action", "in": "path", "required": True, "schema": {"enum": ["reset", "open"]}},
                ],
            )
        },
        "/v1/admin/cache": {"get": _op("Cache statistics", ("200", _json(_ANY, "stats")), admin)},
        "/v1/admin/cache/flush": {"post": _op("Flush the cache", ("200", _json(_ANY, "flushed")), admin)},
        "/v1/admin/log-level": {
            "put": _op(
                "Change the log level",
                ("200", _json(_ANY, "new level")),
                ("400", "401", "403", "415", "422", "500"),
                body="LogLevel",
            )
        },
        "/v1/admin/drain": {"post": _op("Start a graceful drain", ("202", _json(_ANY, "draining")), admin)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hulk", "version": __version__, "description": "Task runtime API"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }

"""JSON responses and the error answers of the API."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from hulk.http.models import ErrorBody, ErrorDetail

_encoder = msgspec.json.Encoder()


class JSONResponse(Response):
    """A response whose body is encoded with msgspec (structs, dicts, lists), fast and compact."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encodes `content` to JSON bytes."""
        return _encoder.encode(content)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str = "",
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer: `{"error": {"code", "message", "request_id", "field"?}}`.

    Args:
        status: HTTP status code.
        code: stable machine-readable code, e.g. `queue_full`.
        message: what was wrong, for people.
        request_id: the request's id, so a user can quote it.
        field: the offending field of the body, when there is one.
        headers: extra headers (e.g. `Retry-After`).
    """
    body = ErrorBody(error=ErrorDetail(code=code, message=message, request_id=request_id, field=field))
    return JSONResponse(body, status_code=status, headers=headers)

"""The baseline of the HTTP benchmark: a bare Starlette app serving the same JSON as hulk's routes.

Run as `uvicorn bench.bare_app:app --loop uvloop --http httptools --port N --log-level warning`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_accepted = {"id": "01JD0000000000000000000000", "status": "queued"}


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def submit(request: Request) -> Response:
    await request.json()
    return JSONResponse(_accepted, status_code=202)


app = Starlette(routes=[Route("/health", health), Route("/v1/tasks", submit, methods=["POST"])])

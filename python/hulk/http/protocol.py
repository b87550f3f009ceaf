"""uvicorn's httptools protocol, with each response written to the socket in one system call.

uvicorn writes a response's status line and headers when the app sends `http.response.start`, and
its body when the app sends `http.response.body`: two `send` system calls and two TCP segments for
every small JSON answer. On this project's machines a loopback write costs several microseconds of
kernel time (it runs the receiver's side of TCP too), so the second one was a visible share of a
submission's CPU. `CoalescingHttpProtocol` hands uvicorn a transport that gathers the writes made
during one event-loop turn and sends them together at the end of it.

Only writes are gathered; every other transport call goes straight through, and `close()` sends
what is gathered first, so the bytes on the wire and their order are exactly uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """A transport wrapper that sends the writes of one event-loop turn as one write.

    Args:
        transport: the connection's real transport.
        loop: the event loop the connection runs on.
    """

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Gathers `data`; it is sent with the turn's other writes once the turn ends."""
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Sends what was gathered now (nothing when a `close` already did)."""
        pending = self._pending
        if pending:
            self._pending = []
            if self.transport.is_closing():
                return  # the client went away during the turn: nobody to send the answer to
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        """Sends what was gathered, then closes the connection."""
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport` (pass it as `uvicorn.Config(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wraps the connection's transport, then lets uvicorn set the connection up."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

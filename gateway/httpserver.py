"""The HTTP server's protocol: uvicorn's, with a deadline for the request head.

uvicorn bounds an idle keep-alive connection, but not a client that sends its request line and
headers a byte at a time: such connections are held for ever, and a few hundred of them hold
the server's file descriptors (slowloris). Here a connection has ``header_timeout_s`` from its
start, or from the end of its last response, to deliver a whole request head; past it the
connection is closed. The body has its own deadline in the app (``protocol.read_body``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def bounded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline for each request head."""

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline and not self.transport.is_closing():
                self._arm()  # the next request head has as long again

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadlineProtocol


def _from_environment() -> type[asyncio.Protocol]:
    """For ``serve --workers N``: each worker process imports the protocol by name, and the
    parent put the setting in the environment."""
    return bounded_protocol(float(os.environ.get("SEMCACHE_CLIENT_HEADER_TIMEOUT_S", "10")))


HeadDeadlineFromEnvironment = _from_environment()

"""The set of a client listener's connections: :class:`ClientServer` makes one
:class:`~sigproxy.intake.h1server.ClientProtocol` per accepted connection, with the limits of the config current
then (a reload applies to new connections), and drains them all on shutdown.

Must not: parse HTTP (h1server does), sign, route or choose connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sigproxy.config import ProxyConfig

from .h1server import ClientProtocol, Entry

__all__ = ["ClientServer"]

_CANCEL_GRACE = 2.0  # seconds a cancelled answer gets to end (a WebSocket's close frames) before its connection is cut


class ClientServer:
    """Makes each client connection's protocol and drains them all on shutdown."""

    def __init__(self, entry: Entry, *, proxy: Callable[[], ProxyConfig]) -> None:
        self.entry = entry
        self._current = proxy
        self._connections: set[ClientProtocol] = set()
        self.draining = False

    def __call__(self) -> ClientProtocol:
        return ClientProtocol(self, self._current())

    def opened(self, protocol: ClientProtocol) -> None:
        self._connections.add(protocol)
        if self.draining:
            protocol.begin_drain()

    def lost(self, protocol: ClientProtocol) -> None:
        self._connections.discard(protocol)

    def pre_shutdown(self) -> None:
        """Start the drain: connections with no request being answered close now, the others after it."""
        self.draining = True
        for protocol in list(self._connections):
            protocol.begin_drain()

    async def shutdown(self, grace: float) -> None:
        """Give the requests being answered up to ``grace`` seconds, then cancel what is left and close."""
        self.pre_shutdown()
        busy = [task for p in self._connections if (task := p.task) is not None]
        if busy:
            await asyncio.wait(busy, timeout=grace)
        cancelled = [task for protocol in list(self._connections) if (task := protocol.cancel()) is not None]
        if cancelled:
            await asyncio.wait(cancelled, timeout=_CANCEL_GRACE)
            for protocol in list(self._connections):
                protocol.abort()

"""What every client listener (forward, CONNECT tunnels, ``[[reverse]]``) puts between a client and its HTTP
server (:mod:`sigproxy.intake.h1server`): the connection gate (client allow-list, ``max_connections``,
``max_connections_per_client``).

* :class:`Gate` counts open client connections, in total and per client address. At accept a client outside
  the listener's ``clients`` gets 403 ``client_not_allowed``, one over a limit 503 ``too_many_connections``;
  either way the connection is closed. An admitted connection holds a :class:`Ticket` until it closes.
* :class:`Door` admits a connection on a reverse listener through the gate and hands it to the server.

Must not: parse HTTP, sign, or choose connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sigproxy.config import Network, ProxyConfig, client_allowed
from sigproxy.errors import ClientNotAllowed, SigproxyError, TooManyConnections
from sigproxy.handler import error_bytes

if TYPE_CHECKING:
    from .clientserver import ClientServer

__all__ = ["LINGER", "Door", "Gate", "Ticket", "peer_address", "refuse"]

logger = logging.getLogger(__name__)

LINGER = 1.0
"""Seconds a connection being closed after an answer reads and drops what the client still sends, so that
closing doesn't reset the connection before the client has read the answer."""


def peer_address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return None


def refuse(transport: asyncio.BaseTransport, exc: SigproxyError) -> None:
    """Answer ``exc`` on a connection no HTTP server has seen yet and close it (after a short linger)."""
    writer = cast(asyncio.Transport, transport)
    writer.write(error_bytes(exc, "-"))
    if writer.can_write_eof():
        writer.write_eof()
    asyncio.get_running_loop().call_later(LINGER, writer.close)


class Ticket:
    """One admitted connection's place in the :class:`Gate`; :meth:`release` (idempotent) when it closes."""

    __slots__ = ("_address", "_gate")

    def __init__(self, gate: Gate | None, address: str) -> None:
        self._gate = gate
        self._address = address

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release(self._address)


class Gate:
    """Open client connections over all client listeners, in total and per client address."""

    def __init__(self) -> None:
        self._total = 0
        self._per_client: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._total

    def count(self, address: str) -> int:
        return self._per_client.get(address, 0)

    def admit(self, transport: asyncio.BaseTransport, proxy: ProxyConfig, clients: tuple[Network, ...],
              listener: str) -> Ticket | None:
        """A ticket for a new connection, or ``None`` when it was refused (answered and being closed)."""
        address = peer_address(transport)
        if not client_allowed(clients, address):
            logger.info("client %s refused on the %s listener: not in its clients networks", address, listener)
            refuse(transport, ClientNotAllowed(f"client address {address} is not allowed on this listener"))
            return None
        key = address or "?"
        if self._total >= proxy.max_connections:
            logger.info("client %s refused on the %s listener: max_connections (%d) reached", address, listener,
                        proxy.max_connections)
            refuse(transport, TooManyConnections(
                f"the proxy has max_connections ({proxy.max_connections}) client connections open; retry later"))
            return None
        if self._per_client.get(key, 0) >= proxy.max_connections_per_client:
            logger.info("client %s refused on the %s listener: max_connections_per_client (%d) reached", address,
                        listener, proxy.max_connections_per_client)
            refuse(transport, TooManyConnections(
                f"this client has max_connections_per_client ({proxy.max_connections_per_client}) connections "
                "open; reuse them or retry later"))
            return None
        self._total += 1
        self._per_client[key] = self._per_client.get(key, 0) + 1
        return Ticket(self, key)

    def release(self, address: str) -> None:
        self._total -= 1
        left = self._per_client.get(address, 0) - 1
        if left > 0:
            self._per_client[address] = left
        else:
            self._per_client.pop(address, None)


class Door(asyncio.Protocol):
    """A reverse listener's accepted connection: through the gate, then to the HTTP server."""

    def __init__(self, gate: Gate, server: ClientServer,
                 settings: Callable[[], tuple[ProxyConfig, tuple[Network, ...]]], name: str) -> None:
        self._gate = gate
        self._server = server
        self._settings = settings
        self._name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        proxy, clients = self._settings()
        ticket = self._gate.admit(transport, proxy, clients, self._name)
        if ticket is None:
            return  # refused; what the client still sends is dropped until the transport closes
        protocol = self._server()
        protocol.adopt(ticket)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass

"""What every client listener (forward, CONNECT tunnels, ``[[reverse]]``) puts between a client and the handler:
the connection gate (client allow-list, ``max_connections``, ``max_connections_per_client``) and the aiohttp
protocol with sigproxy's head limits and timeouts.

* :class:`Gate` counts open client connections, in total and per client address. At accept a client outside
  the listener's ``clients`` gets 403 ``client_not_allowed``, one over a limit 503 ``too_many_connections``;
  either way the connection is closed. An admitted connection holds a :class:`Ticket` until it closes.
* :class:`ClientServer` is aiohttp's low-level server whose protocols (:class:`GuardedHandler`) take their
  limits from the *current* config when a connection is accepted, so a reload (SIGHUP) applies them to new
  connections: ``max_request_line``, ``max_header_size``, ``max_headers`` (over them: 400), ``idle_timeout``
  (an idle keep-alive connection is closed) and ``header_timeout`` (every request head on a connection,
  the first and each later keep-alive one, must be complete within it of its first byte, however steadily
  it trickles in: a slowloris is cut off).
* :class:`Door` admits a connection on a reverse listener through the gate and hands it to aiohttp.

Must not: parse HTTP (aiohttp does), sign, or choose connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from sigproxy.config import Network, ProxyConfig, client_allowed
from sigproxy.errors import BadRequest, ClientNotAllowed, SigproxyError, TooManyConnections
from sigproxy.handler import error_bytes, error_response

__all__ = ["ClientServer", "Door", "Gate", "GuardedHandler", "Ticket", "answered", "peer_address", "refuse"]

logger = logging.getLogger(__name__)

# Set on a request whose HTTP version sigproxy doesn't speak (the version it claimed).
_UNSUPPORTED_VERSION = "sigproxy.unsupported_version"
# After a refusal at accept, what the client still sends is read and dropped for this long, so that closing
# doesn't reset the connection before the client has read the answer.
_REFUSAL_LINGER = 1.0


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
    asyncio.get_running_loop().call_later(_REFUSAL_LINGER, writer.close)


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


def _head_error(exc: HttpProcessingError, proxy: ProxyConfig | None) -> BadRequest:
    """What to tell a client whose request head aiohttp's parser refused (never echoing its bytes)."""
    if isinstance(exc, LineTooLong):
        limits = (f" (max_request_line = {proxy.max_request_line}, max_header_size = {proxy.max_header_size})"
                  if proxy else "")
        return BadRequest(f"the request line or a header line is too long{limits}")
    if "Too many headers" in (exc.message or ""):
        count = f" (max_headers = {proxy.max_headers})" if proxy else ""
        return BadRequest(f"the request has too many header lines{count}")
    return BadRequest(f"malformed request head ({type(exc).__name__})")


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol plus ``header_timeout``, ``idle_timeout`` around request heads and a
    :class:`Ticket` released when the connection closes.

    aiohttp's own keep-alive timer (``idle_timeout``) closes a connection idle between requests; once a head's
    first byte is in, the head timer takes over until the head is parsed. Relies on aiohttp 3.14's
    ``RequestHandler`` internals (``_request_count``, ``_messages``, ``_process_keepalive``).
    """

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, proxy: ProxyConfig,
                 **kwargs: Any) -> None:
        # auto_decompress=False: a body's content-coding (gzip, deflate, br, zstd...) is the client's and the
        # upstream's business. aiohttp would decode it before we see it, so the bytes forwarded -- and the
        # SHA-256 signed over them -- would not be the bytes sent (issue 12: S3 stored the decoded bytes
        # under Content-Encoding: gzip; RGW refused XAmzContentSHA256Mismatch). RFC 9110 8.4: a
        # content-coding is a property of the representation, not of the message, so a proxy keeps it.
        super().__init__(manager, loop=loop, access_log=None,  # type: ignore[arg-type]  # None: no access log
                         auto_decompress=False, keepalive_timeout=proxy.idle_timeout,
                         max_line_size=proxy.max_request_line, max_field_size=proxy.max_header_size,
                         max_headers=proxy.max_headers, **kwargs)
        self._proxy = proxy
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_began: float | None = None  # from the front door: when the first head's first byte came
        self._head_since: float | None = None  # when the head in flight began; None between heads
        self._body: StreamReader | None = None
        self._ticket: Ticket | None = None
        self._answered = 0  # requests whose handling is over (aiohttp's _request_count: heads parsed)

    def adopt(self, ticket: Ticket | None, *, head_began: float | None = None) -> None:
        """Take the gate's ticket; ``head_began``: when the first byte of the head in flight arrived (the
        front door read the start of it)."""
        self._ticket = ticket
        self._head_began = head_began

    def _awaiting_head(self) -> bool:
        return self._body is None or self._body.is_eof()

    def data_received(self, data: bytes) -> None:
        if data and self._head_since is None and self._awaiting_head():
            self._head_since = self._head_began if self._head_began is not None else self._loop.time()
            self._head_began = None
            if self._head_timer is None:
                self._head_timer = self._loop.call_at(self._head_since + self._proxy.header_timeout,
                                                      self._head_check)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            # One head (or more, pipelined) is complete. Whatever follows belongs to the last one's body
            # until that ends; bytes of a next head that came in this same read start no clock until more arrive.
            self._body = self._messages[-1][1] if self._messages else None
            self._head_since = None  # the timer finds no head in flight and lapses: it is not moved per request

    def _head_check(self) -> None:
        """The connection's one head timer: close it when the head in flight began ``header_timeout`` ago."""
        self._head_timer = None
        if self.transport is None or self._head_since is None:
            return
        due = self._head_since + self._proxy.header_timeout
        if self._loop.time() < due:
            self._head_timer = self._loop.call_at(due, self._head_check)  # a later head than the one it was set for
            return
        logger.info("client %s did not finish a request head within header_timeout (%g s); connection closed",
                    peer_address(self.transport), self._proxy.header_timeout)
        self.force_close()

    def _process_keepalive(self) -> None:
        if self._head_since is not None:  # a head is arriving: header_timeout governs it, not idle_timeout
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    async def _handle_request(self, request: web.BaseRequest, start_time: float | None,
                              request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                              ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._answered += 1

    def close(self) -> None:
        """Drain (``pre_shutdown``): stop after the request being served, as aiohttp does; and when every request
        that arrived has been answered, close now. aiohttp closes a connection waiting for its next head at once,
        but one whose last request was answered without reading its body (refused before it, typically after
        ``Expect: 100-continue``, so the client never sends it) it keeps open for up to ``lingering_time``
        (10 s), reading the body that won't come: the drain waited for it."""
        super().close()
        if self._request_in_progress or self._answered != self._request_count:
            return  # a request is being served (or its head is parsed and it is about to be): shutdown() waits
        body = self._body
        self.force_close()
        if body is not None and not body.is_eof():
            body.feed_eof()  # ends aiohttp's lingering read: nothing more comes on a closed connection

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) and 400 <= status < 500 and request.writer.output_size == 0:
            error = _head_error(exc, self._proxy)
            logger.info("request head from %s refused: %s", request.remote, error.message)
            response = error_response(error, "-")
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        try:
            super().connection_lost(exc)
        finally:
            if self._ticket is not None:
                self._ticket.release()
                self._ticket = None


async def answered(response: web.StreamResponse) -> web.StreamResponse:
    """A response already made, as the awaitable a request handler returns."""
    return response


class ClientServer(web.Server):
    """aiohttp's low-level server for client listeners: each connection's :class:`GuardedHandler` gets the
    limits of the config current when it is accepted. A request that claims an HTTP version other than 1.0
    or 1.1 (``GET / HTTP/2.0``) is refused with 400, answered as HTTP/1.1 (aiohttp would echo its version
    in the status line) and the connection closed."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], *,
                 proxy: Callable[[], ProxyConfig]) -> None:
        def checked(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            # Not a coroutine of its own: the handler's is awaited directly (one frame less on every resume).
            version = request.get(_UNSUPPORTED_VERSION)
            if version is None:
                return handler(request)
            logger.info("request from %s refused: HTTP/%s", request.remote, version)
            response = error_response(BadRequest(f"HTTP/{version} is not spoken here: sigproxy takes HTTP/1.1 "
                                                 "and HTTP/1.0"), "-")
            response.force_close()
            return answered(response)

        super().__init__(checked, access_log=None)
        self._current = proxy

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, proxy=self._current())

    def _make_request(self, message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler,
                      writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
        if message.version in (HttpVersion10, HttpVersion11):
            return super()._make_request(message, payload, protocol, writer, task)
        claimed = f"{message.version.major}.{message.version.minor}"
        as_11 = message._replace(version=HttpVersion11, should_close=True)
        request = super()._make_request(as_11, payload, protocol, writer, task)
        request[_UNSUPPORTED_VERSION] = claimed
        return request


class Door(asyncio.Protocol):
    """A reverse listener's accepted connection: through the gate, then to aiohttp."""

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

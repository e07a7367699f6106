"""The forward listener's front door: reads a connection's first request head. ``CONNECT`` is handled here
(TLS interception with a leaf from our CA, or a blind tunnel for ``passthrough`` hosts); anything else is
handed, with the bytes already read, to the HTTP server (:mod:`sigproxy.intake.h1server`).

Inside an intercepted tunnel every request goes to the same :class:`~sigproxy.handler.Handler` with target
``https://host[:port]``; a ``Proxy-Authorization`` sent on the CONNECT applies to all of them.

Must not: sign, choose credentials, or parse anything but the CONNECT head (the HTTP server parses the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from sigproxy.clientcert import Subject, peer_subject
from sigproxy.config import Config, ProxyConfig
from sigproxy.egress import EgressPolicy, resolve_checked
from sigproxy.errors import (
    BadProxyToken,
    BadRequest,
    Forbidden,
    HostNotAllowed,
    SigproxyError,
    UpstreamError,
)
from sigproxy.handler import Exchange, Handler, error_bytes
from sigproxy.http1 import ClientRequest, Response, StreamResponse
from sigproxy.routing import Target, parse_absolute_target, select_connection
from sigproxy.tasks import TaskSet
from sigproxy.tls import CertStore, TlsError

from .clientserver import ClientServer
from .gate import Gate, Ticket, peer_address
from .h1server import Entry

__all__ = ["ConnectIntake", "FrontDoor"]

logger = logging.getLogger(__name__)

# Time a client gets to finish the TLS handshake of an intercepted tunnel.
_HANDSHAKE_TIMEOUT = 15.0
_TUNNEL_CONNECT_TIMEOUT = 10.0
_RELAY_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class _ConnectHead:
    host: str
    port: int
    proxy_authorization: str | None
    client_cert: Subject | None = None
    """The subject of the client's certificate (a forward listener with ``client_ca_file``)."""


def _max_head(proxy: ProxyConfig) -> int:
    """The largest request head the limits allow: the request line and ``max_headers`` full header lines."""
    return proxy.max_request_line + 2 + proxy.max_headers * (proxy.max_header_size + 4) + 2


def _check_head_limits(lines: list[bytes], proxy: ProxyConfig) -> None:
    """A CONNECT head against the limits the HTTP server applies to every other head (in bytes, as it counts)."""
    if len(lines[0]) > proxy.max_request_line:
        raise BadRequest(f"the request line is too long (max_request_line = {proxy.max_request_line})")
    if len(lines) - 1 > proxy.max_headers:
        raise BadRequest(f"the request has too many header lines (max_headers = {proxy.max_headers})")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if len(name) + len(value.strip()) > proxy.max_header_size:
            raise BadRequest(f"a header line is too long (max_header_size = {proxy.max_header_size})")


# RFC 9112 2.3 (HTTP/1.x; a later minor version is served as 1.1); RFC 9110 5.1, 5.5: a field name is a token, a
# value visible characters, spaces, tabs and obs-text (bytes 0x80-0xFF), never CR, LF or another control.
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# RFC 9110 9.3.6: the target is uri-host ":" port. A name must be one sigproxy can resolve, sign for and mint a
# certificate for: a DNS name (RFC 1035 2.3.4: labels of 1 to 63 characters, 253 in all; "_", which resolvers take,
# too); an IPv6 address goes in brackets (RFC 3986 3.2.2). Anything else, a byte that is not ASCII among it (a
# name that is not an A-label), is refused before it is looked up, compared or minted for.
_HOST_NAME = re.compile(r"(?=.{1,253}\.?\Z)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?", re.ASCII)


def _connect_target(authority: str) -> tuple[str, int]:
    """Host (lower-case; an IPv6 address without its brackets) and port of a CONNECT target. Raises
    :class:`BadRequest`, whose message shows the target escaped (``repr``), as it came."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
        try:
            ok = bool(bracket) and ipaddress.ip_address(host).version == 6
        except ValueError:
            ok = False
    else:
        host, _, port_s = authority.rpartition(":")
        ok = _HOST_NAME.fullmatch(host) is not None
    if not host or not port_s:
        raise BadRequest(f"CONNECT needs host:port, got {authority[:300]!r}")
    if not ok:
        raise BadRequest(f"bad host in CONNECT target {authority[:300]!r}: send a DNS name (an internationalised "
                         "one as its A-label, xn--...) or an IP address, and a port")
    if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5) or not 0 < int(port_s) < 65536:
        raise BadRequest(f"bad port in CONNECT target {authority[:300]!r}")
    return host.lower(), int(port_s)


def _parse_connect(head: bytes, proxy: ProxyConfig) -> _ConnectHead:
    """A CONNECT request head (without its final blank line), judged as the HTTP server judges every other: the
    head limits, strict syntax (RFC 9112 3, 5: a malformed field line is a 400, not skipped) and its text decoded
    from UTF-8 with ``surrogateescape``, so what is checked, compared with a tunnelled request's host and logged
    (escaped) is the bytes that came. Raises :class:`BadRequest`."""
    lines = head.split(b"\r\n")
    _check_head_limits(lines, proxy)
    parts = lines[0].decode("utf-8", "surrogateescape").split(" ")
    if len(parts) != 3 or not _VERSION.fullmatch(parts[2]):
        raise BadRequest("malformed CONNECT request line: send CONNECT host:port HTTP/1.1")
    host, port = _connect_target(parts[1])
    auth = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise BadRequest("malformed header line in the CONNECT request: send NAME: VALUE (RFC 9112 5)")
        if name.lower() == b"proxy-authorization":
            if auth is not None:
                raise BadRequest("Proxy-Authorization is given twice in the CONNECT request; send it once")
            auth = value.strip(b" \t").decode("utf-8", "surrogateescape")
    return _ConnectHead(host, port, auth)


class _HasHandler(Protocol):
    @property
    def handler(self) -> Handler: ...


class ConnectIntake:
    """Everything a forward listener needs: the plain HTTP server, the CA, and the open tunnels."""

    def __init__(self, runtime: _HasHandler, certs: CertStore, gate: Gate,
                 entry: Entry) -> None:
        self._runtime = runtime
        self._certs = certs
        self.gate = gate
        self._plain = ClientServer(entry, proxy=self.proxy)
        self._tunnels: set[ClientServer] = set()
        self._doors: set[FrontDoor] = set()  # accepted connections whose first head is still being read
        self._relays = 0
        self._tasks = TaskSet()

    @property
    def open_tunnels(self) -> int:
        return len(self._tunnels) + self._relays

    def proxy(self) -> ProxyConfig:
        """``[proxy]`` of the config current now (limits and ``clients`` follow a reload)."""
        return self._runtime.handler.config.proxy

    def front_door(self) -> FrontDoor:
        door = FrontDoor(self)
        self._doors.add(door)
        return door

    def door_done(self, door: FrontDoor) -> None:
        """``door``'s connection has gone past its first head (or closed): no longer the drain's to close."""
        self._doors.discard(door)

    def plain_protocol(self, ticket: Ticket | None, head_began: float | None) -> asyncio.Protocol:
        proto = self._plain()
        proto.adopt(ticket, head_began=head_began)
        return proto

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro, name="sigproxy-connect")

    def pre_shutdown(self) -> None:
        """Start the drain (the listener is closed): close every connection with no request in progress --
        idle keep-alive ones, plain or inside intercepted tunnels, and those still before their first head."""
        for door in list(self._doors):
            door.close()
        for server in [*self._tunnels, self._plain]:
            server.pre_shutdown()

    async def shutdown(self, grace: float) -> None:
        """Drain: requests in progress, plain or inside tunnels, get ``grace`` to finish, all at once;
        connections with none close at once (:meth:`pre_shutdown`; without it the drain waits out ``grace`` for
        their next request). Then what is left (tunnels still being set up, passthrough relays) is cancelled."""
        self.pre_shutdown()
        await asyncio.gather(*(server.shutdown(grace) for server in [*self._tunnels, self._plain]))
        await self._tasks.cancel_all()

    # ------------------------------------------------------------------ CONNECT

    async def handle_connect(self, transport: asyncio.Transport, head: bytes, early: bytes,
                             ticket: Ticket | None = None) -> None:
        """Answer a CONNECT and serve its tunnel; ``ticket`` (the connection's place in the gate) is released
        when the tunnel is over. A bug once the tunnel is open (the ``200`` sent) cuts it, its traceback logged
        once; before, it is answered (:meth:`_refuse`): the client is never left waiting on a task that died."""
        try:
            await self._handle_connect(transport, head, early)
        except Exception:
            logger.exception("unexpected error in the CONNECT tunnel from %s; connection closed",
                             peer_address(transport))
            transport.abort()
        finally:
            if ticket is not None:
                ticket.release()

    async def _handle_connect(self, transport: asyncio.Transport, head: bytes, early: bytes) -> None:
        failures = self._runtime.handler.failures
        client = peer_address(transport)
        try:
            failures.check(client)
            config = self._runtime.handler.config
            connect = _parse_connect(head, config.proxy)
            tls = config.proxy.tls
            if tls is not None and tls.client_ca_file is not None:
                connect = replace(connect, client_cert=peer_subject(transport))
            if early:
                raise BadRequest("data arrived before the CONNECT was answered")
            if connect.port not in config.proxy.connect_ports:
                raise Forbidden(
                    f"CONNECT to port {connect.port} is not allowed; add it to [proxy] connect_ports"
                )
            try:
                intercept = self._may_sign(config, connect)
            except BadProxyToken:
                failures.record(client)
                raise
            if not intercept and not config.proxy.passes_through(connect.host, connect.port):
                raise HostNotAllowed(
                    f"no connection may sign for {connect.host}:{connect.port} and it is not in "
                    "[proxy] passthrough; add it to a connection's hosts to sign for it, to [proxy] passthrough to "
                    "tunnel it untouched, or to the client's NO_PROXY to bypass sigproxy"
                )
        except Exception as exc:  # a refusal, or a bug
            _refuse(transport, exc)
            return
        if intercept:
            await self._intercept(transport, connect)
        else:
            await self._relay(transport, connect)

    def _may_sign(self, config: Config, connect: _ConnectHead) -> bool:
        """Whether the tunnel is intercepted: the connection named by its Proxy-Authorization (checked
        now, token included) may sign for the host, or without one, any connection may."""
        if connect.proxy_authorization:
            target = Target("https", connect.host, connect.port, "/", "")
            selection = select_connection(config, target, connection_header=None,
                                          proxy_authorization=connect.proxy_authorization, client_scope=None,
                                          client_cert=connect.client_cert)
            if not selection.connection.allows(connect.host, connect.port):
                raise HostNotAllowed(f"connection {selection.connection.name!r} may not sign for "
                                     f"{connect.host}:{connect.port}; add it to the connection's hosts")
            return True
        return any(c.allows(connect.host, connect.port) for c in config.connections.values())

    async def _intercept(self, transport: asyncio.Transport, connect: _ConnectHead) -> None:
        loop = asyncio.get_running_loop()
        try:
            ctx = await self._certs.context_for_async(connect.host)
        except TlsError as exc:
            _refuse(transport, BadRequest(f"cannot intercept {connect.host!r}: {exc}"))
            return
        except Exception as exc:  # a bug
            _refuse(transport, exc)
            return
        server = ClientServer(self._tunnel_entry(connect), proxy=self.proxy)
        self._tunnels.add(server)
        protocol = server()
        transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            tls = await loop.start_tls(transport, protocol, ctx, server_side=True,
                                       ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            logger.info("TLS handshake with a client for %s failed (does it trust sigproxy's CA? "
                        "see `sigproxy ca --env`): %s", connect.host, exc)
            transport.close()
            self._tunnels.discard(server)
            return
        if tls is None:  # pragma: no cover - start_tls returns a transport or raises
            transport.close()
            return
        protocol.connection_made(tls)
        await protocol.closed
        self._tunnels.discard(server)

    def _tunnel_entry(self, connect: _ConnectHead) -> Entry:
        runtime = self._runtime

        async def entry(request: ClientRequest) -> Response | StreamResponse:
            handler = runtime.handler  # current at arrival, for the whole request
            raw = request.raw_path
            try:
                if raw.startswith("/"):
                    path, _, query = raw.partition("?")
                    target = Target("https", connect.host, connect.port, path, query)
                else:
                    target = parse_absolute_target(raw)
                    if (target.host, target.port) != (connect.host, connect.port):
                        raise BadRequest("a request inside a tunnel must go to the tunnel's host")
            except Exception as exc:  # a refusal, or a bug: answered with its access line all the same
                return handler.reject(request, exc)
            return await handler(request, Exchange(target=target, tunnel_authorization=connect.proxy_authorization,
                                                   client_cert=connect.client_cert))

        return entry

    async def _relay(self, transport: asyncio.Transport, connect: _ConnectHead) -> None:
        """A blind byte tunnel for a passthrough host."""
        policy = EgressPolicy.for_passthrough(self.proxy().passthrough)
        try:
            async with asyncio.timeout(_TUNNEL_CONNECT_TIMEOUT):
                # One lookup, every answer checked by the SSRF guard; connect only to those addresses.
                addresses = await resolve_checked(connect.host, connect.port, policy)
                up_reader, up_writer = await _open_first(addresses, connect.port)
        except (OSError, TimeoutError) as exc:
            _refuse(transport, UpstreamError(f"cannot connect to {connect.host}:{connect.port}: {exc}"))
            return
        except Exception as exc:  # the SSRF guard's refusal (AddressNotAllowed), or a bug
            _refuse(transport, exc)
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_RELAY_CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        transport.resume_reading()
        logger.info("passthrough tunnel to %s:%d", connect.host, connect.port)
        self._relays += 1
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_pump(reader, up_writer))
                group.create_task(_pump(up_reader, writer))
        except* OSError:
            pass
        finally:
            self._relays -= 1
            for w in (writer, up_writer):
                w.close()


def _refuse(transport: asyncio.Transport, exc: Exception) -> None:
    """Answer a CONNECT that gets no tunnel, then close: a :class:`SigproxyError` with its status (logged at info);
    anything else is a bug: ``500 internal_error``, its traceback logged once, here."""
    if isinstance(exc, SigproxyError):
        logger.info("CONNECT refused: %s", exc.message)
    else:
        logger.error("unexpected error answering a CONNECT from %s", peer_address(transport), exc_info=exc)
        exc = SigproxyError("sigproxy failed on this request (see its log)")
    transport.write(error_bytes(exc, "-"))
    transport.close()


async def _open_first(addresses: list[str], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of ``addresses`` that answers (the last failure raised)."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return await asyncio.open_connection(address, port)
        except OSError as exc:
            error = exc
    raise error


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(_RELAY_CHUNK):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


class FrontDoor(asyncio.Protocol):
    """Protocol for one accepted forward-proxy connection: through the gate, then, from its first bytes, to
    the HTTP server (any method but CONNECT) or, for a CONNECT, until its head is read.

    Until a first byte arrives the connection may idle for ``idle_timeout``; from it, the head must be complete
    within ``header_timeout`` (the HTTP server keeps counting from that first byte).
    """

    def __init__(self, intake: ConnectIntake) -> None:
        self._intake = intake
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ticket: Ticket | None = None
        self._proxy: ProxyConfig | None = None
        self._began: float | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport (uvloop's are not asyncio.Transport subclasses, hence the cast).
        self._transport = cast(asyncio.Transport, transport)
        proxy = self._proxy = self._intake.proxy()
        self._ticket = self._intake.gate.admit(transport, proxy, proxy.clients, "forward")
        if self._ticket is None:
            self._done = True  # refused and answered; anything the client still sends is dropped
            return
        self._timer = asyncio.get_running_loop().call_later(proxy.idle_timeout, self._expired, False)

    def _expired(self, head: bool) -> None:
        transport = self._transport
        self._finish()
        if transport is None:
            return
        if head and self._proxy is not None:
            logger.info("client %s did not finish a request head within header_timeout (%g s); connection closed",
                        peer_address(transport), self._proxy.header_timeout)
        transport.close()

    def data_received(self, data: bytes) -> None:
        transport, proxy = self._transport, self._proxy
        if transport is None or proxy is None or self._done or not data:
            return
        if self._began is None:
            loop = asyncio.get_running_loop()
            self._began = loop.time()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._began + proxy.header_timeout, self._expired, True)
        self._buffer += data
        start = bytes(self._buffer[:8])
        if not b"CONNECT ".startswith(start):  # the method is case-sensitive (RFC 9110 9.1): "connect" is not it
            self._hand_to_server(transport)
            return
        if len(start) < 8:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            first_line_open = self._buffer.find(b"\r\n") < 0
            if len(self._buffer) > _max_head(proxy) or (first_line_open and
                                                          len(self._buffer) > proxy.max_request_line + 2):
                self._refuse(BadRequest("the CONNECT request head is over the head limits (max_request_line, "
                                        "max_header_size, max_headers)"))
            return
        self._finish()
        transport.pause_reading()
        head, early = bytes(self._buffer[:end]), bytes(self._buffer[end + 4 :])
        ticket, self._ticket = self._ticket, None
        self._intake.spawn(self._intake.handle_connect(transport, head, early, ticket))

    def _hand_to_server(self, transport: asyncio.Transport) -> None:
        """Not a CONNECT: the HTTP server parses the head (and applies the limits), counting time from its first
        byte."""
        self._finish()
        ticket, self._ticket = self._ticket, None
        protocol = self._intake.plain_protocol(ticket, self._began)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(bytes(self._buffer))
        self._buffer.clear()

    def _refuse(self, exc: SigproxyError) -> None:
        self._finish()
        logger.info("CONNECT refused: %s", exc.message)
        if self._transport is not None:
            self._transport.write(error_bytes(exc, "-"))
            self._transport.close()

    def _finish(self) -> None:
        self._done = True
        self._intake.door_done(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Drain: no request has arrived on this connection yet (none, or only part of a head): close it."""
        transport = self._transport
        self._finish()
        if transport is not None:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._transport = None
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None

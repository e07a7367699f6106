"""The upstream side: a pool of keep-alive HTTP/1.1 connections (:mod:`sigproxy.h1conn`) that sends signed
requests exactly as signed.

Owns: connection pooling and its limit, the connect timeout, TLS to the upstream, the egress guard's place in
the pool (see :mod:`sigproxy.egress`), the one retry of an idempotent request whose kept-alive connection turned
out closed (RFC 9112 9.3.1), and translating connect failures into :mod:`sigproxy.errors` (a request that found
no place under ``upstream_connections`` within ``connect_timeout`` is a 504 naming that limit, and a warning).
Must not: sign, choose routes, follow redirects, decompress, or retry non-idempotent requests.

The egress guard, per request, under the selected connection's :class:`~sigproxy.egress.EgressPolicy`:

* an IP-literal target is checked before anything is sent;
* a name is looked up by :class:`~sigproxy.egress.EgressResolver` when a new connection is opened, and the
  connection goes to the answers that were checked -- one lookup, no rebinding window;
* every connection handed out -- new or kept alive from the pool -- has its peer address checked again, so a
  keep-alive connection one connection's explicit name opened is never reused by another that named nothing.

Before issue 15 this was an aiohttp ``ClientSession``; its per-request machinery (request and response
objects, tracing, cookie and redirect handling, a timer moved on every read) was a third of the CPU of a small
proxied GET. The pool and :mod:`sigproxy.h1conn` do only what a signing proxy needs, with httptools' llhttp
parser (the one aiohttp's C parser and Node use) doing the parsing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .config import Address, Network
from .dialing import Dial
from .egress import EgressPolicy, EgressResolver, is_ip_literal, resolve_checked
from .errors import BadRequest, ConfigError, UpstreamClosed, UpstreamError, UpstreamTimeout
from .h1conn import H1Connection, Interim, UpstreamResponse
from .h1wire import request_head

__all__ = ["Upstream", "UpstreamResponse", "upstream_tls_context"]

logger: Final = logging.getLogger(__name__)

KEEPALIVE: Final = 15.0  # seconds an idle upstream connection is kept (aiohttp's default keepalive_timeout)
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def upstream_tls_context(extra_ca_file: Path | None) -> ssl.SSLContext:
    """Client TLS for upstreams: the system store plus ``extra_ca_file``; ALPN offers http/1.1 only.

    Raises :class:`~sigproxy.errors.ConfigError` when the extra CA file can't be loaded.
    """
    ctx = ssl.create_default_context()
    if extra_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(extra_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("proxy.upstream_ca_file", f"cannot load {str(extra_ca_file)!r}: {exc}") from exc
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _unverified_context() -> ssl.SSLContext:
    """Client TLS for ``verify_tls = false`` connections: no certificate or name checks, ALPN http/1.1.

    What :func:`ssl.create_default_context` makes, less the system trust store it would load (~25 ms at every
    start) only for nothing to verify against it; ``SSLKEYLOGFILE`` is honoured as there.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        ctx.keylog_filename = keylog
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@functools.lru_cache(maxsize=256)
def _policy(connection: str, explicit_hosts: tuple[str, ...], private_networks: tuple[Network, ...]) -> EgressPolicy:
    return EgressPolicy.for_connection(connection, explicit_hosts, private_networks)


class Upstream:
    """Owner of the upstream connection pool; an async context manager.

    ``limit`` caps the open connections (idle ones to other upstreams are closed to make room, then requests
    wait, within ``connect_timeout``); idle connections are kept for ``keepalive`` s (:data:`KEEPALIVE`).
    ``read_timeout`` (s) is the longest wait for the upstream's next bytes once a request is sent. ``resolver``
    (default: a fresh :class:`~sigproxy.egress.EgressResolver`) looks upstream names up.
    """

    __slots__ = ("_all", "_connect_timeout", "_idle", "_insecure", "_keepalive", "_limit", "_read_timeout",
                 "_resolver", "_ssl", "_sweeper", "_waiters")

    def __init__(self, *, connect_timeout: float, read_timeout: float, limit: int,
                 extra_ca_file: Path | None = None, resolver: EgressResolver | None = None,
                 keepalive: float = KEEPALIVE) -> None:
        self._resolver = resolver or EgressResolver()
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit = max(1, limit)
        self._ssl = upstream_tls_context(extra_ca_file)
        self._insecure = _unverified_context()
        self._all: dict[H1Connection, _Key] = {}  # every open connection (idle, busy or connecting)
        self._idle: dict[_Key, list[tuple[H1Connection, str]]] = {}  # (connection, peer address), newest last
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes | memoryview] | None, *,
        verify_tls: bool = True, explicit_hosts: tuple[str, ...] = (), private_networks: tuple[Network, ...] = (),
        connection: str = "?", dial: Dial | None = None, upgrade: bool = False, interim: Interim | None = None,
    ) -> UpstreamResponse:
        """Send one request (``url`` absolute and already percent-encoded, its path and query sent as is) and
        return once the response head is in. The caller reads the body with
        :meth:`~sigproxy.h1conn.UpstreamResponse.read` or :meth:`~sigproxy.h1conn.UpstreamResponse.iter_any`
        and must release the response (``async with response:``).

        ``explicit_hosts`` are the ``hosts`` of ``connection``, the connection the request is sent for: only
        their explicit entries let it reach a non-public address (:class:`~sigproxy.egress.EgressPolicy`);
        ``private_networks`` are networks it may reach whatever the name. Otherwise
        :class:`~sigproxy.errors.AddressNotAllowed` is raised before anything is sent there.
        Redirects are never followed: a 3xx is the response. Raises
        :class:`~sigproxy.errors.UpstreamError` and :class:`~sigproxy.errors.UpstreamTimeout`, and
        :class:`~sigproxy.errors.BadRequest` for a request that can't be written as UTF-8.

        ``dial`` (:mod:`sigproxy.dialing`): connect to its host and port instead of the URL's (the ``Host``
        header stays as given), and check its ``tls_server_name``'s certificate; an explicit one (the
        operator's ``dial``) is permitted by the egress guard whatever it resolves to. Kept-alive connections
        are shared by requests with the same scheme, dial host and port, TLS name and verification.

        ``upgrade``: the request asks to switch protocols (a WebSocket handshake, RFC 6455 4.1); a ``101`` is
        then returned like any response, and its connection carries the new protocol until released (it is
        never pooled again, and counts against the pool's limit while open).

        ``interim``: told of each interim (1xx) response before the final one
        (:meth:`~sigproxy.h1conn.H1Connection.request`)."""
        scheme, authority, target = _split(url)
        host, port, literal = _host_port(scheme, authority)
        tls_name = host
        if dial is not None:
            host, tls_name = dial.host, dial.tls_server_name
            port = dial.port or _DEFAULT_PORTS[scheme]
            literal = is_ip_literal(host)
            if dial.explicit:
                explicit_hosts = (*explicit_hosts, str(Address(host, port)))
        policy = _policy(connection, explicit_hosts, private_networks)
        if literal:
            policy.check(host, port, host)
        try:
            head, chunked = request_head(method, target, authority, headers, body)
        except UnicodeEncodeError:
            raise BadRequest("the request holds bytes that are not UTF-8 text (in a header value or the target); "
                             "sigproxy sends them as UTF-8: percent-encode or RFC 2047-encode them") from None
        except ValueError as exc:
            raise UpstreamError(f"cannot send the request to upstream {host}: {exc}") from exc
        length = None if chunked or body is None or isinstance(body, bytes) else _content_length(headers)
        key: _Key = (scheme, host, port, verify_tls, tls_name)
        # A kept-alive connection the upstream closed as we sent, before a byte of an answer (UpstreamClosed):
        # once more on a new one, when the request is idempotent and can be sent again unchanged (RFC 9112
        # 9.3.1). Never after a timeout (the upstream may still be acting on it), nor after any of a response.
        retry = method in _IDEMPOTENT and (body is None or isinstance(body, bytes))
        while True:
            conn, reused = await self._acquire(key, policy)
            try:
                return await conn.request(method, head, body, chunked, length=length, upgrade=upgrade,
                                          interim=interim)
            except UpstreamClosed:
                if not (reused and retry):
                    raise
                retry = False

    # ---------------------------------------------------------------- the pool

    async def _acquire(self, key: _Key, policy: EgressPolicy) -> tuple[H1Connection, bool]:
        """A connection for ``key`` that ``policy`` permits, and whether it was kept alive from the pool."""
        reused = self._reuse(key, policy)
        if reused is not None:
            return reused, True
        full = False  # waiting for a place under the limit, not for the upstream
        try:
            async with asyncio.timeout(self._connect_timeout):
                while len(self._all) >= self._limit:
                    if not self._close_oldest_idle():
                        waiter = asyncio.get_running_loop().create_future()
                        self._waiters.append(waiter)
                        full = True
                        try:
                            await waiter
                            full = False
                        finally:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
                    reused = self._reuse(key, policy)
                    if reused is not None:
                        return reused, True
                return await self._connect(key, policy), False
        except TimeoutError as exc:
            if full:
                # sigproxy's own limit, not the upstream: every connection busy (a relayed WebSocket holds its own).
                logger.warning("no upstream connection free for %s within connect_timeout (%g s): all %d "
                               "(upstream_connections) are in use", key[1], self._connect_timeout, self._limit)
                raise UpstreamTimeout(f"no upstream connection free for {key[1]} within connect_timeout: all "
                                      f"{self._limit} allowed by upstream_connections are in use (each open "
                                      "WebSocket holds one)") from exc
            raise UpstreamTimeout(f"upstream {key[1]} timed out") from exc

    def _reuse(self, key: _Key, policy: EgressPolicy) -> H1Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        while idle:
            conn, peer = idle.pop()
            if not _usable(conn, self._keepalive):
                continue
            refusal = policy.refusal(key[1], key[2], peer)
            if refusal is not None:
                idle.append((conn, peer))  # someone else's to use; not this connection's
                raise refusal
            return conn
        return None

    async def _connect(self, key: _Key, policy: EgressPolicy) -> H1Connection:
        scheme, host, port, verify_tls, tls_name = key
        loop = asyncio.get_running_loop()
        tls = (self._ssl if verify_tls else self._insecure) if scheme == "https" else None
        errors: list[OSError] = []
        try:
            addresses = await resolve_checked(host, port, policy, resolver=self._resolver)
        except OSError as exc:  # the name does not resolve
            errors.append(exc)
            addresses = []
        for address in addresses:
            conn = H1Connection(host, self._read_timeout, on_idle=self._idled, on_close=self._closed)
            self._all[conn] = key
            try:
                await loop.create_connection(lambda c=conn: c, address, port, ssl=tls,
                                             server_hostname=tls_name if tls is not None else None)
            except OSError as exc:
                self._closed(conn)
                errors.append(exc)
                continue
            except BaseException:
                self._closed(conn)
                raise
            conn.peer = address
            return conn
        last = errors[-1] if errors else OSError(f"{host} has no address")
        raise UpstreamError(f"cannot connect to upstream {Address(host, port)}: {last.strerror or last}") from last

    def _idled(self, conn: H1Connection) -> None:
        key = self._all.get(conn)
        if key is None:
            conn.close()
            return
        self._idle.setdefault(key, []).append((conn, conn.peer))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)
        self._wake()

    def _closed(self, conn: H1Connection) -> None:
        if self._all.pop(conn, None) is not None:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_oldest_idle(self) -> bool:
        """Close the longest-idle connection to make room under the limit; ``False`` when none is idle."""
        oldest: tuple[H1Connection, str] | None = None
        for idle in self._idle.values():
            for entry in idle:
                if not entry[0].closed and (oldest is None or entry[0].idle_since < oldest[0].idle_since):
                    oldest = entry
        if oldest is None:
            return False
        for idle in self._idle.values():
            if oldest in idle:
                idle.remove(oldest)
        oldest[0].close()
        self._closed(oldest[0])
        return True

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive time; again while any stay idle."""
        self._sweeper = None
        for key in list(self._idle):
            kept = [(conn, peer) for conn, peer in self._idle[key] if _usable(conn, self._keepalive)]
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)


_Key = tuple[str, str, int, bool, str]  # scheme, host, port (where to connect), verify_tls, TLS server name


def _usable(conn: H1Connection, keepalive: float) -> bool:
    """Whether an idle connection may still carry a request: open, and idle no longer than ``keepalive`` s (past
    it, it is closed here)."""
    if conn.closed:
        return False
    if conn.idle_for() > keepalive:
        conn.close()
        return False
    return True


def _content_length(headers: Sequence[tuple[str, str]]) -> int | None:
    """The Content-Length a streamed body is sent with (:meth:`~sigproxy.h1conn.H1Connection.request` counts
    its bytes against it), ``None`` when there is none."""
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                raise UpstreamError(f"cannot send a Content-Length of {value[:40]!r} upstream") from None
    return None


def _split(url: str) -> tuple[str, str, str]:
    """``(scheme, authority, origin-form target)`` of an absolute URL, the target exactly as written."""
    scheme, sep, rest = url.partition("://")
    # Never the URL itself in the error: a presigned one carries credentials in its query.
    if not sep:
        raise UpstreamError("cannot send upstream: not an absolute URL")
    if scheme not in _DEFAULT_PORTS:
        raise UpstreamError(f"cannot send a {scheme[:16]!r} URL upstream: only http and https")
    end = rest.find("/")
    if end < 0:
        end = len(rest)
    query = rest.find("?", 0, end)  # a query straight after the authority: "http://host?q"
    if query >= 0:
        end = query
    target = rest[end:]
    return scheme, rest[:end], target if target.startswith("/") else "/" + target


@functools.lru_cache(maxsize=1024)
def _host_port(scheme: str, authority: str) -> tuple[str, int, bool]:
    """Host (IPv6 without brackets, lowercase) and port of an authority (RFC 3986 3.2), and whether the host
    is an IP literal (:func:`~sigproxy.egress.is_ip_literal`)."""
    try:
        parts = urlsplit(f"{scheme}://{authority}")
        port = parts.port
    except ValueError as exc:
        raise UpstreamError(f"cannot send to {authority[:80]!r}: {exc}") from exc
    if not parts.hostname:
        raise UpstreamError(f"cannot send to {authority[:80]!r}: no host")
    return parts.hostname, port or _DEFAULT_PORTS[scheme], is_ip_literal(parts.hostname)

"""The upstream side: one pooled aiohttp ``ClientSession`` that sends signed requests exactly as signed.

Owns: connection pooling, timeouts, TLS to the upstream, the egress guard's place in the pool (see
:mod:`sigproxy.egress`), and translating aiohttp's errors into :mod:`sigproxy.errors` at this one boundary.
Must not: sign, choose routes, follow redirects, decompress, or retry non-idempotent requests.

The egress guard, per request, under the selected connection's :class:`~sigproxy.egress.EgressPolicy`:

* an IP-literal target is checked before anything is sent (aiohttp never asks a resolver about literals);
* a name is looked up by :class:`~sigproxy.egress.EgressResolver` when a new connection is opened, and the
  connection goes to the answers that were checked -- one lookup, no rebinding window. aiohttp's DNS cache is
  off: with it, lookups are shared between tasks and answers reused, so the resolver would not see whose
  request it resolves for. Without it aiohttp awaits the resolver in the requesting task, where
  :func:`~sigproxy.egress.using_policy` has set the policy;
* every connection handed out -- new or kept alive from the pool -- has its peer address checked again, so a
  keep-alive connection one connection's explicit name opened is never reused by another that named nothing.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDict
from yarl import URL

from .config import Network
from .egress import EgressPolicy, EgressResolver, current_policy, is_ip_literal, using_policy
from .errors import AddressNotAllowed, ConfigError, UpstreamError, UpstreamTimeout

__all__ = ["Upstream", "upstream_tls_context"]

# aiohttp adds these on its own unless told not to; a signed request must carry only what was signed.
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_READ_BUFSIZE = 256 * 1024


@contextmanager
def _map_errors(host: str) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream {host} timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"cannot connect to upstream {host}: {exc.os_error.strerror or exc}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"upstream {host} failed: {type(exc).__name__}: {exc}") from exc


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


@functools.lru_cache(maxsize=256)
def _policy(connection: str, explicit_hosts: tuple[str, ...], private_networks: tuple[Network, ...]) -> EgressPolicy:
    return EgressPolicy.for_connection(connection, explicit_hosts, private_networks)


class _ResponseHandler(ResponseHandler):
    """aiohttp's client protocol, except that a connection lost with an error (a reset) before the body's end
    fails the body. aiohttp's own ``connection_lost`` feeds EOF to the payload parser first, and for a body
    delimited by the connection's close (no Content-Length, not chunked; RFC 9112 6.3) EOF *is* the end, so a
    reset mid-body passed for a complete response (found by trying it, issue 12)."""

    def connection_lost(self, exc: BaseException | None) -> None:
        payload = self._payload
        if exc is not None and payload is not None and not payload.is_eof():
            payload.set_exception(aiohttp.ClientPayloadError(f"connection lost before the end of the body: {exc!r}"))
        super().connection_lost(exc)


class _GuardedConnector(aiohttp.TCPConnector):
    """A pool that hands out only connections whose peer the current egress policy permits; its connections'
    protocol is :class:`_ResponseHandler`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = cast("functools.partial[ResponseHandler]", functools.partial(_ResponseHandler, loop=self._loop))

    async def connect(self, req: ClientRequest, traces: list[Trace],
                      timeout: aiohttp.ClientTimeout) -> Connection:  # noqa: ASYNC109 - aiohttp's signature
        conn = await super().connect(req, traces, timeout)
        host = req.url.raw_host or ""
        transport = conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        refusal = (current_policy().refusal(host, req.port or 0, str(peer[0])) if peer
                   else AddressNotAllowed(f"cannot tell which address the connection to {host} goes to"))
        if refusal is not None:
            conn.close()
            raise refusal
        return conn


class Upstream:
    """Owner of the upstream connection pool; an async context manager.

    ``resolver`` (default: a fresh :class:`~sigproxy.egress.EgressResolver`) looks upstream names up.
    """

    __slots__ = ("_connect_timeout", "_insecure", "_limit", "_read_timeout", "_resolver", "_session", "_ssl")

    def __init__(self, *, connect_timeout: float, read_timeout: float, limit: int,
                 extra_ca_file: Path | None = None, resolver: EgressResolver | None = None) -> None:
        self._resolver = resolver or EgressResolver()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit = limit
        self._ssl = upstream_tls_context(extra_ca_file)
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE
        self._insecure.set_alpn_protocols(["http/1.1"])
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Upstream:
        connector = _GuardedConnector(limit=self._limit, limit_per_host=0, ssl=self._ssl,
                                      enable_cleanup_closed=True, resolver=self._resolver, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                          sock_read=self._read_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO,
            # aiohttp pauses reading an upstream past twice this (default 64 KiB). The TLS layer hands over
            # up to 256 KiB at a time, so at the default nearly every hand-over paused and resumed the
            # stream: 256 KiB took TLS downloads from 0.70-0.78x to 0.92-0.95x of uvloop's own TLS
            # (bench/tls_loop.py, issue 12), for at most 512 KiB buffered per response in flight.
            read_bufsize=_READ_BUFSIZE,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes | memoryview] | None, *,
        verify_tls: bool = True, explicit_hosts: tuple[str, ...] = (), private_networks: tuple[Network, ...] = (),
        connection: str = "?",
    ) -> aiohttp.ClientResponse:
        """Send one request (``url`` already percent-encoded, sent as is) and return once the response
        headers are in. The caller reads the body with :meth:`iter_body` and must release the response
        (``async with response:``).

        ``explicit_hosts`` are the ``hosts`` of ``connection``, the connection the request is sent for: only
        their explicit entries let it reach a non-public address (:class:`~sigproxy.egress.EgressPolicy`);
        ``private_networks`` are networks it may reach whatever the name. Otherwise
        :class:`~sigproxy.errors.AddressNotAllowed` is raised before anything is sent there.
        Redirects are never followed: a 3xx is the response."""
        if self._session is None:
            raise RuntimeError("Upstream is not open")
        target = URL(url, encoded=True)
        policy = _policy(connection, explicit_hosts, private_networks)
        host = target.raw_host or ""
        if is_ip_literal(host):
            policy.check(host, target.port or 0, host)
        with using_policy(policy), _map_errors(target.host or "?"):
            return await self._session.request(
                method,
                target,
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
                compress=None,
                proxy=None,
                ssl=self._insecure if not verify_tls and target.scheme == "https" else True,
            )

    @staticmethod
    async def read_small(response: aiohttp.ClientResponse) -> bytes:
        """A whole (small, known-length) response body; errors mapped."""
        with _map_errors(response.url.host or "?"):
            return await response.read()

    @staticmethod
    async def iter_body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The response body as it arrives; errors mapped."""
        with _map_errors(response.url.host or "?"):
            async for chunk in response.content.iter_any():
                yield chunk

"""uvloop for sockets, timers and signals, with TLS by CPython's asyncio protocol: the loop sigproxy runs on
where uvloop imports (:mod:`sigproxy.eventloop` decides; this module needs uvloop).

Why not uvloop's own TLS. ``uvloop/sslproto.pyx`` (read on uvloop's main branch as of May 2026; the fault
reproduced with 0.23.0, the newest release, by ``tests/integration/test_tls_streams.py``) treats a TCP FIN
that arrives without a TLS close_notify as an abort: ``eof_received`` goes straight to
``_on_shutdown_complete`` and the protocol's ``connection_lost``. Whatever it had already decrypted but not
yet handed to a protocol that *paused reading* is discarded -- up to its incoming high-water mark (256 KiB).
sigproxy pauses reading an upstream whenever its client is slower than the upstream, and many servers
(werkzeug/moto among them) close a TLS connection with a bare FIN right after the last byte, so responses over
HTTPS came back 224-240 KiB short (issue 12; the uvloop pull request "fix eof_received",
MagicStack/uvloop#661, is open and unreleased).

CPython's :class:`asyncio.sslproto.SSLProtocol` (3.11+, itself a port of uvloop's design) handles the same
EOF by entering ``FLUSHING``: while the application has paused reading it keeps the transport open
(``eof_received`` returns true) and delivers everything buffered once reading resumes
(``_resume_reading`` -> ``_do_flush``). It runs on any loop's transports, so this loop keeps uvloop for
everything else and builds every TLS stream -- upstream connections (aiohttp, aiobotocore's STS calls) and
the client side of CONNECT tunnels (``start_tls``) -- exactly as :mod:`asyncio.base_events` does, with
CPython's protocol. Measured in the closing note of issue 12 (bench/big_body.py over TLS).

The TLS entry points sigproxy does not use (``create_server``/``create_unix_server`` with ``ssl``,
``connect_accepted_socket`` and ``create_unix_connection`` with ``ssl``) refuse, rather than quietly use
uvloop's protocol again: a TLS listener terminates through :meth:`Loop.start_tls`.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

import uvloop

__all__ = ["Loop"]


def _refuse_ssl(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs.get("ssl"):
        raise NotImplementedError(f"sigproxy's loop does not do TLS in {method}(); use start_tls() "
                                  "(uvloop's own TLS protocol drops buffered data on a bare FIN)")


class Loop(uvloop.Loop):
    """uvloop, with TLS streams made by :class:`asyncio.sslproto.SSLProtocol` (see the module docstring)."""

    async def create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str | None = None,
        port: int | None = None, *, ssl: bool | _ssl.SSLContext | None = None, server_hostname: str | None = None,
        ssl_handshake_timeout: int | None = None, ssl_shutdown_timeout: float | None = None, **kwargs: Any,
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """As :meth:`asyncio.loop.create_connection`; with ``ssl``, TLS by CPython's protocol over a uvloop
        TCP transport. ``ssl=True`` means :func:`ssl.create_default_context`; ``server_hostname`` defaults
        to ``host`` (``""`` turns SNI and the host name check off, as in asyncio).

        Raises what connecting raises (:class:`OSError`), :class:`ssl.SSLError` or :class:`TimeoutError`
        from the handshake; the TCP connection is closed on any failure."""
        if not ssl:
            if server_hostname is not None or ssl_handshake_timeout is not None:
                raise ValueError("server_hostname and ssl_handshake_timeout are only meaningful with ssl")
            return await self._uvloop.create_connection(protocol_factory, host, port, **kwargs)  # type: ignore[no-any-return]
        context = ssl if isinstance(ssl, _ssl.SSLContext) else _ssl.create_default_context()
        if server_hostname is None:
            if not host:
                raise ValueError("you must set server_hostname when using ssl without a host")
            server_hostname = host
        app_protocol = protocol_factory()
        waiter = self.create_future()
        tls = sslproto.SSLProtocol(self, app_protocol, context, waiter, server_side=False,
                                   server_hostname=server_hostname,
                                   ssl_handshake_timeout=ssl_handshake_timeout,
                                   ssl_shutdown_timeout=ssl_shutdown_timeout)
        transport, _ = await self._uvloop.create_connection(lambda: tls, host, port, **kwargs)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return tls._app_transport, app_protocol

    async def start_tls(  # type: ignore[override]
        self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol, sslcontext: _ssl.SSLContext, *,
        server_side: bool = False, server_hostname: str | None = None,
        ssl_handshake_timeout: int | None = None, ssl_shutdown_timeout: float | None = None,
    ) -> asyncio.Transport:
        """As :meth:`asyncio.loop.start_tls` (the same steps as ``asyncio.base_events``), with CPython's
        protocol. Raises :class:`TypeError` for a context that is not an :class:`ssl.SSLContext`, and what the
        handshake raises; ``transport`` is closed on failure."""
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}")
        waiter = self.create_future()
        tls = sslproto.SSLProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                   ssl_handshake_timeout=ssl_handshake_timeout,
                                   ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False)
        # Pause first so no data reaches the new protocol before connection_made (as asyncio does).
        transport.pause_reading()  # type: ignore[attr-defined]
        transport.set_protocol(tls)
        made = self.call_soon(tls.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        app_transport: asyncio.Transport = tls._app_transport
        return app_transport

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        _refuse_ssl("create_server", kwargs)
        return await self._uvloop.create_server(*args, **kwargs)

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        _refuse_ssl("create_unix_server", kwargs)
        return await self._uvloop.create_unix_server(*args, **kwargs)

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        _refuse_ssl("create_unix_connection", kwargs)
        return await self._uvloop.create_unix_connection(*args, **kwargs)

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        _refuse_ssl("connect_accepted_socket", kwargs)
        return await self._uvloop.connect_accepted_socket(*args, **kwargs)

    @property
    def _uvloop(self) -> Any:
        """uvloop's own methods (its stubs' overloads don't admit passing keyword arguments through)."""
        return super()


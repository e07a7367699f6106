"""TLS termination for a client listener configured with ``tls_cert_file``/``tls_key_file`` or ``tls = "self"``
(:mod:`sigproxy.listentls`): each accepted connection does its TLS handshake first, then goes, as a TLS
transport, to the protocol the plain listener would have used (the forward listener's front door, so CONNECT
still works inside TLS, or a reverse listener's :class:`~.gate.Door`). The gate, limits and timeouts then apply
as on a plain listener.

The handshake is bounded by the listener's ``header_timeout``; a failed one is logged at INFO with the client
address (a plain HTTP request is named as such) and the connection is closed. The TLS is CPython's
:class:`asyncio.sslproto.SSLProtocol`, through ``loop.start_tls`` (:mod:`sigproxy.uvtls` says why).

Must not: parse HTTP, admit clients (the gate does, after the handshake) or read certificate files.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

from sigproxy.errors import ConfigError
from sigproxy.listentls import ListenerTls, listener_names, server_context
from sigproxy.tasks import TaskSet
from sigproxy.tls import CertStore, TlsError

from .gate import peer_address

__all__ = ["TlsAcceptor", "handshake_failure", "tls_acceptor"]

logger = logging.getLogger(__name__)

ContextSource = Callable[[], Awaitable[ssl.SSLContext]]
"""The server context for the next handshake (a minted one is renewed by the CA's cache before it expires)."""


def handshake_failure(exc: BaseException, timeout: float) -> str:
    """Why a client's TLS handshake failed, in words for the log: a plain HTTP request and an old TLS version
    are named with what to change; OpenSSL's reason otherwise (never a traceback)."""
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake within header_timeout ({timeout:g} s)"
    reason = getattr(exc, "reason", None)
    if reason == "HTTP_REQUEST":
        return "the client sent plain HTTP to a TLS listener: use https:// in its URL for this listener"
    if reason in ("UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER", "TLSV1_ALERT_PROTOCOL_VERSION"):
        return f"the client offered no TLS version sigproxy accepts (TLS 1.2 or newer): {reason}"
    return str(reason or exc) or type(exc).__name__


class TlsAcceptor:
    """One TLS listener's protocol factory (pass it to ``loop.create_server``) and its handshakes in flight.

    ``inner`` makes the protocol a handshaken connection is handed to; ``context`` gives the server context;
    ``timeout`` the handshake's limit in seconds (read at each accept, so a reload applies); ``name`` is the
    listener's, for the log.
    """

    def __init__(self, inner: Callable[[], asyncio.BaseProtocol], context: ContextSource,
                 timeout: Callable[[], float], name: str) -> None:
        self._inner = inner
        self._context = context
        self._timeout = timeout
        self._name = name
        self._handshakes = TaskSet()

    def __call__(self) -> asyncio.Protocol:
        return _Handshaking(self)

    @property
    def handshaking(self) -> int:
        """Connections accepted whose TLS handshake is not over yet."""
        return len(self._handshakes)

    async def close(self) -> None:
        """Drain: abandon every handshake in progress (their connections are closed)."""
        await self._handshakes.cancel_all()

    def _accepted(self, transport: asyncio.Transport) -> None:
        self._handshakes.spawn(self._handshake(transport), name="sigproxy-tls-handshake")

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        client = peer_address(transport)
        timeout = self._timeout()
        protocol = self._inner()
        try:
            context = await self._context()
            tls = await loop.start_tls(transport, protocol, context, server_side=True,
                                       ssl_handshake_timeout=timeout)
        except TlsError as exc:
            logger.error("cannot serve TLS on the %s listener: %s", self._name, exc)
            transport.close()
            return
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            logger.info("TLS handshake with client %s on the %s listener failed: %s", client, self._name,
                        handshake_failure(exc, timeout))
            transport.close()
            return
        if tls is None:  # pragma: no cover - start_tls returns a transport or raises
            transport.close()
            return
        protocol.connection_made(tls)


class _Handshaking(asyncio.Protocol):
    """An accepted connection until its handshake starts: reading paused, so every byte goes to TLS."""

    def __init__(self, acceptor: TlsAcceptor) -> None:
        self._acceptor = acceptor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        stream.pause_reading()
        self._acceptor._accepted(stream)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused until start_tls
        pass


async def tls_acceptor(tls: ListenerTls, host: str, certs: CertStore, *, inner: Callable[[], asyncio.BaseProtocol],
                       handshake_timeout: Callable[[], float], name: str, key: str) -> TlsAcceptor:
    """The acceptor for a listener bound to ``host`` with settings ``tls`` (``key``: the config key that set
    them, for errors); ``inner``, ``handshake_timeout`` and ``name`` as :class:`TlsAcceptor`'s. Files are
    loaded now (in a thread); a minted certificate is minted now and renewed through ``certs``'s cache
    (:func:`sigproxy.listentls.listener_names` says for which names).

    Raises :class:`ConfigError` naming ``key`` when the files no longer load, :class:`TlsError` when the CA
    can't mint (expired, closed)."""
    if tls.minted:
        names = listener_names(host)
        await certs.context_for_async(*names)

        def minted() -> Awaitable[ssl.SSLContext]:
            return certs.context_for_async(*names)

        return TlsAcceptor(inner, minted, handshake_timeout, name)
    assert tls.cert_file is not None
    assert tls.key_file is not None
    try:
        context = await asyncio.to_thread(server_context, tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(key, f"cannot load {str(tls.cert_file)!r} and {str(tls.key_file)!r}: "
                               f"{getattr(exc, 'reason', None) or exc.strerror or 'not PEM'}") from exc

    async def loaded() -> ssl.SSLContext:
        return context

    return TlsAcceptor(inner, loaded, handshake_timeout, name)

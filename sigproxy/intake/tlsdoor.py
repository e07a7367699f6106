"""TLS termination for a client listener configured with ``tls_cert_file``/``tls_key_file`` or ``tls = "self"``
(:mod:`sigproxy.listentls`): each accepted connection does its TLS handshake first, then goes, as a TLS
transport, to the protocol the plain listener would have used (the forward listener's front door, so CONNECT
still works inside TLS, or a reverse listener's :class:`~.gate.Door`). The gate, limits and timeouts then apply
as on a plain listener.

The handshake is bounded by the listener's ``header_timeout``; a failed one is logged at INFO with the client
address (a plain HTTP request is named as such) and the connection is closed. The TLS is CPython's
:class:`asyncio.sslproto.SSLProtocol` on any loop's transport, as everywhere in sigproxy (:mod:`sigproxy.uvtls`
says why); a CONNECT inside it is intercepted with ``start_tls`` on this TLS transport (TLS inside TLS).

Must not: parse HTTP, admit clients (the gate does, after the handshake) or read certificate files.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable

from sigproxy.errors import ConfigError
from sigproxy.listentls import ListenerTls, listener_names, load_failure, server_context
from sigproxy.tasks import TaskSet
from sigproxy.tls import CertStore, TlsError

from .gate import peer_address

__all__ = ["TlsAcceptor", "handshake_failure", "reload_all", "tls_acceptor"]

logger = logging.getLogger(__name__)

ContextSource = Callable[[], ssl.SSLContext]
"""The server context for the next handshake, without blocking (a minted one is renewed in the background)."""


def handshake_failure(exc: BaseException, timeout: float) -> str:
    """Why a client's TLS handshake failed, in words for the log: a plain HTTP request, an old TLS version and a
    timeout are named with what to change; OpenSSL's reason otherwise (never a traceback)."""
    reason = getattr(exc, "reason", None)
    if reason == "HTTP_REQUEST":
        return "the client sent plain HTTP to a TLS listener: use https:// in its URL for this listener"
    if reason in ("UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER", "TLSV1_ALERT_PROTOCOL_VERSION"):
        return f"the client offered no TLS version sigproxy accepts (TLS 1.2 or newer): {reason}"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        return "the client sent no certificate, and this listener requires one (client_ca_file)"
    if reason == "CERTIFICATE_VERIFY_FAILED":
        why = getattr(exc, "verify_message", None)
        return ("the client's certificate is not from a CA in this listener's client_ca_file"
                + (f" ({why})" if why else ""))
    if isinstance(exc, TimeoutError) or "handshake is taking longer" in str(exc):
        return f"no TLS handshake within header_timeout ({timeout:g} s)"
    return str(reason or exc) or type(exc).__name__


class TlsAcceptor:
    """One TLS listener's protocol factory (pass it to ``loop.create_server``) and its handshakes in flight.

    Each accepted connection gets a server-side :class:`asyncio.sslproto.SSLProtocol` straight from the factory
    (not ``start_tls`` after accepting: bytes a client sends at once would reach the placeholder protocol, not
    TLS); once its handshake is done, ``inner()``'s protocol gets the TLS transport. ``context`` gives the
    server context; ``timeout`` the handshake's limit in seconds (read at each accept, so a reload applies);
    ``name`` is the listener's, for the log.
    """

    def __init__(self, inner: Callable[[], asyncio.BaseProtocol], context: ContextSource,
                 timeout: Callable[[], float], name: str) -> None:
        self._inner = inner
        self._context = context
        self._timeout = timeout
        self._name = name
        self._handshakes = TaskSet()

    async def reload(self) -> None:
        """Re-read a certificate and key from files (SIGHUP): new handshakes use them, connections already
        open keep theirs. A pair that no longer loads is logged and the previous one kept. Minted: nothing."""
        if isinstance(self._context, _FileContext):
            await self._context.reload(self._name)

    def __call__(self) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        protocol = self._inner()
        timeout = self._timeout()
        # SSLProtocol calls protocol.connection_made itself once the handshake is done, before it delivers the
        # first decrypted bytes (which may have come with the handshake's last flight).
        tls = _ServerTls(loop, protocol, self._context(), waiter, server_side=True,
                         ssl_handshake_timeout=timeout)  # type: ignore[arg-type]  # a float works (asyncio's loop.call_later)
        self._handshakes.spawn(self._handshake(tls, waiter, timeout), name="sigproxy-tls-handshake")
        return tls

    @property
    def handshaking(self) -> int:
        """Connections accepted whose TLS handshake is not over yet."""
        return len(self._handshakes)

    async def close(self) -> None:
        """Drain: abandon every handshake in progress (their connections are closed)."""
        await self._handshakes.cancel_all()

    async def _handshake(self, tls: _ServerTls, waiter: asyncio.Future[None], limit: float) -> None:
        try:
            await waiter
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            logger.info("TLS handshake with client %s on the %s listener failed: %s", tls.peer, self._name,
                        handshake_failure(exc, limit))
            tls.abort()
        except asyncio.CancelledError:
            tls.abort()
            raise


class _ServerTls(sslproto.SSLProtocol):
    """CPython's TLS protocol, remembering the client's address for the log (the transport is gone by the time
    a failed handshake is reported)."""

    peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = peer_address(transport)
        self._raw = transport
        super().connection_made(transport)

    def abort(self) -> None:
        """Close the connection (a failed or abandoned handshake); idempotent."""
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()


async def tls_acceptor(tls: ListenerTls, host: str, certs: CertStore, *, inner: Callable[[], asyncio.BaseProtocol],
                       handshake_timeout: Callable[[], float], name: str, key: str) -> TlsAcceptor:
    """The acceptor for a listener bound to ``host`` with settings ``tls`` (``key``: the config key that set
    them, for errors); ``inner``, ``handshake_timeout`` and ``name`` as :class:`TlsAcceptor`'s. Files are
    loaded now (in a thread); a minted certificate is minted now and renewed through ``certs``'s cache
    (:func:`sigproxy.listentls.listener_names` says for which names).

    Raises :class:`ConfigError` naming ``key`` when the files no longer load, :class:`TlsError` when the CA
    can't mint (expired, closed)."""
    if tls.minted:
        return TlsAcceptor(inner, await _Minted.start(certs, listener_names(host)), handshake_timeout, name)
    assert tls.cert_file is not None
    assert tls.key_file is not None
    try:
        context = await asyncio.to_thread(server_context, tls.cert_file, tls.key_file, tls.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(key, f"cannot load {str(tls.cert_file)!r} and {str(tls.key_file)!r}: "
                               f"{load_failure(exc, 'not PEM')}") from exc

    return TlsAcceptor(inner, _FileContext(tls, context), handshake_timeout, name)


async def reload_all(acceptors: list[TlsAcceptor]) -> None:
    """:meth:`TlsAcceptor.reload` on each of ``acceptors``, concurrently."""
    await asyncio.gather(*(acceptor.reload() for acceptor in acceptors))


class _FileContext:
    """A context from ``tls_cert_file``/``tls_key_file`` (and ``client_ca_file``), re-read on :meth:`reload`."""

    def __init__(self, tls: ListenerTls, context: ssl.SSLContext) -> None:
        self._tls = tls
        self._current = context

    def __call__(self) -> ssl.SSLContext:
        return self._current

    async def reload(self, name: str) -> None:
        tls = self._tls
        assert tls.cert_file is not None
        assert tls.key_file is not None
        try:
            self._current = await asyncio.to_thread(server_context, tls.cert_file, tls.key_file, tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            logger.error("TLS certificate of the %s listener not reloaded, still serving the previous one: cannot "
                         "load %r and %r: %s", name, str(tls.cert_file), str(tls.key_file),
                         load_failure(exc, "not PEM"))
            return
        logger.info("TLS certificate of the %s listener reloaded from %s", name, tls.cert_file)


class _Minted:
    """A minted listener certificate's context, renewed (in a thread) once the CA's cache no longer has it
    fresh; until the renewal is done the previous one serves (the cache renews a day before expiry)."""

    def __init__(self, certs: CertStore, names: tuple[str, ...], context: ssl.SSLContext) -> None:
        self._certs = certs
        self._names = names
        self._current = context
        self._renewal: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, certs: CertStore, names: tuple[str, ...]) -> _Minted:
        return cls(certs, names, await certs.context_for_async(*names))

    def __call__(self) -> ssl.SSLContext:
        fresh = self._certs.cached_context(*self._names)
        if fresh is not None:
            self._current = fresh
        elif self._renewal is None or self._renewal.done():
            self._renewal = asyncio.get_running_loop().create_task(self._renew(), name="sigproxy-tls-renew")
        return self._current

    async def _renew(self) -> None:
        try:
            self._current = await self._certs.context_for_async(*self._names)
        except TlsError as exc:
            logger.error("cannot renew the TLS listener certificate for %s: %s", ", ".join(self._names), exc)

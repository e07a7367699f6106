"""The byte side of a client connection of sigproxy's HTTP/1.1 server: the base of
:class:`~sigproxy.intake.h1server.ClientProtocol`, and what request bodies and streamed answers
(:mod:`sigproxy.http1`) call on it.

Owns: writing to the client; flow control both ways (reading paused while any reason for it holds: a body's
unread part, answers owed; writing waits while the client's socket buffer is full, and a client that takes nothing
of it for ``idle_timeout`` is cut off with a reset); closing (once what is queued has gone out, or at once); the
connection's one timer (``header_timeout`` for a head in flight, else ``idle_timeout`` while no request is being
answered).
Must not: parse, answer or decide keep-alive (:class:`~sigproxy.intake.h1server.ClientProtocol` does); set its
own attributes up: ``ClientProtocol.__init__`` sets every one declared here, so a connection runs one
``__init__``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from sigproxy.config import ProxyConfig
from sigproxy.transports import close, reset

__all__ = ["ClientFlow"]

# ClientProtocol's logger: a client connection's messages keep one logger name.
logger: Final = logging.getLogger("sigproxy.intake.h1server")


class ClientFlow(asyncio.Protocol):
    """Writing, flow control, closing and the timer of one client connection (see the module's docstring)."""

    _loop: asyncio.AbstractEventLoop
    _proxy: ProxyConfig
    _transport: asyncio.Transport | None
    _remote: str | None
    _task: asyncio.Task[None] | None
    _head_since: float | None
    _idle_since: float
    _timer: asyncio.TimerHandle | None
    _closing: bool
    _paused: set[str]
    _lingering: bool
    _write_paused: bool
    _drain_waiter: asyncio.Future[None] | None
    _wrote: bool

    # ------------------------------------------------------------------ closing

    def _close(self) -> None:
        """Close once what is queued for the client has gone out; a client that takes none of it for
        ``idle_timeout`` is cut off with a reset (:func:`sigproxy.transports.close`) rather than holding the
        connection as long as it likes."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            close(transport, grace=self._proxy.idle_timeout, lost=lambda: self._transport is not transport)

    def abort(self) -> None:
        self._closing = True
        self._close()

    # ------------------------------------------------------------------ writing and flow control

    @property
    def answer_begun(self) -> bool:
        """Whether part of the answer to the request being answered has gone to the client (interim responses
        aside): from then on no other answer can be given to it, only the connection cut."""
        return self._wrote

    def write(self, data: bytes) -> None:
        if self._transport is not None:
            self._wrote = True
            self._transport.write(data)

    def write_interim(self, data: bytes, *, optional: bool = False) -> None:
        """An interim (1xx) response (RFC 9110 15.2): no part of the answer, so ``_wrote`` stays as it was and a
        failure after it is still answered. ``optional`` (one forwarded from the upstream, advice such as 103
        Early Hints): dropped while the client's socket buffer is full rather than queued without bound."""
        if self._transport is not None and not (optional and self._write_paused):
            self._transport.write(data)

    def write_many(self, parts: Iterable[bytes]) -> None:
        if self._transport is not None:
            self._wrote = True
            self._transport.writelines(parts)

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full, up to ``idle_timeout`` (a client that reads nothing
        for that long is cut off, as one that sends nothing is). Raises :class:`ConnectionResetError` once the
        connection is closed or cut off."""
        if self._transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self._write_paused:
            waiter = self._drain_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(self._proxy.idle_timeout):
                    await waiter
            except TimeoutError:
                logger.info("client %s read nothing of its answer for idle_timeout (%g s); connection closed",
                            self._remote, self._proxy.idle_timeout)
                self._closing = True
                if self._transport is not None:
                    # A reset: neither sigproxy nor the kernel keeps sending to a client that reads nothing.
                    reset(self._transport)
                raise ConnectionResetError("the client stopped reading (idle_timeout)") from None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain(None)

    def _wake_drain(self, exc: BaseException | None) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def pause_body(self) -> None:
        self._pause("body")

    def resume_body(self) -> None:
        self._resume("body")

    def _pause(self, reason: str) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._paused:
            self._paused.discard(reason)
            if not self._paused and self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    # ------------------------------------------------------------------ the connection's one timer

    def _arm(self, due: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_at(due, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        """``header_timeout`` for a head in flight, else ``idle_timeout`` when no request is being answered."""
        self._timer = None
        if self._transport is None or self._lingering:
            return
        now = self._loop.time()
        if self._head_since is not None:
            due = self._head_since + self._proxy.header_timeout
            if now >= due:
                logger.info("client %s did not finish a request head within header_timeout (%g s); connection "
                            "closed", self._remote, self._proxy.header_timeout)
                self.abort()
                return
        elif self._task is not None:
            return  # a request is being answered: the timer is armed again once it is
        else:
            due = self._idle_since + self._proxy.idle_timeout
            if now >= due:
                self.abort()
                return
        self._timer = self._loop.call_at(due, self._expired)

"""The WebSocket relay: once both ends have switched protocols (the client's ``101`` sent, the upstream's
received), frames go both ways unchanged, until either side ends.

Owns: the two copies, the limits (``[proxy] websocket_idle_timeout``: no frame bytes either way for that long;
``websocket_max_message``: a message's payload, its frames summed) and how a relay ends:

* a side closes its connection: the other side's is closed once what it was sent has gone out. When that side
  had sent a close frame (the closing handshake, RFC 6455 7.1.2), the other gets ``close_timeout`` to answer
  with its own, which is passed on; when it had not (it went away), the other side sees its connection close
  without a close frame, as it would with no proxy between (RFC 6455 7.1.5: 1006);
* sigproxy ends it (idle, shutdown: 1001 "going away"; a message over the limit: 1009; a frame RFC 6455 5
  forbids: 1002): each side gets a close frame with the code and the reason, where its stream is between frames,
  then both connections close.

Frames are never decoded or re-framed: :class:`~sigproxy.wsframes.FrameScanner` reads their headers to find
where they begin and end. Must not: sign, route, or read the handshake (:mod:`sigproxy.websocket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from .errors import ClientAborted, SigproxyError, UpstreamError
from .h1conn import UpstreamResponse
from .http1 import ClientRequest, RequestBody, StreamResponse
from .tasks import TaskSet
from .websocket import is_websocket_switch, switch_response_headers
from .wsframes import FrameScanner, WebSocketViolation, close_frame

__all__ = ["RelayLimits", "relay", "switch_and_relay"]

logger = logging.getLogger(__name__)

_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class RelayLimits:
    idle_timeout: float
    """Seconds with no frame bytes either way before both sides get 1001 and are closed."""
    max_message: int
    """Most payload bytes in one message (frames summed), either way; over it: 1009."""
    close_timeout: float = 5.0
    """Seconds a side gets to answer the other's close frame with its own before both are closed."""


class _Relay:
    __slots__ = ("_client_in", "_client_out", "_down", "_end", "_info", "_last", "_limits", "_loop", "_up",
                 "_upstream", "_violation")

    def __init__(self, client_in: RequestBody, client_out: StreamResponse, upstream: UpstreamResponse,
                 limits: RelayLimits, info: dict[str, object]) -> None:
        self._client_in = client_in
        self._client_out = client_out
        self._upstream = upstream
        self._limits = limits
        self._info = info
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._up = FrameScanner(masked=True, max_message=limits.max_message)  # the client's frames (RFC 6455 5.1)
        self._down = FrameScanner(masked=False, max_message=limits.max_message)
        self._end: str | None = None
        self._violation: tuple[str, WebSocketViolation] | None = None

    def _ended(self, why: str) -> None:
        if self._end is None:
            self._end = why

    async def _client_to_upstream(self) -> None:
        client_in, upstream, scanner = self._client_in, self._upstream, self._up
        sent = 0
        try:
            while True:
                try:
                    data = await client_in.next_piece()
                except ConnectionError:
                    data = b""
                if not data:
                    self._ended("client_closed" if scanner.closed else "client_gone")
                    return
                self._last = self._loop.time()
                try:
                    out = scanner.feed(data)
                except WebSocketViolation as exc:
                    upstream.send(exc.forward)
                    sent += len(exc.forward)
                    self._violation = ("client", exc)
                    return
                upstream.send(out)
                sent += len(out)
                try:
                    await upstream.drain()
                except SigproxyError:
                    self._ended("upstream_gone")
                    return
        finally:
            self._info["bytes_up"] = sent

    async def _upstream_to_client(self) -> None:
        upstream, client_out, scanner = self._upstream, self._client_out, self._down
        sent = 0
        try:
            while True:
                try:
                    data = await upstream.read_some()
                except SigproxyError:
                    data = b""
                if not data:
                    self._ended("upstream_closed" if scanner.closed else "upstream_gone")
                    return
                self._last = self._loop.time()
                try:
                    out = scanner.feed(data)
                except WebSocketViolation as exc:
                    with contextlib.suppress(ConnectionError):
                        await client_out.write(exc.forward)
                    sent += len(exc.forward)
                    self._violation = ("upstream", exc)
                    return
                try:
                    await client_out.write(out)
                except ConnectionError:
                    self._ended("client_gone")
                    return
                sent += len(out)
        finally:
            self._info["bytes_down"] = sent

    async def run(self) -> None:
        pumps = TaskSet()
        up = pumps.spawn(self._client_to_upstream(), name="websocket: client to upstream")
        down = pumps.spawn(self._upstream_to_client(), name="websocket: upstream to client")
        try:
            while True:
                left = self._last + self._limits.idle_timeout - self._loop.time()
                if left <= 0:
                    self._ended("idle_timeout")
                    await pumps.cancel_all()
                    await self._tell_both(_GOING_AWAY, "idle timeout (sigproxy websocket_idle_timeout)")
                    return
                done, _ = await asyncio.wait({up, down}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
            if self._violation is not None:
                await self._refuse(pumps)
                return
            # A side ended. When it had sent a close frame the other side may still be answering with its own.
            first = up if up in done else down
            other = down if first is up else up
            said_close = (self._up if first is up else self._down).closed
            answered = (self._down if first is up else self._up).closed
            if said_close and not answered and not other.done():
                await asyncio.wait({other}, timeout=self._limits.close_timeout)
        except asyncio.CancelledError:  # shutdown's grace is over
            self._ended("shutdown")
            await pumps.cancel_all()
            with contextlib.suppress(Exception):
                await self._tell_both(_GOING_AWAY, "sigproxy is shutting down")
            raise
        finally:
            await pumps.cancel_all()
            for pump in (up, down):
                if not pump.cancelled() and (exc := pump.exception()) is not None:  # a bug: never silent
                    logger.error("websocket %s: %s failed", self._info.get("request_id"), pump.get_name(),
                                 exc_info=exc)
                    self._end = self._info["error"] = "internal_error"  # what ended it, whatever came after
            self._record()

    async def _refuse(self, pumps: TaskSet) -> None:
        """A frame from one side broke a limit or RFC 6455: both sides are told why, then closed."""
        assert self._violation is not None
        side, exc = self._violation
        self._ended("message_too_big" if exc.code == 1009 else "protocol_error")
        logger.info("websocket %s: %s sent %s; closing both sides with %d", self._info.get("request_id"), side,
                    exc.reason, exc.code)
        await pumps.cancel_all()
        await self._tell_both(exc.code, exc.reason)

    async def _tell_both(self, code: int, reason: str) -> None:
        """A close frame to each side whose incoming stream is between frames and has not closed."""
        if self._up.at_boundary and not self._up.closed:
            self._upstream.send(close_frame(code, reason, mask=True))
        if self._down.at_boundary and not self._down.closed:
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(self._limits.close_timeout):
                    await self._client_out.write(close_frame(code, reason, mask=False))

    def _record(self) -> None:
        info = self._info
        info["ws_end"] = self._end or "closed"
        info["ws_messages_up"], info["ws_messages_down"] = self._up.messages, self._down.messages
        if self._up.close_code is not None:
            info["ws_close_client"] = self._up.close_code
        if self._down.close_code is not None:
            info["ws_close_upstream"] = self._down.close_code


async def relay(client_in: RequestBody, client_out: StreamResponse, upstream: UpstreamResponse,
                limits: RelayLimits, info: dict[str, object]) -> None:
    """Relay WebSocket frames between the client (``client_in``: its bytes after the handshake; ``client_out``:
    the prepared ``101``) and the ``upstream`` (its ``101`` response) until either ends, under ``limits``.
    Adds to ``info`` (the access line): ``bytes_up``/``bytes_down`` (frame bytes), ``ws_messages_up``/
    ``ws_messages_down``, ``ws_close_client``/``ws_close_upstream`` (the close codes each side sent) and
    ``ws_end`` (``client_closed``, ``upstream_closed``, ``client_gone``, ``upstream_gone``, ``idle_timeout``,
    ``message_too_big``, ``protocol_error``, ``shutdown``; ``internal_error``, with ``error`` too, when a copy
    failed on a bug, logged with its traceback). Raises only :class:`asyncio.CancelledError`."""
    await _Relay(client_in, client_out, upstream, limits, info).run()


async def switch_and_relay(request: ClientRequest, upstream: UpstreamResponse, info: dict[str, object],
                           limits: RelayLimits) -> StreamResponse:
    """The upstream answered a WebSocket handshake with ``101``: the client gets its own (the upstream's
    end-to-end headers, :func:`~sigproxy.websocket.switch_response_headers`), then :func:`relay` until either
    side ends. Adds ``status`` and ``switched_at`` (monotonic seconds) to ``info``. Raises
    :class:`~sigproxy.errors.UpstreamError` for a switch to anything but WebSocket, before the client's ``101``,
    and :class:`~sigproxy.errors.ClientAborted` (499) when the client went away before it."""
    if not is_websocket_switch(upstream.status, upstream.headers):
        raise UpstreamError("the upstream answered the WebSocket handshake by switching to another protocol")
    response = StreamResponse(101, upstream.reason, switch_response_headers(upstream.headers))
    try:
        client_in = await response.switch_protocols(request)
    except ConnectionError as exc:  # the client went away while the handshake was upstream
        raise ClientAborted("the client went away before its 101 could be sent") from exc
    info["status"] = 101
    info["switched_at"] = time.monotonic()
    await relay(client_in, response, upstream, limits, info)
    return response

"""One HTTP/1.1 client connection to an upstream: write a request exactly as given, parse the response with
httptools (llhttp), hand its body over as it arrives under flow control, and say whether the connection may
carry the next request.

Owns: writing the request (its wire form is :func:`sigproxy.h1wire.request_head`'s), the response's framing
(RFC 9112 6.3, :func:`sigproxy.h1wire.response_framing`: no body for ``HEAD``/204/304, chunked, ``Content-Length``,
or until the connection closes; a transfer coding other than chunked refused; a ``101`` to a request that asked
to upgrade, after which raw bytes flow both ways), interim 1xx responses (told to the caller, RFC 9110 15.2),
trailer fields (dropped, :meth:`H1Connection.on_header`), the bounds on what of a response is not body
(:class:`~sigproxy.h1wire.ResponseBudget`), read flow control, the read and write-stall timeout and
keep-alive.
Must not: pool, resolve names, check egress or retry (:mod:`sigproxy.forwarding` does).

A connection closed while bytes are still queued for the upstream (the last of a relayed WebSocket) is given
``read_timeout`` (5 s when that is 0, off) to take them, then reset: an upstream that reads nothing does not hold
it, nor its place in the pool, for as long as it likes.

Errors are sigproxy's own: :class:`~sigproxy.errors.UpstreamTimeout` when nothing arrives for ``read_timeout``
seconds once the request is sent, or the upstream takes none of a streamed body for as long (a write-side
stall); :class:`~sigproxy.errors.UpstreamClosed` for a close or reset before a byte of the response (the only
failure :mod:`sigproxy.forwarding` may send a request again after, RFC 9112 9.3.1);
:class:`~sigproxy.errors.UpstreamError` for everything else (a close after part of the response, malformed
HTTP, a body that failed while being sent).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

import httptools

from .errors import SigproxyError, UpstreamClosed, UpstreamError, UpstreamTimeout
from .h1response import UpstreamResponse
from .h1wire import MAX_RESPONSE_LINE, ResponseBudget, line_too_long, response_framing, wire_text
from .headerrules import connection_options
from .transports import close

__all__ = ["H1Connection", "Interim", "UpstreamResponse"]

Interim = Callable[[int, str, list[tuple[str, str]], frozenset[str]], None]
"""What is told of an interim response: status, reason, headers, the names its ``Connection`` header lists."""
_HIGH_WATER: Final = 512 * 1024  # pause reading the upstream past this much unread body (a TLS read is up to 256 KiB)
_LOW_WATER: Final = 128 * 1024


class H1Connection(asyncio.Protocol):
    """The protocol of one upstream connection, one request at a time (no pipelining).

    ``label`` names the upstream in errors (its host); ``on_idle`` is called with the connection when a
    response has been read to its end and the connection may carry another request; ``on_close`` when the
    connection is gone or given up.
    """

    def __init__(self, label: str, read_timeout: float, *, on_idle: Callable[[H1Connection], None] | None = None,
                 on_close: Callable[[H1Connection], None] | None = None) -> None:
        self.label = label
        self._read_timeout = read_timeout
        self._on_idle = on_idle
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._lost = False  # connection_lost has come
        self.idle_since = 0.0
        self.peer = ""
        """The address connected to (set by the pool)."""
        self.received = False
        """Whether any byte of a response to the current request has arrived."""
        self._parser = httptools.HttpResponseParser(self)
        self._active = False  # a request is in flight on this connection
        self._head_only = False
        self._upgrade = False  # the current request asks to switch protocols (a WebSocket handshake)
        self._interim = False
        self._on_interim: Interim | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._reason = b""
        self._headers: list[tuple[str, str]] = []
        self._connection: list[str] = []  # the response's Connection header values
        self._framing = ""  # "none", "length", "chunked" or "close", once the final head is in
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self.body_done = False
        self._error: SigproxyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._junk = False
        self._keep_alive = False
        self._writer: asyncio.Task[None] | None = None
        self._sent = False
        self._drain: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._budget = ResponseBudget()  # what of the response is not body, bounded
        self._stopped: UpstreamError | None = None  # what a parser callback raised (_too_long)

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        self.received = True
        if self._framing == "upgraded":
            self.on_body(data)  # the new protocol's bytes, as they come
            return
        if not self._active or self.body_done:
            # Nothing asked for (a stray byte on an idle connection, or past the end of the response):
            # this connection's framing can't be trusted for another request.
            self._junk = True
            self._close(abort=True)
            return
        try:
            self._parser.feed_data(data)
            if self._junk:
                self._close(abort=True)
            elif not self.body_done:
                why = self._budget.read(len(data), None if self._framing else (self._reason, self._headers))
                if why is not None:
                    self._fail(UpstreamError(f"upstream {self.label} sent {why}"))
        except httptools.HttpParserUpgrade as exc:
            if self._framing != "upgraded":
                self._fail(UpstreamError(f"upstream {self.label} switched protocols unasked"))
                return
            # The bytes past the 101's head are the new protocol's first.
            rest = data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b""
            if rest:
                self.on_body(rest)
        except httptools.HttpParserError as exc:
            stopped, self._stopped = self._stopped, None  # a callback's own error (a bound: _too_long)
            self._fail(stopped or UpstreamError(f"upstream {self.label} sent malformed HTTP: {exc}"))

    def _too_long(self) -> UpstreamError:
        """The error a callback raises for a line over the bound, kept for :meth:`data_received` (not read back
        from httptools' error: :mod:`sigproxy.compiled`)."""
        self._stopped = UpstreamError(f"upstream {self.label} sent {line_too_long()}")
        return self._stopped

    def eof_received(self) -> bool:
        return False  # close our side too: HTTP/1.1 has no half-closed requests

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = True
        self._cancel_timer()
        if self._active and not self.body_done:
            if exc is None and self._framing in ("close", "upgraded"):
                self._complete()  # RFC 9112 6.3 item 8: the close is the body's end (or the new protocol's)
            else:
                why = f": {exc}" if exc is not None else ""
                if not self.received:  # not a byte of a response: the one failure a request may be retried after
                    self._fail(UpstreamClosed(f"upstream {self.label} closed the connection before a response{why}"))
                else:
                    where = "before the end of the body" if self._framing else "before a response"
                    self._fail(UpstreamError(f"upstream {self.label} closed the connection {where}{why}"))
        self._wake_drain()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._last_read = self._loop.time()  # a wait on the upstream to take what is queued starts

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._last_read = self._loop.time()  # the upstream took some: a sign of life, as a read is
        self._wake_drain()

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        if self._framing:
            self._junk = True  # a second response to one request: ignored, and the connection is closed
        self._reason = b""
        self._headers = []
        self._connection = []

    def on_status(self, status: bytes) -> None:
        """The reason phrase (RFC 9112 4: any bytes but CR and LF). Decoded as header text is, UTF-8 with
        surrogateescape (at :meth:`on_headers_complete`), so that :func:`~sigproxy.http1.response_head` sends the
        bytes received (latin-1 here made a byte 0xE9 go out as 0xC3 0xA9)."""
        self._reason += status
        if len(self._reason) > MAX_RESPONSE_LINE:
            raise self._too_long()

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header field; or, once the final head is in (``_framing`` set), a trailer field of a chunked body,
        which llhttp reports the same way: dropped. RFC 9110 6.5.1: a recipient must not merge trailer fields
        into the header section, which has gone to the caller (and on to the client) already; a proxy that
        removes the chunked coding -- sigproxy re-frames every body it forwards -- may discard them. The
        client-side parser does the same with a request's (:mod:`sigproxy.intake.h1server`). Either is bounded by
        :data:`MAX_RESPONSE_LINE`."""
        size = len(name) + len(value)
        if size > MAX_RESPONSE_LINE:
            raise self._too_long()
        if self._framing:
            self._budget.lines += size + 4  # a trailer section's whole lines
            return
        pair = (wire_text(name), wire_text(value))
        self._headers.append(pair)
        if len(name) == 10 and name.lower() == b"connection":  # the length first: most names are cut short
            self._connection.append(pair[1])

    def on_headers_complete(self) -> None:
        if self._junk:
            return
        status = self._parser.get_status_code()
        if status == 101:
            if not self._upgrade:
                self._fail(UpstreamError(f"upstream {self.label} switched protocols unasked"))
                return
            # RFC 9110 15.2.2: HTTP/1.1 ends after this head; what follows is read as it comes, with no timeout
            # (the caller keeps its own).
            self._framing = "upgraded"
            self._cancel_timer()
            if self._head is not None and not self._head.done():
                reason = wire_text(self._reason)
                self._head.set_result(UpstreamResponse(self, status, reason, self._headers, None,
                                                       connection_options=connection_options(self._connection)))
            return
        if 100 <= status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the final response follows
            self._budget.interim(self._reason, self._headers)
            if self._on_interim is not None:
                self._on_interim(status, wire_text(self._reason), self._headers,
                                 connection_options(self._connection))
            return
        self._budget.fed += 1  # the final head is in: like a body byte, it starts the count again
        try:
            framing, length = response_framing(self._headers, self._head_only or status in (204, 304))
        except ValueError as exc:  # a transfer coding other than chunked: refused, not read and passed on encoded
            self._fail(UpstreamError(f"upstream {self.label} {exc}"))
            return
        self._framing = framing
        response = UpstreamResponse(self, status, wire_text(self._reason), self._headers,
                                    length, connection_options=connection_options(self._connection))
        if self._head is not None and not self._head.done():
            self._head.set_result(response)
        if framing == "none" or (framing == "length" and length == 0):
            # llhttp would wait for a HEAD response's Content-Length bytes: the message ends here.
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.body_done:
            self._junk = True  # bytes after a HEAD response's head
            return
        self._body.append(body)
        self._buffered += len(body)
        self._budget.fed += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._junk or self._framing == "upgraded":
            return
        if self._interim:
            self._interim = False
            return
        if not self.body_done:
            self._complete()

    # ---------------------------------------------------------------- the request

    async def request(self, method: str, head: bytes, body: bytes | AsyncIterator[bytes | memoryview] | None,
                      chunked: bool, *, length: int | None = None, upgrade: bool = False,
                      interim: Interim | None = None) -> UpstreamResponse:
        """Send ``head`` (from :func:`request_head`) and ``body``; return once the final response head is in.

        ``upgrade``: the request asks to switch protocols; a ``101`` is then the response (not an error), after
        which the connection carries raw bytes: :meth:`UpstreamResponse.read_some`, :meth:`UpstreamResponse.send`.
        ``interim``: called with each interim (1xx) response's status, reason, headers and their ``Connection``
        options as it comes, before the final one (RFC 9110 15.2); it must not raise.

        A streamed body is written by a task of its own, so a response that comes before the body's end (an
        early refusal) is returned; the connection is then not reused. ``length``: the ``Content-Length`` the
        head gives a streamed body. Once that many bytes are written the body is sent, whatever its source still
        awaits before it ends (a spool file's last read, a client's last chunk framing): a response that comes
        then is no early one, and the connection is reused. A stream that gives more or fewer bytes fails the
        request (the upstream would read the next request into this one, or wait for the rest). Raises
        :class:`~sigproxy.errors.UpstreamError` / :class:`~sigproxy.errors.UpstreamTimeout`."""
        transport = self.transport
        if transport is None or self.closed or self._active:
            raise UpstreamError(f"upstream {self.label}: the connection is not ready for a request")
        self._active = True
        if self._head_only:  # the last response was to HEAD: its parser may wait for a body that never comes
            self._parser = httptools.HttpResponseParser(self)
        self._head_only = method == "HEAD"
        self._upgrade = upgrade
        self._on_interim = interim
        self._framing = ""
        self.body_done = False
        self._error = None
        self._budget.reset()
        self._junk = self._interim = self._keep_alive = self.received = False
        head_future: asyncio.Future[UpstreamResponse] = self._loop.create_future()
        self._head = head_future
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body and len(body) <= 16384 else head)
            if body and len(body) > 16384:
                transport.write(body)
            self._body_sent()
        else:
            transport.write(head)
            # Held in self._writer until the response is finished with (which cancels it if still running).
            self._writer = self._loop.create_task(self._write_stream(body, chunked, length),
                                                  name=f"body to {self.label}")
        try:
            return await head_future
        except asyncio.CancelledError:
            self._close(abort=True)
            raise

    async def _write_stream(self, body: AsyncIterator[bytes | memoryview], chunked: bool, length: int | None) -> None:
        """Write a streamed body, ``chunked`` (RFC 9112 7.1) or as it comes (``length``: its Content-Length, when
        known). ``_sent`` once every byte is written; :meth:`finish` cancels a writer whose source has not ended.
        A source not drained is closed after the ``try`` statement, not in a ``finally`` (:mod:`sigproxy.compiled`)."""
        transport = self.transport
        assert transport is not None
        me = asyncio.current_task()
        written = 0
        whole = False  # every byte of the body is written
        close = True  # the connection is given up once the writer ends (the body broke off or failed)
        cancelled: BaseException | None = None
        try:
            async for piece in body:
                if self._writer is not me:
                    close = False  # finished with, and the connection perhaps another request's (finish)
                    break
                if self.closed or self.body_done:
                    break  # the upstream answered or went away: the rest is not wanted
                if not piece:
                    continue
                written += len(piece)
                if chunked:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                elif length is not None:
                    if written > length:
                        raise UpstreamError(f"upstream {self.label}: the request body is longer than the "
                                            f"{length} bytes its Content-Length says")
                    transport.write(piece)
                    if written == length:
                        whole = True
                        self._body_sent()  # all of it: whatever the source awaits before it ends is not ours
                else:
                    transport.write(piece)
                if self._writing_paused:
                    await self._drained()
            else:
                if length is not None and written < length:
                    raise UpstreamError(f"upstream {self.label}: the request body ended after {written} of the "
                                        f"{length} bytes its Content-Length says")
                if chunked and not self.closed:
                    transport.write(b"0\r\n\r\n")
                if not whole:  # chunked, or a length of 0
                    whole = True
                    self._body_sent()
                close = False
        except SigproxyError as exc:
            self._fail(exc)
        except Exception as exc:  # whatever the body's source raised ends this request
            self._fail(UpstreamError(f"upstream {self.label} failed: sending the body: {type(exc).__name__}: {exc}"))
        except BaseException as exc:  # cancelled (finish): the source is closed first, then it goes on
            cancelled = exc
        if not whole:  # the source is closed, not drained
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        if cancelled is not None:
            raise cancelled
        if close:
            self._close(abort=True)

    def write(self, data: bytes) -> None:
        """Send raw bytes (after a ``101``)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the upstream's socket buffer is full. Raises :class:`~sigproxy.errors.UpstreamError` once
        the connection is closed."""
        if self._writing_paused:
            await self._drained()
        if self.closed:
            raise UpstreamError(f"upstream {self.label} closed the connection")

    def _body_sent(self) -> None:
        self._sent = True
        self._last_read = self._loop.time()
        self._arm()

    async def _drained(self) -> None:
        self._arm()  # an upstream that takes nothing of a streamed body for read_timeout fails it (_expired)
        while self._writing_paused and not self.closed:
            self._drain = self._loop.create_future()
            await self._drain

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # ---------------------------------------------------------------- the response body

    def take_body(self) -> bytes:
        """What body has arrived and not been taken yet (``b""`` for none); raises the connection's error once
        the body buffered before it is taken."""
        body = self._body
        if not body:
            if self._error is not None and not self.body_done:
                raise self._error
            return b""
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_body(self) -> None:
        """Until more body, its end or an error."""
        if self._body or self.body_done or self._error is not None:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # ---------------------------------------------------------------- endings

    def finish(self) -> None:
        """The response is done with: hand the connection back when it can carry another request, else close
        it (a body not read to its end, an early response, ``Connection: close``, stray bytes)."""
        if not self._active:
            return
        upgraded = self._framing == "upgraded"
        reusable = (self.body_done and self._error is None and self._sent and self._keep_alive and not self._junk
                    and not self.closed and not self._reading_paused and not upgraded)
        self._active = False
        self._head = None
        self._body.clear()
        self._buffered = 0
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            # When _sent (every byte of its Content-Length written) it only waits for its source to end; not
            # sent, the connection is not reused (an early response, or one to a body cut short).
            writer.cancel()
        self._sent = False
        if not reusable:
            self._close(abort=not self.body_done and not upgraded)  # the new protocol's last bytes go out
            return
        self.idle_since = self._loop.time()
        if self._on_idle is not None:
            self._on_idle(self)

    def idle_for(self) -> float:
        """Seconds since the connection was last handed back (:meth:`finish`), by its loop's clock (asking the
        running loop instead costs a ``getpid`` system call: CPython checks the loop's process on every ask)."""
        return self._loop.time() - self.idle_since

    def close(self) -> None:
        """Close the connection (an idle one, or at shutdown)."""
        self._close(abort=False)

    def _complete(self) -> None:
        self.body_done = True
        self._keep_alive = self._parser.should_keep_alive() and self._framing != "close"
        self._wake()

    def _fail(self, exc: SigproxyError) -> None:
        if self._error is None:
            self._error = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        self._wake()
        self._close(abort=True)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _close(self, *, abort: bool) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                close(transport, grace=self._read_timeout or 5.0, lost=lambda: self._lost)  # flushed, else reset
        self.closed = True

    # ---------------------------------------------------------------- the read timeout

    def _arm(self) -> None:
        """Start the connection's one read timer if it is not running. It is never moved per read or per
        request: at expiry it compares the time of the last read with the timeout and goes again."""
        if self._timer is None and self._read_timeout > 0 and not self.closed:
            self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.closed or self._framing == "upgraded":
            return
        now = self._loop.time()
        head = self._head
        # Waiting on the upstream: more of the response's body is awaited (not while the body received is being
        # passed on, nor while reading is paused because of it); or its head, once the request is sent, or while
        # a streamed body waits for the upstream to take what is queued (a write-side stall). Not while a
        # streamed body waits for its source (the client's body_timeout bounds that).
        awaited = head is not None and not head.done()  # the response's head
        stalled = awaited and not self._sent
        waiting = self._active and not self.body_done and (
            self._waiter is not None or (awaited and (self._sent or self._writing_paused)))
        if not waiting:
            self._last_read = max(self._last_read, now)
        due = self._last_read + self._read_timeout
        if now < due:
            self._timer = self._loop.call_at(due, self._expired)
            return
        if stalled:
            self._fail(UpstreamTimeout(f"upstream {self.label} took none of the request body for "
                                       f"{self._read_timeout:g} s (read_timeout)"))
        else:
            self._fail(UpstreamTimeout(f"upstream {self.label} timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

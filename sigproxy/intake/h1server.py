"""The HTTP/1.1 server of every client listener (forward, reverse, inside intercepted CONNECT tunnels), on
httptools (llhttp, the parser of Node.js and of aiohttp's C parser) in strict mode.

* :class:`ClientProtocol` (one per accepted connection, made by
  :class:`~sigproxy.intake.clientserver.ClientServer`) parses requests (pipelined ones are answered in order),
  hands each to the entry point as a :class:`~sigproxy.http1.ClientRequest` and writes what it returns. Its byte
  side (writing, flow control, closing, the one timer) is its bases' (:class:`~sigproxy.intake.h1flow.ClientFlow`,
  and :class:`~sigproxy.intake.h1rest.ClientRest` for the rest of a request answered early).

What it enforces (RFC 9112, and the ``[proxy]`` keys named):

* the head: ``max_request_line``, ``max_header_size`` (a name and its value), ``max_headers`` (over them: 400,
  without echoing the bytes); strict HTTP/1.x syntax (a bare CR, ``Content-Length`` with
  ``Transfer-Encoding``, a repeated or invalid ``Content-Length``: 400); HTTP/1.0 and 1.1 (a later 1.x is
  served as 1.1, RFC 9112 2.3; any other version: 400, answered as HTTP/1.1); a chunked body's trailer fields
  are dropped, never header fields (RFC 9110 6.5.1), and its trailer section and chunk lines are bounded by the
  same limits (over them: 400);
* ``header_timeout``: every head, the first and each later keep-alive one, must be complete within it of its
  first byte, however steadily it trickles in (a slowloris is cut off); ``idle_timeout``: a connection with no
  request in progress or arriving is closed;
* flow control both ways: reading pauses while a body's unread part is over 256 KiB, writing waits while the
  client's socket buffer is full; a client that takes nothing of what it is sent for ``idle_timeout`` (while
  an answer waits on it, or once its connection is being closed with bytes still queued) is cut off with a
  reset, not held open until it reads;
* the connection is kept open after a response only when the client allows it (RFC 9112 9.3), the request was
  received whole, or what is left of it is small enough to read and drop after an early answer (its base
  :class:`~sigproxy.intake.h1rest.ClientRest`), and the server is not draining; otherwise it is closed, and where
  the client may still be sending (a body not read to its end, a head refused) gracefully: our side shut for
  writing, what the client still sends read and dropped for up to a second, so the answer is not lost to a
  reset (RFC 9112 9.6).

Must not: sign, route or choose connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, cast

import httptools
from multidict import CIMultiDict

from sigproxy.config import ProxyConfig
from sigproxy.errors import BadRequest, SigproxyError
from sigproxy.fieldnames import HOST, TRANSFER_ENCODING
from sigproxy.h1wire import wire_text
from sigproxy.handler import error_response
from sigproxy.http1 import (
    ClientRequest,
    RequestBody,
    Response,
    StreamResponse,
    bad_head_message,
    check_transfer_coding,
)

from .gate import LINGER, Ticket, peer_address
from .h1rest import ClientRest

if TYPE_CHECKING:
    from .clientserver import ClientServer

__all__ = ["ClientProtocol", "Entry", "answered"]

logger: Final = logging.getLogger(__name__)

Entry = Callable[[ClientRequest], Awaitable[Response | StreamResponse]]
_VERSIONS: Final = frozenset({"1.1", "1.0"})
_MAX_QUEUED: Final = 16  # pipelined requests waiting for their answer past which reading pauses


async def answered(response: Response) -> Response:
    """A response already made, as the awaitable an entry point returns."""
    return response


class _HeadRefused(BadRequest):
    """A request head over a limit (raised inside the parser's callbacks)."""


class ClientProtocol(ClientRest):
    """One client connection."""

    def __init__(self, server: ClientServer, proxy: ProxyConfig) -> None:
        # Every attribute, :class:`ClientFlow`'s too: one ``__init__`` per connection.
        self._server = server
        self._proxy = proxy
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        # llhttp refuses versions it doesn't know (HTTP/1.2) before a head is read; on_headers_complete judges.
        self._parser.set_dangerous_leniencies(lenient_version=True)
        self._transport: asyncio.Transport | None = None
        # Bytes that came before connection_made: start_tls hands a tunnel's first request over before it returns.
        self._early: list[bytes] | None = []
        self._remote: str | None = None
        self._ticket: Ticket | None = None
        # The request whose head or body is being parsed, and the head's parts so far.
        self._parsing: ClientRequest | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._fed = 0  # body bytes the parser gave since the last look (_count_framing)
        self._body_got = 0  # body bytes of the request being parsed, so far
        self._content_ended: ClientRequest | None = None  # its content read to the end; framing may follow
        # After an early answer: the request whose rest is being read and dropped, and what waits for its end.
        self._dropping: ClientRequest | None = None
        self._drop_limit = 0  # the body bytes (_body_got) past which the rest is not read
        self._rest: asyncio.Future[None] | None = None
        self._framing_bytes = 0  # bytes of a body's chunk framing and trailer section since its last body byte
        self._begun = 0  # heads begun on this connection
        self._head_since: float | None = None  # when the head being parsed began; None between heads
        self._head_began: float | None = None  # from the front door: when the first head's first byte came
        self._max_head = proxy.max_request_line + 2 + proxy.max_headers * (proxy.max_header_size + 4) + 2
        # Serving: one task answers the requests in order; later ones wait in the queue. It lives as long as the
        # connection (_serve): between requests it waits on _next, and _task (answering) is None.
        self._task: asyncio.Task[None] | None = None
        self._next: asyncio.Future[ClientRequest | SigproxyError | None] | None = None
        self._serving: asyncio.Task[None] | None = None  # the serving task, answering or idle
        self._queue: deque[ClientRequest | SigproxyError] = deque()
        self._idle_since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False  # draining: no more requests are read; close once the one in progress is answered
        self._start = b""  # the first bytes of the latest head
        self._stopped: SigproxyError | None = None  # what a parser callback raised (_stop)
        self._broken = False  # the parser failed, or the connection was upgraded: nothing more is parsed
        # After a request that asked to switch protocols (RFC 9110 7.8): the client's bytes past its head.
        self._upgraded: RequestBody | None = None
        self._client_done = False  # the client half-closed: answer what it sent, then close
        self._paused: set[str] = set()  # why reading is paused: "body" (unread body), "queue" (answers owed)
        self._lingering = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._wrote = False  # part of the current response has gone out
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------------ connection

    def adopt(self, ticket: Ticket | None, *, head_began: float | None = None) -> None:
        """Take the gate's ticket (released when the connection closes); ``head_began``: when the first byte of
        the head in flight arrived (the front door read the start of it)."""
        self._ticket = ticket
        self._head_began = head_began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._remote = peer_address(transport)
        self._server.opened(self)
        self._arm(self._idle_since + self._proxy.idle_timeout)
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
            return
        if self._upgraded is not None:
            self._upgraded.feed(data)
            return
        if self._broken or self._transport is None or (self._closing and self._parsing is None):
            return  # lingering or upgraded; or closing, with no request whose body is still arriving: dropped
        # Whether this read starts between messages, and how many heads began before it: to tell which of
        # its bytes belong to a head still unfinished at its end.
        between = self._head_since is None and self._parsing is None
        begun = self._begun
        if between:
            self._start = data[:16]  # a head begins here: its first bytes name what a refused one was
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # What follows a CONNECT or an Upgrade is not HTTP/1.1: nothing more is parsed. Its bytes are kept
            # for the handler in case it switches protocols (:meth:`upgraded`); else the connection ends.
            self._broken = True
            self._upgraded = RequestBody(self)
            rest = data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b""
            if rest:
                self._upgraded.feed(rest)
            return
        except httptools.HttpParserError as exc:
            self._refuse_head(exc)
            return
        if self._head_since is not None:
            # An unfinished head is bounded by the head limits (httptools would buffer an unfinished value
            # without bound). Its bytes: all of this read when the head began before it or with it; when it
            # began after another message ended within this read, counted from the next read (one read is
            # bounded).
            if self._begun == begun:
                self._head_bytes += len(data)
            elif between and self._begun == begun + 1:
                self._head_bytes = len(data)
            if self._head_bytes > self._max_head:
                self._refuse_head(_HeadRefused("the request head is over the head limits (max_request_line, "
                                               "max_header_size, max_headers)"))
            elif self._head_bytes > 2 * self._proxy.max_header_size and self._line_cannot_fit():
                self._refuse_head(self._too_long())
        elif self._parsing is not None:  # a body still arriving
            if self._begun == begun:
                self._count_framing(len(data))
            else:  # its head came in this read: counting starts with the next
                self._fed = self._framing_bytes = 0

    def _line_cannot_fit(self) -> bool:
        """Whether the head's bytes past its last whole line are more than one header line may hold.

        httptools joins an unfinished header value piece by piece (``bytes +=``), so a value trickled in small
        reads costs time quadratic in its length until it ends: it is cut off once it can no longer fit, not at
        the end of the head's whole budget. Counted only for a head still unfinished after a read (a head sent
        whole never gets here): what the head's whole lines hold (the request line, each header's name and value
        and its separators) against the head's bytes so far; the whitespace llhttp trims around values is not
        in the lines, so up to one more line of it is allowed."""
        lines = len(self._parser.get_method()) + self._url_size + 12
        for name, value in self._headers:
            lines += len(name) + len(value) + 4
        return self._head_bytes - lines > 2 * self._proxy.max_header_size + 8

    def _count_framing(self, size: int) -> None:
        """A read that was all a request body's: what of it was not body -- chunk-size lines, chunk extensions,
        the trailer section (RFC 9112 7.1) -- is bounded by the head limits since the last body byte (to within
        a read). httptools gathers a trailer field whole before it hands it over, as it does a header; the head
        limits bound a head, and this bounds a trailer section, which no body byte follows."""
        fed, self._fed = self._fed, 0
        self._framing_bytes = size - fed if fed else self._framing_bytes + size
        if self._framing_bytes > self._max_head:
            self._refuse_head(_HeadRefused("the request body's chunk framing or trailer section is over the head "
                                           "limits (max_request_line, max_header_size, max_headers)"))

    def eof_received(self) -> bool:
        if self._upgraded is not None:
            self._upgraded.feed_eof()
        if self._parsing is not None and not self._parsing.complete:
            self._fail_parsing(ConnectionResetError("the client closed the connection mid-request"))
        self._client_done = True
        # Half-closed: the answers owed may still go out (True keeps our side open; TLS can't stay half-open).
        return (self._task is not None and not self._lingering and self._transport is not None
                and self._transport.get_extra_info("sslcontext") is None)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport (a TLS one on a TLS listener), ``None`` once closed."""
        return self._transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._early = None
        self._cancel_timer()
        lost = ConnectionResetError("the client closed the connection")
        if self._parsing is not None:
            self._fail_parsing(lost)
        if self._upgraded is not None:
            self._upgraded.fail(lost)
        for queued in self._queue:
            if isinstance(queued, ClientRequest):
                queued.body.fail(lost)
        self._queue.clear()
        self._wake_drain(lost)
        self._end_serving()
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None
        self._server.lost(self)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def upgraded(self) -> RequestBody | None:
        """After a request with ``Upgrade`` (or a CONNECT): what the client sends past that request's head, as
        it arrives, with the same flow control as a body; ``None`` before."""
        return self._upgraded

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task answering this connection's requests, while one is being answered."""
        return self._task

    def begin_drain(self) -> None:
        """Shutdown: read no more requests; close now if none is being answered, else after its answer."""
        self._closing = True
        self._end_rest()  # a rest being read after an early answer is not waited for
        if self._task is None or self._lingering:
            self._close()

    def cancel(self) -> asyncio.Task[None] | None:
        """Shutdown's grace is over: stop answering and close. The task answering, when one is, is returned
        cancelled: it closes the connection once it has ended (a relayed WebSocket says goodbye first)."""
        task = self._task
        if task is None:
            self._close()
            return None
        task.cancel()
        return task

    def _close_gracefully(self, *, linger: bool) -> None:
        """Close after the answer. With ``linger`` (the client may still be sending: a body not read to its end,
        a head refused): our side shut, the client's late bytes read and dropped for up to a second, so that
        they don't turn the close into a reset that loses the answer."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._closing = True
        if not linger or self._server.draining or not transport.can_write_eof():
            self._close()
            return
        self._lingering = True
        self._broken = True
        self._cancel_timer()
        transport.write_eof()
        transport.resume_reading()  # a body left unread may have paused it: what comes now is read and dropped
        self._loop.call_later(LINGER, self._close)

    def may_keep_alive(self, request: ClientRequest) -> bool:
        """Whether the connection may serve another request after this one's answer: the request came whole, or
        what is left of it is small enough to read and drop after the answer (:meth:`_rest_is_small`)."""
        more = bool(self._queue)  # answers owed to requests already received (or a refusal queued)
        return (request.keep_alive and (request.complete or self._rest_is_small(request)) and not request.upgrade
                and not self._closing and (more or not (self._broken or self._client_done))
                and self._transport is not None)

    # ------------------------------------------------------------------ parser callbacks (httptools)

    def on_message_begin(self) -> None:
        began, self._head_began = self._head_began, None
        self._head_since = since = began if began is not None else self._loop.time()
        self._begun += 1
        self._url = []
        self._url_size = 0
        self._headers = []
        self._head_bytes = 0
        due = since + self._proxy.header_timeout
        if self._timer is None or self._timer.when() > due:
            self._arm(due)

    def _stop(self, error: SigproxyError) -> SigproxyError:
        """``error``, kept as what stops the parser, for :meth:`_refuse_head` (not read back from httptools' error:
        :mod:`sigproxy.compiled`)."""
        self._stopped = error
        return error

    def _too_long(self) -> SigproxyError:
        proxy = self._proxy
        return self._stop(_HeadRefused("the request line or a header line is too long (max_request_line = "
                                       f"{proxy.max_request_line}, max_header_size = {proxy.max_header_size})"))

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_size += len(url)
        # The request line: METHOD SP request-target SP HTTP/x.y (RFC 9112 3)
        if len(self._parser.get_method()) + self._url_size + 10 > self._proxy.max_request_line:
            raise self._too_long()

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header field; or, while a chunked body is read (``_parsing`` set), a field of its trailer section,
        which llhttp reports the same way: dropped. RFC 9110 6.5.1: trailer fields are never merged into the
        header section; a proxy that removes the chunked coding (the body goes upstream framed anew) may
        discard them. Their bytes are bounded by :meth:`_count_framing`."""
        if self._parsing is not None:
            return
        proxy = self._proxy
        if len(name) + len(value) > proxy.max_header_size:
            raise self._too_long()
        if len(self._headers) >= proxy.max_headers:
            raise self._stop(_HeadRefused(f"the request has too many header lines (max_headers = "
                                          f"{proxy.max_headers})"))
        self._headers.append((wire_text(name), wire_text(value)))

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._head_since = None
        version = parser.get_http_version()
        if version not in _VERSIONS and version.startswith("1."):
            version = "1.1"  # RFC 9112 2.3: a higher minor version is processed as the highest one known
        headers = CIMultiDict(self._headers)
        if version == "1.1" and len(headers.getall(HOST, ())) != 1:
            raise self._stop(_HeadRefused("an HTTP/1.1 request needs exactly one Host header (RFC 9112 3.2): send "
                                          "one, naming the host the request is for"))
        if TRANSFER_ENCODING in headers:
            try:
                check_transfer_coding(headers.getall(TRANSFER_ENCODING))
            except SigproxyError as exc:
                raise self._stop(exc) from None
        request = ClientRequest(
            self, parser.get_method().decode("ascii", "replace"),
            wire_text(b"".join(self._url)), version, headers,
            keep_alive=parser.should_keep_alive(), upgrade=parser.should_upgrade(), remote=self._remote,
            body=RequestBody(self))
        self._headers = []
        self._url = []
        if version not in _VERSIONS:
            request.unsupported_version = version
        self._parsing = request
        self._body_got = 0
        self._dispatch(request)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._fed += len(body)
            self._body_got += len(body)
            if self._dropping is not self._parsing:
                self._parsing.body.feed(body)
            elif self._body_got > self._drop_limit:
                raise self._stop(_HeadRefused("more body came after the answer than the request has (RFC 9112 "
                                              "6.3)"))

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        self._content_ended = None
        if request is not None:
            request.complete = True
            request.body.feed_eof()
        self._end_rest()

    # ------------------------------------------------------------------ serving

    def _refuse_head(self, exc: BaseException) -> None:
        """The parser refused what the client sent: a 400 after the answers owed, then the connection closes."""
        self._broken = True
        self._head_since = None
        stopped, self._stopped = self._stopped, None
        cause = stopped if stopped is not None and isinstance(exc, httptools.HttpParserCallbackError) else exc
        error = cause if isinstance(cause, SigproxyError) else BadRequest(bad_head_message(self._start, str(exc)))
        if self._parsing is not None and not self._parsing.complete:
            # The head was fine, its body's framing is not: that request is answered 400, then the connection ends.
            self._fail_parsing(cause if isinstance(cause, SigproxyError)
                               else BadRequest("the request body's chunked framing is malformed (RFC 9112 7.1)"))
            return
        logger.info("request head from %s refused: %s", self._remote, error.message)
        self._dispatch(error)

    def _dispatch(self, item: ClientRequest | SigproxyError) -> None:
        if self._task is None:
            waiting, self._next = self._next, None
            if waiting is not None and not waiting.done():  # the serving task, idle since its last answer
                self._task = self._serving
                waiting.set_result(item)
            else:
                self._task = self._serving = self._loop.create_task(self._serve(item))
        else:
            self._queue.append(item)
            if len(self._queue) >= _MAX_QUEUED:
                self._pause("queue")  # a client pipelining without reading is not buffered without bound

    async def _serve(self, item: ClientRequest | SigproxyError | None) -> None:
        """Answer ``item`` and then each later request, in order, while the connection stays open.

        One task for the connection's life rather than one per request (issue 15: a task's creation, its context
        copy, its entry in asyncio's weak set of tasks and its end were 5.7 k of the 295.5 k instructions of a
        small GET): between answers it waits for :meth:`_dispatch` to hand it the next request, with
        :attr:`_task` ``None`` (nothing being answered, which is what draining, cancelling and the idle timer look
        at). It ends with the connection (:meth:`_end_serving`)."""
        me = asyncio.current_task()
        waiting: asyncio.Future[ClientRequest | SigproxyError | None] | None = None
        try:
            while item is not None:
                await self._answer_in_order(item)
                item = None  # an idle connection holds on to no request
                self._task = None
                if self._lingering or self._transport is None:
                    return
                if self._closing:
                    self._close()
                    return
                self._idle_since = self._loop.time()
                if self._timer is None:
                    self._arm(self._idle_since + self._proxy.idle_timeout)
                self._next = waiting = self._loop.create_future()
                item = await waiting  # None: the connection takes no more requests
        except asyncio.CancelledError:  # shutdown's grace is over (or the loop is closing)
            self._task = None
            self._close()
            raise
        except Exception:  # a bug: the client's connection must not be left hanging on it
            logger.exception("unexpected error writing an answer to %s; connection closed", self._remote)
            self._task = None
            self.abort()
        finally:
            if self._serving is me:
                self._serving = None
                if self._next is waiting:
                    self._next = None

    def _close(self) -> None:
        super()._close()
        self._end_serving()  # an idle serving task ends with the connection, not at its loss only

    def _end_serving(self) -> None:
        """The connection takes no more requests: the serving task, if idle, ends."""
        waiting, self._next = self._next, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _answer_in_order(self, item: ClientRequest | SigproxyError) -> None:
        while True:
            self._wrote = False
            if isinstance(item, SigproxyError):
                self._send(error_response(item, "-"), None)
                self._close_gracefully(linger=True)
                return
            response = await self._answer(item)
            if response is None:  # it broke off mid-response and the connection was closed
                return
            if not response.prepared:
                if self._wrote or self._transport is None or self._transport.is_closing():
                    # Part of an answer went out already, or the handler cut the connection (it answered a failure
                    # after its response began, or found the client gone): nothing may follow.
                    self.abort()
                    return
                self._send(cast(Response, response), item)
            if self._write_paused and self._transport is not None:
                try:
                    await self.drain()
                except ConnectionError:
                    return
            keep = self.may_keep_alive(item) and (
                cast(StreamResponse, response).keep_alive if response.prepared else not cast(Response, response).close)
            if keep and not item.complete:  # answered early: the rest is small (may_keep_alive), read and dropped
                keep = await self._read_rest(item)
            if not keep:
                self._close_gracefully(linger=not item.complete)
                return
            if not self._queue:
                return
            item = self._queue.popleft()
            if len(self._queue) < _MAX_QUEUED // 2:
                self._resume("queue")

    async def _answer(self, request: ClientRequest) -> Response | StreamResponse | None:
        if request.unsupported_version is not None:
            logger.info("request from %s refused: HTTP/%s", self._remote, request.unsupported_version)
            return error_response(BadRequest(f"HTTP/{request.unsupported_version} is not spoken here: sigproxy "
                                             "takes HTTP/1.1 and HTTP/1.0"), "-", close=True)
        try:
            return await self._server.entry(request)
        except (ConnectionError, asyncio.CancelledError):
            if self._wrote:
                self.abort()
                return None
            raise
        except Exception:
            logger.exception("unexpected error answering %s from %s", request.method, self._remote)
            if self._wrote:
                self.abort()
                return None
            return error_response(SigproxyError("sigproxy failed on this request (see its log)"), "-", close=True)

    def _send(self, response: Response, request: ClientRequest | None) -> None:
        keep = request is not None and self.may_keep_alive(request) and not response.close
        self.write(response.encode(request, keep_alive=keep))

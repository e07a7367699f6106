"""A client's HTTP/1.1 request and sigproxy's answer to it, as the handler sees them (the server that parses
requests and writes answers is :mod:`sigproxy.intake.h1server`).

* :class:`ClientRequest`: method, request-target, headers (case-insensitive, in order, repeats kept), the
  body as a :class:`RequestBody`, and the few things a handler may do to the connection (send
  ``100 Continue``, pass on an upstream's interim response, abort a response that broke off).
* :class:`Response`: a whole answer (status, headers, body bytes), written in one ``write``.
* :class:`StreamResponse`: an answer whose body is streamed: the head goes at :meth:`~StreamResponse.prepare`,
  then :meth:`~StreamResponse.write` each piece (waiting while the client's socket buffer is full) and
  :meth:`~StreamResponse.write_eof`. Without a ``Content-Length`` it goes chunked to an HTTP/1.1 client
  (RFC 9112 7.1) and is delimited by closing the connection for an HTTP/1.0 one (RFC 9112 6.3).

Header text is decoded from and encoded to UTF-8 with ``surrogateescape`` (as aiohttp does), so an upstream's
header bytes reach the client unchanged; a request header that is not UTF-8 is refused when it would be sent
upstream (:mod:`sigproxy.forwarding`: sigproxy signs and sends UTF-8). Must not: read the wire, route or sign.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDict

from sigproxy.errors import BadRequest, TransferCodingNotImplemented
from sigproxy.fieldnames import CONTENT_LENGTH, HOST, TRANSFER_ENCODING
from sigproxy.h1wire import head_bytes
from sigproxy.headerrules import end_to_end, has_header

if TYPE_CHECKING:
    from sigproxy.intake.h1server import ClientProtocol

__all__ = ["ClientRequest", "RequestBody", "Response", "StreamResponse", "bad_head_message", "check_transfer_coding",
           "http_date", "response_head"]

_BODYLESS_STATUS: Final = frozenset({204, 304})
# Unread request body buffered past this pauses reading the client (resumed at a quarter of it).
_BODY_HIGH_WATER: Final = 256 * 1024
_date_cache: Final = [0, ""]


def http_date() -> str:
    """The current time as an HTTP-date (RFC 9110 5.6.7), computed once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return str(_date_cache[1])


def _reason(status: int, reason: str | None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def response_head(status: int, reason: str | None, headers: Iterable[tuple[str, str]], extra: Sequence[str]) -> bytes:
    """The status line and header section (RFC 9112 4, 5): ``headers`` in order, then the ``extra`` lines.

    Raises :class:`ValueError` when a name or value holds CR or LF (they would split the header section)."""
    lines = [f"HTTP/1.1 {status} {_reason(status, reason)}"]
    for name, value in headers:  # compiled: one string built per field (a list unpacked from map() cost twice)
        lines.append(f"{name}: {value}")
    lines.extend(extra)
    return head_bytes(lines, "response", "surrogateescape")


def check_transfer_coding(lines: list[str]) -> None:
    """A request's Transfer-Encoding: chunked alone is framed and read; not ending in chunked is a 400 (RFC 9112
    6.3: the length can't be determined), another coding before it a 501 (RFC 9112 6.1: not understood).

    ``lines``: the values of every Transfer-Encoding line. Raises :class:`~sigproxy.errors.BadRequest`,
    :class:`~sigproxy.errors.TransferCodingNotImplemented`."""
    codings = [c.strip().lower() for line in lines for c in line.split(",")]
    if codings[-1] != "chunked":
        raise BadRequest("Transfer-Encoding must end in chunked (RFC 9112 6.3)")
    if len(codings) > 1:
        raise TransferCodingNotImplemented(
            "Transfer-Encoding names a coding besides chunked, which sigproxy does not decode; send the body "
            "with chunked alone (a Content-Encoding is forwarded untouched)")


# What a client that does not speak HTTP/1.1 to us sends first: the HTTP/2 connection preface (RFC 9113 3.4,
# "prior knowledge"), and a TLS record holding a ClientHello (RFC 8446 5.1: content type 22, version 3.x).
_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"
_TLS_HANDSHAKE: Final = b"\x16\x03"


def bad_head_message(start: bytes, reason: str) -> str:
    """What to tell a client whose request head the parser refused: ``start`` is the first bytes of that head
    (a few suffice), ``reason`` the parser's own words (llhttp's, e.g. ``"Duplicate Content-Length"``).

    An HTTP/2 preface and a TLS handshake (a client told ``https://`` for a plain HTTP port) are named as such
    with what to change; anything else is ``malformed request head: REASON``. Never a parser class name.
    """
    if start.startswith(_H2_PREFACE[: len(start)]) and len(start) >= 3:
        return ("this is an HTTP/2 connection (prior knowledge), but sigproxy speaks HTTP/1.1: let the client use "
                "HTTP/1.1 (curl: drop --http2-prior-knowledge)")
    if start.startswith(_TLS_HANDSHAKE):
        return ("this is a TLS handshake, but this port speaks plain HTTP: this is an HTTP proxy port; use "
                "http:// for the proxy URL (HTTPS_PROXY=http://HOST:PORT; HTTPS to AWS still works through it)")
    if reason == "Invalid method encountered":
        return ("not an HTTP/1.1 request: the first bytes are not a request line (METHOD TARGET HTTP/1.1); "
                "this port speaks HTTP/1.1")
    return f"malformed request head: {reason.rstrip('.') or 'not valid HTTP/1.1'}"


class RequestBody:
    """A request's body as it arrives (HTTP chunked framing already undone), read piece by piece.

    Reading is paused past 256 KiB buffered (flow control, so a fast client is not buffered without bound) and
    resumed as the handler catches up."""

    __slots__ = ("_done", "_error", "_paused", "_pieces", "_protocol", "_size", "_waiter")

    def __init__(self, protocol: ClientProtocol | None) -> None:
        self._protocol = protocol
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self._done = protocol is None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size > _BODY_HIGH_WATER and not self._paused and self._protocol is not None:
            self._paused = True
            self._protocol.pause_body()
        self._wake()

    def feed_eof(self) -> None:
        """No more pieces: the body is complete, or the rest of it will not be read."""
        self._done = True
        self._resume()
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body broke off (the client went away, or its chunked framing was malformed)."""
        if not self._done:
            self._error = exc
            self._done = True
            self._wake()

    def at_eof(self) -> bool:
        return self._done and not self._pieces

    async def next_piece(self) -> bytes:
        """The next piece, ``b""`` at the end. Raises what ended the body early (:meth:`fail`)."""
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        piece = self._pieces.popleft()
        self._size -= len(piece)
        if self._paused and self._size <= _BODY_HIGH_WATER // 4:
            self._resume()
        return piece

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._protocol is not None:
                self._protocol.resume_body()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ClientRequest:
    """One request from a client, as parsed (nothing normalised: the request-target and headers as sent)."""

    __slots__ = ("body", "complete", "headers", "keep_alive", "method", "protocol", "raw_path", "remote",
                 "unsupported_version", "upgrade", "version")

    def __init__(self, protocol: ClientProtocol | None, method: str, raw_path: str, version: str,
                 headers: CIMultiDict[str], *, keep_alive: bool, upgrade: bool, remote: str | None,
                 body: RequestBody) -> None:
        self.protocol = protocol
        self.method = method
        self.raw_path = raw_path
        """The request-target as sent: origin form (``/path?query``), absolute form or authority form."""
        self.version = version
        """``"1.1"`` or ``"1.0"`` (any other is answered by the server before a handler sees it)."""
        self.headers = headers
        self.keep_alive = keep_alive
        """Whether the client may send another request on this connection (RFC 9112 9.3)."""
        self.upgrade = upgrade
        self.remote = remote
        """The client's IP address (the TCP peer), or ``None`` when unknown."""
        self.body = body
        self.complete = False
        """Whether the whole request, body included, has been received (the connection may be reused)."""
        self.unsupported_version: str | None = None

    @property
    def content_length(self) -> int | None:
        """``Content-Length`` (the parser has already refused an invalid or repeated one), or ``None``."""
        value = self.headers.get(CONTENT_LENGTH)
        return int(value) if value is not None else None

    @property
    def chunked(self) -> bool:
        """Whether the body is chunked (the server accepts no Transfer-Encoding but ``chunked``)."""
        return TRANSFER_ENCODING in self.headers

    @property
    def body_exists(self) -> bool:
        """Whether a body follows the head (RFC 9112 6.3): chunked, or a ``Content-Length`` over 0."""
        return self.chunked or bool(self.content_length)

    @property
    def host(self) -> str | None:
        return self.headers.get(HOST)

    def write_continue(self) -> None:
        """Send ``100 Continue`` (RFC 9110 15.2.1): the client may send the body it held back. Not to an
        HTTP/1.0 client (RFC 9110 10.1.1: the expectation is ignored)."""
        if self.protocol is not None and self.version == "1.1":
            self.protocol.write_interim(b"HTTP/1.1 100 Continue\r\n\r\n")

    def forward_interim(self, status: int, reason: str, headers: list[tuple[str, str]], named: frozenset[str]) -> None:
        """Pass on an upstream's interim response, 103 Early Hints and the like (RFC 9110 15.2: a proxy MUST
        forward 1xx responses unless it asked for them itself, and MUST NOT send one to an HTTP/1.0 client),
        without its hop-by-hop fields and those its ``Connection`` header names (``named``). Not ``100
        Continue``: sigproxy answers a client's ``Expect`` itself (:meth:`write_continue`) and sends none
        upstream. Dropped while the client takes nothing of what it is sent."""
        if self.protocol is not None and self.version == "1.1" and status != 100:
            try:
                head = response_head(status, reason, end_to_end(headers, named), ())
            except ValueError:  # CR or LF in a field: llhttp lets none through, but never split a head
                return
            self.protocol.write_interim(head, optional=True)

    def stop_reading(self) -> None:
        """Read no more of this request's body; the connection closes once the answer is out."""
        self.keep_alive = False
        self.body.feed_eof()

    def abort(self) -> None:
        """Close the connection now, mid-response: the client sees the response broke off."""
        self.keep_alive = False
        if self.protocol is not None:
            self.protocol.abort()


class Response:
    """A whole response: its head and ``body`` go in one write. ``Content-Length`` is added when the headers
    have none, except on 204 and 304 (RFC 9110 8.6) and on an answer to HEAD with no body of its own (an
    upstream's, whose length is not known); the body itself is never sent in answer to HEAD."""

    __slots__ = ("body", "close", "headers", "reason", "status")

    prepared = False

    def __init__(self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = (),
                 body: bytes = b"", *, close: bool = False) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.close = close
        """Close the connection after this response."""

    def encode(self, request: ClientRequest | None, *, keep_alive: bool) -> bytes:
        """Head and body as bytes for ``request`` (``None``: no request could be parsed)."""
        extra = []
        head_only = request is not None and request.method == "HEAD"
        bodiless = self.status in _BODYLESS_STATUS or head_only
        if self.status not in _BODYLESS_STATUS and (self.body or not head_only) \
                and not has_header(self.headers, "content-length", "Content-Length"):
            extra.append(f"Content-Length: {len(self.body)}")
        extra.append(_connection(request, keep_alive))
        head = response_head(self.status, self.reason, self.headers, [line for line in extra if line])
        return head if bodiless else head + self.body


def _connection(request: ClientRequest | None, keep_alive: bool) -> str:
    if not keep_alive:
        return "Connection: close"
    return "Connection: keep-alive" if request is not None and request.version == "1.0" else ""


class StreamResponse:
    """A response whose body is written piece by piece after :meth:`prepare` sent its head."""

    __slots__ = ("_chunked", "_request", "headers", "keep_alive", "prepared", "reason", "status")

    def __init__(self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.prepared = False
        self.keep_alive = False
        self._chunked = False
        self._request: ClientRequest | None = None

    async def prepare(self, request: ClientRequest) -> None:
        """Send the head. Raises :class:`ConnectionResetError` when the client has gone."""
        protocol = request.protocol
        if protocol is None:
            raise ConnectionResetError("the client connection is closed")
        self._request = request
        self.prepared = True
        bodiless = self.status in _BODYLESS_STATUS or request.method == "HEAD"
        length = has_header(self.headers, "content-length", "Content-Length")
        extra = []
        keep = protocol.may_keep_alive(request)
        if not bodiless and not length:
            if request.version == "1.1":
                self._chunked = True
                extra.append("Transfer-Encoding: chunked")
            else:
                keep = False  # RFC 9112 6.3: the body ends when the connection closes
        self.keep_alive = keep
        extra.append(_connection(request, keep))
        protocol.write(response_head(self.status, self.reason, self.headers, [line for line in extra if line]))
        await protocol.drain()

    async def switch_protocols(self, request: ClientRequest) -> RequestBody:
        """Send this response's head as the ``101 Switching Protocols`` that ends HTTP/1.1 on the connection
        (RFC 9110 15.2.2, 7.8): no body framing, and the connection closes once the handler returns. From then
        on :meth:`write` sends raw bytes, and the client's come from the returned stream (the bytes past the
        request's head; ``b""`` from it at the client's end). Raises :class:`ConnectionResetError` when the
        client has gone, :class:`RuntimeError` when the request did not ask to upgrade."""
        protocol = request.protocol
        if protocol is None or protocol.transport is None:
            raise ConnectionResetError("the client connection is closed")
        stream = protocol.upgraded
        if stream is None or not request.upgrade:
            raise RuntimeError("switch_protocols() needs a request that asked to upgrade")
        self._request = request
        self.prepared = True
        self.keep_alive = False
        request.keep_alive = False
        protocol.write(response_head(self.status, self.reason, self.headers, ()))
        await protocol.drain()
        return stream

    async def write(self, data: bytes) -> None:
        """Send a piece of the body, waiting while the client's socket buffer is full.
        Raises :class:`ConnectionResetError` when the client has gone."""
        if not data:
            return
        protocol = self._protocol()
        if self._chunked:
            protocol.write_many((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            protocol.write(data)
        await protocol.drain()

    async def write_eof(self) -> None:
        """End the body (the last chunk, when chunked)."""
        protocol = self._protocol()
        if self._chunked:
            protocol.write(b"0\r\n\r\n")
        await protocol.drain()

    def _protocol(self) -> ClientProtocol:
        if self._request is None or self._request.protocol is None:
            raise RuntimeError("StreamResponse.prepare() must come first")
        return self._request.protocol

"""The upstream client (sigproxy/h1conn.py, sigproxy/forwarding.py) against scripted upstreams on real sockets:
when a request may be sent again (RFC 9112 9.3.1) and when never, when a connection that carried a streamed
body goes back to the pool, and what of a response reaches the caller unchanged (trailer fields never as
header fields, the reason phrase byte for byte, transfer codings other than chunked refused, interim 1xx
responses handed over). The helpers are test_h1conn.py's."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sigproxy.errors import UpstreamClosed, UpstreamError, UpstreamTimeout
from sigproxy.http1 import response_head
from tests.unit.test_h1conn import (
    OK,
    Script,
    Server,
    answer_each,
    answer_then_stall,
    get,
    in_pieces,
    pool,
    read_head,
    serving,
)

Action = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes:
    """A request's head and its Content-Length body (the head is recorded in ``server.heads``)."""
    head = await read_head(reader, server)
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return head + await reader.readexactly(int(value))
    return head


def warm_then(action: Action) -> Script:
    """Each connection answers its first request with OK (a kept-alive connection for the pool), then meets
    the second with ``action``."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        writer.write(OK)
        await writer.drain()
        try:
            await read_request(reader, server)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        await action(reader, writer)
    return script


async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def send_then_close(data: bytes) -> Action:
    async def action(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()
    return action


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3)


async def endless() -> AsyncIterator[bytes]:
    """An upload that never ends."""
    while True:
        yield b"x" * 65536


async def upload(up: Any, port: int) -> Any:
    """A PUT of :func:`endless`, its response once its head is in."""
    return await up.send("PUT", f"http://127.0.0.1:{port}/", [("Content-Length", str(2**40))], endless(),
                         explicit_hosts=("127.0.0.1:*",))


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class TestRetry:
    """Only a kept-alive connection closed or reset before a byte of the response, for an idempotent request
    whose body can be sent again, is retried -- once, on a new connection (RFC 9112 9.3.1)."""

    @pytest.mark.parametrize("action", [close, reset], ids=["close", "reset"])
    @pytest.mark.parametrize(("method", "body"), [("GET", None), ("PUT", b"abc"), ("DELETE", None),
                                                  ("HEAD", None)])
    async def test_closed_before_any_byte_is_sent_again(self, action: Action, method: str,
                                                        body: bytes | None) -> None:
        async with serving(warm_then(action)) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            status, _ = await get(up, port, method, body)
            assert status == 200
        assert server.connections == 2
        assert [h.split(b" ", 1)[0].decode() for h in server.heads] == ["GET", method, method]

    @pytest.mark.parametrize(("method", "body", "why"), [
        ("POST", b"abc", "not idempotent"),
        ("PATCH", b"abc", "not idempotent"),
        ("PUT", "stream", "a streamed body can't be sent again"),
    ])
    async def test_closed_before_any_byte_not_sent_again(self, method: str, body: bytes | str, why: str) -> None:
        async with serving(warm_then(close)) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            sent = stream(b"abc") if body == "stream" else body
            with pytest.raises(UpstreamClosed, match="before a response"):
                await get(up, port, method, sent)  # type: ignore[arg-type]
        assert server.connections == 1, why

    async def test_a_new_connection_closed_is_not_retried(self) -> None:
        """Not the keep-alive race: the upstream itself fails."""
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_request(reader, server)

        async with serving(script) as (server, port), pool() as up:
            with pytest.raises(UpstreamClosed):
                await get(up, port)
        assert server.connections == 1

    async def test_retried_once_only(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_request(reader, server)
            if server.connections == 1:
                writer.write(OK)
                await writer.drain()
                await read_request(reader, server)

        async with serving(script) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            with pytest.raises(UpstreamClosed):
                await get(up, port)
        assert server.connections == 2

    @pytest.mark.parametrize("method", ["GET", "PUT"])
    async def test_read_timeout_is_never_retried(self, method: str) -> None:
        """The upstream may still be acting on the request: one 504 after read_timeout, the request sent once."""
        async with serving(warm_then(never_answer)) as (server, port), pool(read_timeout=0.3) as up:
            assert await get(up, port) == (200, b"ok")
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await get(up, port, method, b"abc" if method == "PUT" else None)
            assert time.monotonic() - started < 0.55  # one read_timeout, not two
        assert server.connections == 1
        assert len(server.heads) == 2

    @pytest.mark.parametrize("sent", [
        b"HTTP/1.1 200 OK\r\nContent-Le",  # part of a head
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",  # part of a body
        b"HTTP/1.1 2x0 OK\r\n\r\n",  # malformed
        b"HTTP/1.1 100 Continue\r\n\r\n",  # an interim response, then the close
    ])
    async def test_any_byte_of_a_response_ends_it(self, sent: bytes) -> None:
        async with serving(warm_then(send_then_close(sent))) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            with pytest.raises(UpstreamError) as caught:
                await get(up, port, "PUT", b"abc")
            assert not isinstance(caught.value, UpstreamClosed)
        assert server.connections == 1

    async def test_an_upstream_that_takes_none_of_a_streamed_body_times_out(self) -> None:
        """A write-side stall is bounded by read_timeout too (it used to hang until the client gave up), and
        is not retried."""
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            await asyncio.sleep(3)  # reads none of the body

        async with serving(script) as (server, port), pool(read_timeout=0.3) as up:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match="took none of the request body"):
                await upload(up, port)
            assert time.monotonic() - started < 2
        assert server.connections == 1


async def head_and_body(up: Any, port: int, method: str = "GET") -> tuple[Any, bytes]:
    resp = await up.send(method, f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
    async with resp:
        return resp, await resp.read()


class TestTrailers:
    """RFC 9110 6.5.1: a chunked response's trailer fields never join its header fields; sigproxy re-frames the
    body for its client, so it drops them."""

    CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
               b"b\r\nhello world\r\n0\r\nContent-Encoding: gzip\r\nSet-Cookie: evil=1\r\n"
               b"Connection: X-Keep\r\n\r\n")

    @pytest.mark.parametrize("split", [0, 1, 7])
    async def test_trailer_fields_are_not_header_fields(self, split: int) -> None:
        """Sent whole (the trailer in the head's read, as in the tester's repro) or in pieces."""
        async with serving(in_pieces(self.CHUNKED, split)) as (server, port), pool() as up:
            for _ in range(2):
                resp, body = await head_and_body(up, port)
                assert body == b"hello world"
                assert resp.headers == [("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")]
                assert (resp.content_length, resp.connection_options) == (None, frozenset())
        assert server.connections == 1  # still kept alive


class TestStreamedBodyKeepAlive:
    """A streamed body whose source still awaits something after its last byte (a spool file's read at its
    end, a client's last chunk framing after an aws-chunked body) is sent once every byte of its
    Content-Length is written: the response that comes then leaves the connection reusable."""

    @staticmethod
    async def answer_after_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            try:
                await read_request(reader, server)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(OK)
            await writer.drain()

    async def test_a_source_that_ends_late_keeps_the_connection(self) -> None:
        ended = asyncio.Event()
        closed: list[bool] = []

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"abc"
                yield b"defg"
                await asyncio.sleep(3)  # e.g. the spool's read of its end: the upstream answers meanwhile
                ended.set()
            finally:
                closed.append(True)

        async with serving(self.answer_after_body) as (server, port), pool() as up:
            resp = await up.send("PUT", f"http://127.0.0.1:{port}/", [("Content-Length", "7")], body(),
                                 explicit_hosts=("127.0.0.1:*",))
            async with resp:
                assert (resp.status, await resp.read()) == (200, b"ok")
            await asyncio.sleep(0.05)
            assert closed == [True] and not ended.is_set()  # its writer stopped, its source closed
            assert await get(up, port, "PUT", b"x") == (200, b"ok")
            assert await get(up, port) == (200, b"ok")
        assert server.connections == 1
        assert server.heads[0].endswith(b"Content-Length: 7\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)

    @pytest.mark.parametrize(("pieces", "why"), [
        ((b"abc", b"defgh"), "longer than the 7 bytes its Content-Length says"),
        ((b"abc",), "ended after 3 of the 7 bytes its Content-Length says"),
    ])
    async def test_a_body_unlike_its_length_fails(self, pieces: tuple[bytes, ...], why: str) -> None:
        """More bytes would be read by the upstream as the next request; fewer would leave it waiting."""
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            await reader.read()

        async with serving(script) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match=why):
                await up.send("PUT", f"http://127.0.0.1:{port}/", [("Content-Length", "7")], stream(*pieces),
                              explicit_hosts=("127.0.0.1:*",))
            assert not up._idle


class TestReasonPhrase:
    @pytest.mark.parametrize("reason", [b"My Reason \xe9\xff", "Caf\u00e9 \u2603".encode(), b""])
    async def test_sent_on_byte_for_byte(self, reason: bytes) -> None:
        """RFC 9112 4: a reason phrase may hold any byte but CR and LF; the one received is the one the client
        gets (it was decoded as latin-1 and encoded as UTF-8: 0xE9 went out as 0xC3 0xA9)."""
        response = b"HTTP/1.1 299 " + reason + b"\r\nContent-Length: 2\r\n\r\nok"
        async with serving(answer_each(response)) as (_, port), pool() as up:
            resp, _ = await head_and_body(up, port)
        assert response_head(resp.status, resp.reason, [], ()) == b"HTTP/1.1 299 %s\r\n\r\n" % (reason or b"Unknown")


class TestTransferCodings:
    """Chunked alone is read; any other transfer coding is refused (a 502 through the handler) and the
    connection closed: it used to be read until the close with its Transfer-Encoding removed, the encoded
    bytes passed on as the body."""

    @pytest.mark.parametrize("lines", [
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: deflate\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
    ])
    async def test_another_coding_is_refused(self, lines: bytes) -> None:
        response = b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n5\r\nRAWGZ\r\n0\r\n\r\n"

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await answer_each(response if server.connections == 1 else OK)(reader, writer, server)

        async with serving(script) as (server, port), pool() as up:
            with pytest.raises(UpstreamError, match="transfer coding sigproxy does not decode: Transfer-Encoding: ") \
                    as caught:
                await get(up, port)
            assert lines.split(b": ", 1)[1].split(b"\r\n")[0].decode() in caught.value.message
            assert await get(up, port) == (200, b"ok")
        assert server.connections == 2  # not reused

    @pytest.mark.parametrize("value", [b"chunked", b"Chunked", b" chunked "])
    async def test_chunked_alone_is_read(self, value: bytes) -> None:
        response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        async with serving(answer_each(response)) as (server, port), pool() as up:
            for _ in range(2):
                assert await get(up, port) == (200, b"hello")
        assert server.connections == 1

    @pytest.mark.parametrize(("method", "status"), [("HEAD", b"200 OK"), ("GET", b"304 Not Modified"),
                                                   ("GET", b"204 No Content")])
    async def test_no_body_no_refusal(self, method: str, status: bytes) -> None:
        """A response to HEAD, a 204 or a 304 has no body whatever its Transfer-Encoding says (RFC 9112 6.3
        item 1)."""
        response = b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: gzip\r\n\r\n"
        async with serving(answer_each(response)) as (_, port), pool() as up:
            resp, body = await head_and_body(up, port, method)
        assert (resp.status, body) == (int(status[:3]), b"")


class TestInterim:
    RESPONSE = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")

    @pytest.mark.parametrize("split", [0, 1])
    async def test_each_is_told_before_the_final_response(self, split: int) -> None:
        """RFC 9110 15.2: the caller is told of every interim response (the handler passes them on); the
        final one is the response, and the connection stays reusable."""

        told: list[tuple[int, str, list[tuple[str, str]], frozenset[str]]] = []
        async with serving(in_pieces(self.RESPONSE, split)) as (server, port), pool() as up:
            for _ in range(2):
                told.clear()
                resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",),
                                     interim=lambda *args: told.append(args))
                async with resp:
                    assert (resp.status, resp.headers, await resp.read()) == (200, [("Content-Length", "5")],
                                                                              b"final")
                assert told == [
                    (100, "Continue", [], frozenset()), (102, "Processing", [], frozenset()),
                    (103, "Early Hints", [("Link", "</a>; rel=preload"), ("Connection", "X-Hop"), ("X-Hop", "1")],
                     frozenset({"x-hop"})),
                ]
        assert server.connections == 1


class TestStalls:
    async def test_an_early_response_whose_body_stalls_times_out(self) -> None:
        """The upstream answers before the upload's end, then sends nothing more and reads nothing: the
        response's body read fails after read_timeout (it waited for ever: the request was not sent whole)."""
        stall = answer_then_stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 3)
        async with serving(stall) as (_, port), pool(read_timeout=0.3) as up:
            resp = await upload(up, port)
            started = time.monotonic()
            async with resp:
                with pytest.raises(UpstreamTimeout, match="timed out"):
                    await resp.read()
            assert time.monotonic() - started < 2

    async def test_an_early_response_read_slowly_does_not_time_out(self) -> None:
        """The same upstream reading none of the upload, with a large early response the caller reads slowly:
        no timeout (the upload's stall is no longer what is waited for once the response is in)."""
        big = b"b" * (1536 * 1024)

        stall = answer_then_stall(b"HTTP/1.1 413 Too Large\r\nContent-Length: %d\r\n\r\n" % len(big) + big, 5)
        async with serving(stall) as (_, port), pool(read_timeout=0.3) as up:
            resp = await upload(up, port)
            got = []
            async with resp:
                async for chunk in resp.iter_any():
                    got.append(chunk)
                    await asyncio.sleep(0.4)  # longer than read_timeout: reading pauses meanwhile
            assert resp.status == 413 and b"".join(got) == big


def pour(prefix: bytes, filler: bytes, *, piece: int = 65536) -> Script:
    """Answer the first request with ``prefix``, then ``filler`` repeated in writes of ``piece`` bytes, a loop
    iteration apart, until the connection is gone: a response that never ends its head (or trailer section)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_head(reader, server)
        chunk = (filler * (piece // len(filler) + 1))[:piece]
        try:
            writer.write(prefix)
            while not writer.is_closing():
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0)
        except ConnectionError:
            return
    return script


class TestResponseBounds:
    """What of a response is not body is bounded (h1wire.MAX_RESPONSE_LINE, MAX_RESPONSE_HEAD): httptools gathers
    an unfinished line without bound, so an upstream that never ends its status line, a field, its head or its
    trailer section grew sigproxy's memory for as long as it kept sending (the read timeout never fires while
    bytes come), and a trickled field cost time quadratic in its length. Each of these hung until the guard
    below before the bound."""

    LINE = "a line over 65536 bytes"
    HEAD = "over 262144 bytes of response head, chunk framing or trailer section"
    CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"

    @pytest.mark.parametrize(("prefix", "filler", "piece", "message"), [
        (b"HTTP/1.1 200 ", b"a", 65536, LINE),  # an endless reason phrase
        (b"HTTP/1.1 200 OK\r\nX-Big: ", b"a", 65536, LINE),  # an endless field value
        (b"HTTP/1.1 200 OK\r\n", b"X-Endless-Name-", 65536, LINE),  # an endless field name
        (b"HTTP/1.1 200 OK\r\nX-Big: ", b"a", 1000, LINE),  # trickled: cut at the line's bound, not the head's
        (b"HTTP/1.1 200 OK\r\n", b"X-Many: v\r\n", 65536, HEAD),  # endless small fields
        (b"", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", 4096, HEAD),  # endless 1xx
    ], ids=["reason", "value", "name", "trickled-value", "many-fields", "interim-heads"])
    async def test_an_endless_head_fails_the_request(self, prefix: bytes, filler: bytes, piece: int,
                                                      message: str) -> None:
        async with asyncio.timeout(30), serving(pour(prefix, filler, piece=piece)) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match=message):
                await head_and_body(up, port)

    @pytest.mark.parametrize(("filler", "piece", "message"), [
        (b"a", 65536, LINE),  # after "0\r\nX-T: ": an endless trailer value
        (b"a", 1000, LINE),  # the same trickled
        (b"X-T: v\r\n", 65536, HEAD),  # endless trailer fields
    ], ids=["trailer-value", "trickled-trailer-value", "trailer-fields"])
    async def test_an_endless_trailer_section_fails_the_body(self, filler: bytes, piece: int, message: str) -> None:
        prefix = self.CHUNKED + b"0\r\n" + (b"X-T: " if filler == b"a" else b"")
        async with asyncio.timeout(30), serving(pour(prefix, filler, piece=piece)) as (_, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            async with resp:
                with pytest.raises(UpstreamError, match=message):
                    await resp.read()

    async def test_an_endless_chunk_extension_fails_the_body(self) -> None:
        async with asyncio.timeout(30), serving(pour(self.CHUNKED + b"5;ext=", b"a")) as (_, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            async with resp:
                with pytest.raises(UpstreamError, match=self.LINE):
                    await resp.read()

    @pytest.mark.parametrize("split", [0, 1000])
    async def test_a_field_at_the_line_bound_passes_and_one_byte_more_fails(self, split: int) -> None:
        at = b"X-Big: " + b"a" * (65536 - 5)  # name and value: 65536 bytes
        ok = b"HTTP/1.1 200 OK\r\n" + at + b"\r\nContent-Length: 2\r\n\r\nok"
        over = b"HTTP/1.1 200 OK\r\n" + at + b"a\r\nContent-Length: 2\r\n\r\nok"
        async with serving(in_pieces(ok, split, times=2)) as (server, port), pool() as up:
            for _ in range(2):
                resp, body = await head_and_body(up, port)
                assert (body, dict(resp.headers)["X-Big"]) == (b"ok", "a" * (65536 - 5))
        assert server.connections == 1
        async with serving(in_pieces(over, split, times=1)) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match=self.LINE):
                await head_and_body(up, port)

    @pytest.mark.parametrize("split", [0, 1000])
    async def test_a_large_head_and_trailer_section_within_the_bounds_pass(self, split: int) -> None:
        """200 KiB of 4 KiB fields, in the head and in the trailer section, whole or in pieces: read, and the
        connection kept for the next request (the count starts again for each)."""
        fields = b"".join(b"X-F%03d: %s\r\n" % (i, b"v" * 4090) for i in range(50))
        response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + fields + b"\r\n"
                    b"5\r\nhello\r\n0\r\n" + fields + b"\r\n")
        async with serving(in_pieces(response, split, times=3)) as (server, port), pool() as up:
            for _ in range(3):
                resp, body = await head_and_body(up, port)
                assert body == b"hello" and len(resp.headers) == 51
        assert server.connections == 1

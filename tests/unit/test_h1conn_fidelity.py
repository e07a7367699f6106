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
from tests.unit.test_h1conn import OK, Script, Server, get, pool, read_head, serving

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

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536

        async with serving(script) as (server, port), pool(read_timeout=0.3) as up:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match="took none of the request body"):
                await up.send("PUT", f"http://127.0.0.1:{port}/", [("Content-Length", str(2**40))], endless(),
                              explicit_hosts=("127.0.0.1:*",))
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
        response = self.CHUNKED

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            for _ in range(2):
                await read_head(reader, server)
                for i in range(0, len(response), split or len(response)):
                    writer.write(response[i:i + (split or len(response))])
                    await writer.drain()
            await reader.read()

        async with serving(script) as (server, port), pool() as up:
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

"""The client listeners' HTTP/1.1 server (sigproxy/intake/h1server.py, sigproxy/http1.py) against real sockets
on 127.0.0.1: keep-alive and pipelining (RFC 9112 9.3), HTTP/1.0, body framing both ways (Content-Length,
chunked, close-delimited; none for HEAD), the head limits and timeouts, flow control, an answer given before the
body was read, a handler that fails, and the drain. The whole proxy on this server is proven by the integration
suite (moto, Ceph RGW, the AWS CLI, curl) and the intake fuzzer."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from sigproxy.config import ProxyConfig
from sigproxy.errors import BadRequest, SigproxyError
from sigproxy.handler import error_response
from sigproxy.http1 import ClientRequest, Response, StreamResponse
from sigproxy.intake.clientserver import ClientServer

Entry = Callable[[ClientRequest], Awaitable[Response | StreamResponse]]


async def echo(request: ClientRequest) -> Response:
    """Answers with the method, target, and the body it read."""
    body = b""
    while piece := await request.body.next_piece():
        body += piece
    text = f"{request.method} {request.raw_path} {len(body)}".encode()
    return Response(200, None, [("X-Body", body[:40].decode(errors="replace"))], text)


@asynccontextmanager
async def serving(entry: Entry = echo, **limits: float) -> AsyncIterator[tuple[ClientServer, int]]:
    proxy = dataclasses.replace(ProxyConfig(), **limits)
    server = ClientServer(entry, proxy=lambda: proxy)
    loop = asyncio.get_running_loop()

    def made() -> asyncio.Protocol:
        protocol = server()
        protocol.adopt(None)
        return protocol

    listening = await loop.create_server(made, "127.0.0.1", 0)
    try:
        yield server, listening.sockets[0].getsockname()[1]
    finally:
        listening.close()
        await server.shutdown(0.5)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response's head and body (Content-Length, chunked, or up to EOF)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        if head.startswith(b"HEAD") or b" 304 " in head[:13]:
            return head, b""
        return head, await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    return head, await reader.read()


async def exchange(port: int, raw: bytes, responses: int = 1) -> list[tuple[bytes, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    try:
        return [await read_response(reader) for _ in range(responses)]
    finally:
        writer.close()


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async with serving() as (_, port):
        raw = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
               b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
               b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        got = await exchange(port, raw, 3)
    assert [body for _, body in got] == [b"GET /a 0", b"PUT /b 5", b"POST /c 5"]
    assert all(b"connection: close" not in head.lower() for head, _ in got)
    assert b"X-Body: abcde" in got[2][0]


async def test_a_higher_minor_version_is_served_as_http11() -> None:
    """RFC 9112 2.3: HTTP/1.2 (or 1.9) is processed as 1.1: kept alive, answered in 1.1 (llhttp alone refuses
    versions it does not know before the head is read)."""
    async with serving() as (_, port):
        got = await exchange(port, b"GET /a HTTP/1.2\r\nHost: h\r\n\r\nGET /b HTTP/1.9\r\nHost: h\r\n\r\n", 2)
    assert [body for _, body in got] == [b"GET /a 0", b"GET /b 0"]
    assert all(head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower() for head, _ in got)


async def test_http10_closes_unless_kept_alive() -> None:
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.0\r\n\r\n")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head and body == b"GET /a 0"
        assert await reader.read() == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _ = await read_response(reader)
        assert b"Connection: keep-alive" in head
        writer.write(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_response(reader))[1] == b"GET /b 0"
        writer.close()


def streamer(pieces: list[bytes], headers: list[tuple[str, str]] | None = None) -> Entry:
    async def entry(request: ClientRequest) -> StreamResponse:
        response = StreamResponse(200, "OK", headers or [])
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response
    return entry


async def test_streamed_response_framing() -> None:
    async with serving(streamer([b"ab", b"", b"cde"])) as (_, port):
        [(head, body)] = await exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head and body == b"abcde"
        [(head, body)] = await exchange(port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"Connection: close" in head and b"chunked" not in head and body == b"abcde"  # close-delimited
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"chunked" not in head  # a HEAD answer has no body, so no framing either
        assert (await read_response(reader))[1] == b"abcde"
        writer.close()
    async with serving(streamer([b"abc"], [("Content-Length", "3")])) as (_, port):
        [(head, body)] = await exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"chunked" not in head and body == b"abc"


@pytest.mark.parametrize(("raw", "message"), [
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", b"too long (max_request_line = 256"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 300 + b"\r\n\r\n", b"too long"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-" + b"n" * 150 + b": " + b"v" * 150 + b"\r\n\r\n", b"too long"),  # together
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(9)) + b"\r\n", b"max_headers = 8"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"malformed request head"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"malformed"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", b"malformed"),
    (b"GET / HTTP/2.0\r\n\r\n", b"HTTP/2.0 is not spoken here"),
    (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", b"HTTP/3.0 is not spoken here"),
    (b"GET / HTTP/0.5\r\nHost: h\r\n\r\n", b"HTTP/0.5 is not spoken here"),
    (b"GET / HTTP/1.2\r\n\r\n", b"needs exactly one Host header"),  # read as 1.1: its rules too
])
async def test_bad_heads_get_400_and_close(raw: bytes, message: bytes) -> None:
    async with serving(max_request_line=256, max_header_size=256, max_headers=8) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, head
        assert message in body, body
        assert raw[:20] not in body  # the bytes are not echoed
        assert await reader.read() == b""
        writer.close()


async def test_a_head_trickled_past_the_limits_is_refused() -> None:
    async with serving(max_request_line=256, max_header_size=256, max_headers=8) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: ")
        for _ in range(100):  # one value, never finished, in small writes
            writer.write(b"a" * 100)
            await writer.drain()
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 400 ")
        writer.close()


async def test_a_trickled_value_is_cut_once_it_cannot_fit_a_line() -> None:
    """A header value sent in small pieces is refused once it is past what one header line may hold (the
    pieces before: twice max_header_size), not only at the whole head's budget (here 2340 bytes): httptools
    joins an unfinished value piece by piece, in time quadratic in its length."""
    async with serving(max_request_line=256, max_header_size=256, max_headers=8) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Ok: fine\r\nX-A: ")
        for _ in range(9):  # 900 bytes of one value: well under the head's budget
            writer.write(b"a" * 100)
            await writer.drain()
            await asyncio.sleep(0.01)  # one read each
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 400 ") and b"too long" in body
        writer.close()


async def test_an_unfinished_head_over_the_limits_in_one_read_is_refused_at_once() -> None:
    # The whole of it in one write, so the server reads it at once: refused then, not at header_timeout.
    async with serving(max_request_line=256, max_header_size=256, max_headers=8, header_timeout=30) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 10_000)
        head, _ = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 400 ")
        writer.close()


async def test_header_timeout_cuts_a_slow_head_and_idle_timeout_an_idle_connection() -> None:
    async with serving(header_timeout=0.3, idle_timeout=0.6) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        for part in (b"GET / HTTP/1.1\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"):
            writer.write(part)  # each well within the timeout, the whole head not
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert 0.25 < time.monotonic() - started < 1.5
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await read_response(reader)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert 0.5 < time.monotonic() - started < 2.5
        writer.close()


async def test_answer_before_the_body_closes_the_connection() -> None:
    async def refuse(request: ClientRequest) -> Response:
        return Response(403, None, [], b"no")

    async with serving(refuse) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 403") and b"Connection: close" in head and body == b"no"
        assert await asyncio.wait_for(reader.read(), 3) == b""  # our side is shut at once
        writer.close()


async def refuse_or_echo(request: ClientRequest) -> Response:
    """``/refuse``: 403 at once, not a byte of the body read (an early answer); anything else: :func:`echo`."""
    if request.raw_path == "/refuse":
        return Response(403, None, [], b"no")
    return await echo(request)


async def test_an_early_answer_reads_a_small_rest_and_keeps_the_connection() -> None:
    """RFC 9112 9.6: a server that answers before the whole request came may keep the connection if it reads the
    rest. A rest within the head limits is read and dropped after the answer, and the next request is served on
    the same connection; the answer said nothing of closing. Before, it was ``Connection: close``, and closed."""
    async with serving(refuse_or_echo) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123")
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 403") and b"connection: close" not in head.lower() and body == b"no"
        writer.write(b"456789PUT /next HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")  # in one read
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert body == b"PUT /next 5" and b"X-Body: hello" in head
        writer.close()


async def test_a_rest_that_does_not_come_closes_after_body_timeout() -> None:
    """The rest of the body is awaited for ``body_timeout``, no longer: then the connection closes."""
    async with serving(refuse_or_echo, body_timeout=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
        await asyncio.wait_for(read_response(reader), 5)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.4 < time.monotonic() - started < 2.5
        writer.close()


@pytest.mark.parametrize("head", [
    b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n",  # over the head limits
    b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",  # held back: no 100
    b"PUT /refuse HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # a rest of unknown size
])
async def test_an_early_answer_closes_when_the_rest_is_large_or_unknown(head: bytes) -> None:
    """As before: a rest over the head limits, a body the client holds back (``Expect: 100-continue``, no
    ``100`` sent), a chunked body the handler did not read to the end of its content: ``Connection: close``."""
    async with serving(refuse_or_echo) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer, _ = await asyncio.wait_for(read_response(reader), 5)
        assert answer.startswith(b"HTTP/1.1 403") and b"Connection: close" in answer
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


def content_then(after: bytes) -> Entry:
    """Reads a chunked body's content up to ``hello``, says its content ended (as an aws-chunked decoder does at
    its final chunk), and answers before the HTTP framing that ends it."""
    async def entry(request: ClientRequest) -> Response:
        if request.method == "GET":
            return await echo(request)
        got = b""
        while got != b"hello":
            got += await request.body.next_piece()
        assert request.protocol is not None
        request.protocol.content_ended(request)
        return Response(200, None, [], after)

    return entry


async def test_a_chunked_body_whose_content_ended_keeps_the_connection() -> None:
    """The last chunk and the trailer section come after the answer: read and dropped, then the next request
    (pipelined right behind them) is answered on the same connection."""
    async with serving(content_then(b"stored")) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert b"connection: close" not in head.lower() and body == b"stored"
        writer.write(b"0\r\nX-Checksum: abc\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"PUT /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert [(await asyncio.wait_for(read_response(reader), 5))[1] for _ in range(2)] == [b"GET /a 0", b"stored"]
        writer.close()


async def test_body_after_the_content_ended_closes() -> None:
    """After the content ended only framing may come (its trailer section bounded by the head limits, as ever):
    a chunk of body closes the connection, and no next request is read."""
    async with serving(content_then(b"stored")) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.wait_for(read_response(reader), 5)
        writer.write(b"3\r\nabc\r\n0\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_large_body_is_flow_controlled() -> None:
    seen: list[int] = []

    async def slow(request: ClientRequest) -> Response:
        total = 0
        while piece := await request.body.next_piece():
            total += len(piece)
            seen.append(request.body._size)
            await asyncio.sleep(0.001)
        return Response(200, None, [], str(total).encode())

    size = 8 * 1024 * 1024
    async with serving(slow) as (_, port):
        head = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
        [(_, body)] = await exchange(port, head + b"x" * size)
    assert body == str(size).encode()
    assert max(seen) < 2 * 1024 * 1024  # reading paused: not the whole body buffered


async def test_client_gone_mid_body_fails_the_read() -> None:
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def reader_entry(request: ClientRequest) -> Response:
        try:
            while await request.body.next_piece():
                pass
        except ConnectionError as exc:
            failed.set_result(exc)
            raise
        return Response(200)

    async with serving(reader_entry) as (_, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        assert isinstance(await asyncio.wait_for(failed, 3), ConnectionResetError)


async def test_failing_handler_gets_500_and_close() -> None:
    async def broken(request: ClientRequest) -> Response:
        raise RuntimeError("boom")

    async with serving(broken) as (_, port):
        [(head, body)] = await exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and b"Connection: close" in head and b"boom" not in body


@pytest.mark.parametrize("cut", [False, True])
async def test_no_whole_answer_follows_an_answer_begun(cut: bool) -> None:
    """A handler whose streamed answer broke off and which then returns a whole one (an error answer, with or
    without cutting the connection itself, as sigproxy's handler does for a bug): nothing of the second is
    written; the connection is cut after the part that went out. Before, the second answer's head and body
    followed the first one's bytes on the wire."""
    async def breaks_off(request: ClientRequest) -> Response:
        response = StreamResponse(200, None, [("Content-Length", "100")])
        await response.prepare(request)
        await response.write(b"partial")
        if cut:
            request.abort()
        return error_response(SigproxyError("a bug"), "-", close=True)

    async with serving(breaks_off) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\npartial"), out


async def test_drain_closes_idle_at_once_and_lets_the_busy_finish() -> None:
    release = asyncio.Event()

    async def waits(request: ClientRequest) -> Response:
        if request.raw_path == "/slow":
            await release.wait()
        return Response(200, None, [], b"done")

    async with serving(waits) as (server, port):
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        await read_response(idle_reader)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.1)
        server.pre_shutdown()
        assert await asyncio.wait_for(idle_reader.read(), 2) == b""
        asyncio.get_running_loop().call_later(0.2, release.set)
        await server.shutdown(5)
        head, body = await read_response(busy_reader)
        assert body == b"done" and b"Connection: close" in head
        idle_writer.close()
        busy_writer.close()


async def test_one_task_serves_a_connection_and_ends_with_it() -> None:
    """A keep-alive connection's requests are answered by one task (not one each: issue 15), which is not
    "answering" between them (``task`` None: drain and the idle timer rely on it) and ends when the client
    closes, when the drain closes the connection idle, or after the last answer of a draining connection."""
    tasks: list[asyncio.Task[object] | None] = []
    requests: list[ClientRequest] = []

    async def records(request: ClientRequest) -> Response:
        tasks.append(asyncio.current_task())
        requests.append(request)
        return Response(200, None, [], b"ok")

    async with serving(records) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert (await read_response(reader))[1] == b"ok"
            await asyncio.sleep(0.02)
            [protocol] = server._connections
            assert protocol.task is None  # idle between requests
            # ... and holding on to no request: only the list and getrefcount's argument refer to the last one
            # (counted outside the assert, whose rewriting by pytest keeps a reference of its own)
            holders = sys.getrefcount(requests[-1])
            assert holders == 2
        first = tasks[0]
        assert len(tasks) == 3 and first is not None and tasks.count(first) == 3
        writer.close()
        await asyncio.wait_for(asyncio.shield(first), 2)  # ends with the connection

        # Closed idle by the drain: its task ends too, and shutdown does not wait out the grace for it.
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await read_response(idle_reader)
        await asyncio.sleep(0.02)
        idle_task = tasks[-1]
        assert idle_task is not None and not idle_task.done()
        started = time.monotonic()
        await server.shutdown(5)
        assert time.monotonic() - started < 1
        await asyncio.wait_for(asyncio.shield(idle_task), 2)
        assert await asyncio.wait_for(idle_reader.read(), 2) == b""
        idle_writer.close()


async def test_shutdown_grace_cancels_what_is_left() -> None:
    async def forever(request: ClientRequest) -> Response:
        await asyncio.sleep(3600)
        raise AssertionError

    async with serving(forever) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await server.shutdown(0.3)
        assert time.monotonic() - started < 2
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()


async def test_head_answers_carry_their_length_but_no_body() -> None:
    """An answer of sigproxy's own to HEAD says how long it would be (the intake fuzzer found it missing); one
    without a body of its own (an upstream's HEAD answer) gets no made-up length."""
    async def answer(request: ClientRequest) -> Response:
        return Response(403, None, [], b"refused") if request.raw_path == "/own" else Response(200)

    async with serving(answer) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /own HTTP/1.1\r\nHost: h\r\n\r\nHEAD /up HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"GET /own HTTP/1.1\r\nHost: h\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\n")
        second = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 7" in first and second.startswith(b"HTTP/1.1 200")
        assert b"content-length" not in second.lower()
        assert (await read_response(reader))[1] == b"refused"  # nothing was sent between the heads
        writer.close()


async def test_bytes_before_connection_made_are_served() -> None:
    """start_tls can hand a tunnel's first request to the protocol before it returns, so before the
    connection_made that sigproxy calls after it: those bytes are kept and served (under load, half of the
    intercepted transfers got no answer and were closed at idle_timeout)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    proxy = ProxyConfig()
    server = ClientServer(echo, proxy=lambda: proxy)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    protocol = server()
    protocol.adopt(None)
    transport.set_protocol(protocol)
    protocol.data_received(b"GET /early HTTP/1.1\r\nHost: h\r\n\r\n")
    protocol.connection_made(transport)
    reader, writer = await asyncio.open_connection(sock=theirs)
    assert (await asyncio.wait_for(read_response(reader), 5))[1] == b"GET /early 0"
    writer.close()
    await server.shutdown(0.5)


async def test_an_answer_that_cannot_be_written_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    """A header value with a line break can't be written (it would split the head): logged, and the connection
    is closed rather than left waiting for an answer that will never come."""
    async def bad(request: ClientRequest) -> Response:
        return Response(200, None, [("X-Bad", "a\r\nInjected: 1")], b"")

    async with serving(bad) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert "unexpected error writing an answer" in caplog.text


@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"GET / HTTP/1.1\r\n\r\n", b"400", b"exactly one Host header"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400", b"exactly one Host header"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", b"400", b"must end in chunked"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", b"400", b""),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", b"501", b"besides chunked"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501",
     b"besides chunked"),
])
async def test_heads_refused_before_any_handler_sees_them(raw: bytes, status: bytes, message: bytes) -> None:
    """RFC 9112 3.2 (Host), 6.1 and 6.3 (Transfer-Encoding): refused from the head alone, so nothing is
    forwarded (a Transfer-Encoding llhttp refuses only after the head used to reach the handler)."""
    seen: list[str] = []

    async def entry(request: ClientRequest) -> Response:
        seen.append(request.raw_path)
        return await echo(request)

    async with serving(entry) as (_, port):
        [(head, body)] = await exchange(port, raw)
    assert head[9:12] == status and message in body, (head, body)
    assert seen == []


@pytest.mark.parametrize(("raw", "message"), [
    (b"GET / HTTP/1.1\r\n\r\n", b"exactly one Host header (RFC 9112 3.2): send one"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"sigproxy speaks HTTP/1.1: let the client use HTTP/1.1"),
    # A TLS 1.2/1.3 ClientHello record's start: a client given https:// for a plain port.
    (bytes.fromhex("16030100c4010000c00303") + bytes(40), b"use http:// for the proxy URL"),
    (b"\x00\x01\x02 hello\r\n\r\n", b"the first bytes are not a request line"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", b"the first bytes are not a request line"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     b"malformed request head: Duplicate Content-Length"),
])
async def test_what_is_not_http11_is_named_with_what_to_do(raw: bytes, message: bytes) -> None:
    """Each refusal names the problem and the fix, never the parser's class name (issue 16)."""
    seen: list[str] = []

    async def entry(request: ClientRequest) -> Response:
        seen.append(request.raw_path)
        return await echo(request)

    async with serving(entry) as (_, port):
        [(head, body)] = await exchange(port, raw)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert message in body, body
    assert b"HttpParser" not in body and b"BadHttpMessage" not in body
    assert seen == []


async def test_malformed_chunk_framing_is_a_bad_request() -> None:
    """A head that was fine and a body whose chunked framing is not: the body's reader raises BadRequest (a 400
    through the handler), not a disconnect (which the handler answered 499)."""
    raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def entry(request: ClientRequest) -> Response:
        try:
            while await request.body.next_piece():
                pass
        except Exception as exc:
            raised.set_result(exc)
            return error_response(exc if isinstance(exc, SigproxyError) else SigproxyError("?"), "-")
        return Response(200)

    async with serving(entry) as (_, port):
        [(head, _)] = await exchange(port, b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           b"5\r\nhelloXX")
    assert isinstance(await raised, BadRequest) and head.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("method", [b"GET", b"DELETE", b"OPTIONS"])
async def test_request_line_limit_counts_the_whole_line(method: bytes) -> None:
    async with serving(max_request_line=256) as (_, port):
        for extra, ok in ((0, True), (1, False)):
            path = b"/" + b"a" * (256 - len(method) - len(b"  HTTP/1.1") - 1 + extra)
            line = method + b" " + path + b" HTTP/1.1"
            assert len(line) == 256 + extra
            [(head, _)] = await exchange(port, line + b"\r\nHost: h\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") is ok, (len(line), head)


async def test_half_close_after_pipelined_requests_answers_them_all() -> None:
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3)))
        writer.write_eof()
        got = [await read_response(reader) for _ in range(3)]
        assert [body for _, body in got] == [b"GET /0 0", b"GET /1 0", b"GET /2 0"]
        assert await asyncio.wait_for(reader.read(), 3) == b""  # then closed (the last head may predate the FIN)
        writer.close()


async def test_bad_pipelined_head_is_answered_after_the_good_one() -> None:
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost h\r\n\r\n")
        first, second = await read_response(reader), await read_response(reader)
        assert first[1] == b"GET /a 0" and second[0].startswith(b"HTTP/1.1 400")
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()


async def test_a_body_before_a_pipelined_head_does_not_count_as_head() -> None:
    """With small limits, an 8000-byte body and the start of the next head in one read: the head is not
    refused as over the limits (the whole read used to be counted as head)."""
    async with serving(max_request_line=256, max_header_size=256, max_headers=8) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 8000\r\n\r\n" + b"a" * 8000
                     + b"GET /g HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"Host: h\r\n\r\n")
        assert (await read_response(reader))[1] == b"PUT /p 8000"
        assert (await read_response(reader))[1] == b"GET /g 0"
        writer.close()


async def test_pipelining_without_reading_is_bounded() -> None:
    """A client that pipelines and never reads: once the kernel's buffers are full of answers, the server
    stops reading instead of queueing requests without bound (one worker grew to 4.3 GB). The kernel's buffers
    (tens of MB on loopback, auto-tuned) decide how much the client gets to send; the server's queue is what
    must stay bounded, by one read's worth of requests."""
    async def big(request: ClientRequest) -> Response:
        return Response(200, None, [], b"x" * 65536)

    async with serving(big) as (server, port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        request = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n"
        sent = most = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while loop.time() < deadline and sent < 200_000_000:
            try:
                sent += sock.send(request * 100)
            except BlockingIOError:
                await asyncio.sleep(0.01)
            most = max([most, *(len(p._queue) for p in server._connections)])
        assert sent < 100_000_000  # the client was stopped by backpressure
        assert 16 <= most < 2_000  # the queue filled to its bound and no further than one read's worth
        sock.close()


async def test_a_client_that_stops_reading_is_cut_off_at_idle_timeout() -> None:
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def endless(request: ClientRequest) -> StreamResponse:
        response = StreamResponse(200, "OK")
        await response.prepare(request)
        try:
            while True:
                await response.write(b"x" * 65536)
        except ConnectionError as exc:
            failed.set_result(exc)
            raise

    async with serving(endless, idle_timeout=0.5) as (_, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await loop.sock_recv(sock, 100)
        assert isinstance(await asyncio.wait_for(failed, 5), ConnectionResetError)
        sock.close()


async def test_expect_100_continue_is_ignored_for_http10() -> None:
    async def entry(request: ClientRequest) -> Response:
        request.write_continue()
        return await echo(request)

    async with serving(entry) as (_, port):
        [(head, body)] = await exchange(port, b"PUT / HTTP/1.0\r\nContent-Length: 5\r\n"
                                              b"Expect: 100-continue\r\n\r\nhello")
        assert head.startswith(b"HTTP/1.1 200") and body == b"PUT / 5"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert (await read_response(reader))[1] == b"PUT / 5"
        writer.close()


async def reading_entry(request: ClientRequest) -> Response:
    """Reads the body; answers its size and the request's header names, or the error that ended the body."""
    size = 0
    try:
        while piece := await request.body.next_piece():
            size += len(piece)
    except SigproxyError as exc:
        return error_response(exc, "-")
    return Response(200, None, [("X-Names", ",".join(request.headers))], b"%d" % size)


async def test_a_chunked_body_s_trailer_fields_are_dropped() -> None:
    """RFC 9110 6.5.1: trailer fields never join the header section -- neither this request's nor the next
    one's -- and are not header lines either: more of them than max_headers is no refusal (their bytes are
    bounded, see the next test)."""
    trailer = b"Host: evil\r\nX-Trailer: t\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(20))
    raw = (b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + trailer + b"\r\n"
           b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    async with serving(reading_entry, max_headers=8) as (_, port):
        (head1, body1), (head2, body2) = await exchange(port, raw, 2)
    assert head1.startswith(b"HTTP/1.1 200") and b"X-Names: Host,Transfer-Encoding\r\n" in head1 and body1 == b"3"
    assert head2.startswith(b"HTTP/1.1 200") and b"X-Names: Host\r\n" in head2 and body2 == b"0"


@pytest.mark.parametrize("endless", [b"0\r\nX-Trailer: ", b"0\r\n", b"1;ext="], ids=["value", "fields", "extension"])
async def test_an_endless_trailer_section_or_chunk_line_is_refused(endless: bytes) -> None:
    """httptools gathers a trailer field whole before handing it over: the trailer section (and a chunk line's
    extensions) are bounded by the head limits, not read until body_timeout."""
    filler = b"a" * 1000 if endless != b"0\r\n" else b"X-A: b\r\n" * 125
    async with serving(reading_entry, max_header_size=256, max_headers=8) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + endless)
        for _ in range(20):
            writer.write(filler)
            await asyncio.sleep(0.01)
        head, body = await asyncio.wait_for(read_response(reader), 2)
        writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"chunk framing or trailer section is over the head limits" in body


HINTS = [("Link", "</a>; rel=preload"), ("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5")]


@pytest.mark.parametrize("fails", [False, True])
async def test_interim_responses_go_to_http11_clients_before_the_answer(fails: bool) -> None:
    """An upstream's 103 goes on without its hop-by-hop fields (RFC 9110 15.2), not an upstream's 100 (sigproxy
    answers Expect itself), and nothing to an HTTP/1.0 client. A 1xx is no part of the answer: a handler that
    fails after one (or after its own 100 Continue) is still answered 500, the connection not just cut."""
    async def entry(request: ClientRequest) -> Response:
        request.write_continue()
        request.forward_interim(100, "Continue", [], frozenset())
        request.forward_interim(103, "Early Hints", HINTS, frozenset({"x-hop"}))
        if fails:
            raise RuntimeError("boom")
        return Response(200, None, [], b"final")

    async with serving(entry) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 500" if fails else b"HTTP/1.1 200"), head
        assert fails or body == b"final"
        writer.close()
        [(head, body)] = await exchange(port, b"GET / HTTP/1.0\r\n\r\n")  # the first head is the answer's
        assert head.startswith(b"HTTP/1.1 500" if fails else b"HTTP/1.1 200"), head
        assert fails or body == b"final"


async def test_interim_responses_to_a_client_that_reads_nothing_are_dropped() -> None:
    """Advice an upstream sends on and on is not queued without bound for a client that takes none of it."""
    buffered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def entry(request: ClientRequest) -> Response:
        for _ in range(1000):
            request.forward_interim(103, "Early Hints", [("Link", "x" * 60_000)], frozenset())
            await asyncio.sleep(0)
        assert request.protocol is not None and request.protocol.transport is not None
        buffered.set_result(request.protocol.transport.get_write_buffer_size())
        return Response(200)

    async with serving(entry) as (_, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await asyncio.wait_for(buffered, 5) < 1_000_000  # 60 MB were sent at it
        writer.close()

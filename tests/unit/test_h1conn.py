"""The upstream HTTP/1.1 client (sigproxy/h1conn.py) and its pool (sigproxy/forwarding.py), against real sockets
on 127.0.0.1 whose servers write scripted bytes: every response framing of RFC 9112 6.3, keep-alive and when a
connection must not be reused, the retry of an idempotent request on a kept-alive connection found closed,
the read timeout, flow control, streamed uploads (and an upstream that answers before their end), the pool's
limit and keep-alive expiry, and TLS verification. End-to-end signing through this client is proven by the
integration suite (moto, Ceph RGW, the AWS CLI)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from sigproxy import forwarding
from sigproxy.errors import AddressNotAllowed, UpstreamError, UpstreamTimeout
from sigproxy.forwarding import KEEPALIVE, Upstream
from sigproxy.h1conn import _HIGH_WATER
from sigproxy.h1wire import request_head

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)


async def read_head(reader: asyncio.StreamReader, server: Server) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    server.heads.append(head)
    return head


def answer_each(*responses: bytes, close: bool = False) -> Script:
    """Read request heads one after another on a connection; answer the n-th with responses[n] (the last repeats)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        n = 0
        while True:
            try:
                await read_head(reader, server)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(responses[min(n, len(responses) - 1)])
            await writer.drain()
            n += 1
            if close:
                return
    return script


def answer_then_stall(response: bytes, seconds: float) -> Script:
    """Read a request head, send ``response`` (``b""``: none), then neither read nor send for ``seconds``."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_head(reader, server)
        writer.write(response)
        await writer.drain()
        await asyncio.sleep(seconds)
    return script


def in_pieces(response: bytes, split: int, times: int = 2) -> Script:
    """Answer ``times`` requests on a connection with ``response``, written whole (``split`` 0) or in pieces
    of ``split`` bytes."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        for _ in range(times):
            await read_head(reader, server)
            for i in range(0, len(response), split or len(response)):
                writer.write(response[i:i + (split or len(response))])
                await writer.drain()
        await reader.read()
    return script


@asynccontextmanager
async def serving(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[Server, int]]:
    state = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await script(reader, writer, state)
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield state, srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


def pool(**kw: float) -> Upstream:
    return Upstream(connect_timeout=kw.get("connect_timeout", 2), read_timeout=kw.get("read_timeout", 5),
                    limit=int(kw.get("limit", 10)), keepalive=kw.get("keepalive", KEEPALIVE))


async def get(up: Upstream, port: int, method: str = "GET", body: bytes | AsyncIterator[bytes] | None = None,
              scheme: str = "http", verify_tls: bool = True) -> tuple[int, bytes]:
    resp = await up.send(method, f"{scheme}://127.0.0.1:{port}/p?q=1", [("Host", f"127.0.0.1:{port}")], body,
                         explicit_hosts=("127.0.0.1:*",), connection="t", verify_tls=verify_tls)
    async with resp:
        return resp.status, await resp.read()


class TestRequestHead:
    def test_as_given_with_host_and_length_added_only_when_missing(self) -> None:
        head, chunked = request_head("PUT", "/b/k?x=%2F", "h:1", [("X-Amz-Date", "d"), ("x-lower", "v")], b"abc")
        assert head == (b"PUT /b/k?x=%2F HTTP/1.1\r\nX-Amz-Date: d\r\nx-lower: v\r\nHost: h:1\r\n"
                        b"Content-Length: 3\r\n\r\n")
        assert not chunked
        head, _ = request_head("GET", "/", "h", [("Host", "given"), ("Content-Length", "0")], None)
        assert head == b"GET / HTTP/1.1\r\nHost: given\r\nContent-Length: 0\r\n\r\n"

    @pytest.mark.parametrize(("method", "length"), [("GET", False), ("HEAD", False), ("OPTIONS", False),
                                                   ("DELETE", True), ("PUT", True), ("POST", True)])
    def test_no_body_length_zero_except_on_safe_methods(self, method: str, length: bool) -> None:
        head, _ = request_head(method, "/", "h", [], None)
        assert (b"Content-Length: 0\r\n" in head) is length

    def test_stream_without_length_goes_chunked(self) -> None:
        async def gen() -> AsyncIterator[bytes]:
            yield b"x"
        body = gen()
        head, chunked = request_head("PUT", "/", "h", [], body)
        assert chunked and head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
        head, chunked = request_head("PUT", "/", "h", [("Content-Length", "1")], body)
        assert not chunked and b"Transfer-Encoding" not in head

    @pytest.mark.parametrize("bad", [("X-A", "v\r\nX-Injected: 1"), ("X-A", "v\n"), ("X-A\r", "v"), ("X", "\r")])
    def test_cr_or_lf_refused(self, bad: tuple[str, str]) -> None:
        with pytest.raises(ValueError, match="CR or LF"):
            request_head("GET", "/", "h", [bad], None)

    @pytest.mark.parametrize("url", ["ftp://h/x?X-Amz-Security-Token=SECRET", "h/x?X-Amz-Security-Token=SECRET"])
    async def test_unsendable_url_refused_without_echoing_it(self, url: str) -> None:
        async with pool() as up:
            with pytest.raises(UpstreamError) as caught:
                await up.send("GET", url, [], None)
        assert "SECRET" not in str(caught.value)

    async def test_injection_never_reaches_the_upstream(self) -> None:
        async with serving(answer_each(OK)) as (server, port), pool() as up:
            with pytest.raises(UpstreamError, match="CR or LF"):
                await up.send("GET", f"http://127.0.0.1:{port}/", [("X-A", "v\r\nX-B: 1")], None,
                              explicit_hosts=("127.0.0.1:*",))
        assert server.connections == 0


class TestFraming:
    @pytest.mark.parametrize(("response", "body"), [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-T: 1\r\n\r\n",
         b"hello"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: x\r\n\r\n", b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
         b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc", b"c"),
    ])
    @pytest.mark.parametrize("split", [0, 1, 7])
    async def test_framings_whole_or_split_and_kept_alive(self, response: bytes, body: bytes, split: int) -> None:
        """Each response, sent whole or in pieces of 1 or 7 bytes, gives its body and leaves the connection
        reusable: the second request goes over the same one."""
        async with serving(in_pieces(response, split)) as (server, port), pool() as up:
            for _ in range(2):
                status, data = await get(up, port)
                assert data == body
            assert status == int(response.rsplit(b"HTTP/1.1 ", 1)[1][:3])
        assert server.connections == 1

    async def test_head_response_has_no_body_despite_its_length(self) -> None:
        async with serving(answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", OK)) as (server, port):
            async with pool() as up:
                resp = await up.send("HEAD", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
                async with resp:
                    assert (resp.status, resp.content_length, await resp.read()) == (200, 1234, b"")
                assert await get(up, port) == (200, b"ok")  # the next response is read as its own
        assert server.connections == 1

    async def test_close_delimited_body_ends_at_close(self) -> None:
        """No length (RFC 9112 6.3 item 8). (A transfer coding other than chunked, item 4, is refused:
        test_h1conn_fidelity.py.)"""
        head = b"HTTP/1.1 200 OK\r\n\r\n"
        big = b"z" * 300_000
        async with serving(answer_each(head + big, close=True)) as (server, port), pool() as up:
            assert await get(up, port) == (200, big)
            assert await get(up, port) == (200, big)
        assert server.connections == 2  # never reused: its end was its close

    @pytest.mark.parametrize(("response", "why"), [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the end of the body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "before the end of the body"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "before a response"),
        (b"", "before a response"),
    ])
    async def test_cut_short_is_an_error(self, response: bytes, why: str) -> None:
        async with serving(answer_each(response, close=True)) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match=why):
                await get(up, port)

    async def test_reset_in_a_close_delimited_body_is_an_error(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            writer.write(b"HTTP/1.1 200 OK\r\n\r\npartial")
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST (linger 0): not the body's end

        async with serving(script) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match="before the end of the body"):
                await get(up, port)

    @pytest.mark.parametrize("response", [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ])
    async def test_malformed_or_unframeable_is_an_error(self, response: bytes) -> None:
        async with serving(answer_each(response)) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match=r"malformed HTTP|switched protocols|closed the connection"):
                await get(up, port)

    async def test_headers_and_reason_as_received(self) -> None:
        response = (b"HTTP/1.1 404 Not Here\r\nX-Amz-Request-Id: r\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n"
                    b"Content-Length: 0\r\n\r\n")
        async with serving(answer_each(response)) as (_, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            async with resp:
                assert (resp.status, resp.reason) == (404, "Not Here")
                assert resp.headers == [("X-Amz-Request-Id", "r"), ("Set-Cookie", "a"), ("Set-Cookie", "b"),
                                        ("Content-Length", "0")]


class TestKeepAlive:
    @pytest.mark.parametrize("response", [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        OK + b"stray",  # more than the response: the framing can't be trusted
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + OK,  # two responses to one request
    ])
    async def test_not_reused(self, response: bytes) -> None:
        async with serving(answer_each(response)) as (server, port), pool() as up:
            for _ in range(2):
                assert (await get(up, port))[0] == 200
        assert server.connections == 2

    async def test_body_not_read_closes_the_connection(self) -> None:
        big = b"a" * (8 * 1024 * 1024)  # more than can be buffered before reading pauses
        async with serving(answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)) as (
                server, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            async with resp:
                pass
            assert await get(up, port) == (200, big)
        assert server.connections == 2

    async def test_idle_connection_closed_by_upstream_is_retried_for_idempotent_requests(self) -> None:
        """The upstream closes a kept-alive connection just as the next request goes out (its close is seen only
        once the request is written): a GET goes again on a new connection; a POST is not repeated."""
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            writer.write(OK)  # keep-alive by the book, then gone when the next request comes
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.abort()

        async with serving(script) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            assert await get(up, port) == (200, b"ok")
            assert server.connections == 2
            with pytest.raises(UpstreamError, match="before a response"):
                await get(up, port, "POST", b"data")
        assert server.connections == 2

    async def test_idle_connections_expire(self) -> None:
        async with serving(answer_each(OK)) as (server, port), pool(keepalive=0.1) as up:
            assert await get(up, port) == (200, b"ok")
            await asyncio.sleep(0.3)
            assert not up._idle  # swept
            assert await get(up, port) == (200, b"ok")
        assert server.connections == 2

    async def test_unsolicited_bytes_on_an_idle_connection_close_it(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            while True:
                await read_head(reader, server)
                writer.write(OK)
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")

        async with serving(script) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            await asyncio.sleep(0.2)
            assert await get(up, port) == (200, b"ok")  # not "stale": a new connection
        assert server.connections == 2


class TestTimeoutsAndFlow:
    async def test_no_response_times_out(self) -> None:
        async with serving(answer_then_stall(b"", 5)) as (_, port), pool(read_timeout=0.2) as up:
            with pytest.raises(UpstreamTimeout):
                await get(up, port)

    async def test_stalled_body_times_out_but_a_slow_reader_does_not(self) -> None:
        stall = answer_then_stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 5)
        async with serving(stall) as (_, port), pool(read_timeout=0.3) as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            async with resp:
                chunks = aiter(resp.iter_any())
                assert await anext(chunks) == b"abc"
                with pytest.raises(UpstreamTimeout):
                    await anext(chunks)

        big = b"b" * (4 * 1024 * 1024)
        async with serving(answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)) as (
                _, port), pool(read_timeout=0.3) as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.0.0.1:*",))
            got, most = [], 0
            async with resp:
                async for chunk in resp.iter_any():
                    got.append(chunk)
                    most = max(most, len(chunk))
                    await asyncio.sleep(0.1)  # slower than the upstream: reading pauses, no timeout
            assert b"".join(got) == big
            assert most <= _HIGH_WATER + 256 * 1024  # flow control bounds what is buffered

    async def test_connect_refused(self) -> None:
        async with serving(answer_each(OK)) as (_, port):
            pass
        async with pool() as up:
            with pytest.raises(UpstreamError, match=r"cannot connect to upstream 127\.0\.0\.1"):
                await get(up, port)


class TestUploads:
    @pytest.mark.parametrize("length", [True, False])
    async def test_streamed_body_with_length_or_chunked(self, length: bool) -> None:
        pieces = [b"a" * 70000, memoryview(b"b" * 5), b"", b"c"]
        total = sum(len(p) for p in pieces)

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            head = await read_head(reader, server)
            if b"Transfer-Encoding: chunked" in head:
                data = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    data += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
            else:
                data = await reader.readexactly(total)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(len(data))), len(data)))
            writer.write(b"")
            await reader.read()

        async def body() -> AsyncIterator[bytes]:
            for p in pieces:
                yield p  # type: ignore[misc]
                await asyncio.sleep(0)

        headers = [("Content-Length", str(total))] if length else []
        async with serving(script) as (server, port), pool() as up:
            resp = await up.send("PUT", f"http://127.0.0.1:{port}/", headers, body(), explicit_hosts=("127.0.0.1:*",))
            async with resp:
                assert await resp.read() == str(total).encode()
        assert (b"Transfer-Encoding: chunked" in server.heads[0]) is not length

    async def test_failing_body_fails_the_request_and_the_connection(self) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"start"
            raise UpstreamError("the client went away")

        async with serving(answer_each(OK)) as (server, port), pool() as up:
            with pytest.raises(UpstreamError, match="the client went away"):
                await up.send("PUT", f"http://127.0.0.1:{port}/", [], body(), explicit_hosts=("127.0.0.1:*",))
            assert await get(up, port) == (200, b"ok")
        assert server.connections == 2

    async def test_early_response_stops_the_upload(self) -> None:
        """The upstream refuses after the head and closes: the refusal is the response; the body's source is
        closed, not drained."""
        sent: list[int] = []
        closed = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            try:
                for i in range(10_000):
                    sent.append(i)
                    yield b"x" * 65536
            finally:
                closed.set()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            writer.write(b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig")
            await writer.drain()
            await asyncio.sleep(0.5)

        async with serving(script) as (_, port), pool() as up:
            resp = await up.send("PUT", f"http://127.0.0.1:{port}/", [("Content-Length", str(10_000 * 65536))],
                                 body(), explicit_hosts=("127.0.0.1:*",))
            async with resp:
                assert (resp.status, await resp.read()) == (413, b"big")
            await asyncio.wait_for(closed.wait(), 2)
        assert len(sent) < 10_000


class TestPool:
    async def test_limit_waits_then_reuses(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            while True:
                await read_head(reader, server)
                await asyncio.sleep(0.1)
                writer.write(OK)

        async with serving(script) as (server, port), pool(limit=1) as up:
            results = await asyncio.gather(*(get(up, port) for _ in range(3)))
        assert results == [(200, b"ok")] * 3
        assert server.connections == 1

    async def test_limit_closes_an_idle_connection_elsewhere(self) -> None:
        async with serving(answer_each(OK)) as (a, port_a), serving(answer_each(OK)) as (b, port_b), \
                pool(limit=1) as up:
            assert await get(up, port_a) == (200, b"ok")
            assert await get(up, port_b) == (200, b"ok")
            assert await get(up, port_a) == (200, b"ok")
        assert (a.connections, b.connections) == (2, 1)

    async def test_waiting_for_a_slot_is_bounded_by_the_connect_timeout(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            await asyncio.sleep(2)

        async with serving(script) as (_, port), pool(limit=1, connect_timeout=0.2) as up:
            first = asyncio.ensure_future(get(up, port))
            await asyncio.sleep(0.05)
            with pytest.raises(UpstreamTimeout):
                await get(up, port)
            first.cancel()

    async def test_pooled_connection_checked_for_each_policy(self) -> None:
        async with serving(answer_each(OK)) as (server, port), pool() as up:
            assert await get(up, port) == (200, b"ok")
            with pytest.raises(AddressNotAllowed):
                await up.send("GET", f"http://127.0.0.1:{port}/", [], None, explicit_hosts=("127.*:*",))
            assert await get(up, port) == (200, b"ok")
        assert server.connections == 1


@pytest.fixture(scope="module")
def certs() -> tuple[ssl.SSLContext, trustme.CA]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return server, ca


class TestTLS:
    async def test_verified_refused_and_insecure(self, certs: tuple[ssl.SSLContext, trustme.CA],
                                                 ) -> None:
        server_ctx, ca = certs
        async with serving(answer_each(OK), tls=server_ctx) as (server, port):
            async with pool() as up:
                with pytest.raises(UpstreamError, match=r"upstream 127\.0\.0\.1:\d+: .*CERTIFICATE_VERIFY"):
                    await get(up, port, scheme="https")
                assert await get(up, port, scheme="https", verify_tls=False) == (200, b"ok")
            with ca.cert_pem.tempfile() as cafile:
                async with Upstream(connect_timeout=2, read_timeout=5, limit=4, extra_ca_file=Path(cafile)) as up:
                    for _ in range(2):
                        assert await get(up, port, scheme="https") == (200, b"ok")
        assert server.connections == 2  # the refused handshake never reached the script; the verified one is reused


class TestUpgrade:
    """A request that asks to switch protocols (a WebSocket handshake): the 101 is its response, the bytes
    after it are the new protocol's, both ways, with no read timeout, and the connection never goes back to
    the pool."""

    SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    async def test_bytes_both_ways_after_the_101_then_the_end(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            writer.write(self.SWITCH + b"first")  # the new protocol's first bytes in the same write as the head
            await writer.drain()
            writer.write(b"echo:" + await reader.readexactly(4))
            await writer.drain()
            await asyncio.sleep(0.5)  # longer than the read timeout: no timeout once switched
            writer.write(b"late")
            await writer.drain()

        async with serving(script) as (server, port), pool(read_timeout=0.2) as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/chat", [("Connection", "Upgrade"),
                                                                          ("Upgrade", "websocket")], None,
                                 explicit_hosts=("127.0.0.1:*",), upgrade=True)
            async with resp:
                assert resp.status == 101
                assert dict(resp.headers)["Upgrade"] == "websocket"
                got = b""
                while len(got) < 5:
                    got += await resp.read_some()
                resp.send(b"ping")
                await resp.drain()
                while len(got) < 18:
                    got += await resp.read_some()
                assert got == b"firstecho:pinglate"
                assert await resp.read_some() == b""  # the upstream closed: the end
            assert b"Upgrade: websocket" in server.heads[0]
            assert not up._idle  # never pooled again

    async def test_a_refusal_is_an_ordinary_response(self) -> None:
        refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"
        async with serving(answer_each(refusal)) as (_, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [("Connection", "Upgrade"),
                                                                      ("Upgrade", "websocket")], None,
                                 explicit_hosts=("127.0.0.1:*",), upgrade=True)
            async with resp:
                assert (resp.status, await resp.read()) == (403, b"denied")

    async def test_a_101_unasked_is_still_an_error(self) -> None:
        async with serving(answer_each(self.SWITCH + b"x")) as (_, port), pool() as up:
            with pytest.raises(UpstreamError, match="switched protocols unasked"):
                await get(up, port)

    async def test_a_reset_after_the_switch_is_an_error(self) -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await read_head(reader, server)
            writer.write(self.SWITCH)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        async with serving(script) as (_, port), pool() as up:
            resp = await up.send("GET", f"http://127.0.0.1:{port}/", [("Connection", "Upgrade"),
                                                                      ("Upgrade", "websocket")], None,
                                 explicit_hosts=("127.0.0.1:*",), upgrade=True)
            async def drain_all() -> None:
                while await resp.read_some():
                    pass

            async with resp:
                with pytest.raises(UpstreamError, match="closed the connection"):
                    await drain_all()


@pytest.mark.parametrize(("url", "parts"), [
    ("http://h/p?q", ("http", "h", "/p?q")),
    ("http://h:8080/a/b?c/d?e", ("http", "h:8080", "/a/b?c/d?e")),
    ("http://h?q/x", ("http", "h", "/?q/x")),  # a query straight after the authority, a slash inside it
    ("http://h", ("http", "h", "/")),
    ("https://[::1]:8443/x", ("https", "[::1]:8443", "/x")),
    ("http://h/", ("http", "h", "/")),
    ("http://h//double", ("http", "h", "//double")),
])
def test_an_absolute_url_splits_into_scheme_authority_and_target_as_written(url: str,
                                                                          parts: tuple[str, str, str]) -> None:
    assert forwarding._split(url) == parts


@pytest.mark.parametrize("url", ["h/p", "ftp://h/p", "://h"])
def test_a_url_upstream_cannot_take_is_refused_without_itself_in_the_message(url: str) -> None:
    with pytest.raises(UpstreamError) as err:
        forwarding._split(url + "?X-Amz-Signature=secret")
    assert "secret" not in err.value.message

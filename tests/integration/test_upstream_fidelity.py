"""The whole proxy against a raw scripted upstream: what of an upstream's response reaches the client, and how
often a request reaches the upstream. A read timeout is answered 504 once, the request sent once; trailer
fields never reach the client as header fields; spooled and re-signed uploads keep their upstream connection;
the reason phrase goes byte for byte; a transfer coding sigproxy does not decode is a 502; interim responses
reach HTTP/1.1 clients; a head that never ends is a 502. The upstream client's own tests are
tests/unit/test_h1conn_fidelity.py."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import pytest

from sigproxy.signing import Signer
from sigproxy.streaming import STREAMING_SIGNED, ChunkSigner
from tests.conftest import Proxy

CHUNKED_WITH_TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                         b"b\r\nhello world\r\n0\r\nContent-Encoding: gzip\r\nSet-Cookie: evil=1\r\n"
                         b"X-Checksum: abc\r\n\r\n")
SCRIPTS: dict[str, bytes] = {
    "trailers": CHUNKED_WITH_TRAILERS,
    "reason": b"HTTP/1.1 299 My Reason \xe9\xff\r\nContent-Length: 2\r\n\r\nok",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nRAWGZ",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nRAWGZ\r\n0\r\n\r\n",
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n"
                b"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"),
}


@dataclass
class Upstream:
    url: str
    seen: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(connection number, method, target, body bytes) of every request."""


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    method, target = head.split(b" ", 2)[:2]
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    size = 0
    if b"content-length" in fields:
        size = len(await reader.readexactly(int(fields[b"content-length"])))
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while (chunk := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
            size += len(await reader.readexactly(chunk + 2)) - 2
        await reader.readuntil(b"\r\n")
    return method.decode(), target.decode(), size


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """Answers by the target's first path segment: SCRIPTS' raw bytes (closing when they have no length), or
    ``/slow`` after 3 s, or ``/endless`` a header value that never ends, or ``200 ok``."""
    up = Upstream("")
    numbers = itertools.count(1)
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(numbers)
        try:
            while True:
                method, target, size = await _read_request(reader)
                up.seen.append((number, method, target, size))
                name = target.split("?")[0].strip("/").split("/")[0]
                if name == "slow":
                    await asyncio.sleep(3)
                if name == "endless":
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
                    while True:  # until sigproxy closes the connection
                        writer.write(b"a" * 65536)
                        await writer.drain()
                writer.write(SCRIPTS.get(name, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
                await writer.drain()
                if name == "te-gzip":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(handle, "127.0.0.1", 0), loop).result(5)
    up.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield up
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def config(upstream: Upstream, proxy: str = "") -> str:
    return f"""
[proxy]
{proxy}
[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

[[reverse]]
listen = "127.0.0.1:0"
upstream = "{upstream.url}"
connection = "main"
"""


def raw(proxy: Proxy, request: bytes, wait: float = 5) -> bytes:
    """Send ``request`` to the reverse listener; everything until the close or ``wait`` s of silence."""
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        sock.settimeout(wait)
        out = b""
        try:
            while data := sock.recv(65536):
                out += data
        except TimeoutError:
            pass
        return out


def seen_since(upstream: Upstream, mark: int, path: str) -> list[tuple[int, str, str, int]]:
    return [s for s in upstream.seen[mark:] if s[2].startswith(path)]


def test_a_read_timeout_is_answered_once_and_not_sent_again(upstream: Upstream,
                                                           sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 01: a PUT on a kept-alive upstream connection hits read_timeout. One 504 after one
    read_timeout; the upstream got the PUT once (it was sent again on a new connection and answered after two)."""
    proxy = sigproxy_factory(config(upstream, "read_timeout = 1"))
    mark = len(upstream.seen)
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/warm")
    assert conn.getresponse().read() == b"ok"
    started = time.monotonic()
    conn.request("PUT", "/slow/once", body=b"abc")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 504
    assert time.monotonic() - started < 1.9
    assert [s[1:] for s in seen_since(upstream, mark, "/slow")] == [("PUT", "/slow/once", 3)]


def test_trailer_fields_never_reach_the_client_as_header_fields(upstream: Upstream,
                                                                 sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 02: the trailer section came in the head's read and its fields went out as the
    client's header fields (Content-Encoding: gzip: curl --compressed failed)."""
    proxy = sigproxy_factory(config(upstream))
    out = raw(proxy, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Encoding" not in head and b"Set-Cookie" not in head and b"X-Checksum" not in head
    assert b"Content-Type: text/plain" in head
    assert body == b"b\r\nhello world\r\n0\r\n\r\n"  # re-chunked, no trailer section


def test_spooled_uploads_keep_their_upstream_connection(upstream: Upstream,
                                                        sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 05: chunked uploads (spooled: no length) on one client connection used a new upstream
    connection almost every time (the spool's last read came after the upstream's answer)."""
    proxy = sigproxy_factory(config(upstream))
    mark = len(upstream.seen)
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for i in range(10):
        conn.request("PUT", f"/spooled/{i}", body=iter([b"abc", b"defg"]), encode_chunked=True)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
        time.sleep(0.02)
    seen = seen_since(upstream, mark, "/spooled")
    assert [s[3] for s in seen] == [7] * 10
    assert len({s[0] for s in seen}) == 1
    assert proxy.written('"body":"spooled"')


def resigned_put(path: bytes) -> tuple[bytes, bytes]:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload framed chunked by the client: its head with the whole
    aws-chunked body in one HTTP chunk (sigproxy re-signs it; the upstream has it whole once its final chunk is
    sent and may answer at once), and the last chunk framing that ends the request."""
    signer = Signer()
    key = signer.signing_key("placeholder", datetime.now(UTC).strftime("%Y%m%d"), "us-east-1", "s3")
    chain = ChunkSigner(key, "20250101T000000Z", "20250101/us-east-1/s3/aws4_request", "0" * 64)
    data = chain.frame(b"x" * 1000) + chain.frame(b"")
    head = (b"PUT %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Amz-Content-SHA256: %s\r\n"
            b"X-Amz-Decoded-Content-Length: 1000\r\n\r\n" % (path, STREAMING_SIGNED.encode()))
    return head + b"%x\r\n%s\r\n" % (len(data), data), b"0\r\n\r\n"


def read_response(stream: BinaryIO) -> tuple[bytes, bytes]:
    """One response with a Content-Length from ``stream``; AssertionError when the connection closes first."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            raise AssertionError(f"the connection closed after {head!r}")
        head += line
    length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
    return head, stream.read(int(length[1])) if length else b""


def test_resigned_uploads_keep_their_upstream_connection(upstream: Upstream,
                                                         sigproxy_factory: Callable[..., Proxy]) -> None:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD body framed chunked by the client, whose last chunk framing comes a
    moment after the aws-chunked body's end: the upstream has the re-signed body whole and answers meanwhile.
    The connection stays (the writer used to be found waiting for the client and the connection dropped)."""
    proxy = sigproxy_factory(config(upstream))
    mark = len(upstream.seen)
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    for i in range(3):
        put, end = resigned_put(b"/resigned/%d" % i)
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(put)
            time.sleep(0.3)  # the client's last chunk framing comes later
            sock.sendall(end)
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    seen = seen_since(upstream, mark, "/resigned")
    assert len(seen) == 3
    assert len({s[0] for s in seen}) == 1
    assert proxy.written('"body":"resigned"')


def test_an_upload_answered_before_its_last_chunk_keeps_the_client_connection(
        upstream: Upstream, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The same upload, the client sending its last chunk framing only once it has the answer: the answer does
    not say close, the framing is read and dropped, and the GET that follows it is answered on the same client
    connection (three times over, one upstream connection). RFC 9112 9.6: a server that answers early may keep
    the connection when it reads the rest. Before, the answer said ``Connection: close`` and the connection
    closed (the GET was never answered)."""
    proxy = sigproxy_factory(config(upstream))
    mark = len(upstream.seen)
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as stream:
        for i in range(3):
            put, end = resigned_put(b"/early/%d" % i)
            sock.sendall(put)
            head, body = read_response(stream)
            assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower(), head
            assert body == b"ok"
            sock.sendall(end)
            sock.sendall(b"GET /early-get/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            assert read_response(stream)[1] == b"ok"
    seen = seen_since(upstream, mark, "/early")
    assert [s[1:3] for s in seen] == [pair for i in range(3)
                                      for pair in (("PUT", f"/early/{i}"), ("GET", f"/early-get/{i}"))]
    assert len({s[0] for s in seen}) == 1


@pytest.mark.parametrize("early", [True, False])
def test_requests_pipelined_behind_an_upload_are_answered_in_order(early: bool, upstream: Upstream,
                                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
    """Two GETs pipelined right behind the upload's last chunk framing: sent with the upload itself, or in one
    write with the framing after the upload's early answer. Three answers, in order, on one connection."""
    proxy = sigproxy_factory(config(upstream))
    mark = len(upstream.seen)
    host, port = proxy.reverse[0].removeprefix("http://").rsplit(":", 1)
    put, end = resigned_put(b"/piped/put")
    gets = b"GET /piped/a HTTP/1.1\r\nHost: x\r\n\r\nGET /piped/b HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as stream:
        if early:
            sock.sendall(put)
            answers = [read_response(stream)]
            sock.sendall(end + gets)
        else:
            sock.sendall(put + end + gets)
            answers = []
        answers += [read_response(stream) for _ in range(3 - len(answers))]
    assert all(head.startswith(b"HTTP/1.1 200 ") and body == b"ok" for head, body in answers)
    assert [s[1:3] for s in seen_since(upstream, mark, "/piped")] == [
        ("PUT", "/piped/put"), ("GET", "/piped/a"), ("GET", "/piped/b")]


def test_the_reason_phrase_goes_byte_for_byte(upstream: Upstream, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 07c: a reason phrase byte 0xE9 reached the client as 0xC3 0xA9."""
    proxy = sigproxy_factory(config(upstream))
    out = raw(proxy, b"GET /reason HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 299 My Reason \xe9\xff\r\n")


@pytest.mark.parametrize(("path", "coding"), [("/te-gzip", b"gzip"), ("/te-gzip-chunked", b"gzip, chunked")])
def test_a_transfer_coding_but_chunked_is_a_502(path: str, coding: bytes, upstream: Upstream,
                                               sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 07b: Transfer-Encoding: gzip was read until the close, the header removed (hop-by-hop)
    and the gzip bytes passed on as the body. Now a 502 naming the coding."""
    proxy = sigproxy_factory(config(upstream))
    out = raw(proxy, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ") and b"X-Sigproxy-Error: upstream_error" in head
    assert b"RAWGZ" not in body
    assert b"Transfer-Encoding: " + coding in body


def test_interim_responses_reach_http11_clients(upstream: Upstream, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 07a: 103 Early Hints was swallowed. RFC 9110 15.2: forwarded (its hop-by-hop fields
    removed), never to an HTTP/1.0 client; the upstream's 100 is not (sigproxy answers Expect itself)."""
    proxy = sigproxy_factory(config(upstream))
    out = raw(proxy, b"GET /interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"), out
    assert out.endswith(b"\r\n\r\nfinal")
    out = raw(proxy, b"GET /interim HTTP/1.0\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nfinal")


def test_a_head_that_never_ends_is_a_502(upstream: Upstream, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The last stop's note: an upstream that never ended a header value grew sigproxy's memory for as long as it
    sent (the read timeout never fires while bytes come). Now a 502 once the line is over its bound, and the
    proxy goes on serving."""
    proxy = sigproxy_factory(config(upstream))
    out = raw(proxy, b"GET /endless HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ") and b"X-Sigproxy-Error: upstream_error" in head
    assert b"sent a line over 65536 bytes" in body
    assert raw(proxy, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"\r\n\r\nok")

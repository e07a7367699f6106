"""An upstream's response to the lean HTTP/1.1 client (:mod:`sigproxy.h1conn`), over a real socket pair.

Inputs: zero to two interim responses (100, 103, and codes that are not interim) before a final one; status
lines good and bad (HTTP/1.0, 101, 204, 304, three-digit codes out of range, no reason, other protocols,
random bytes); headers that frame the body (Content-Length good, negative, huge, repeated, listed;
Transfer-Encoding chunked, chunked not last, with Content-Length), Connection, obs-fold, NUL, random bytes;
bodies (exact, short, long, chunked good and broken, random); line ends CRLF or bare LF; the bytes sent in
random pieces; the upstream closing after them or not; the request a GET or a HEAD.

Properties, within a deadline (the client's read timeout is 0.3 s): the request gives a response or
:class:`~sigproxy.errors.UpstreamError` / :class:`~sigproxy.errors.UpstreamTimeout`, never anything else; a
response is never interim (1xx); its body reads whole or fails with those same two errors; a body that reads
whole has exactly its Content-Length (when it has one), and none at all for HEAD, 204 and 304; once finished,
a connection left open is one whose response ended, ready for the next request.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy import eventloop
from sigproxy.errors import UpstreamError, UpstreamTimeout
from sigproxy.h1conn import H1Connection
from sigproxy.h1wire import request_head

DEADLINE = 3.0

def _mostly(named: st.SearchStrategy[bytes], size: int) -> st.SearchStrategy[bytes]:
    """The named cases nine times in ten, random bytes otherwise."""
    return st.integers(0, 9).flatmap(lambda n: st.binary(max_size=size) if n == 0 else named)


_status = _mostly(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
                     b"HTTP/1.0 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 500 ", b"HTTP/1.1 200",
                     b"HTTP/1.1 999 Odd", b"HTTP/1.1 099 Low", b"HTTP/1.1 101 Switching Protocols",
                     b"HTTP/1.1 199 Odd", b"HTTP/2 200 OK", b"HTTP/1.1 2000 OK", b"ICY 200 OK", b""]),
    20,
)
_interim = st.sampled_from([b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints\r\nLink: </a>",
                            b"HTTP/1.1 102 Processing", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x"])
_header = _mostly(
    st.sampled_from([b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: -1", b"Content-Length: 5, 5",
                     b"Content-Length: 99999999999999999999999", b"Content-Length: 0x5", b"Content-Length:",
                     b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
                     b"Transfer-Encoding: chunked, gzip", b"Transfer-Encoding: identity", b"Connection: close",
                     b"Connection: keep-alive", b"Keep-Alive: timeout=5", b"X-Amz-Request-Id: r", b" folded",
                     b"No-Colon", b"X: \x00", b"X: \xff\xfe", b": empty-name", b"X:" + b"v" * 9000]),
    30,
)
_body = _mostly(
    st.sampled_from([b"hello", b"hell", b"hello!", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n",
                     b"5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n", b"5\r\nhel", b"ffffffffffffffffff\r\n",
                     b"z\r\n", b"5\r\nhelloXX0\r\n\r\n", b""]),
    60,
)


@st.composite
def exchanges(draw: Any) -> tuple[str, bytes, list[int], bool]:
    crlf = b"\n" if draw(st.integers(0, 9)) == 0 else b"\r\n"
    messages = [draw(_interim) for _ in range(draw(st.integers(0, 2)))]
    head = draw(_status)
    headers = draw(st.lists(_header, max_size=4))
    messages.append(crlf.join([head, *headers]))
    data = b"".join(m.replace(b"\r\n", crlf) + crlf + crlf for m in messages) + draw(_body)
    if draw(st.integers(0, 5)) == 0:
        data += draw(st.binary(max_size=20))  # trailing bytes: a second response, or junk
    splits = draw(st.lists(st.integers(1, 64), max_size=5))
    close = draw(st.integers(0, 4)) > 0
    return draw(st.sampled_from(["GET", "HEAD"])), data, splits, close


async def _exercise(method: str, data: bytes, splits: list[int], close: bool) -> str:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    conn = H1Connection("fuzz", 0.3)
    await loop.create_connection(lambda: conn, sock=ours)
    head, chunked = request_head(method, "/", "upstream", [], None)

    async def upstream() -> None:
        assert (await loop.sock_recv(theirs, 65536)).startswith(method.encode())
        pos = 0
        for size in [*splits, len(data)]:
            piece, pos = data[pos:pos + size], pos + size
            if piece:
                await loop.sock_sendall(theirs, piece)
            await asyncio.sleep(0)
        if close:
            theirs.close()

    task = loop.create_task(upstream(), name="fuzz upstream")  # held here, cancelled below
    try:
        async with asyncio.timeout(DEADLINE):
            try:
                response = await conn.request(method, head, None, chunked)
            except (UpstreamError, UpstreamTimeout) as exc:
                return type(exc).__name__
            status = response.status
            assert not 100 <= status < 200, f"interim response {status} returned as final"
            try:
                body = await response.read()
            except (UpstreamError, UpstreamTimeout) as exc:
                outcome = f"body {type(exc).__name__}"
            else:
                if method == "HEAD" or status in (204, 304):
                    assert body == b"", f"a body of {len(body)} bytes for {method} {status}"
                elif response.content_length is not None:
                    assert len(body) == response.content_length, \
                        f"{len(body)} bytes read for Content-Length {response.content_length}"
                outcome = "ok"
            conn.finish()
            assert conn.closed or conn.body_done, "a connection left open mid-response"
            return outcome
    finally:
        task.cancel()
        if conn.transport is not None:
            conn.transport.abort()
        theirs.close()


def check(example: tuple[str, bytes, list[int], bool]) -> str:
    return eventloop.run(_exercise(*example))


TARGETS = [Target("upstream_response", exchanges(), check)]

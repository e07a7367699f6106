"""A bug on a request's path (an exception no code path answers) still leaves the request its one access line,
and the client an answer that says what the line says: ``500 internal_error`` in sigproxy's error body, with the
traceback logged once; once part of the answer has gone out, the connection cut and the line ``aborted``.

sigproxy runs in this process (:func:`sigproxy.intake.server.serve`, real listeners on 127.0.0.1, real sockets,
a real upstream): a bug can't be caused from outside, so each test makes one collaborator raise RuntimeError
(the credentials provider, the intake's target parser, the response writer, the WebSocket frame scanner, the
CONNECT decision), the one place a stand-in is used."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sigproxy import h1response
from sigproxy.config import loads
from sigproxy.credentials import Providers
from sigproxy.h1chunks import iter_chunks
from sigproxy.h1conn import H1Connection
from sigproxy.intake import connect as connect_module
from sigproxy.intake import server as server_module
from sigproxy.intake.connect import ConnectIntake
from sigproxy.intake.server import Listening, serve
from sigproxy.tasks import TaskSet
from sigproxy.tls import CA_CERT_FILE
from sigproxy.wsframes import FrameScanner
from tests.errorbody import error_body

BOOM = "boom: a bug in sigproxy"
BIG = 1024 * 1024


def config_text(upstream: int, state: Path, *, scheme: str = "http", service: str = "s3") -> str:
    return f"""
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
state_dir = "{state}"
default_connection = "main"
connect_ports = [{upstream}]
passthrough = ["localhost:{upstream}"]

[connections.main]
region = "us-east-1"
service = "{service}"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"

[[reverse]]
listen = "127.0.0.1:0"
upstream = "{scheme}://127.0.0.1:{upstream}"
connection = "main"

[store]
url = ""
"""


@asynccontextmanager
async def running(text: str) -> AsyncIterator[dict[str, int]]:
    """``sigproxy run``'s :func:`serve` in this process: the port of each listener by kind."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[Listening]] = asyncio.get_running_loop().create_future()
    tasks = TaskSet()
    task = tasks.spawn(serve(loads(text), stop, on_ready=ready.set_result), name="sigproxy in this process")
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield {listening.kind: int(listening.url.rsplit(":", 1)[1]) for listening in ready.result()}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        gc.unfreeze()  # serve() froze what it had loaded, for a process that serves until it ends


@asynccontextmanager
async def upstream_server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]
                          ) -> AsyncIterator[int]:
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def big_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every request: 200 with a body of BIG bytes (streamed to the client, not read whole)."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * BIG)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def exchange(port: int, request: bytes, *, tunnel: tuple[str, Path] | None = None) -> bytes:
    """Send ``request`` (through a CONNECT to ``tunnel``'s host, trusting the CA file, when given); everything
    until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock: socket.socket = raw
        if tunnel is not None:
            raw.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (tunnel[0].encode(), tunnel[0].encode()))
            assert raw.recv(4096).startswith(b"HTTP/1.1 200 "), "the tunnel was not opened"
            context = ssl.create_default_context(cafile=str(tunnel[1]))
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(request)
        out = b""
        try:
            while data := sock.recv(65536):
                out += data
        except (ConnectionError, ssl.SSLError):
            pass  # a cut connection
        return out


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [record.access for record in caplog.records if record.name == "sigproxy.access"]  # type: ignore[attr-defined]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None and BOOM in str(r.exc_info[1])]


def boom(*_: object, **__: object) -> Any:
    raise RuntimeError(BOOM)


async def boom_async(*_: object, **__: object) -> Any:
    raise RuntimeError(BOOM)


# Where the bug is: in the handler (the credentials provider) or in intake, before the handler has an Exchange
# (each listener's own target parser).
BUGS = {
    ("handler", "forward"): (Providers, "ready", boom),
    ("handler", "reverse"): (Providers, "ready", boom),
    ("handler", "tunnel"): (Providers, "ready", boom),
    ("intake", "forward"): (server_module, "forward_exchange", boom),
    ("intake", "reverse"): (server_module, "reverse_exchange", boom),
    ("intake", "tunnel"): (connect_module, "parse_absolute_target", boom),
}


@pytest.mark.parametrize(("where", "listener"), list(BUGS))
async def test_a_bug_is_a_500_with_one_access_line(where: str, listener: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The client gets 500 ``internal_error`` (sigproxy's error body, with the request id of the access line;
    nothing of the exception), the connection closes after it; the access log has exactly one line for the
    request, status 500, error internal_error; the traceback is logged once. Before, the request had no access
    line: the HTTP server answered 500 itself, with request id ``-``."""
    caplog.set_level(logging.INFO)
    owner, name, stand_in = BUGS[(where, listener)]
    monkeypatch.setattr(owner, name, stand_in)
    async with upstream_server(big_answer) as up, running(config_text(up, tmp_path / "state")) as ports:
        target = f"127.0.0.1:{up}"
        if listener == "forward":
            raw = await asyncio.to_thread(exchange, ports["forward"],
                                          b"GET http://%s/bucket/key HTTP/1.1\r\nHost: %s\r\n\r\n" % (
                                              target.encode(), target.encode()))
        elif listener == "reverse":
            raw = await asyncio.to_thread(exchange, ports["reverse"], b"GET /bucket/key HTTP/1.1\r\nHost: x\r\n\r\n")
        else:  # absolute form inside the tunnel: the form whose target the tunnel's entry parses
            raw = await asyncio.to_thread(
                exchange, ports["forward"], b"GET https://%s/bucket/key HTTP/1.1\r\nHost: %s\r\n\r\n" % (
                    target.encode(), target.encode()), tunnel=(target, tmp_path / "state" / CA_CERT_FILE))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 "), raw[:300]
    assert b"X-Sigproxy-Error: internal_error" in head and b"Connection: close" in head
    answer = error_body(body)
    assert answer["code"] == "internal_error" and BOOM not in raw.decode(errors="replace")
    [line] = access_lines(caplog)
    assert (line["status"], line["error"], line["method"]) == (500, "internal_error", "GET")
    assert answer["request_id"] in (line["request_id"], None)  # the JSON protocols' bodies carry none
    assert f"X-Sigproxy-Request-Id: {line['request_id']}".encode() in head
    assert len(tracebacks(caplog)) == 1


async def test_a_bug_after_the_answer_began_cuts_the_connection_with_one_access_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A streamed response (1 MiB from the upstream) whose copy fails on a bug at its second piece (reading
    pauses past 512 KiB unread, so 1 MiB comes in two at least): the head went out, so no 500 can follow; the
    connection is cut short of the Content-Length, the access line says ``aborted`` with error internal_error,
    the traceback is logged once. Before, there was no access line.

    The bug is put into the upstream response's body iterator (sigproxy.h1chunks, plain Python), as the compiled
    sigproxy.h1response looks it up at each call: a compiled module's own functions call each other directly, so
    replacing one at run time changes nothing (as replacing ``StreamResponse.write``, this test's first way in,
    stopped doing once sigproxy.http1 was compiled, and ``UpstreamResponse.iter_any`` once sigproxy.h1response
    was)."""
    caplog.set_level(logging.INFO)

    async def failing_iter_chunks(conn: H1Connection) -> AsyncIterator[bytes]:
        pieces = 0
        async for chunk in iter_chunks(conn):
            pieces += 1
            if pieces == 2:
                raise RuntimeError(BOOM)
            yield chunk

    monkeypatch.setattr(h1response, "iter_chunks", failing_iter_chunks)
    async with upstream_server(big_answer) as up, running(config_text(up, tmp_path / "state")) as ports:
        raw = await asyncio.to_thread(exchange, ports["reverse"], b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % BIG in head
    assert 0 < len(body) < BIG and b"HTTP/1.1 500" not in body
    [line] = access_lines(caplog)
    assert (line["status"], line["error"]) == ("aborted", "internal_error")
    assert len(tracebacks(caplog)) == 1


async def ws_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A WebSocket server that takes any handshake (RFC 6455 4.2.2) and then echoes what comes."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept)
    try:
        while data := await reader.read(65536):
            writer.write(data)
    finally:
        writer.close()


async def test_a_bug_in_the_websocket_relay_is_named_in_its_access_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The copy from the client fails on a bug at its first frame: the relay ends (both connections closed),
    its one access line says ``ws_end: internal_error`` and ``error: internal_error`` after the 101 the client
    got; the traceback is logged once. Before, the line read as an ordinary end (``client_closed``)."""
    caplog.set_level(logging.INFO)
    real_feed = FrameScanner.feed

    def failing_feed(self: FrameScanner, data: bytes) -> bytes:
        if self._masked:  # the client's frames
            raise RuntimeError(BOOM)
        return real_feed(self, data)

    monkeypatch.setattr(FrameScanner, "feed", failing_feed)
    async with upstream_server(ws_answer) as up, \
            running(config_text(up, tmp_path / "state", scheme="ws", service="execute-api")) as ports:
        mask = b"\x01\x02\x03\x04"
        frame = b"\x81\x85" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))  # RFC 6455 5.3
        raw = await asyncio.to_thread(
            exchange, ports["reverse"], b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame)
    assert raw.startswith(b"HTTP/1.1 101 ")
    [line] = access_lines(caplog)
    assert (line["status"], line["ws_end"], line["error"]) == (101, "internal_error", "internal_error")
    assert len(tracebacks(caplog)) == 1


@pytest.mark.parametrize("stand_in", ["decision", "certificate"])
async def test_a_bug_answering_a_connect_is_a_500_not_a_client_left_waiting(
        stand_in: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A bug while a CONNECT is decided (which connection may sign for its host) or its certificate minted: the
    client gets 500 internal_error and the connection closes; the traceback is logged once. Before, the task
    answering it died and the client waited on a connection nothing would ever answer or close."""
    caplog.set_level(logging.INFO)
    if stand_in == "decision":
        monkeypatch.setattr(ConnectIntake, "_may_sign", boom)
    else:
        monkeypatch.setattr("sigproxy.tls.CertStore.context_for_async", boom_async)
    async with upstream_server(big_answer) as up, running(config_text(up, tmp_path / "state")) as ports:
        raw = await asyncio.to_thread(exchange, ports["forward"],
                                      b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % up)
    assert raw.startswith(b"HTTP/1.1 500 ") and b"X-Sigproxy-Error: internal_error" in raw, raw[:300]
    assert error_body(raw.partition(b"\r\n\r\n")[2])["code"] == "internal_error"
    assert len(tracebacks(caplog)) == 1

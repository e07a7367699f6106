"""WebSocket through sigproxy (issue 17, item 3): the handshake signed, then frames relayed both ways, through
the real ``sigproxy run``.

The far end is :mod:`tests.servers.ws_verifier`: a WebSocket server (the ``websockets`` library) that recomputes
the handshake's SigV4 signature with botocore and refuses a wrong one with 403, then echoes. The clients are real
ones: ``websockets`` (through the forward proxy's CONNECT, with sigproxy's CA, and straight to a reverse
listener), aiohttp (an absolute-form ``ws://`` request to the forward proxy) and raw sockets for what no library
sends (an unmasked frame, a client that vanishes mid-stream).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Proxy
from tests.integration.test_user_header import access_log
from tests.servers.ws_verifier import WsVerifier, start_ws_verifier

KEY, SECRET = "AKIDWEBSOCKET0000001", "websocket/secret/key/for/the/verifier/000"
TOKEN = "IQoJb3JpZ2luX2VjE///session+token=="


def config(*, service: str = "execute-api", secret: str = SECRET, token: str | None = None, proxy: str = "",
           tail: str = "") -> str:
    token_line = f'session_token = "{token}"' if token else ""
    return f"""
[proxy]
default_connection = "main"
{proxy}
[connections.main]
region = "us-east-1"
service = "{service}"
hosts = ["127.0.0.1:*", "localhost:*"]
[connections.main.credentials]
source = "static"
access_key_id = "{KEY}"
secret_access_key = "{secret}"
{token_line}
{tail}
"""


def reverse(upstream: str) -> str:
    return f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nconnection = "main"\n'


@pytest.fixture
def verifier() -> Iterator[WsVerifier]:
    with start_ws_verifier(KEY, SECRET) as v:
        yield v


def ws_lines(proxy: Proxy, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        lines = [e for e in access_log(proxy) if e.get("body") == "websocket"]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def sessions(v: WsVerifier, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(v.sessions) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return v.sessions


async def echo_round(ws: Any) -> None:
    await ws.send("hello")
    assert await ws.recv() == "hello"
    await ws.send(b"\x00\x01binary\xff")
    assert await ws.recv() == b"\x00\x01binary\xff"


def test_reverse_listener_signs_the_handshake_and_relays_both_ways(
        verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """websockets -> a reverse listener -> the verifier: the handshake's header signature is botocore's; text,
    binary, a 5 MiB message each way, and the client's close code reaches the server."""
    proxy = sigproxy_factory(config(tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/prod?stage=1"
    big = os.urandom(5 * 2**20)

    async def run() -> None:
        async with connect(url, max_size=None) as ws:
            await echo_round(ws)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(f"send:{6 * 2**20}")
            got = await ws.recv()
            assert len(got) == 6 * 2**20 and got[:256] == bytes(range(256))
            await ws.close(4000, "done here")

    asyncio.run(run())
    shake = verifier.handshakes[-1]
    assert shake["ok"], shake
    assert (shake["form"], shake["service"], shake["region"]) == ("header", "execute-api", "us-east-1")
    assert shake["path"] == "/prod?stage=1"
    assert "upgrade" not in shake["signed_headers"] and "connection" not in shake["signed_headers"]
    session = sessions(verifier)[-1]
    assert (session["close_code"], session["close_reason"], session["clean"]) == (4000, "done here", True)
    assert session["messages"] == 4 and session["bytes"] >= len(big)
    line = ws_lines(proxy)[-1]
    assert line["status"] == 101 and line["ws_end"] in ("upstream_closed", "client_closed"), line
    assert (line["ws_messages_up"], line["ws_messages_down"]) == (4, 4)
    assert line["ws_close_client"] == 4000 and line["ws_close_upstream"] == 4000
    assert 0 < line["handshake_ms"] < line["ms"] and "switched_at" not in line
    # Frame bytes: the random 5 MiB both ways; the 6 MiB of repeated bytes went compressed (permessage-deflate,
    # negotiated end to end by the client and the server: sigproxy passes its frames through as they are).
    assert line["bytes_up"] > len(big) and line["bytes_down"] > len(big)
    assert "permessage-deflate" in verifier.handshakes[-1]["headers"].get("sec-websocket-extensions", "")


def test_the_server_closing_reaches_the_client(verifier: WsVerifier,
                                                sigproxy_factory: Callable[..., Proxy]) -> None:
    proxy = sigproxy_factory(config(tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> tuple[int | None, str | None]:
        async with connect(url) as ws:
            await ws.send("close:4321:server says bye")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert asyncio.run(run()) == (4321, "server says bye")
    assert ws_lines(proxy)[-1]["ws_close_upstream"] == 4321


def test_a_wrong_signature_is_refused_by_the_verifier_and_the_client_sees_its_403(
        verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The verifier is not a rubber stamp: the same handshake signed with another secret gets its 403."""
    proxy = sigproxy_factory(config(secret="not-the-secret", tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> int:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url):
                pass
        return caught.value.response.status_code

    assert asyncio.run(run()) == 403
    assert verifier.handshakes[-1]["ok"] is False
    assert "signature" in verifier.handshakes[-1]["reason"].lower()


def test_iot_device_gateway_gets_a_presigned_url_with_the_token_appended(
        sigproxy_factory: Callable[..., Proxy]) -> None:
    """AWS IoT's rule: a presigned handshake under ``iotdevicegateway``, the session token added after signing
    (the verifier refuses it inside the signature)."""
    with start_ws_verifier(KEY, SECRET, session_token=TOKEN) as verifier:
        proxy = sigproxy_factory(config(service="iotdata", token=TOKEN, tail=reverse(verifier.url)))
        url = proxy.reverse[0].replace("http://", "ws://") + "/mqtt"

        async def run() -> None:
            async with connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "mqtt"
                await echo_round(ws)

        asyncio.run(run())
        shake = verifier.handshakes[-1]
        assert shake["ok"], shake
        assert (shake["form"], shake["service"]) == ("query", "iotdevicegateway")
        assert shake["path"].startswith("/mqtt?") and "X-Amz-Security-Token=" in shake["path"]


@pytest.fixture
def tls_verifier(tmp_path: Path) -> Iterator[tuple[WsVerifier, Path]]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with start_ws_verifier(KEY, SECRET, tls=ctx, host="localhost") as v:
        yield v, ca_file


def test_forward_proxy_intercepts_wss_and_relays(tls_verifier: tuple[WsVerifier, Path], tmp_path: Path,
                                                 sigproxy_factory: Callable[..., Proxy]) -> None:
    """websockets with ``proxy=`` opens a CONNECT tunnel; sigproxy terminates it with its CA, signs the handshake
    inside and connects to the wss:// server over verified TLS."""
    verifier, ca_file = tls_verifier
    proxy = sigproxy_factory(config(proxy=f'upstream_ca_file = "{ca_file}"\nconnect_ports = [{verifier.port}]'))
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "state" / "ca-cert.pem"))

    async def run() -> None:
        async with connect(f"{verifier.url}/secure", proxy=proxy.url, ssl=client_tls) as ws:
            await echo_round(ws)
            await ws.close()

    asyncio.run(run())
    assert verifier.handshakes[-1]["ok"], verifier.handshakes[-1]
    assert sessions(verifier)[-1]["close_code"] == 1000
    assert ws_lines(proxy)[-1]["status"] == 101


def test_forward_proxy_absolute_form_ws(verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """aiohttp sends a plain ws:// handshake to an HTTP proxy in absolute form."""
    proxy = sigproxy_factory(config())

    async def run() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{verifier.url}/abs", proxy=proxy.url) as ws:
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
            await ws.send_bytes(b"\x01\x02")
            assert (await ws.receive()).data == b"\x01\x02"

    try:
        asyncio.run(run())
    finally:
        print("".join(proxy.output)[-3000:])
    assert verifier.handshakes[-1]["ok"], verifier.handshakes[-1]
    assert verifier.handshakes[-1]["path"] == "/abs"


# ------------------------------------------------------------------ raw clients: what libraries never send


def _handshake(port: int, path: str = "/") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def _frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        head = bytes([first, (0x80 if mask else 0) | length])
    elif length < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _read_close(sock: socket.socket) -> int:
    """Read frames until a close frame; its code."""
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        while len(data) >= 2:
            length = data[1] & 0x7F
            start = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if length == 126 and len(data) >= 4:
                length = struct.unpack("!H", data[2:4])[0]
            elif length == 127 and len(data) >= 10:
                length = struct.unpack("!Q", data[2:10])[0]
            if len(data) < start + length:
                break
            if data[0] & 0x0F == 8:
                return int.from_bytes(data[start:start + 2], "big")
            data = data[start + length:]
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed without a close frame")
        data += chunk
    raise AssertionError("no close frame")


def test_a_client_that_vanishes_ends_the_upstream_connection(verifier: WsVerifier,
                                                             sigproxy_factory: Callable[..., Proxy]) -> None:
    """The client drops its TCP connection mid-session (no close frame): the server's connection ends the same
    way (no close frame invented), and the access line says so."""
    proxy = sigproxy_factory(config(tail=reverse(verifier.url)))
    sock = _handshake(int(proxy.reverse[0].rsplit(":", 1)[1]))
    sock.sendall(_frame(1, b"half a conversation"))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset
    session = sessions(verifier)[-1]
    assert session["clean"] is False and session["messages"] == 1
    assert ws_lines(proxy)[-1]["ws_end"] == "client_gone"


@pytest.mark.parametrize("direction", ["client", "server"])
def test_a_message_over_the_limit_closes_both_sides_with_1009(
        direction: str, verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    proxy = sigproxy_factory(config(proxy="websocket_max_message = 1000000", tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> int | None:
        # No permessage-deflate: the limit is on payload bytes as sent, and these would compress to nothing.
        async with connect(url, max_size=None, compression=None) as ws:
            await ws.send(b"x" * 999_999)  # under: fine
            assert len(await ws.recv()) == 999_999
            await ws.send(b"x" * 1_000_001 if direction == "client" else "send:1000001")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(run()) == 1009
    assert sessions(verifier)[-1]["close_code"] == 1009
    assert ws_lines(proxy)[-1]["ws_end"] == "message_too_big"


def test_an_unmasked_client_frame_is_a_protocol_error(verifier: WsVerifier,
                                                       sigproxy_factory: Callable[..., Proxy]) -> None:
    proxy = sigproxy_factory(config(tail=reverse(verifier.url)))
    sock = _handshake(int(proxy.reverse[0].rsplit(":", 1)[1]))
    sock.sendall(_frame(1, b"masked, fine"))
    sock.sendall(_frame(1, b"unmasked", mask=False))
    assert _read_close(sock) == 1002  # after the echo of the first message
    sock.close()
    assert sessions(verifier)[-1]["close_code"] == 1002
    assert ws_lines(proxy)[-1]["ws_end"] == "protocol_error"


def test_an_idle_websocket_is_closed_with_1001(verifier: WsVerifier,
                                               sigproxy_factory: Callable[..., Proxy]) -> None:
    proxy = sigproxy_factory(config(proxy="websocket_idle_timeout = 1", tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> int | None:
        async with connect(url, ping_interval=None) as ws:
            await echo_round(ws)
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert 0.5 < time.monotonic() - started < 5
            return ws.close_code

    assert asyncio.run(run()) == 1001
    assert sessions(verifier)[-1]["close_code"] == 1001
    assert ws_lines(proxy)[-1]["ws_end"] == "idle_timeout"


def test_shutdown_closes_open_websockets_with_1001(verifier: WsVerifier,
                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
    proxy = sigproxy_factory(config(proxy="drain_seconds = 1", tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> int | None:
        async with connect(url, ping_interval=None) as ws:
            await echo_round(ws)
            proxy.proc.terminate()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(run()) == 1001
    assert sessions(verifier)[-1]["close_code"] == 1001
    assert proxy.proc.wait(10) == 0

    # The session's access line is written, saying how it ended (its task was cancelled, not returned).
    line = ws_lines(proxy)[-1]
    assert (line["status"], line["ws_end"], line["ws_messages_up"]) == (101, "shutdown", 2), line


def test_a_read_only_connection_refuses_the_handshake(verifier: WsVerifier,
                                                      sigproxy_factory: Callable[..., Proxy]) -> None:
    """Fail closed: a WebSocket's messages may write, so a read-only connection refuses it; nothing is sent."""
    proxy = sigproxy_factory(config(tail=reverse(verifier.url)).replace('service = "execute-api"',
                                                                         'service = "execute-api"\nread_only = true'))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> tuple[int, bytes]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url):
                pass
        return caught.value.response.status_code, bytes(caught.value.response.body or b"")

    status, body = asyncio.run(run())
    assert status == 403 and b"messages may write" in body
    assert verifier.handshakes == []


# ------------------------------------------------------------------ a peer that reads nothing


_TCP_ESTABLISHED = 1


def _tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (Linux ``tcp_info.tcpi_state``: 1 established, 7 closed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _wait_let_go(sock: socket.socket, timeout: float = 10) -> None:
    """Until the peer has let go of ``sock``'s connection (reset: it no longer holds it open, unread bytes or
    not); AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _tcp_state(sock) == _TCP_ESTABLISHED:
        if time.monotonic() > deadline:
            raise AssertionError("the connection is still held open")
        time.sleep(0.05)


def test_a_client_that_reads_nothing_is_cut_off(verifier: WsVerifier,
                                                sigproxy_factory: Callable[..., Proxy]) -> None:
    """The server floods, the client reads nothing: after idle_timeout sigproxy lets go of the client's connection
    (it is not held open, with megabytes queued, until the client reads them), and of the server's."""
    proxy = sigproxy_factory(config(proxy="idle_timeout = 1", tail=reverse(verifier.url)))
    sock = _handshake(int(proxy.reverse[0].rsplit(":", 1)[1]))
    sock.sendall(_frame(1, b"send:8000000") * 4)  # 32 MB down, more than every buffer between
    proxy.written("read nothing of its answer for idle_timeout")
    _wait_let_go(sock)
    sock.close()
    assert ws_lines(proxy)[-1]["ws_end"] == "client_gone"
    assert sessions(verifier)[-1]["clean"] is False


@contextmanager
def _deaf_upstream() -> Iterator[tuple[int, list[socket.socket]]]:
    """A WebSocket "server" that answers any handshake with 101 and then reads nothing: ``(port, accepted)``."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
            assert key is not None
            accept = base64.b64encode(hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        thread.join(5)
        for conn in accepted:
            conn.close()


def test_an_upstream_that_reads_nothing_is_let_go(sigproxy_factory: Callable[..., Proxy]) -> None:
    """The client floods, the server reads nothing; the session ends (idle timeout): sigproxy does not keep the
    server's connection (and its pool slot) open for as long as the server keeps it, waiting to flush."""
    with _deaf_upstream() as (port, accepted):
        proxy = sigproxy_factory(config(proxy="websocket_idle_timeout = 1\nread_timeout = 1",
                                        tail=reverse(f"ws://127.0.0.1:{port}")))
        sock = _handshake(int(proxy.reverse[0].rsplit(":", 1)[1]))
        sock.settimeout(0.05)
        frame = _frame(2, b"y" * 60000)
        with contextlib.suppress(OSError):  # until sigproxy, stuck, stops reading (then ends the session)
            while not ws_lines(proxy, 0):
                with contextlib.suppress(TimeoutError):
                    sock.sendall(frame)
        sock.close()
        assert ws_lines(proxy)[-1]["ws_end"] == "idle_timeout"
        _wait_let_go(accepted[0])


def test_a_client_gone_before_the_101_is_an_access_line_not_a_crash(sigproxy_factory: Callable[..., Proxy]) -> None:
    """The client resets its connection while the handshake is upstream; the upstream then switches: sigproxy
    writes the access line (499 client_aborted, as for a client gone mid-upload) and closes the upstream's
    connection, with no error logged (a client going away is not sigproxy failing)."""
    server = socket.create_server(("127.0.0.1", 0))
    shake = threading.Event()
    answer = threading.Event()
    upstream_saw: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            shake.set()
            answer.wait(10)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            conn.settimeout(10)
            upstream_saw.append(conn.recv(1024))  # b"": sigproxy closed it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = sigproxy_factory(config(tail=reverse(f"ws://127.0.0.1:{server.getsockname()[1]}")))
    fds = Path(f"/proc/{proxy.proc.pid}/fd")
    port = int(proxy.reverse[0].rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert shake.wait(10)
    open_fds = len(list(fds.iterdir()))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset
    deadline = time.monotonic() + 10
    while len(list(fds.iterdir())) >= open_fds:  # until sigproxy has let the client's connection go
        assert time.monotonic() < deadline, "sigproxy kept the reset client connection"
        time.sleep(0.02)
    answer.set()
    thread.join(10)
    server.close()
    assert upstream_saw == [b""]
    line = ws_lines(proxy)[-1]
    assert (line["status"], line["error"]) == (499, "client_aborted"), line
    assert '"level":"error"' not in "".join(proxy.output)


def test_websockets_holding_every_upstream_connection_are_named_in_the_refusal(
        verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Open WebSockets hold their upstream connections, which count against upstream_connections: when they hold
    them all, the next request waits connect_timeout and gets 504 naming that limit (not "upstream timed out":
    the upstream did nothing wrong), and the operator is told in the log."""
    proxy = sigproxy_factory(config(proxy="upstream_connections = 1\nconnect_timeout = 1",
                                    tail=reverse(verifier.url)))
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> tuple[int, str]:
        async with connect(url, ping_interval=None) as ws:
            await echo_round(ws)
            with pytest.raises(InvalidStatus) as caught:
                async with connect(url, ping_interval=None):
                    pass
            await echo_round(ws)  # the first is unharmed
        response = caught.value.response
        return response.status_code, bytes(response.body or b"").decode()

    status, body = asyncio.run(run())
    assert status == 504 and "upstream_connections" in body, body
    assert "upstream_connections" in proxy.written('"level":"warning","logger":"sigproxy.forwarding"')


def test_websockets_through_worker_processes(verifier: WsVerifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """With ``workers = 2`` each worker relays the WebSockets it accepts; a SIGTERM to the supervisor still ends
    them with 1001."""
    proxy = sigproxy_factory(config(proxy="drain_seconds = 1", tail=reverse(verifier.url)), workers=2)
    url = proxy.reverse[0].replace("http://", "ws://") + "/"

    async def run() -> list[int | None]:
        sockets = [await connect(url, ping_interval=None) for _ in range(6)]
        for ws in sockets:
            await echo_round(ws)
        proxy.proc.terminate()
        codes = []
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            codes.append(ws.close_code)
        return codes

    assert asyncio.run(run()) == [1001] * 6
    assert proxy.proc.wait(15) == 0
    assert [s["close_code"] for s in sessions(verifier, 6)] == [1001] * 6


def test_wss_to_a_tls_reverse_listener(verifier: WsVerifier, tmp_path: Path,
                                       sigproxy_factory: Callable[..., Proxy]) -> None:
    """A reverse listener with ``tls = "self"``: the client speaks wss:// to sigproxy (trusting its CA), sigproxy
    signs the handshake and relays to the ws:// server; a 3 MiB message each way and the close code."""
    proxy = sigproxy_factory(config(tail=reverse(verifier.url) + 'tls = "self"\n'))
    assert proxy.reverse[0].startswith("https://127.0.0.1:")
    url = proxy.reverse[0].replace("https://", "wss://") + "/tls"
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "state" / "ca-cert.pem"))
    big = os.urandom(3 * 2**20)

    async def run() -> None:
        async with connect(url, ssl=client_tls, max_size=None) as ws:
            await echo_round(ws)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.close(4002, "over tls")

    asyncio.run(run())
    assert verifier.handshakes[-1]["ok"] and verifier.handshakes[-1]["path"] == "/tls"
    assert sessions(verifier)[-1]["close_code"] == 4002
    assert ws_lines(proxy)[-1]["ws_close_client"] == 4002

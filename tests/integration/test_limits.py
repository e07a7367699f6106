"""Listener limits and client gating, through the real proxy process with raw sockets: head limits (400),
header_timeout against a slowloris (first and keep-alive heads, CONNECT heads, inside a tunnel, on reverse
listeners) while others are served, idle_timeout, body_timeout with nothing stored upstream, connection limits
(503) and the clients allow-list (403), also changed by a reload. moto is the upstream."""

from __future__ import annotations

import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Proxy, moto_config
from tests.errorbody import error_body
from tests.integration.test_https import https_config, sigproxy_cli, tls_port
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

# Generous bounds around the configured timeouts: they tell "cut off by the timeout" from "never cut off"
# (a drip gives up after _GIVE_UP s), not how fast the proxy is.
_GIVE_UP = 8.0


def _config(moto: Moto, proxy: str = "", reverse_clients: str | None = None, reverse: bool = True) -> str:
    text = moto_config(moto, connection='service = "s3"', proxy=proxy)
    if reverse:
        text += f"""
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{moto.endpoint}"
connection = "main"
{f"clients = {reverse_clients}" if reverse_clients is not None else ""}
"""
    return text


def _addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _connect(url: str) -> socket.socket:
    return socket.create_connection(_addr(url), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the proxy closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response framed by Content-Length: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                  if k.strip().lower() == "content-length")
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split(" ")[1]), body


def _error(reply: bytes) -> tuple[int, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), reply[:200]
    return int(head[9:12]), error_body(body)["code"]  # sigproxy's JSON, or S3's XML once the service is known


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True


def _drip(sock: socket.socket, data: bytes, interval: float = 0.3) -> float:
    """Send ``data`` one byte every ``interval`` s; the seconds from the first byte until the proxy closed the
    connection (``inf``: still open after _GIVE_UP s)."""
    started = time.monotonic()
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return time.monotonic() - started
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                readable = True
            else:
                readable = bool(select.select([sock], [], [], left)[0])
            if not readable:
                break
            try:
                if sock.recv(4096) == b"":
                    return time.monotonic() - started
            except ssl.SSLWantReadError:
                continue
            except (OSError, ssl.SSLError):
                return time.monotonic() - started
        if time.monotonic() - started > _GIVE_UP:
            break
    return float("inf")


def _slow_head(prefix: bytes) -> bytes:
    return prefix + b"X-Slow: " + b"a" * 200


class TestHeadLimits:
    LIMITS = "max_request_line = 1024\nmax_header_size = 1024\nmax_headers = 20"

    @staticmethod
    def _heads(target: str) -> dict[str, bytes]:
        line = f"GET {target}".encode()
        return {
            "request line": line + b"?x=" + b"a" * 2000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            "header size": line + b" HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
            "header count": line + b" HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30))
            + b"\r\n",
        }

    def _check(self, url: str, target: str) -> None:
        for what, raw in self._heads(target).items():
            with _connect(url) as sock:
                sock.sendall(raw)
                reply = _read_all(sock)  # answered, then closed
            assert _error(reply) == (400, "bad_request"), (what, reply[:300])
            assert b"a" * 50 not in reply  # the client's bytes are not echoed
        # Within the limits (a long header, many headers) it is served.
        with _connect(url) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\nX-Big: {'b' * 900}\r\n".encode()
                         + b"".join(b"X-H%d: v\r\n" % i for i in range(15)) + b"\r\n")
            assert _read_response(sock)[0] == 200

    def test_forward(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Over max_request_line, max_header_size or max_headers on the forward listener: 400 and closed."""
        proxy = sigproxy_factory(_config(moto, self.LIMITS, reverse=False))
        self._check(proxy.url, f"{moto.endpoint}/{moto.bucket}")

    def test_reverse(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """The same limits on a [[reverse]] listener."""
        proxy = sigproxy_factory(_config(moto, self.LIMITS))
        self._check(proxy.reverse[0], f"/{moto.bucket}")

    def test_connect_head(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A CONNECT head (read by the front door, not aiohttp) is held to the same limits."""
        proxy = sigproxy_factory(_config(moto, self.LIMITS, reverse=False))
        heads = [b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30))
                 + b"\r\n",
                 b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
                 b"CONNECT " + b"a" * 2000 + b".example:443 HTTP/1.1\r\n\r\n",
                 b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n" + b"X-Many: " + b"a" * 500 + b"\r\n" * 100]
        for raw in heads:
            with _connect(proxy.url) as sock:
                sock.sendall(raw)
                reply = _read_all(sock)
            assert _error(reply) == (400, "bad_request"), reply[:300]


class TestSlowloris:
    def test_heads_cut_off_while_others_are_served(self, moto: Moto,
                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
        """header_timeout = 2 and a byte every 0.3 s (never idle for long): a first head, a later keep-alive
        head, a CONNECT head and a reverse listener's head are all cut off near 2 s from their first byte,
        while a normal request through the same proxy succeeds meanwhile."""
        proxy = sigproxy_factory(_config(moto, "header_timeout = 2\nidle_timeout = 30"))
        rev = proxy.reverse[0]
        target = f"{moto.endpoint}/{moto.bucket}"
        results: dict[str, float] = {}

        def first_head() -> None:
            with _connect(proxy.url) as sock:
                results["first head"] = _drip(sock, _slow_head(f"GET {target} HTTP/1.1\r\nHost: h\r\n".encode()))

        def keepalive_head() -> None:
            with _connect(proxy.url) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                assert _read_response(sock)[0] == 200
                results["keep-alive head"] = _drip(sock, _slow_head(f"GET {target} HTTP/1.1\r\n".encode()))

        def connect_head() -> None:
            with _connect(proxy.url) as sock:
                results["CONNECT head"] = _drip(sock, _slow_head(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n"))

        def reverse_head() -> None:
            with _connect(rev) as sock:
                sock.sendall(f"GET /{moto.bucket} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                assert _read_response(sock)[0] == 200
                results["reverse keep-alive head"] = _drip(sock, _slow_head(b"GET / HTTP/1.1\r\n"))

        threads = [threading.Thread(target=f) for f in (first_head, keepalive_head, connect_head, reverse_head)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        ok = curl(proxy, "-H", "X-Sigproxy-Service: s3", target)
        still_dripping = all(t.is_alive() for t in threads)
        for t in threads:
            t.join(15)
        assert status_of(ok) == 200, ok
        assert still_dripping, results
        assert set(results) == {"first head", "keep-alive head", "CONNECT head", "reverse keep-alive head"}
        for what, seconds in results.items():
            assert 1.5 < seconds < 5, (what, seconds)
        proxy.written("did not finish a request head within header_timeout")

    def test_inside_a_tunnel(self, moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Inside an intercepted CONNECT tunnel: a request, then a dripped second head, cut off near
        header_timeout."""
        proxy = sigproxy_factory(https_config(moto, tmp_path / "state",
                                              extra_proxy="header_timeout = 1\nidle_timeout = 30",
                                              connection='service = "s3"'))
        bundle = tmp_path / "bundle.pem"
        assert sigproxy_cli("ca", "-c", str(proxy.config), "--bundle", str(bundle)).returncode == 0
        ctx = ssl.create_default_context(cafile=str(bundle))
        with _connect(proxy.url) as raw:
            raw.sendall(f"CONNECT 127.0.0.1:{tls_port(moto)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert raw.recv(100).startswith(b"HTTP/1.1 200")
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(f"GET /{moto.bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                assert _read_response(tls)[0] == 200
                seconds = _drip(tls, _slow_head(f"GET /{moto.bucket} HTTP/1.1\r\n".encode()))
        assert 0.7 < seconds < 4, seconds


class TestIdle:
    def test_idle_connections_closed(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """idle_timeout = 1: a connection that never sends, and one idle after a keep-alive request, on the
        forward and the reverse listener, are closed; a busy one is not cut by it."""
        proxy = sigproxy_factory(_config(moto, "idle_timeout = 1"))
        target = {proxy.url: f"{moto.endpoint}/{moto.bucket}", proxy.reverse[0]: f"/{moto.bucket}"}
        for url, path in target.items():
            with _connect(url) as silent, _connect(url) as after_request:
                after_request.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                assert _read_response(after_request)[0] == 200
                assert _closed_within(silent, 5), url
                assert _closed_within(after_request, 5), url
            # Requests less than idle_timeout apart keep the connection.
            with _connect(url) as busy:
                for _ in range(3):
                    busy.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                    assert _read_response(busy)[0] == 200
                    time.sleep(0.3)


class TestBodyTimeout:
    @pytest.mark.parametrize(("mode", "headers", "length"), [
        ("buffered", "", 1000),
        ("passthrough", "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n", 1000),
        ("signed-chunks", "", 5000),
    ])
    def test_stalled_body(self, mode: str, headers: str, length: int, moto: Moto,
                          sigproxy_factory: Callable[..., Proxy]) -> None:
        """A client that stops sending mid-body gets 408 body_timeout after body_timeout (1 s) of silence and
        its connection is closed; nothing is stored upstream, however the body was going (read whole,
        streamed as is, or re-framed into signed chunks)."""
        proxy = sigproxy_factory(_config(moto, 'body_timeout = 1\nmax_buffered_body = "2KiB"', reverse=False))
        key = f"stalled-{mode}.bin"
        url = f"{moto.endpoint}/{moto.bucket}/{key}"
        with _connect(proxy.url) as sock:
            sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n{headers}\r\n".encode()
                         + b"x" * 300)
            started = time.monotonic()
            sock.settimeout(_GIVE_UP)
            reply = _read_all(sock)  # the answer, then the close
            waited = time.monotonic() - started
        assert _error(reply) == (408, "body_timeout"), reply[:300]
        assert 0.7 < waited < 5, waited
        proxy.written('"error":"body_timeout"')
        if mode != "buffered":
            proxy.written(f'"body":"{mode}"')
        get = curl(proxy, "-o", "/dev/null", url)
        assert status_of(get) == 404, get


class TestConnectionLimits:
    def test_per_client(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """max_connections_per_client = 2: a third connection gets 503 too_many_connections at once and is
        closed; the two open ones are unaffected, and a connection closed frees its place."""
        proxy = sigproxy_factory(_config(moto, "max_connections_per_client = 2", reverse=False))
        path = f"{moto.endpoint}/{moto.bucket}"
        with _connect(proxy.url) as a, _connect(proxy.url) as b:
            time.sleep(0.2)
            with _connect(proxy.url) as c:
                status, code = _error(_read_all(c))
            assert (status, code) == (503, "too_many_connections")
            for sock in (a, b):
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                assert _read_response(sock)[0] == 200
        for _ in range(50):  # the two are closed: their places come free
            r = curl(proxy, path)
            if status_of(r) == 200:
                break
            time.sleep(0.1)
        assert status_of(r) == 200, r

    def test_total_over_all_listeners(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """max_connections = 2 counts the forward and the reverse listener together."""
        proxy = sigproxy_factory(_config(moto, "max_connections = 2"))
        rev = proxy.reverse[0]
        with _connect(proxy.url) as a, _connect(rev) as b:
            time.sleep(0.2)
            for url in (rev, proxy.url):
                with _connect(url) as extra:
                    reply = _read_all(extra)
                assert _error(reply) == (503, "too_many_connections"), reply
                assert b"max_connections (2)" in reply
            a.sendall(f"GET {moto.endpoint}/{moto.bucket} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            assert _read_response(a)[0] == 200
            b.sendall(f"GET /{moto.bucket} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            assert _read_response(b)[0] == 200


class TestClients:
    def _refused(self, url: str) -> None:
        with _connect(url) as sock:
            reply = _read_all(sock)
        assert _error(reply) == (403, "client_not_allowed"), reply

    def _admitted(self, proxy: Proxy, moto: Moto) -> None:
        assert status_of(curl(proxy, f"{moto.endpoint}/{moto.bucket}")) == 200
        with _connect(proxy.reverse[0]) as sock:
            sock.sendall(f"GET /{moto.bucket} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            assert _read_response(sock)[0] == 200

    def test_outside_refused(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """clients = ["10.0.0.0/8"] on the forward and a reverse listener: 127.0.0.1 gets 403 client_not_allowed
        at accept, logged."""
        proxy = sigproxy_factory(_config(moto, 'clients = ["10.0.0.0/8"]', reverse_clients='["10.0.0.0/8"]'))
        self._refused(proxy.url)
        self._refused(proxy.reverse[0])
        proxy.written("not in its clients networks")

    def test_inside_admitted(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """clients = ["127.0.0.0/8"]: admitted on both."""
        proxy = sigproxy_factory(_config(moto, 'clients = ["127.0.0.0/8"]', reverse_clients='["127.0.0.0/8"]'))
        self._admitted(proxy, moto)

    def test_reload_applies(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A reload (SIGHUP) that changes the forward and the reverse listener's clients takes effect for new
        connections, without a restart."""
        proxy = sigproxy_factory(_config(moto, 'clients = ["10.0.0.0/8"]', reverse_clients='["10.0.0.0/8"]'))
        self._refused(proxy.url)
        proxy.config.write_text(proxy.config.read_text().replace('"10.0.0.0/8"', '"127.0.0.0/8"'))
        proxy.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "config reloaded" in "".join(proxy.output):
                break
            time.sleep(0.05)
        assert "config reloaded" in "".join(proxy.output), "".join(proxy.output)[-2000:]
        self._admitted(proxy, moto)


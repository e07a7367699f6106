"""The floor: the least a Python signing proxy on this interpreter, uvloop and httptools can cost per request.

    .venv/bin/python bench/floor.py [--listen 127.0.0.1:0]

A yardstick for issue 15's target 1, never a product: bench/instructions.py (``--rows floor``) and
bench/small_get.py (row ``floor``) run it beside sigproxy, so "how far is sigproxy from what Python can do
here" is a number measured in the same run, not a guess.

What it does is what any SigV4 forward proxy must do for a small GET, and nothing else: parse the request
(httptools), take the absolute-form target apart, drop hop-by-hop headers (RFC 9110 7.6.1), add ``Host``,
``X-Amz-Date`` and ``X-Amz-Content-SHA256``, build the canonical request (sorted, lower-case, trimmed headers),
sign it with a derived key kept per day (AWS SigV4: "Create a signed AWS API request"), write the head on one
kept-alive upstream connection per client connection, parse the response (httptools), drop its hop-by-hop
headers and write it back. It is all protocol callbacks: no task, coroutine or future per request.

What it leaves out is everything sigproxy adds: routing among connections, credential providers, the egress
guard, policies, request ids, metrics, access log, timeouts, limits, pipelining order, streaming bodies,
error answers. A request it can't handle (not an absolute ``http://`` GET) gets the connection closed.

Prints ``floor: forward proxy listening on http://HOST:PORT`` once listening, as ``sigproxy run`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable

import httptools
import uvloop

# bench/common.py's connection: static made-up keys, S3 in us-east-1.
_ACCESS_KEY_ID, _SECRET = "AKIDBENCH", "bench-secret-not-real"
_REGION, _SERVICE = "us-east-1", "s3"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                         "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"})
_REPLACED = frozenset({"host", "authorization", "x-amz-date", "x-amz-content-sha256"})
_keys: dict[str, bytes] = {}


def _signing_key(date: str) -> bytes:
    """kSigning for ``date`` (YYYYMMDD), derived once per day."""
    key = _keys.get(date)
    if key is None:
        key = f"AWS4{_SECRET}".encode()
        for part in (date, _REGION, _SERVICE, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        _keys[date] = key
    return key


def signed_head(method: str, authority: str, path: str, query: str, headers: list[tuple[str, str]]) -> bytes:
    """The upstream request head: the client's end-to-end headers plus SigV4 header auth."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = {name.lower(): value.strip() for name, value in headers}
    for name in _HOP_BY_HOP | _REPLACED:
        out.pop(name, None)
    out["host"], out["x-amz-date"], out["x-amz-content-sha256"] = authority, stamp, _EMPTY_SHA256
    names = sorted(out)
    signed = ";".join(names)
    canonical = "\n".join([method, path, query, *[f"{n}:{out[n]}" for n in names], "", signed, _EMPTY_SHA256])
    scope = f"{stamp[:8]}/{_REGION}/{_SERVICE}/aws4_request"
    string_to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(_signing_key(stamp[:8]), string_to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={_ACCESS_KEY_ID}/{scope}, SignedHeaders={signed}, "
                            f"Signature={signature}")
    target = f"{path}?{query}" if query else path
    lines = [f"{method} {target} HTTP/1.1", *[f"{n}: {v}" for n, v in out.items()], "", ""]
    return "\r\n".join(lines).encode()


class Upstream(asyncio.Protocol):
    """One kept-alive upstream connection, answering into its client's transport."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.pending:
            self.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def on_message_begin(self) -> None:
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parts = [b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()]
        for name, value in self.headers:
            if name.decode().lower() not in _HOP_BY_HOP:
                parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"\r\n")
        parts += self.body
        self.client.write(b"".join(parts))


class Client(asyncio.Protocol):
    """One client connection of the forward listener."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(), value.decode()))

    def on_message_complete(self) -> None:
        assert self.transport is not None
        url = httptools.parse_url(self.url)
        method = self.parser.get_method().decode()
        if url.schema != b"http" or method != "GET" or url.host is None:
            self.transport.close()
            return
        host, port = url.host.decode(), url.port or 80
        query = url.query.decode() if url.query else ""
        head = signed_head(method, f"{host}:{port}", (url.path or b"/").decode(), query, self.headers)
        if self.upstream is None:
            self.upstream = Upstream(self.transport)
            upstream = self.upstream
            asyncio.get_running_loop().create_task(
                asyncio.get_running_loop().create_connection(lambda: upstream, host, port))
        self.upstream.send(head)


async def serve(host: str, port: int, protocol: Callable[[], asyncio.Protocol] = Client, name: str = "floor") -> None:
    """Listen with ``protocol`` until killed (bench/skeleton.py passes its own)."""
    server = await asyncio.get_running_loop().create_server(protocol, host, port)
    bound = server.sockets[0].getsockname()
    print(f"{name}: forward proxy listening on http://{bound[0]}:{bound[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    host, port = parser.parse_args().listen.rsplit(":", 1)
    uvloop.run(serve(host, int(port)))


if __name__ == "__main__":
    main()

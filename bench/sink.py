"""A big-body upstream for benchmarks: swallows uploads, streams downloads, never holds a body in memory.

PUT/POST: reads the body in 64 KiB reads and discards it, answering 200 with a JSON body
``{"bytes": RAW, "sha256": HEX, "decoded_length": N|null, "decoded_bytes": N|null, "content_encoding": ...,
"aws_chunked": BOOL, "content_sha256": ...}`` so the caller can verify integrity. aws-chunked bodies (an
``x-amz-content-sha256`` of ``STREAMING-...``, or ``Content-Encoding: aws-chunked``) are
counted raw (``bytes``) and their framing is undone on the fly (signatures not checked) so ``sha256`` and
``decoded_bytes`` are the payload's; ``decoded_length`` is the ``x-amz-decoded-content-length`` header.
GET /big?size=N: N bytes of :func:`pattern` (a 1 MiB seeded pseudo-random block, repeated) with
Content-Length. Anything else: 200 with a 32-byte body.

Prints its URL on stdout once bound to 127.0.0.1:0. ``--tls CHAIN.pem`` (key + certificate chain) serves HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import ssl

import uvloop
from aiohttp import web

BLOCK_SIZE = 2**20
_SEED = 0x5167_7072  # "Sigpr"
_READ = 64 * 1024


def pattern() -> bytes:
    """The 1 MiB block every body of the benchmarks repeats (same bytes in every process)."""
    return random.Random(_SEED).randbytes(BLOCK_SIZE)


def pattern_sha256(size: int) -> str:
    """SHA-256 hex of the first ``size`` bytes of the repeated pattern."""
    block = memoryview(pattern())
    digest = hashlib.sha256()
    full, rest = divmod(size, BLOCK_SIZE)
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


class AwsChunked:
    """Undoes ``aws-chunked`` framing as bytes arrive (``<hex>[;ext]\\r\\n<data>\\r\\n`` ... ``0...``), hashing
    the data; trailers after the last chunk are ignored, chunk signatures are not checked."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.decoded = 0
        self.done = False
        self.error: str | None = None
        self._line = b""
        self._need = 0  # data bytes left in this chunk, then 2 for its CRLF
        self._state = "head"

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        while pos < len(data) and not self.done and self.error is None:
            if self._state == "head":
                end = data.find(b"\n", pos)
                if end < 0:
                    self._line += data[pos:]
                    return
                line, self._line, pos = self._line + data[pos:end], b"", end + 1
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.error = f"bad chunk header {line[:80]!r}"
                    return
                self.done = size == 0
                self._need, self._state = size, "data"
            else:
                take = min(self._need, len(data) - pos)
                if self._state == "data":
                    self.digest.update(view[pos:pos + take])
                    self.decoded += take
                pos += take
                self._need -= take
                if self._need == 0:
                    self._state, self._need = ("crlf", 2) if self._state == "data" else ("head", 0)


async def main(tls_chain: str | None) -> None:
    block = memoryview(pattern())

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method in {"PUT", "POST"}:
            encoding = request.headers.get("Content-Encoding")
            content_sha256 = request.headers.get("x-amz-content-sha256") or ""
            # aws-chunked framing, told as S3, moto and Ceph RGW tell it: by x-amz-content-sha256 (sigproxy adds
            # no Content-Encoding for its own signed chunks: sigproxy/bodies.py), or by the encoding.
            framed = content_sha256.upper().startswith("STREAMING-") or "aws-chunked" in (encoding or "").lower()
            chunked = AwsChunked() if framed else None
            digest = hashlib.sha256()
            raw = 0
            while chunk := await request.content.read(_READ):
                raw += len(chunk)
                if chunked:
                    chunked.feed(chunk)
                else:
                    digest.update(chunk)
            decoded = request.headers.get("x-amz-decoded-content-length")
            return web.Response(content_type="application/json", text=json.dumps({
                "bytes": raw,
                "sha256": (chunked.digest if chunked else digest).hexdigest(),
                "decoded_length": int(decoded) if decoded and decoded.isdigit() else None,
                "decoded_bytes": chunked.decoded if chunked else None,
                "aws_chunked_error": (chunked.error or (None if chunked.done else "no final chunk"))
                if chunked else None,
                "aws_chunked": framed,
                "content_encoding": encoding,
                "content_sha256": content_sha256 or None,
            }))
        if request.method == "GET" and request.path.endswith("/big"):
            size = int(request.query.get("size", "0"))
            response = web.StreamResponse()
            response.content_length = size
            response.content_type = "application/octet-stream"
            await response.prepare(request)
            full, rest = divmod(size, BLOCK_SIZE)
            for _ in range(full):
                await response.write(block)
            if rest:
                await response.write(block[:rest])
            await response.write_eof()
            return response
        return web.Response(body=b"x" * 32)

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    ctx = None
    if tls_chain:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_chain)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"{'https' if ctx else 'http'}://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", metavar="CHAIN_PEM")
    uvloop.run(main(parser.parse_args().tls))

"""A lean keep-alive HTTP/1.1 load generator on asyncio + uvloop, for what wrk can't do (CONNECT tunnels).

Each connection sends one request, reads the whole answer (Content-Length framing only), and repeats until the
deadline; every request's latency is kept. With ``connect``, a connection first sends that CONNECT request and
then starts TLS with ``ctx`` (server name 127.0.0.1) before its requests. It runs in the calling process on
one core, so at some rate it is itself the bottleneck: bench/small_get.py prints its rate straight to the
upstream as the ceiling to read the tunnel row against.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time

__all__ = ["load"]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _one_connection(proxy: tuple[str, int], request: bytes, connect: bytes | None,
                          ctx: ssl.SSLContext | None, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(*proxy)
    if connect is not None and ctx is not None:
        writer.write(connect)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
    errors = 0
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        writer.write(request)
        status = await _read_response(reader)
        latencies.append(time.perf_counter() - t0)
        errors += not 200 <= status < 300
    writer.close()
    return errors


async def load(proxy: tuple[str, int], request: bytes, connect: bytes | None, ctx: ssl.SSLContext | None,
               conns: int, duration: float) -> dict[str, float]:
    """``conns`` connections to ``proxy`` (host, port) sending ``request`` (raw bytes) for ``duration`` seconds.

    Returns ``rps`` (requests/s), ``p50``/``p99`` (ms), ``errors`` and ``non2xx`` (answers outside 2xx) and
    ``requests`` (completed). Connection failures raise (OSError, ssl.SSLError)."""
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    started = time.monotonic()
    errors = await asyncio.gather(*(_one_connection(proxy, request, connect, ctx, deadline, latencies)
                                    for _ in range(conns)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000, "errors": sum(errors),
            "non2xx": sum(errors), "requests": len(latencies)}

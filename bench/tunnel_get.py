"""Small-GET requests/s and p50/p99 through an HTTPS tunnel (CONNECT + TLS with sigproxy's CA) next to plain
HTTP through the same proxy, with the same load generator.

wrk can't speak CONNECT, so the load comes from a lean asyncio client here (raw HTTP/1.1 on keep-alive
connections, 64 by default, for 10 s). The upstream is bench/upstream.py, over TLS for the tunnel case.
sigproxy runs on core 0, the upstream and the load generator on core 1 (`taskset`).

    .venv/bin/python bench/tunnel_get.py [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trustme
from common import pinned, start


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def one_connection(proxy: tuple[str, int], request: bytes, connect: bytes | None,
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
        status = await read_response(reader)
        latencies.append(time.perf_counter() - t0)
        errors += status != 200
    writer.close()
    return errors


async def load(proxy: tuple[str, int], request: bytes, connect: bytes | None, ctx: ssl.SSLContext | None,
               conns: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    started = time.monotonic()
    errors = await asyncio.gather(*(one_connection(proxy, request, connect, ctx, deadline, latencies)
                                    for _ in range(conns)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000, "errors": sum(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        up_ca, up_chain = Path(tmp) / "up-ca.pem", Path(tmp) / "up.pem"
        ca.cert_pem.write_to_path(str(up_ca))
        cert.private_key_and_cert_chain_pem.write_to_path(str(up_chain))
        plain_up, plain_url = start(pinned(1, [py, "bench/upstream.py"]), "http://")
        tls_up, tls_url = start(pinned(1, [py, "bench/upstream.py", "--tls", str(up_chain)]), "https://")
        tls_port = int(tls_url.rsplit(":", 1)[1])
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f'[proxy]\nlisten = "127.0.0.1:0"\ndefault_connection = "bench"\nstate_dir = "{tmp}/state"\n'
            f'upstream_ca_file = "{up_ca}"\nconnect_ports = [{tls_port}]\n'
            '[connections.bench]\nregion = "us-east-1"\nservice = "s3"\nhosts = ["127.0.0.1:*"]\n'
            '[connections.bench.credentials]\nsource = "static"\naccess_key_id = "AKIDBENCH"\n'
            'secret_access_key = "bench-secret-not-real"\n'
        )
        proxy_proc, proxy_url = start(
            pinned(0, [py, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level", "warning"]), "listening on"
        )
        host, port = proxy_url.removeprefix("http://").rsplit(":", 1)
        proxy = (host, int(port))
        client_ctx = ssl.create_default_context(cafile=str(Path(tmp) / "state" / "ca-cert.pem"))
        try:
            plain = asyncio.run(load(proxy, f"GET {plain_url}/bucket/key HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                                     None, None, args.connections, args.duration))
            tunnel = asyncio.run(load(
                proxy, b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                f"CONNECT 127.0.0.1:{tls_port} HTTP/1.1\r\nHost: 127.0.0.1:{tls_port}\r\n\r\n".encode(),
                client_ctx, args.connections, args.duration))
        finally:
            for proc in (proxy_proc, plain_up, tls_up):
                proc.terminate()
                proc.wait()
    print(f"{'':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in (("plain http", plain), ("https tunnel", tunnel)):
        print(f"{name:14} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7.0f}")


if __name__ == "__main__":
    main()

"""TLS through sigproxy, this checkout against a baseline checkout, in alternating rounds of the same run:
big downloads through a reverse listener to an HTTPS upstream (upstream TLS only) and through a CONNECT
tunnel (client and upstream TLS), and small GETs through the tunnel. For choosing how TLS is done (issue 12:
sigproxy.eventloop swaps uvloop's TLS protocol for CPython's); ratios matter, not absolute numbers.

The upstream is bench/sink.py over TLS; the load comes from a lean asyncio client here. sigproxy runs on
core 0, upstream and client on core 1. A baseline is any other checkout, e.g.
``git worktree add /tmp/base <rev>``; both run with this checkout's virtualenv.

    .venv/bin/python bench/tls_loop.py --baseline /tmp/base [--rounds 3] [--size 256MiB] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme
from big_body import size_arg
from common import ROOT, pinned, start
from pyload import load

READ = 2**20


def start_proxy(checkout: Path, cfg: Path) -> tuple[subprocess.Popen[str], str, str]:
    """``sigproxy run`` from ``checkout``: (process, forward URL, reverse URL)."""
    proc = subprocess.Popen(pinned(0, [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg),
                                       "--log-level", "warning"]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=checkout)
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    for line in proc.stdout:
        for kind in ("forward", "reverse"):
            if f"{kind} proxy listening on " in line:
                urls[kind] = line.split("listening on ", 1)[1].split()[0]
        if len(urls) == 2:
            return proc, urls["forward"], urls["reverse"]
    sys.exit(f"sigproxy from {checkout} did not start")


async def download(address: tuple[str, int], path: str, size: int, connect: bytes | None,
                   ctx: ssl.SSLContext | None) -> float:
    """MB/s of one GET of ``size`` bytes (fails on a short body)."""
    reader, writer = await asyncio.open_connection(*address)
    if connect is not None and ctx is not None:
        writer.write(connect)
        await reader.readuntil(b"\r\n\r\n")
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
    started = time.monotonic()
    writer.write(f"GET {path}?size={size} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    got = 0
    while got < size:
        chunk = await reader.read(READ)
        if not chunk:
            raise RuntimeError(f"short body: {got} of {size} bytes")
        got += len(chunk)
    elapsed = time.monotonic() - started
    writer.close()
    return size / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=size_arg, default=256 * 2**20)
    parser.add_argument("--duration", type=float, default=8, help="seconds of small GETs per round")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"this": {}, "baseline": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        up_ca, up_chain = Path(tmp) / "up-ca.pem", Path(tmp) / "up.pem"
        ca.cert_pem.write_to_path(str(up_ca))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(up_chain))
        sink, sink_url = start(pinned(1, [sys.executable, "bench/sink.py", "--tls", str(up_chain)]), "https://")
        port = int(sink_url.rsplit(":", 1)[1])
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f'[proxy]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_connection = "bench"\n'
            f'state_dir = "{tmp}/state"\nupstream_ca_file = "{up_ca}"\nconnect_ports = [{port}]\n'
            '[connections.bench]\nregion = "us-east-1"\nservice = "s3"\nhosts = ["127.0.0.1:*"]\n'
            '[connections.bench.credentials]\nsource = "static"\naccess_key_id = "AKIDBENCH"\n'
            'secret_access_key = "bench-secret-not-real"\n'
            f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{sink_url}"\nconnection = "bench"\n'
        )
        connect = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        try:
            for _ in range(args.rounds):
                for name, checkout in (("this", ROOT), ("baseline", args.baseline.resolve())):
                    proc, forward, reverse = start_proxy(checkout, cfg)
                    ctx = ssl.create_default_context(cafile=str(Path(tmp) / "state" / "ca-cert.pem"))
                    fwd = forward.removeprefix("http://").rsplit(":", 1)
                    rev = reverse.removeprefix("http://").rsplit(":", 1)
                    try:
                        r = results[name]
                        r.setdefault("reverse MB/s", []).append(asyncio.run(
                            download((rev[0], int(rev[1])), "/big", args.size, None, None)))
                        r.setdefault("tunnel MB/s", []).append(asyncio.run(
                            download((fwd[0], int(fwd[1])), "/big", args.size, connect, ctx)))
                        small = asyncio.run(load((fwd[0], int(fwd[1])), b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                                 connect, ctx, args.connections, args.duration))
                        r.setdefault("tunnel small req/s", []).append(small["rps"])
                        r.setdefault("tunnel small p99 ms", []).append(small["p99"])
                    finally:
                        proc.terminate()
                        proc.wait()
        finally:
            sink.terminate()
            sink.wait()
    print(f"{'':22} {'this':>10} {'baseline':>10} {'ratio':>7}   (medians of {args.rounds} rounds)")
    for metric in results["this"]:
        this, base = statistics.median(results["this"][metric]), statistics.median(results["baseline"][metric])
        print(f"{metric:22} {this:>10.1f} {base:>10.1f} {this / base:>7.2f}")


if __name__ == "__main__":
    main()

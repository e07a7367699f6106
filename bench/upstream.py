"""A minimal fast HTTP upstream for benchmarks: every request answers 200 with a 32-byte body.

It verifies nothing (moto would be the bottleneck); correctness is the test suite's job.
Prints its URL on stdout once bound to 127.0.0.1:0. ``--tls CHAIN.pem`` (key + certificate chain) serves HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

import uvloop
from aiohttp import web

BODY = b"x" * 32


async def handle(_: web.BaseRequest) -> web.Response:
    return web.Response(body=BODY)


async def main(tls_chain: str | None) -> None:
    ctx = None
    if tls_chain:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_chain)
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"{'https' if ctx else 'http'}://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", metavar="CHAIN_PEM")
    uvloop.run(main(parser.parse_args().tls))

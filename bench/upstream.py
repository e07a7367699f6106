"""A minimal fast HTTP upstream for benchmarks: every GET answers 200 with a 32-byte body.

It verifies nothing (moto would be the bottleneck); correctness is the test suite's job.
Prints its URL on stdout once bound to 127.0.0.1:0.
"""

from __future__ import annotations

import asyncio

import uvloop
from aiohttp import web

BODY = b"x" * 32


async def handle(_: web.BaseRequest) -> web.Response:
    return web.Response(body=BODY)


async def main() -> None:
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main())

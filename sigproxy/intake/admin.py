"""The admin listener: ``/healthz`` (alive), ``/readyz`` (listeners up and every connection's credentials
cached or resolvable) and ``/metrics`` (Prometheus text format).

Must not: expose configuration values or anything secret; it answers with names, counts and states.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from sigproxy.credcache import CredentialCache
from sigproxy.errors import SigproxyError
from sigproxy.handler import Handler
from sigproxy.metrics import Metrics

__all__ = ["admin_app"]

# /readyz resolves credentials it doesn't have cached; a slow STS must not hang the probe.
_READY_TIMEOUT = 5.0
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Runtime(Protocol):
    ready: bool
    metrics: Metrics
    cache: CredentialCache

    @property
    def handler(self) -> Handler: ...


class _Gate(Protocol):
    @property
    def open(self) -> int: ...


class _Tunnels(Protocol):
    @property
    def open_tunnels(self) -> int: ...

    @property
    def gate(self) -> _Gate: ...


def admin_app(runtime: _Runtime, tunnels: _Tunnels) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        handler = runtime.handler
        names = list(handler.config.connections)

        async def check(name: str) -> str:
            try:
                async with asyncio.timeout(_READY_TIMEOUT):
                    await handler.providers.get(name)
            except TimeoutError:
                return "timeout"
            except SigproxyError as exc:
                return exc.code
            return "ok"

        results = dict(zip(names, await asyncio.gather(*(check(n) for n in names)), strict=True))
        ready = runtime.ready and all(v == "ok" for v in results.values())
        return web.json_response({"status": "ready" if ready else "not ready", "listeners": runtime.ready,
                                  "connections": results}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        stats = runtime.cache.stats
        gauges = {
            "sigproxy_credential_cache_hits_total": ("counter", "Credential lookups answered from the cache.",
                                                     float(stats.hits)),
            "sigproxy_credential_cache_misses_total": ("counter", "Credential lookups that waited for a fetch.",
                                                       float(stats.misses)),
            "sigproxy_credential_fetches_total": ("counter", "Credential fetches (STS calls and friends).",
                                                  float(stats.fetches)),
            "sigproxy_credential_failures_total": ("counter", "Credential fetches that failed.",
                                                   float(stats.failures)),
            "sigproxy_open_tunnels": ("gauge", "CONNECT tunnels open now.", float(tunnels.open_tunnels)),
            "sigproxy_client_connections": ("gauge", "Client connections open now (forward and reverse listeners).",
                                            float(tunnels.gate.open)),
        }
        return web.Response(text=runtime.metrics.render(gauges), headers={"Content-Type": _METRICS_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app

"""The admin listener: ``/healthz`` (alive), ``/readyz`` (this process can serve), ``/health/connections``
(each connection's credentials), ``/metrics`` (Prometheus text format), and the admin API under ``/v1``
(:mod:`sigproxy.api`: bearer token, JSON); only ``/v1`` is authenticated. ``/connect`` is the customer's
connect page (:mod:`sigproxy.connectpage`), whose session token in the URL is its credential. With
``admin_tls_cert_file`` the listener is a :class:`TlsSite`.

Readiness is the process's alone: listeners bound, config loaded, not draining. It never depends on any
connection's credentials -- one tenant deleting its role must not take every replica out of its Service
(issue 12). Per-connection health is ``/health/connections`` (for monitoring, not for probes) and the gauges
``sigproxy_connection_up{connection}`` and ``sigproxy_connections{state}``.

Must not: expose configuration values or anything secret; it answers with names, counts and states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from sigproxy import api
from sigproxy.authlimit import AuthFailures
from sigproxy.config import Address, Config
from sigproxy.connectpage import add_connect_page
from sigproxy.control import Control
from sigproxy.credcache import CredentialCache
from sigproxy.errors import SigproxyError
from sigproxy.handler import Handler
from sigproxy.metrics import GroupMetrics, Metrics, Sampled

from .tlsdoor import TlsAcceptor

if TYPE_CHECKING:
    from sigproxy.sessions import ConnectSessions

__all__ = ["TlsSite", "admin_app"]

# /health/connections resolves credentials it doesn't have cached: a slow STS must not hang it (per fetch),
# and a large fleet must not start thousands of fetches at once.
_CHECK_TIMEOUT = 5.0
_CHECK_CONCURRENCY = 32
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_Next = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Group(Protocol):
    async def metrics(self) -> GroupMetrics: ...

    async def settle(self) -> None: ...


class _Runtime(Protocol):
    ready: bool
    metrics: Metrics
    cache: CredentialCache
    failures: AuthFailures
    control: Control | None
    sessions: ConnectSessions | None

    @property
    def handler(self) -> Handler: ...

    @property
    def group(self) -> _Group | None: ...

    @property
    def config(self) -> Config: ...


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
        """200 while listeners are bound with a loaded config and the process is not draining; else 503."""
        ready = runtime.ready
        return web.json_response({"status": "ready" if ready else "not ready", "listeners": ready},
                                 status=200 if ready else 503)

    async def connections(_: web.Request) -> web.Response:
        """Each connection's credentials resolved (from the cache, or fetched: at most ``_CHECK_CONCURRENCY``
        at once, ``_CHECK_TIMEOUT`` s each): ``{"status", "connections": {name: "ok" | error code |
        "timeout"}, "failing": [names]}``, 200 when all are ok, else 503."""
        handler = runtime.handler
        names = list(handler.config.connections)
        slots = asyncio.Semaphore(_CHECK_CONCURRENCY)

        async def check(name: str) -> str:
            async with slots:
                try:
                    async with asyncio.timeout(_CHECK_TIMEOUT):
                        await handler.providers.get(name)
                except TimeoutError:
                    return "timeout"
                except SigproxyError as exc:
                    return exc.code
            return "ok"

        results = dict(zip(names, await asyncio.gather(*(check(n) for n in names)), strict=True))
        failing = [name for name, result in results.items() if result != "ok"]
        return web.json_response({"status": "failing" if failing else "ok", "connections": results,
                                  "failing": failing}, status=503 if failing else 200)

    def connection_states() -> dict[str, Sampled]:
        """The per-connection gauges, from the cache alone (a scrape never fetches credentials)."""
        providers = runtime.handler.providers
        states = {name: providers.state(name) for name in runtime.handler.config.connections}
        counts = dict.fromkeys(("up", "down", "unknown"), 0)
        for state in states.values():
            counts[state] += 1
        sampled: dict[str, Sampled] = {
            "sigproxy_connections": {(("state", s),): float(n) for s, n in counts.items()},
        }
        if runtime.metrics.connection_label:
            sampled["sigproxy_connection_up"] = {
                (("connection", name),): 1.0 if state == "up" else 0.0
                for name, state in states.items() if state != "unknown"
            }
        return sampled

    async def metrics(_: web.Request) -> web.Response:
        """The exposition text; with ``workers = N``, the whole group's (:class:`GroupMetrics`)."""
        stats = runtime.cache.stats
        counts, hits, misses = runtime.metrics, stats.hits, stats.misses
        open_tunnels, client_connections = tunnels.open_tunnels, tunnels.gate.open
        if runtime.group is not None:
            total = await runtime.group.metrics()
            counts, hits, misses = total.metrics, total.cache_hits, total.cache_misses
            open_tunnels, client_connections = total.open_tunnels, total.client_connections
        states = connection_states()
        gauges: dict[str, tuple[str, str, Sampled]] = {
            "sigproxy_credential_cache_hits_total": ("counter", "Credential lookups answered from the cache.",
                                                     float(hits)),
            "sigproxy_credential_cache_misses_total": ("counter", "Credential lookups that waited for a fetch.",
                                                       float(misses)),
            "sigproxy_credential_fetches_total": ("counter", "Credential fetches (STS calls and friends).",
                                                  float(stats.fetches)),
            "sigproxy_credential_failures_total": ("counter", "Credential fetches that failed.",
                                                   float(stats.failures)),
            "sigproxy_open_tunnels": ("gauge", "CONNECT tunnels open now.", float(open_tunnels)),
            "sigproxy_client_connections": ("gauge", "Client connections open now (forward and reverse listeners).",
                                            float(client_connections)),
            "sigproxy_connections": ("gauge", "Configured connections by credential state: up (valid credentials "
                                     "held), down (last fetch failed, none valid), unknown (not fetched yet).",
                                     states["sigproxy_connections"]),
        }
        if "sigproxy_connection_up" in states:
            gauges["sigproxy_connection_up"] = (
                "gauge", "1 while the connection holds valid credentials, 0 when its last fetch failed and it "
                "holds none (connections not fetched yet are absent).", states["sigproxy_connection_up"])
        return web.Response(text=counts.render(gauges), headers={"Content-Type": _METRICS_TYPE})

    @web.middleware
    async def settled(request: web.Request, handler: _Next) -> web.StreamResponse:
        """With ``workers = N``: a request that may have changed connections answers once every worker serves
        the change, so a client that wrote through the API can use the connection at once, as in one process."""
        response = await handler(request)
        group = runtime.group
        if group is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            await group.settle()
        return response

    listen = runtime.handler.config.proxy.admin_listen
    app = web.Application(client_max_size=api.MAX_BODY, middlewares=[
        settled, api.errors_middleware,
        api.auth_middleware(runtime, listen.host if listen is not None else "127.0.0.1")])
    api.add_routes(app, runtime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health/connections", connections)
    app.router.add_get("/metrics", metrics)
    add_connect_page(app, runtime)  # /connect: the customer's page, no admin token (sigproxy/connectpage)
    return app


class TlsSite(web.BaseSite):
    """An aiohttp site (the admin listener's) bound at ``host``:``port`` whose connections do their TLS handshake
    in ``acceptor`` first (CPython's SSLProtocol; aiohttp's own ``ssl_context`` would hand TLS to the loop, which
    :mod:`sigproxy.uvtls` refuses). ``acceptor``'s inner protocol is the runner's server. Stopping the site (the
    runner's ``cleanup``) closes the socket and abandons handshakes in progress."""

    __slots__ = ("_acceptor", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, acceptor: TlsAcceptor, host: str, port: int) -> None:
        super().__init__(runner)
        self._acceptor = acceptor
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"https://{Address(self._host, self._port)}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(self._acceptor, self._host, self._port,
                                                                      reuse_address=True)

    async def stop(self) -> None:
        await super().stop()
        await self._acceptor.close()

"""Listener lifecycle: one aiohttp low-level server per listener, all feeding the same :class:`Handler`.

Owns: building the handler's collaborators for a config, binding listeners, reporting their addresses,
and an orderly shutdown. Must not: parse HTTP itself or sign.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from sigproxy.config import Config, ReverseListener
from sigproxy.credentials import Providers
from sigproxy.errors import SigproxyError
from sigproxy.forwarding import Upstream
from sigproxy.handler import Exchange, Handler
from sigproxy.signing import Signer

from .forward import forward_exchange
from .reverse import reverse_exchange

__all__ = ["Listening", "serve"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listening:
    """A bound listener, as printed at start."""

    kind: str
    url: str
    upstream: str | None = None

    def describe(self) -> str:
        if self.upstream:
            return f"sigproxy: reverse proxy listening on {self.url} -> {self.upstream}"
        return f"sigproxy: forward proxy listening on {self.url}"


def _entry(handler: Handler, listener: ReverseListener | None
           ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    async def entry(request: web.BaseRequest) -> web.StreamResponse:
        try:
            exchange: Exchange = (
                forward_exchange(request) if listener is None else reverse_exchange(request, listener)
            )
        except SigproxyError as exc:
            return handler.reject(request, exc)
        return await handler(request, exchange)

    return entry


async def serve(config: Config, stop: asyncio.Event,
                on_ready: Callable[[list[Listening]], None] = lambda _: None) -> None:
    """Bind every listener, call ``on_ready`` with their addresses, serve until ``stop`` is set."""
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(
            Upstream(connect_timeout=config.proxy.connect_timeout, read_timeout=config.proxy.read_timeout,
                     limit=config.proxy.upstream_connections)
        )
        handler = Handler(config, Providers(config.connections), upstream, Signer())
        bound: list[Listening] = []
        plan: list[tuple[str, int, ReverseListener | None]] = [
            (config.proxy.listen.host, config.proxy.listen.port, None)
        ] + [(r.listen.host, r.listen.port, r) for r in config.reverse]
        for host, port, listener in plan:
            runner = web.ServerRunner(web.Server(_entry(handler, listener), access_log=None),
                                      handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            for addr in runner.addresses:
                h, p = addr[0], addr[1]
                url = f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}"
                bound.append(Listening("reverse" if listener else "forward", url,
                                       listener.upstream if listener else None))
        on_ready(bound)
        await stop.wait()
        logger.info("stopping")

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
from typing import Any

from aiohttp import web

from sigproxy.bodies import clean_spool
from sigproxy.config import Config, ReverseListener
from sigproxy.credentials import Providers
from sigproxy.errors import SigproxyError
from sigproxy.forwarding import Upstream
from sigproxy.handler import Exchange, Handler
from sigproxy.signing import Signer
from sigproxy.tls import CertStore

from .connect import ConnectIntake
from .forward import forward_exchange
from .reverse import reverse_exchange

__all__ = ["Listening", "serve"]

logger = logging.getLogger(__name__)

# How long open connections get to finish when the proxy stops (draining is a later issue).
_SHUTDOWN_TIMEOUT = 5.0


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
    """Bind every listener, call ``on_ready`` with their addresses, serve until ``stop`` is set.

    Raises :class:`OSError` when a listener can't bind, :class:`~sigproxy.tls.TlsError` when the CA can't
    be loaded or created.
    """
    loop = asyncio.get_running_loop()
    for conn in config.connections.values():
        if not conn.verify_tls:
            logger.warning("connection %r does not verify upstream TLS certificates (verify_tls = false)",
                           conn.name)
    async with AsyncExitStack() as stack:
        certs = await asyncio.to_thread(CertStore.load_or_create, config.proxy.state_dir)
        removed = await asyncio.to_thread(clean_spool, config.proxy.state_dir / "spool")
        if removed:
            logger.warning("removed %d spool file(s) left by an earlier run", removed)
        stack.callback(certs.close)
        upstream = await stack.enter_async_context(
            Upstream(connect_timeout=config.proxy.connect_timeout, read_timeout=config.proxy.read_timeout,
                     limit=config.proxy.upstream_connections, extra_ca_file=config.proxy.upstream_ca_file)
        )
        providers = await stack.enter_async_context(Providers(config.connections))
        handler = Handler(config, providers, upstream, Signer())
        bound: list[Listening] = []

        intake = ConnectIntake(config, handler, certs, web.Server(_entry(handler, None), access_log=None))
        listen = config.proxy.listen
        server = await loop.create_server(intake.front_door, listen.host, listen.port, reuse_address=True)
        stack.push_async_callback(_close_forward, server, intake)
        bound += [_listening(sock.getsockname(), None) for sock in server.sockets]

        for listener in config.reverse:
            runner = web.ServerRunner(web.Server(_entry(handler, listener), access_log=None),
                                      handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, listener.listen.host, listener.listen.port, reuse_address=True)
            await site.start()
            bound += [_listening(addr, listener) for addr in runner.addresses]
        on_ready(bound)
        await stop.wait()
        logger.info("stopping")


def _listening(addr: tuple[str, int] | Any, listener: ReverseListener | None) -> Listening:
    h, p = addr[0], addr[1]
    url = f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}"
    return Listening("reverse" if listener else "forward", url, listener.upstream if listener else None)


async def _close_forward(server: asyncio.Server, intake: ConnectIntake) -> None:
    server.close()
    await intake.shutdown(_SHUTDOWN_TIMEOUT)

"""One worker of a ``workers = N`` group: a fresh interpreter (``python -m sigproxy.workers.worker``) started
by the supervisor, serving today's :func:`~sigproxy.intake.server.serve` on the listening sockets it inherited.

Argv: ``--index I --channel FD --socket forward=FD [--socket reverse0=FD ...]`` (file descriptors the
supervisor passed). The first message on the channel is ``hello``: the config file's text and path, the
``--listen``/``--admin-listen``/``--workers`` overrides, the log settings and the group's fingerprint key;
nothing secret is ever on the command line or in the environment.

What the worker tells the supervisor: ``ready`` once it serves, ``alive`` every second from its event loop (with
its counts when it answered requests since the last one; a blocked loop stops them), and ``credentials``
requests. What it answers: ``metrics`` (its counts), ``reload``
(the text the supervisor already took: parsed and applied here too), the ``refresh`` notice (the store
changed), and ``auth_failure`` both ways (a failed proxy token or client signature here, passed on to the
siblings by the supervisor: ``auth_failures`` counts the group's failures per address). SIGTERM/SIGINT drain
it as a single process drains; SIGHUP is the supervisor's (ignored here); the channel closing (the supervisor
is gone) stops it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sigproxy import eventloop
from sigproxy.config import Config, loads
from sigproxy.errors import ConfigError
from sigproxy.intake.connect import ConnectIntake
from sigproxy.intake.server import Listening, Runtime, WorkerRole, serve
from sigproxy.observability import setup_logging
from sigproxy.tasks import TaskSet

from .client import BrokerClient
from .wire import Message, Peer

__all__ = ["main"]

logger = logging.getLogger(__name__)

_HEARTBEAT = 1.0


@dataclass
class _State:
    runtime: Runtime | None = None
    intake: ConnectIntake | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sigproxy.workers.worker", description="a sigproxy worker (internal)")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--socket", dest="sockets", action="append", default=[], metavar="NAME=FD")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until it is told to stop; 0 after a clean drain, 2 when started wrongly."""
    args = _parser().parse_args(argv)
    channel = socket.socket(fileno=args.channel)
    sockets: dict[str, socket.socket] = {}
    for item in args.sockets:
        name, _, fd = item.partition("=")
        sockets[name] = socket.socket(fileno=int(fd))
    try:
        eventloop.run(_run(args.index, channel, sockets))
    except ConfigError as exc:  # the supervisor parsed the same text: only a changed ${file:...} gets here
        logger.error("worker %d: config error: %s", args.index, exc)
        return 2
    return 0


async def _run(index: int, channel: socket.socket, sockets: dict[str, socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    state = _State()
    stop = asyncio.Event()
    hello: asyncio.Future[Message] = loop.create_future()
    settings: dict[str, Any] = {}
    tasks = TaskSet()

    def parse(text: str) -> Config:
        return loads(text, source=settings["path"], listen=settings["listen"], admin_listen=settings["admin_listen"],
                     workers=settings["workers"])

    def report() -> dict[str, Any] | None:
        """This worker's counts, as ``metrics`` answers and ``alive`` carries them."""
        runtime = state.runtime
        if runtime is None or state.intake is None:
            return None
        return {"metrics": runtime.metrics.snapshot(), "open_tunnels": state.intake.open_tunnels,
                "client_connections": state.intake.gate.open, "cache_hits": client.stats.hits,
                "cache_misses": client.stats.misses}

    async def answer(message: Message) -> Any:
        op = message.get("op")
        runtime = state.runtime
        if op == "metrics":
            return report()
        if op == "reload":
            if runtime is None:
                return False
            try:
                new = await asyncio.to_thread(parse, str(message["text"]))
            except (ValueError, OSError) as exc:
                logger.error("reload refused, still running on the old config: %s", exc)
                return False
            return runtime.reload(new)
        if op == "refresh":  # the store changed through the supervisor's admin API: answer once it is applied
            if runtime is not None and runtime.control is not None:
                await runtime.control.refresh(message.get("revision"))
            return True
        raise ValueError(f"unknown request {op!r}")

    def notice(message: Message) -> None:
        if message.get("op") == "hello" and not hello.done():
            hello.set_result(message)
        elif message.get("op") == "auth_failure" and state.runtime is not None:
            state.runtime.failures.record(str(message.get("address")), elsewhere=True)
        elif message.get("op") == "refresh" and state.runtime is not None and state.runtime.control is not None:
            control = state.runtime.control
            tasks.spawn(control.refresh(message.get("revision")), name="store-refresh")

    peer = Peer(reader, writer, handler=answer, on_notice=notice)
    reading = loop.create_task(peer.run(), name="channel")
    reading.add_done_callback(lambda _: stop.set())
    await asyncio.wait((hello, reading), return_when=asyncio.FIRST_COMPLETED)
    if not hello.done():  # the supervisor went away before saying hello
        return
    first = hello.result()
    settings.update(path=first["path"], listen=first.get("listen"), admin_listen=first.get("admin_listen"),
                    workers=first.get("workers"))
    setup_logging(first["log_level"], first["log_format"], fields={"worker": index}, shared=True)
    config = parse(str(first["text"]))
    client = BrokerClient(peer, bytes.fromhex(first["key"]))
    client.configure(connections=len(config.connections), users=config.proxy.credential_cache_users)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads, then tells each worker

    def started(runtime: Runtime, intake: ConnectIntake) -> None:
        state.runtime, state.intake = runtime, intake
        runtime.failures.on_record = lambda address: peer.notice("auth_failure", address=address)

        def applied(changed: set[str]) -> None:
            client.configure(connections=len(runtime.config.connections),
                             users=runtime.config.proxy.credential_cache_users)
            if changed:
                client.forget(changed)

        runtime.applied = applied

    async def heartbeat() -> None:
        # A heartbeat carries the counts when requests were answered since the last report, so a worker killed
        # without a word (SIGKILL, the OOM killer) loses only its last moments from /metrics: a second, or, where
        # the counts are many (a thousand connections' take about 15 ms to report), a hundred times what the last
        # report took, so reporting costs at most about 1 % of the worker's time.
        reported, due = -1, 0.0
        while True:
            runtime = state.runtime
            recorded = -1 if runtime is None else runtime.metrics.recorded
            now = time.monotonic()  # not the loop's clock: it stands still within a callback
            if recorded != reported and now >= due and (counts := report()) is not None:
                peer.notice("alive", report=counts)
                reported, due = recorded, now + 100 * (time.monotonic() - now)
            else:
                peer.notice("alive")
            await asyncio.sleep(_HEARTBEAT)

    def ready(_: list[Listening]) -> None:
        peer.notice("ready")
        tasks.spawn(heartbeat(), name="heartbeat")

    try:
        await serve(config, stop, on_ready=ready,
                    worker=WorkerRole(sockets=sockets, broker=client, on_start=started))
    finally:
        await tasks.cancel_all()
        await client.close()
        peer.notice("stopped")
        with contextlib.suppress(Exception):
            await writer.drain()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


if __name__ == "__main__":  # started by the supervisor: python -m sigproxy.workers.worker ...
    raise SystemExit(main())

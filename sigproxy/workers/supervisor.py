"""The supervisor of a ``workers = N`` group: binds the client listeners once, runs N workers on them, and
keeps for the whole group what must be one: the credential cache (the broker), the admin listener, systemd's
notifications, and the decision to take a reloaded config.

::

    sigproxy run (supervisor) ── N SO_REUSEPORT sockets per listener ──► worker i gets socket i of each
       │  admin listener, /metrics (summed over the group), store feed, SIGHUP/SIGTERM, sd_notify
       └─ channel i (socketpair, wire.py) ◄──► worker i: credentials asked, counts reported, reloads pushed

Listeners: each is bound N times on one address with ``SO_REUSEPORT`` (the first socket gets the port asked
for, port 0 included; the rest the port it got), so the kernel spreads new connections evenly over the
workers and a listener that can't bind fails once, naming its key, before any worker starts. The supervisor
keeps every socket open, so when a worker dies the connections the kernel queues on its socket wait for its
replacement instead of being refused -- while one is coming: a slot whose worker dies before it serves (or
does not serve within :data:`_START_TIMEOUT`) gives its sockets up until its next start, so that the kernel sends
new connections to the workers that serve instead of queueing them where nobody accepts (those already queued
there are reset). Draining, the supervisor closes its copies at once: each listener stops taking
connections as its workers close theirs, and new ones are refused, as in one process.

Workers are fresh interpreters (``python -m sigproxy.workers.worker``, no fork of a process holding an event loop),
without ``NOTIFY_SOCKET``: only the supervisor speaks to systemd. READY once every worker serves; WATCHDOG only
while every live worker's event loop answers (a worker silent for :data:`_STALE` seconds is killed and
restarted); STOPPING when draining. A worker that exits unasked is logged with its pid and exit status and
started again, at once if it had run a while, else after a back-off doubling from half a second to 30 s (a start
that fails, its sockets not bound again included, is tried again the same way).

SIGHUP: the supervisor reads the file and decides (restart-only keys refused as in one process); only a
config it took is sent -- the same text -- to every worker. SIGTERM/SIGINT: every worker drains its requests
for ``drain_seconds`` and exits; the supervisor then exits.

Must not: serve client requests, or log a message of the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigproxy.config import Address, Config, loads, read_config
from sigproxy.errors import ListenError, WorkerFailed
from sigproxy.intake.server import Listening, Runtime
from sigproxy.metrics import GroupMetrics, Metrics
from sigproxy.tasks import TaskSet

from .broker import Broker
from .wire import ChannelClosed, Message, Peer

__all__ = ["ConfigFile", "Supervisor"]

logger = logging.getLogger(__name__)

_BACKLOG = 100  # asyncio's create_server default, as a single process listens
_START_TIMEOUT = 60.0
_STALE = 10.0
"""Seconds without a heartbeat after which a live worker's loop counts as stuck (heartbeats come every 1 s)."""
_STOP_GRACE = 5.0
_BACKOFF_BASE, _BACKOFF_CAP, _STEADY = 0.5, 30.0, 10.0
_ASK_TIMEOUT = 5.0
# The worker must not inherit systemd's notify socket or socket activation: the supervisor speaks for it.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ConfigFile:
    """The config file as the supervisor reads it: parsed, and its text kept so every worker parses the very same
    text (a file edited again between two reads can't make the group disagree)."""

    def __init__(self, path: str, *, listen: str | None, admin_listen: str | None, workers: int | None) -> None:
        self.path, self.listen, self.admin_listen, self.workers = path, listen, admin_listen, workers
        self.text = ""
        self.last_read = ""

    def load(self) -> Config:
        """Read and parse the file. Raises :class:`ConfigError`."""
        text = read_config(Path(self.path))
        config = loads(text, source=self.path, listen=self.listen, admin_listen=self.admin_listen,
                       workers=self.workers)
        self.last_read = text
        if not self.text:
            self.text = text
        return config


def _join(family: socket.AddressFamily, address: Any) -> socket.socket:
    """A listening socket joining the ``SO_REUSEPORT`` group bound at ``address`` (as :func:`_bind` binds).
    Raises :class:`OSError`."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _bind(address: Address, count: int, listener: str, key: str) -> list[socket.socket]:
    """``count`` listening sockets sharing ``address`` through ``SO_REUSEPORT``. Raises :class:`ListenError`."""
    socks: list[socket.socket] = []
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        # A probe without SO_REUSEPORT first: an address another process holds -- another sigproxy group of
        # this user included, which SO_REUSEPORT would otherwise let us share silently -- fails here.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(sockaddr)
            port = probe.getsockname()[1]
        for _ in range(count):
            sock = _join(family, (sockaddr[0], port, *sockaddr[2:]))
            socks.append(sock)
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(listener, key, str(address), exc) from exc
    return socks


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    peer: Peer | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = 0.0
    last_alive: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    text: str = ""
    """The config text the worker was started on (a reload taken while it started is sent once it serves)."""
    report: dict[str, Any] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    """``count`` workers serving ``config``'s client listeners; a :class:`~sigproxy.intake.server.Group`."""

    def __init__(self, config: Config, count: int, file: ConfigFile, *, log_level: str, log_format: str) -> None:
        self._config = config
        self._count = count
        self._file = file
        self._log = (log_level, log_format)
        self._key = os.urandom(32)
        self._sockets: dict[str, list[socket.socket | None]] = {}
        """Per listener, the socket of each slot; ``None`` while a slot has given its up (:meth:`_leave`)."""
        self._addresses: dict[str, tuple[socket.AddressFamily, Any]] = {}  # per listener: family, bound address
        self._slots = [_Slot(i) for i in range(count)]
        self._tasks = TaskSet()
        self._stopping = False
        self._runtime: Runtime | None = None
        self.broker = Broker(self._key, catch_up=self._catch_up)
        self._retired = Metrics(connection_label=config.proxy.metrics_connection_label == "name")
        self._retired_hits = self._retired_misses = 0

    # ------------------------------------------------------------------ listeners

    def bind(self) -> None:
        """Bind every client listener ``count`` times. Raises :class:`ListenError` naming the key."""
        try:
            self._sockets["forward"] = [*_bind(self._config.proxy.listen, self._count, "forward proxy",
                                               "[proxy] listen (or --listen)")]
            for i, rev in enumerate(self._config.reverse):
                self._sockets[f"reverse{i}"] = [*_bind(rev.listen, self._count,
                                                       f"reverse listener for {rev.upstream}",
                                                       f"[[reverse]] listen (reverse[{i}].listen)")]
        except ListenError:
            self.close_sockets()
            raise
        self._addresses = {key: (sock.family, sock.getsockname())
                           for key, (sock, *_) in self._sockets.items() if sock is not None}

    def close_sockets(self) -> None:
        for socks in self._sockets.values():
            for sock in socks:
                if sock is not None:
                    sock.close()
        self._sockets.clear()

    def _leave(self, slot: _Slot) -> None:
        """Close ``slot``'s listening sockets: new connections go to the other workers' (module docstring)."""
        for socks in self._sockets.values():
            sock, socks[slot.index] = socks[slot.index], None
            if sock is not None:
                sock.close()

    def _rejoin(self, slot: _Slot) -> None:
        """Bind ``slot``'s listening sockets again where :meth:`_leave` closed them. Raises :class:`OSError`."""
        for key, socks in self._sockets.items():
            if socks[slot.index] is None:
                socks[slot.index] = _join(*self._addresses[key])

    # ------------------------------------------------------------------ Group

    def attach(self, runtime: Runtime) -> None:
        self._runtime = runtime

        def applied(_changed: set[str]) -> None:
            self.broker.remember(runtime.handler.providers)
            control = runtime.control
            if control is not None and control.store is not None:
                for slot in self._slots:
                    if slot.peer is not None and slot.ready.is_set():
                        # No revision: the registry's own writes don't move Control.revision (the feed does).
                        slot.peer.notice("refresh", revision=None)

        runtime.applied = applied
        self.broker.remember(runtime.handler.providers)

    async def _catch_up(self) -> None:
        control = None if self._runtime is None else self._runtime.control
        if control is not None and control.store is not None:
            await control.refresh()

    async def start(self) -> list[Listening]:
        for slot in self._slots:
            await self._spawn(slot)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                for slot in self._slots:
                    waiter = asyncio.ensure_future(slot.ready.wait())
                    assert slot.proc is not None
                    died = asyncio.ensure_future(slot.proc.wait())
                    await asyncio.wait((waiter, died), return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    died.cancel()
                    if not slot.ready.is_set():
                        raise WorkerFailed(f"worker {slot.index} (pid {slot.proc.pid}) exited before it served: "
                                           f"{_status(slot.proc.returncode or 0)} (see its log lines above)")
        except TimeoutError:
            raise WorkerFailed(f"the workers did not start within {_START_TIMEOUT:.0f} s") from None
        except BaseException:
            await self.stop()
            raise
        self._tasks.spawn(self._check_heartbeats(), name="worker-heartbeats")
        logger.info("%d workers serving (pids %s)", self._count,
                    ", ".join(str(s.proc.pid) for s in self._slots if s.proc is not None))
        bound = [Listening.at(self._addresses["forward"][1], "forward", tls=self._config.proxy.tls is not None)]
        bound += [Listening.at(self._addresses[f"reverse{i}"][1], "reverse", rev.upstream, tls=rev.tls is not None)
                  for i, rev in enumerate(self._config.reverse)]
        return bound

    def healthy(self) -> bool:
        now = time.monotonic()
        live = [s for s in self._slots if s.alive and s.ready.is_set()]
        return bool(live) and all(now - s.last_alive < _STALE for s in live)

    async def reload(self) -> None:
        self._file.text = self._file.last_read
        live = self._serving()
        for slot in live:
            slot.text = self._file.text
        results = await asyncio.gather(*(self._ask(s, "reload", text=self._file.text) for s in live),
                                       return_exceptions=True)
        for slot, result in zip(live, results, strict=True):
            if result is not True:
                logger.error("worker %d did not take the reloaded config (%s): it is restarted on it", slot.index,
                             "refused" if result is False else type(result).__name__)
                if slot.proc is not None and slot.alive:
                    slot.proc.kill()

    async def metrics(self) -> GroupMetrics:
        live = self._serving()
        reports = await asyncio.gather(*(self._ask(s, "metrics") for s in live), return_exceptions=True)
        for slot, report in zip(live, reports, strict=True):
            if isinstance(report, dict):
                slot.report = report
        assert self._runtime is not None
        total = Metrics(connection_label=self._retired.connection_label)
        total.add(self._runtime.metrics.snapshot())
        total.add(self._retired.snapshot())
        tunnels = connections = 0
        hits, misses = self._retired_hits, self._retired_misses
        for slot in self._slots:
            if slot.report is None:
                continue
            total.add(slot.report["metrics"])
            hits += int(slot.report["cache_hits"])
            misses += int(slot.report["cache_misses"])
            if slot.alive:
                tunnels += int(slot.report["open_tunnels"])
                connections += int(slot.report["client_connections"])
        return GroupMetrics(total, tunnels, connections, hits, misses)

    async def settle(self) -> None:
        control = None if self._runtime is None else self._runtime.control
        if control is None or control.store is None:
            return
        live = self._serving()
        results = await asyncio.gather(*(self._ask(s, "refresh", revision=None) for s in live),
                                       return_exceptions=True)
        for slot, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("worker %d did not confirm the connection store change (%s); it follows the "
                               "store's feed", slot.index, type(result).__name__)

    async def stop(self) -> None:
        self._stopping = True
        live = [s for s in self._slots if s.alive and s.proc is not None]
        for slot in live:
            with contextlib.suppress(ProcessLookupError):
                assert slot.proc is not None
                slot.proc.send_signal(signal.SIGTERM)
        # Each listener closes once its workers close their copies (drain's first step): new connections are
        # refused, not queued where nobody will accept them until the group exits.
        self.close_sockets()
        limit = self._config.proxy.drain_seconds + _STOP_GRACE
        for slot in live:
            assert slot.proc is not None
            try:
                async with asyncio.timeout(limit):
                    await slot.proc.wait()
            except TimeoutError:
                logger.error("worker %d (pid %d) did not stop within %.0f s: killed", slot.index, slot.proc.pid, limit)
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
                await slot.proc.wait()
        await self._tasks.cancel_all()
        self.close_sockets()

    # ------------------------------------------------------------------ workers

    def _serving(self) -> list[_Slot]:
        """The workers that are alive, serve, and can be asked over their channel."""
        return [s for s in self._slots if s.alive and s.peer is not None and s.ready.is_set()]

    async def _ask(self, slot: _Slot, op: str, **fields: Any) -> Any:
        assert slot.peer is not None
        async with asyncio.timeout(_ASK_TIMEOUT):
            return await slot.peer.request(op, **fields)

    async def _answer(self, message: Message) -> Any:
        if message.get("op") == "credentials":
            return await self.broker.answer(message)
        raise ValueError(f"unknown request {message.get('op')!r}")

    def _notice(self, slot: _Slot, message: Message) -> None:
        op = message.get("op")
        if op == "alive":
            slot.last_alive = time.monotonic()
            report = message.get("report")
            if isinstance(report, dict):  # its latest counts, kept should it die unasked (_watch)
                slot.report = report
        elif op == "auth_failure":  # the group counts failed authentication together
            for other in self._slots:
                if other is not slot and other.peer is not None and other.ready.is_set():
                    other.peer.notice("auth_failure", address=message.get("address"))
        elif op == "ready":
            slot.last_alive = time.monotonic()
            slot.ready.set()
            if slot.restarts and slot.proc is not None:
                logger.info("worker %d serving again (pid %d)", slot.index, slot.proc.pid)
            if slot.text != self._file.text:
                self._tasks.spawn(self._catch_up_worker(slot), name=f"worker-{slot.index}-reload")

    async def _catch_up_worker(self, slot: _Slot) -> None:
        """A worker that started on the config before a reload: send it the one the group runs."""
        slot.text = self._file.text
        try:
            taken = await self._ask(slot, "reload", text=slot.text)
        except (ConnectionError, RuntimeError, TimeoutError):
            taken = False
        if taken is not True and slot.proc is not None and slot.alive:
            logger.error("worker %d did not take the reloaded config: it is restarted on it", slot.index)
            slot.proc.kill()

    async def _spawn(self, slot: _Slot) -> None:
        self._rejoin(slot)
        socks = {k: sock for k, socks in self._sockets.items() if (sock := socks[slot.index]) is not None}
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [child.fileno(), *(sock.fileno() for sock in socks.values())]
        argv = [sys.executable, "-m", "sigproxy.workers.worker", "--index", str(slot.index),
                "--channel", str(child.fileno()),
                *(f"--socket={k}={sock.fileno()}" for k, sock in socks.items())]
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        try:
            slot.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=fds, env=env,
                                                             stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        slot.ready = asyncio.Event()
        slot.report = None
        slot.started = time.monotonic()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        slot.peer = Peer(reader, writer, handler=self._answer, on_notice=lambda m: self._notice(slot, m))
        self._tasks.spawn(slot.peer.run(), name=f"worker-{slot.index}-channel")
        level, fmt = self._log
        slot.text = self._file.text
        slot.peer.notice("hello", text=slot.text, path=self._file.path, listen=self._file.listen,
                         admin_listen=self._file.admin_listen, workers=self._file.workers, log_level=level,
                         log_format=fmt, key=self._key.hex())
        self._tasks.spawn(self._watch(slot, slot.proc), name=f"worker-{slot.index}")

    async def _watch(self, slot: _Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._stopping:
            if code != 0:
                logger.warning("worker %d (pid %d) stopped with %s", slot.index, proc.pid, _status(code))
            return
        lived = time.monotonic() - slot.started
        if slot.report is not None:  # its counts stay in the group's totals
            self._retired.add(slot.report["metrics"])
            self._retired_hits += int(slot.report["cache_hits"])
            self._retired_misses += int(slot.report["cache_misses"])
            slot.report = None
        slot.quick_deaths = 0 if lived >= _STEADY else slot.quick_deaths + 1
        delay = 0.0 if not slot.quick_deaths else min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (slot.quick_deaths - 1))
        logger.error("worker %d (pid %d) exited unexpectedly with %s after %.1f s; restarting it in %.1f s",
                     slot.index, proc.pid, _status(code), lived, delay)
        if slot.peer is not None:
            with contextlib.suppress(ChannelClosed):
                slot.peer.notice("bye")
        if not slot.ready.is_set():  # it died before it served: the workers that serve take its connections
            self._leave(slot)
        await asyncio.sleep(delay)
        while not self._stopping:
            slot.restarts += 1
            try:
                await self._spawn(slot)
                return
            except OSError as exc:
                self._leave(slot)
                slot.quick_deaths += 1
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (slot.quick_deaths - 1))
                logger.error("worker %d could not be started again (%s); trying again in %.1f s", slot.index, exc,
                             delay)
                await asyncio.sleep(delay)

    async def _check_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for slot in self._slots:
                if not slot.alive or slot.proc is None:
                    continue
                if slot.ready.is_set() and now - slot.last_alive >= _STALE:
                    logger.error("worker %d (pid %d) has not answered for %.0f s (its event loop is stuck): killed",
                                 slot.index, slot.proc.pid, now - slot.last_alive)
                    slot.proc.kill()
                elif not slot.ready.is_set() and now - slot.started >= _START_TIMEOUT:
                    logger.error("worker %d (pid %d) did not serve within %.0f s of its start: killed", slot.index,
                                 slot.proc.pid, _START_TIMEOUT)
                    slot.proc.kill()

"""Listener lifecycle: the forward listener's front door, reverse listeners and the admin listener, all fed
by the one current :class:`Handler`; config reload (SIGHUP) and drain (SIGTERM/SIGINT).

Reload swaps the handler atomically: a request uses the handler current when it arrived, to its end.
Credentials cached for connections whose settings didn't change are kept (the cache is shared and keyed by
those settings, and resized for the new config). Listener addresses, upstream timeouts and connections, the
state directory, the upstream CA file and ``metrics_connection_label`` need a restart; a reload that changes
them is refused, the old config kept, and the reason logged. The client-side settings (``clients`` of every
listener, connection limits, head limits, header/idle/body timeouts) are read when a connection is accepted:
a reload applies them to connections accepted after it.

Every client listener (forward, reverse) admits connections through one :class:`~.gate.Gate`; the admin
listener does not.

Must not: parse HTTP itself or sign.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from sigproxy.authlimit import AuthFailures
from sigproxy.bodies import clean_spool
from sigproxy.brokered import CredentialBroker
from sigproxy.config import Address, Config, Network, ProxyConfig
from sigproxy.control import Control, open_store
from sigproxy.credcache import CredentialCache
from sigproxy.credentials import Providers
from sigproxy.credprobe import warn_missing_credentials
from sigproxy.errors import ConfigError, ListenError
from sigproxy.exposure import open_listener_warnings
from sigproxy.forwarding import Upstream
from sigproxy.handler import Handler, RequestIds
from sigproxy.listentls import ListenerTls
from sigproxy.metrics import GroupMetrics, Metrics
from sigproxy.sdnotify import Notifier
from sigproxy.signing import Signer
from sigproxy.tasks import TaskSet
from sigproxy.tls import CertStore

from .clientserver import ClientServer
from .connect import ConnectIntake
from .entry import ListenerEntry
from .forward import forward_exchange
from .gate import Door, Gate
from .h1server import Entry
from .reverse import reverse_exchange
from .tlsdoor import TlsAcceptor, reload_all, tls_acceptor

if TYPE_CHECKING:
    from aiohttp import web

    from sigproxy.sessions import ConnectSessions

__all__ = ["Group", "Listening", "Runtime", "WorkerRole", "serve"]

logger = logging.getLogger(__name__)

# The young generation's collection threshold once serving (gc.set_threshold's first; CPython's default: 700).
_GC_YOUNG = 10_000


@dataclass(frozen=True, slots=True)
class Listening:
    """A bound listener, as printed at start."""

    kind: str
    url: str
    upstream: str | None = None

    @staticmethod
    def at(addr: tuple[str, int] | Any, kind: str, upstream: str | None = None, *, tls: bool = False) -> Listening:
        """The listener bound at socket address ``addr`` (``getsockname()``: host, port, ...); ``tls``: its
        clients connect over TLS (``https://``)."""
        return Listening(kind, f"{'https' if tls else 'http'}://{Address(addr[0], addr[1])}", upstream)

    def describe(self) -> str:
        if self.kind == "admin":
            return f"sigproxy: admin listening on {self.url}"
        if self.upstream:
            return f"sigproxy: reverse proxy listening on {self.url} -> {self.upstream}"
        return f"sigproxy: forward proxy listening on {self.url}"


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is one worker of a ``workers = N`` group (:mod:`sigproxy.workers`): it serves on listening
    sockets the supervisor bound, asks the supervisor's broker for expiring credentials, leaves the spool, the
    store's migrations and the admin listener to the supervisor, and tells systemd nothing itself."""

    sockets: Mapping[str, socket.socket]
    """``"forward"`` and ``"reverse0"``, ``"reverse1"``, ...: the listeners in config order."""
    broker: CredentialBroker
    on_start: Callable[[Runtime, ConnectIntake], None]
    """Called once the runtime and the forward intake exist (before the listeners serve)."""


class Group(Protocol):
    """The supervisor's workers, as :func:`serve` drives them (:class:`sigproxy.workers.supervisor.Supervisor`)."""

    def attach(self, runtime: Runtime) -> None:
        """The supervisor's runtime exists (its registry not loaded yet)."""

    async def start(self) -> list[Listening]:
        """Start every worker and wait until each serves; the client listeners they serve."""

    def healthy(self) -> bool:
        """Whether the workers answer (the systemd watchdog pings only then)."""

    async def reload(self) -> None:
        """The supervisor took a reloaded config: every worker takes the same."""

    async def stop(self) -> None:
        """Ask every worker to drain and wait until they have exited."""

    async def metrics(self) -> GroupMetrics:
        """The whole group's counts for ``/metrics``."""

    async def settle(self) -> None:
        """Wait (briefly) until every worker serves the connections the supervisor serves now."""


def _log_redirects(config: Config, *, reverse: bool) -> None:
    """One line per ``[[reverse]]`` (when ``reverse``) and ``[[routes]]`` entry with a ``dial``, ``sign_host`` or
    ``tls_server_name``: an explicit dial passes the egress guard whatever it resolves to, so it is stated."""
    for rev in config.reverse if reverse else ():
        if rev.redirect is not None:
            logger.info("reverse listener for %s: %s", rev.upstream, rev.redirect.describe())
    for route in config.routes:
        if route.redirect is not None:
            logger.info("route for %s: %s", route.host, route.redirect.describe())


def _restart_only(old: Config, new: Config) -> list[str]:
    """Settings that only a restart can change."""
    a, b = old.proxy, new.proxy
    keys = ("listen", "admin_listen", "connect_timeout", "read_timeout", "upstream_connections", "state_dir",
            "upstream_ca_file", "metrics_connection_label", "workers", "tls", "admin_tls")
    changed = [f"proxy.{k}" for k in keys if getattr(a, k) != getattr(b, k)]
    if old.store.signature() != new.store.signature():
        changed.append("store")
    # A reverse listener's `clients` is read at each accept; the rest of it needs a restart.
    if [replace(r, clients=()) for r in old.reverse] != [replace(r, clients=()) for r in new.reverse]:
        changed.append("reverse")
    return changed


class Runtime:
    """What the listeners share: the current handler and what outlives reloads and store changes.

    The handler is swapped whole when the file is reloaded or the connection store changes
    (:meth:`apply`); a request keeps the handler it started with. Every handler's credential providers share
    one cache and one set of AWS/HTTP sessions (the root providers, closed once at the end).
    """

    def __init__(self, config: Config, upstream: Upstream, certs: CertStore, metrics: Metrics,
                 cache: CredentialCache, *, broker: CredentialBroker | None = None) -> None:
        self.metrics = metrics
        self.group: Group | None = None
        self.applied: Callable[[set[str]], None] = lambda _changed: None
        """Called after each :meth:`apply` with the names that changed (a supervisor tells its broker and workers)."""
        self.cache = cache
        self.certs = certs
        self.ready = False
        self.control: Control | None = None
        self.sessions: ConnectSessions | None = None
        self.acceptors: list[TlsAcceptor] = []
        """The TLS listeners here, whose certificate files a successful reload re-reads."""
        self._upstream = upstream
        self._signer = Signer()
        self._ids = RequestIds()
        self._tasks = TaskSet()
        # Failed authentication per client address: counted across listeners, kept across reloads.
        self.failures = AuthFailures(config.proxy.auth_failures, config.proxy.auth_failure_window)
        self._root = Providers(config.connections, cache=cache, cached_users=config.proxy.credential_cache_users,
                               broker=broker)
        self.handler = self._build(config)

    def _build(self, config: Config) -> Handler:
        providers = self._root.successor(config.connections, cached_users=config.proxy.credential_cache_users)
        self.failures.configure(config.proxy.auth_failures, config.proxy.auth_failure_window)
        return Handler(config, providers, self._upstream, self._signer, metrics=self.metrics, ids=self._ids,
                       failures=self.failures)

    @property
    def config(self) -> Config:
        return self.handler.config

    def apply(self, config: Config, changed: set[str]) -> None:
        """Serve ``config`` (the file's settings, every active connection) from now on; drop the cached
        credentials of the connections named in ``changed`` (changed or gone)."""
        self.handler = self._build(config)
        if changed:
            self.cache.forget(changed)
        self.applied(changed)

    def reload(self, new: Config) -> bool:
        """Swap in a reloaded config file if it is valid and reloadable; otherwise keep the old one."""
        blocked = _restart_only(self.config, new)
        if blocked:
            logger.error("reload refused, still running on the old config: %s change only with a restart",
                         ", ".join(blocked))
            return False
        if self.control is not None:
            try:
                self.control.set_config(new)
            except ConfigError as exc:
                logger.error("reload refused, still running on the old config: %s", exc)
                return False
        else:
            self.apply(new, set())
        for conn in new.connections.values():
            if not conn.verify_tls:
                logger.warning("connection %r does not verify upstream TLS certificates (verify_tls = false)",
                               conn.name)
        _log_redirects(new, reverse=False)  # the reverse listeners' can't change without a restart
        self._tasks.spawn(reload_all(self.acceptors), name="sigproxy-tls-reload")
        logger.info("config reloaded: %d connection(s) in the file, %d route(s)", len(new.connections),
                    len(new.routes))
        return True

    async def close(self) -> None:
        await self._tasks.cancel_all()
        await self._root.__aexit__(None, None, None)


async def _reload(runtime: Runtime, load: Callable[[], Config]) -> bool:
    """Read the file off the loop, then swap on it (the store's feed swaps on the loop too)."""
    try:
        new = await asyncio.to_thread(load)
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        logger.error("reload refused, still running on the old config: %s", exc)
        return False
    return runtime.reload(new)


def _entry(runtime: Runtime, reverse_index: int | None) -> Entry:
    """The entry point of the forward listener (``reverse_index`` ``None``) or of ``[[reverse]]`` listener
    ``reverse_index``."""
    config = runtime.config  # a listener's TLS settings change only with a restart
    tls = config.proxy.tls if reverse_index is None else config.reverse[reverse_index].tls
    return ListenerEntry(runtime, reverse_index, mtls=tls is not None and tls.client_ca_file is not None,
                         forward=forward_exchange, reverse=reverse_exchange)


@contextlib.contextmanager
def _binding(listener: str, key: str, address: Address, *, off: str = "") -> Iterator[None]:
    """Turn a failed bind into a :class:`ListenError` naming the listener and the key that sets its address."""
    try:
        yield
    except OSError as exc:
        raise ListenError(listener, key, str(address), exc, off=off) from exc


async def _reverse_listener(runtime: Runtime, gate: Gate, index: int, *, sock: socket.socket | None = None,
                            acceptors: list[TlsAcceptor]) -> tuple[asyncio.Server, ClientServer]:
    """Bind ``[[reverse]]`` number ``index``: each connection (after its TLS handshake, with ``tls``; the
    acceptor is added to ``acceptors``) through the gate (with that listener's current ``clients``), then to
    the HTTP server (returned)."""
    loop = asyncio.get_running_loop()
    server = ClientServer(_entry(runtime, index), proxy=lambda: runtime.config.proxy)
    name = f"reverse ({runtime.config.reverse[index].upstream})"

    def settings() -> tuple[ProxyConfig, tuple[Network, ...]]:
        config = runtime.config
        return config.proxy, config.reverse[index].clients

    listener = runtime.config.reverse[index]
    listen = listener.listen

    def door() -> asyncio.BaseProtocol:
        return Door(gate, server, settings, name)

    factory = await _protocols(runtime, listener.tls, listen.host, door, name=name,
                               key=f"reverse[{index}].tls_cert_file", acceptors=acceptors)
    with _binding(f"reverse listener for {listener.upstream}", f"[[reverse]] listen (reverse[{index}].listen)",
                  listen):
        if sock is not None:  # a worker: the supervisor bound it
            bound = await loop.create_server(factory, sock=sock)
        else:
            bound = await loop.create_server(factory, listen.host, listen.port, reuse_address=True)
    return bound, server


def _header_timeout(runtime: Runtime) -> Callable[[], float]:
    """A TLS listener's handshake limit: ``header_timeout`` of the config current at the accept."""
    return lambda: runtime.config.proxy.header_timeout


async def _protocols(runtime: Runtime, tls: ListenerTls | None, host: str, inner: Callable[[], asyncio.BaseProtocol],
                     *, name: str, key: str, acceptors: list[TlsAcceptor]) -> Callable[[], asyncio.BaseProtocol]:
    """A client listener's protocol factory: ``inner`` itself for plain HTTP; with ``tls``, a
    :class:`TlsAcceptor` doing the handshake first (added to ``acceptors``; ``key`` names the setting in errors)."""
    if tls is None:
        return inner
    acceptor = await tls_acceptor(tls, host, runtime.certs, inner=inner, handshake_timeout=_header_timeout(runtime),
                                  name=name, key=key)
    acceptors.append(acceptor)
    return acceptor


async def _client_listeners(runtime: Runtime, intake: ConnectIntake, gate: Gate, drain: float, *,
                            stack: AsyncExitStack, worker: WorkerRole | None) -> list[Listening]:
    """Bind (or, in a worker, take over from the supervisor) the forward listener and every reverse one.

    The drain, when ``stack`` unwinds, covers all client listeners at once: stop accepting, close every
    connection with no request in progress (idle keep-alive ones too), then give the requests in progress up to
    ``drain`` s to finish."""
    loop = asyncio.get_running_loop()
    config = runtime.config
    listening: list[asyncio.Server] = []
    reverse_servers: list[ClientServer] = []
    acceptors: list[TlsAcceptor] = []

    async def close_clients() -> None:
        for bound_server in listening:
            bound_server.close()
        await asyncio.gather(*(acceptor.close() for acceptor in acceptors))
        intake.pre_shutdown()
        for reverse_server in reverse_servers:
            reverse_server.pre_shutdown()
        await asyncio.gather(intake.shutdown(drain), *(r.shutdown(drain) for r in reverse_servers))

    stack.push_async_callback(close_clients)
    listen = config.proxy.listen
    factory = await _protocols(runtime, config.proxy.tls, listen.host, intake.front_door, name="forward",
                               key="proxy.tls_cert_file", acceptors=acceptors)
    with _binding("forward proxy", "[proxy] listen (or --listen)", listen):
        if worker is not None:
            server = await loop.create_server(factory, sock=worker.sockets["forward"])
        else:
            server = await loop.create_server(factory, listen.host, listen.port, reuse_address=True)
    listening.append(server)
    tls = config.proxy.tls is not None
    bound = [Listening.at(sock.getsockname(), "forward", tls=tls) for sock in server.sockets]
    for index, listener in enumerate(config.reverse):
        sock = None if worker is None else worker.sockets[f"reverse{index}"]
        reverse_listener, reverse_server = await _reverse_listener(runtime, gate, index, sock=sock,
                                                                   acceptors=acceptors)
        listening.append(reverse_listener)
        reverse_servers.append(reverse_server)
        bound += [Listening.at(s.getsockname(), "reverse", listener.upstream, tls=listener.tls is not None)
                  for s in reverse_listener.sockets]
    runtime.acceptors.extend(acceptors)
    return bound


async def serve(config: Config, stop: asyncio.Event, *, reload: asyncio.Event | None = None,
                load: Callable[[], Config] | None = None,
                on_ready: Callable[[list[Listening]], None] = lambda _: None,
                notifier: Notifier | None = None, group: Group | None = None,
                worker: WorkerRole | None = None) -> None:
    """Bind every listener, call ``on_ready`` with their addresses, serve until ``stop`` is set, then drain.

    ``reload`` set (SIGHUP) re-reads the config with ``load``. Raises :class:`~sigproxy.errors.ListenError`
    (an :class:`OSError` naming the listener and its key) when a listener can't bind,
    :class:`~sigproxy.tls.TlsError` when the CA can't be loaded or created.

    With ``workers = N``: the supervisor passes ``group`` (its workers serve the client listeners; it keeps the
    admin listener, the credential broker and systemd's notifications), each worker passes ``worker``.
    """
    notifier = notifier or Notifier.from_environ({})
    drain = config.proxy.drain_seconds
    for warning in [] if worker else open_listener_warnings(config):  # once: by the supervisor, not each worker
        logger.warning("%s", warning)
    for conn in config.connections.values():
        if not conn.verify_tls:
            logger.warning("connection %r does not verify upstream TLS certificates (verify_tls = false)",
                           conn.name)
    if not worker:
        _log_redirects(config, reverse=True)
    metrics = Metrics(connection_label=config.proxy.metrics_connection_label == "name")
    async with AsyncExitStack() as stack:
        certs = await asyncio.to_thread(CertStore.load_or_create, config.proxy.state_dir)
        stack.callback(certs.close)
        # A worker leaves the spool alone: its siblings' requests in flight spool there.
        removed = 0 if worker else await asyncio.to_thread(clean_spool, config.proxy.state_dir / "spool")
        if removed:
            logger.warning("removed %d spool file(s) left by an earlier run", removed)
        upstream = await stack.enter_async_context(
            Upstream(connect_timeout=config.proxy.connect_timeout, read_timeout=config.proxy.read_timeout,
                     limit=config.proxy.upstream_connections, extra_ca_file=config.proxy.upstream_ca_file)
        )
        cache = CredentialCache(on_fetch=metrics.sts_latency.observe)
        stack.push_async_callback(cache.close)
        runtime = Runtime(config, upstream, certs, metrics, cache, broker=worker.broker if worker else None)
        stack.push_async_callback(runtime.close)
        if group is not None:
            runtime.group = group
            group.attach(runtime)
        store = await open_store(config, migrate=False if worker else None)  # the supervisor migrated
        if store is not None:
            stack.push_async_callback(store.close)
        control = runtime.control = Control(config, store, on_apply=runtime.apply)
        await control.load()
        if store is not None and worker is None:
            from sigproxy.sessions import ConnectSessions  # noqa: PLC0415 - connect sessions live in the store

            sessions = runtime.sessions = ConnectSessions(control, store, lambda: control.config)
            stack.push_async_callback(sessions.close)
        bound: list[Listening] = []
        # The admin listener is bound last but closed last too: while the others drain, /readyz answers 503
        # (not "connection refused"), so a load balancer sees the process leave rather than fail.
        admins: list[web.AppRunner] = []

        async def close_admin() -> None:
            for runner in admins:
                await runner.cleanup()

        stack.push_async_callback(close_admin)

        # Client listeners drain all at once (see _client_listeners).
        gate = Gate()
        intake = ConnectIntake(runtime, certs, gate, _entry(runtime, None))
        if worker is not None:
            worker.on_start(runtime, intake)
        if group is None:
            bound += await _client_listeners(runtime, intake, gate, drain, stack=stack, worker=worker)
        else:
            # The workers serve the client listeners; they drain before the admin listener closes.
            bound += await group.start()
            stack.push_async_callback(group.stop)

        if config.proxy.admin_listen is not None and worker is None:
            # aiohttp (with the admin API and the connect page) only for the admin listener: workers and
            # admin_listen = "" start without it.
            from aiohttp import web  # noqa: PLC0415

            from .admin import TlsSite, admin_app  # noqa: PLC0415

            admin = web.AppRunner(admin_app(runtime, intake), handle_signals=False, access_log=None)
            await admin.setup()
            admins.append(admin)
            admin_addr = config.proxy.admin_listen
            site: web.BaseSite = web.TCPSite(admin, admin_addr.host, admin_addr.port, reuse_address=True)
            admin_tls = config.proxy.admin_tls
            if admin_tls is not None:
                assert admin.server is not None  # set by setup()
                acceptor = await tls_acceptor(admin_tls, admin_addr.host, certs, inner=admin.server,
                                              handshake_timeout=_header_timeout(runtime), name="admin",
                                              key="proxy.admin_tls_cert_file")
                site = TlsSite(admin, acceptor, admin_addr.host, admin_addr.port)
                runtime.acceptors.append(acceptor)
            with _binding("admin listener", "[proxy] admin_listen (or --admin-listen)", admin_addr,
                          off=', or set it to "" to turn the admin listener off'):
                await site.start()
            bound += [Listening.at(addr, "admin", tls=admin_tls is not None) for addr in admin.addresses]

        # Everything loaded so far (aiohttp, botocore's models, SQLAlchemy, the registry) lives as long as the
        # process: out of the collector's sight, full collections stay short. Measured with bench/small_get.py
        # (64 connections, alternating runs): p99 48-62 ms before the store's libraries came, 67-83 ms with
        # them, 35-46 ms with them and this freeze; throughput unchanged within noise.
        gc.collect()
        gc.freeze()
        # A request's objects live until its answer is written, while up to a connection limit's worth of others
        # are in flight: at CPython's default (a young collection every 700 new objects) most are still alive
        # at a collection and are traversed twice (young, then middle generation) before they die. Every 10,000:
        # 2 % fewer instructions per small GET at 64 connections (bench/instructions.py), each collection
        # still short (the young objects are those of the requests in flight).
        gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])
        runtime.ready = True
        on_ready(bound)
        notifier.ready(f"serving {len(runtime.config.connections)} connection(s)")
        async with asyncio.TaskGroup() as tasks:
            healthy = runtime.group.healthy if runtime.group is not None else (lambda: True)
            watchdog = tasks.create_task(notifier.run_watchdog(healthy), name="sigproxy-watchdog")
            feed = None if store is None else tasks.create_task(
                store.watch(control.refresh, interval=config.store.poll_interval, since=control.revision),
                name="sigproxy-store-feed")
            # Once, by the process that owns credentials (not each worker), after the listeners are up.
            probe = None if worker is not None else tasks.create_task(
                warn_missing_credentials(runtime.config.connections), name="sigproxy-credential-probe")
            while not stop.is_set():
                waiters = [tasks.create_task(stop.wait())]
                if reload is not None:
                    waiters.append(tasks.create_task(reload.wait()))
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                if reload is not None and reload.is_set() and not stop.is_set():
                    reload.clear()
                    notifier.reloading()
                    reloaded = load is not None and await _reload(runtime, load)
                    if reloaded and runtime.group is not None:
                        await runtime.group.reload()
                    notifier.ready("reloaded" if reloaded else "reload failed: kept the previous config")
            watchdog.cancel()
            for task in (feed, probe):
                if task is not None:
                    task.cancel()
        runtime.ready = False
        notifier.stopping()
        logger.info("stopping: draining requests in flight for up to %.0f s", drain)
    with contextlib.suppress(Exception):
        notifier.close()

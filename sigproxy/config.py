"""TOML configuration -> frozen, validated dataclasses.

Owns: reading one TOML file, checking every key, and the config search path; how one table's keys are read
(types, ``${env:NAME}``/``${file:PATH}`` references, ``""``, unknown keys) is :mod:`sigproxy.configtable`.
Every problem raises :class:`~sigproxy.errors.ConfigError` naming the key path.
Must not: exit, print, configure logging, import aiohttp.

Example (every key: ``config.example.toml``)::

    [proxy]
    listen = "127.0.0.1:8080"
    default_connection = "main"

    [connections.main]
    region = "us-east-1"
    hosts = ["*.amazonaws.com"]
    [connections.main.credentials]
    source = "static"
    access_key_id = "${env:MAIN_KEY_ID}"
    secret_access_key = "${file:/run/secrets/main_secret}"
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .configtable import Secret, Table
from .connection import (
    ConnectionConfig,
    CredentialsConfig,
    Network,
    check_bases,
    parse_connection,
    parse_networks,
    parse_url,
)
from .controlconfig import (
    AdminConfig,
    ConnectConfig,
    OnboardingConfig,
    StoreConfig,
    parse_admin,
    parse_connect,
    parse_onboarding,
    parse_store,
)
from .dialing import Redirect, parse_redirect
from .errors import ConfigError
from .hostglobs import compile_host_globs, parse_host_glob
from .listentls import ListenerTls, parse_listener_tls
from .urlparts import http_scheme
from .users import USER_VAR

__all__ = [
    "Address",
    "Network",
    "Secret",
    "CredentialsConfig",
    "ConnectionConfig",
    "Route",
    "ReverseListener",
    "ProxyConfig",
    "Config",
    "DEFAULT_LISTEN",
    "config_search_path",
    "find_config",
    "load",
    "load_proxy",
    "loads",
    "parse_address",
    "parse_size",
    "client_allowed",
    "default_state_dir",
    "USER_VAR",
]

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN = "127.0.0.1:9901"
_SIZE = re.compile(r"^\s*([0-9]{1,20})\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20,
    "GB": 10**9, "GiB": 2**30, "TB": 10**12, "TiB": 2**40,
}

def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP address, or ``None`` when it is not one (a host name). A zone id (``fe80::1%eth0``)
    is dropped, and an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_allowed(networks: tuple[Network, ...], address: str | None) -> bool:
    """Whether a client address is inside ``networks`` (an empty allow-list admits everyone).

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged as its IPv4 address.
    """
    if not networks:
        return True
    ip = parse_ip(address) if address else None
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[[routes]]``: requests to hosts matching ``host`` use ``connection`` (when nothing earlier selects one);
    the first matching route's ``redirect`` applies to them whichever way the connection was selected."""

    host: str
    connection: str
    redirect: Redirect | None = None
    """``dial``, ``sign_host``, ``tls_server_name`` (:mod:`sigproxy.dialing`)."""
    _host_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_host_re", compile_host_globs((self.host,)))

    def matches(self, host: str, port: int) -> bool:
        return self._host_re.fullmatch(f"{host.lower()}:{port}") is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseListener:
    """``[[reverse]]``: a listener bound to one upstream endpoint."""

    listen: Address
    upstream: str
    connection: str | None = None
    clients: tuple[Network, ...] = ()
    """Client networks (CIDRs) allowed to use this listener (empty: any that can reach it)."""
    redirect: Redirect | None = None
    """``dial``, ``sign_host``, ``tls_server_name`` (:mod:`sigproxy.dialing`): applied to ``upstream``."""
    tls: ListenerTls | None = None
    """``tls_cert_file``/``tls_key_file`` or ``tls = "self"``: clients connect over TLS (None: plain HTTP)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """``[proxy]``."""

    listen: Address = field(default_factory=lambda: parse_address(DEFAULT_LISTEN, "proxy.listen"))
    default_connection: str | None = None
    max_buffered_body: int = 8 * 2**20
    """Bodies up to this size are read whole and hashed; larger ones stream (signed chunks) or spool."""
    max_body: int = 5 * 2**30
    """The largest request body accepted at all (S3's single PUT limit); over it: 413."""
    chunk_size: int = 2**20
    """Chunk size of the aws-chunked bodies sigproxy signs (botocore's default; bench/big_body.py: 1 MiB costs
    ~30% less CPU per byte than 64 KiB). Also the data each such upload holds: at most one chunk plus one
    piece read from the client."""
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    """Longest silence from the upstream while a response is awaited or streamed."""
    upstream_connections: int = 256
    """Pooled upstream connections in total (keep-alive)."""
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    """Where the CA lives: ``$STATE_DIRECTORY`` under systemd, else ``~/.local/share/sigproxy``."""
    passthrough: tuple[str, ...] = ()
    """Host globs that CONNECT tunnels blindly (no interception, no signing)."""
    connect_ports: tuple[int, ...] = (443,)
    """Ports a CONNECT may name."""
    upstream_ca_file: Path | None = None
    """Extra CA certificates (PEM) trusted for upstream TLS, besides the system store."""
    admin_listen: Address | None = field(default_factory=lambda: parse_address(DEFAULT_ADMIN, "proxy.admin_listen"))
    """The admin listener (/healthz, /readyz, /metrics); ``""`` turns it off."""
    drain_seconds: float = 20.0
    """On SIGTERM/SIGINT: how long requests in flight get to finish."""
    clients: tuple[Network, ...] = ()
    """Client networks (CIDRs) allowed to use the forward listener (empty: any that can reach it)."""
    max_connections: int = 1000
    """Client connections open at once, over the forward and reverse listeners; more are refused at accept."""
    max_connections_per_client: int = 256
    """Client connections open at once from one client address."""
    max_request_line: int = 8190
    """Longest request target (the URL of the request line) in bytes; over it: 400."""
    max_header_size: int = 8190
    """Longest single header (name and value) in bytes; over it: 400."""
    max_headers: int = 100
    """Most header lines in one request; over it: 400."""
    header_timeout: float = 20.0
    """Time a client gets to send a whole request head once it has begun (slowloris guard)."""
    idle_timeout: float = 60.0
    """An idle keep-alive client connection is closed after this long; so is one whose client reads nothing of
    its answer for this long."""
    body_timeout: float = 60.0
    """Longest silence while a request body is read; then the request fails and the connection closes."""
    websocket_idle_timeout: float = 300.0
    """A relayed WebSocket with no frame bytes either way for this long is closed (1001 to both ends)."""
    websocket_max_message: int = 16 * 2**20
    """The largest WebSocket message relayed, its frames' payloads summed; over it both ends get close 1009."""
    auth_failures: int = 10
    """Failed proxy tokens or client signatures one client address may cause per ``auth_failure_window``;
    past it that address gets 429 until the window has passed."""
    auth_failure_window: float = 60.0
    unknown_key_id: Literal["reject", "ignore"] = "reject"
    """A client signature whose access key id names no connection: ``"reject"`` (407 naming the closest
    names), or ``"ignore"`` it and let the next rule choose (reverse listener, routes, default_connection)."""
    credential_cache_users: int = 4096
    """Per-end-user credentials kept (``user_header`` connections), least recently used evicted first; every
    configured connection's own credentials are kept besides these."""
    metrics_connection_label: Literal["name", "none"] = "name"
    """Metric series per connection (label ``connection``), or ``"none"``: one series for all (large fleets)."""
    workers: int | None = None
    """Processes serving the listeners (``1``: one process, no supervisor); ``None``: one per CPU this process
    may use (:func:`sigproxy.workers.cpus.available_cpus`, resolved by ``sigproxy run``). Only a restart
    changes it."""
    tls: ListenerTls | None = None
    """The forward listener's ``tls_cert_file``/``tls_key_file`` or ``tls = "self"``: clients connect to the
    proxy over TLS (``HTTPS_PROXY=https://...``); None: plain HTTP."""
    admin_tls: ListenerTls | None = None
    """``admin_tls_cert_file``/``admin_tls_key_file``: the admin listener serves HTTPS; None: plain HTTP."""
    _passthrough_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_passthrough_re", compile_host_globs(self.passthrough))

    def passes_through(self, host: str, port: int) -> bool:
        return self._passthrough_re.fullmatch(f"{host.lower()}:{port}") is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    proxy: ProxyConfig
    connections: Mapping[str, ConnectionConfig]
    routes: tuple[Route, ...] = ()
    reverse: tuple[ReverseListener, ...] = ()
    source: str = "<string>"
    store: StoreConfig = field(default_factory=StoreConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    onboarding: OnboardingConfig = field(default_factory=OnboardingConfig)
    connect: ConnectConfig = field(default_factory=ConnectConfig)
    pending: frozenset[str] = frozenset()
    """Store connections still onboarding (not in ``connections``): named in the 407 a request for one gets."""
    redirecting_routes: bool = field(init=False, compare=False)
    """Whether any route has a ``dial``, ``sign_host`` or ``tls_server_name`` (else no request looks)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "redirecting_routes", any(r.redirect is not None for r in self.routes))



def parse_address(value: str, path: str) -> Address:
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or not host:
        raise ConfigError(path, f"expected HOST:PORT like '127.0.0.1:8080', got {value!r}")
    host = host.strip("[]")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ConfigError(path, f"port out of range in {value!r}")
    return Address(host, p)


def parse_size(value: object, path: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a size like '8MiB' or a number of bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(path, "must not be negative")
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(path, f"expected a size like '8MiB' or a number of bytes, got {value!r}")



def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY`` (first entry; systemd sets it) or ``~/.local/share/sigproxy``."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return Path(env.get("HOME") or "~").expanduser() / ".local/share/sigproxy"


def _proxy(t: Table | None, env: Mapping[str, str]) -> ProxyConfig:
    if t is None:
        return ProxyConfig(state_dir=default_state_dir(env))
    listen = t.string("listen")
    mbb = t._get("max_buffered_body", object, "a size")
    kwargs: dict[str, Any] = {
        "default_connection": t.string("default_connection"),
        "connect_timeout": t.number("connect_timeout"),
        "read_timeout": t.number("read_timeout"),
        "state_dir": t.filepath("state_dir") or default_state_dir(env),
        "passthrough": tuple(parse_host_glob(h, f"{t.key('passthrough')}[{i}]")
                             for i, h in enumerate(t.strings("passthrough"))),
        "connect_ports": t.ports("connect_ports"),
        "upstream_ca_file": t.filepath("upstream_ca_file"),
        "drain_seconds": t.number("drain_seconds"),
        "clients": parse_networks(t, "clients") or None,
        "header_timeout": t.number("header_timeout"),
        "idle_timeout": t.number("idle_timeout"),
        "body_timeout": t.number("body_timeout"),
        "websocket_idle_timeout": t.number("websocket_idle_timeout"),
        "auth_failure_window": t.number("auth_failure_window"),
        "unknown_key_id": t.choice("unknown_key_id", ("reject", "ignore")),
        "metrics_connection_label": t.choice("metrics_connection_label", ("name", "none")),
        "tls": parse_listener_tls(t),
        "admin_tls": parse_listener_tls(t, cert="admin_tls_cert_file", key="admin_tls_key_file", minted=None,
                                        client_ca=None),
    }
    # Each at least its low bound: a limit of 0 would refuse everything (the upstream pool, upstream_connections,
    # would otherwise quietly raise it to 1), and heads smaller than these can't hold a SigV4 request.
    for key, low in (("upstream_connections", 1), ("max_connections", 1), ("max_connections_per_client", 1),
                     ("max_request_line", 256),
                     ("max_header_size", 256), ("max_headers", 8), ("auth_failures", 1),
                     ("credential_cache_users", 1), ("workers", 1)):
        value = t.integer(key)
        if value is not None:
            if value < low:
                raise ConfigError(t.key(key), f"must be at least {low}")
            kwargs[key] = value
    if listen is not None:
        kwargs["listen"] = parse_address(listen, t.key("listen"))
    if mbb is not None:
        kwargs["max_buffered_body"] = parse_size(mbb, t.key("max_buffered_body"))
    for key, low in (("max_body", 1), ("chunk_size", 8 * 2**10), ("websocket_max_message", 1)):
        raw = t._get(key, object, "a size")
        if raw is not None:
            size = parse_size(raw, t.key(key))
            if size < low:
                raise ConfigError(t.key(key), f"must be at least {low} bytes")
            kwargs[key] = size
    # None above means "not given, keep the default"; admin_listen's None means "off", so it goes in after.
    given = {k: v for k, v in kwargs.items() if v is not None}
    admin = t.string("admin_listen", empty=True)
    if admin is not None:
        given["admin_listen"] = parse_address(admin, t.key("admin_listen")) if admin else None
    t.done()
    return ProxyConfig(**given)


def _http_scheme(url: str) -> str:
    """A reverse listener's upstream may be a ``ws://``/``wss://`` URL: the same as ``http://``/``https://``
    (:func:`~sigproxy.urlparts.http_scheme`); it relays HTTP requests and WebSocket handshakes alike."""
    scheme, sep, rest = url.partition("://")
    return f"{http_scheme(scheme)}://{rest}" if sep else url


def _build(data: Mapping[str, Any], env: Mapping[str, str], source: str, listen: str | None,
           admin_listen: str | None, *, workers: int | None = None) -> Config:
    root = Table(data, "", env)
    proxy = _proxy(root.table("proxy"), env)
    if workers is not None:
        if workers < 1:
            raise ConfigError("--workers", "must be at least 1")
        proxy = dataclasses.replace(proxy, workers=workers)
    if listen is not None:
        proxy = dataclasses.replace(proxy, listen=parse_address(listen, "--listen"))
    if admin_listen is not None:
        proxy = dataclasses.replace(proxy, admin_listen=parse_address(admin_listen, "--admin-listen")
                                    if admin_listen else None)
    conns_t = root.table("connections")
    connections: dict[str, ConnectionConfig] = {}
    if conns_t is not None:
        for name in conns_t.data:
            sub = conns_t.table(name)
            assert sub is not None
            connections[name] = parse_connection(name, sub)

    def known(name: str | None, path: str) -> None:
        if name is not None and name not in connections:
            raise ConfigError(path, f"unknown connection {name!r} (defined: {', '.join(sorted(connections))})")

    known(proxy.default_connection, "proxy.default_connection")
    check_bases(connections)
    routes = []
    for rt in root.tables("routes"):
        route = Route(
            host=parse_host_glob(rt.string("host", required=True) or "", rt.key("host")),
            connection=rt.string("connection", required=True) or "",
            redirect=parse_redirect(rt),
        )
        known(route.connection, rt.key("connection"))
        rt.done()
        routes.append(route)
    reverse = []
    addresses = {proxy.listen: "proxy.listen"}
    if proxy.admin_listen is not None:
        if proxy.admin_listen in addresses and proxy.admin_listen.port != 0:
            raise ConfigError("proxy.admin_listen", f"{proxy.admin_listen} is already used by proxy.listen")
        addresses[proxy.admin_listen] = "proxy.admin_listen"
    for rt in root.tables("reverse"):
        addr = parse_address(rt.string("listen", required=True) or "", rt.key("listen"))
        if addr in addresses and addr.port != 0:
            raise ConfigError(rt.key("listen"), f"{addr} is already used by {addresses[addr]}")
        addresses[addr] = rt.key("listen")
        rev = ReverseListener(
            listen=addr,
            upstream=parse_url(_http_scheme(rt.string("upstream", required=True) or ""), rt.key("upstream")),
            connection=rt.string("connection"),
            clients=parse_networks(rt, "clients"),
            redirect=parse_redirect(rt),
            tls=parse_listener_tls(rt),
        )
        known(rev.connection, rt.key("connection"))
        rt.done()
        reverse.append(rev)
    store = parse_store(root.table("store"))
    admin = parse_admin(root.table("admin"))
    onboarding = parse_onboarding(root.table("onboarding"))
    connect = parse_connect(root.table("connect"))
    root.done()  # a stray top-level table ([conections.main]) before the "no connections" it would cause
    if not connections and not store.enabled:
        raise ConfigError("connections", "define at least one [connections.NAME] table (or keep the store on)")
    return Config(
        proxy=proxy, connections=connections, routes=tuple(routes), reverse=tuple(reverse), source=source,
        store=store, admin=admin, onboarding=onboarding, connect=connect,
    )



def loads(text: str, *, env: Mapping[str, str] | None = None, source: str = "<string>",
          listen: str | None = None, admin_listen: str | None = None, workers: int | None = None) -> Config:
    """Parse TOML text into a :class:`Config`. ``listen``, ``admin_listen`` and ``workers`` override the
    ``[proxy]`` keys of those names (the command line's ``--listen``, ``--admin-listen``, ``--workers``)."""
    return _build(_toml(text, source), os.environ if env is None else env, source, listen, admin_listen,
                  workers=workers)


def _toml(text: str, source: str) -> dict[str, Any]:
    """``text`` parsed as TOML; raises :class:`ConfigError` naming ``source`` when it isn't valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{source}: not valid TOML: {exc}") from exc


def read_config(path: Path) -> str:
    """The config file's text (UTF-8). Raises :class:`ConfigError` when it can't be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config {str(path)!r}: {exc.strerror}") from exc


def load(path: Path, *, env: Mapping[str, str] | None = None, listen: str | None = None,
         admin_listen: str | None = None, workers: int | None = None) -> Config:
    return loads(read_config(path), env=env, source=str(path), listen=listen, admin_listen=admin_listen,
                 workers=workers)


def load_proxy(path: Path, *, env: Mapping[str, str] | None = None) -> ProxyConfig:
    """Only the ``[proxy]`` table of the config file at ``path``, checked as :func:`load` checks it: for the
    commands that need no connection (``sigproxy ca``). The rest of the file is not read, so a
    ``${env:...}``/``${file:...}`` that only the proxy host can resolve (a connection's secret) doesn't stop
    them. Raises :class:`ConfigError` (unreadable file, invalid TOML, a bad ``[proxy]`` key)."""
    env = os.environ if env is None else env
    return _proxy(Table(_toml(read_config(path), str(path)), "", env).table("proxy"), env)


def config_search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where the config is looked for when ``-c`` is absent, in order."""
    env = os.environ if env is None else env
    paths = []
    if env.get("SIGPROXY_CONFIG"):
        paths.append(Path(env["SIGPROXY_CONFIG"]))
    paths.append(Path("sigproxy.toml"))
    paths.append(Path(env.get("HOME", "~")).expanduser() / ".config/sigproxy/config.toml")
    paths.append(Path("/etc/sigproxy/config.toml"))
    return paths


def find_config(explicit: str | None, env: Mapping[str, str] | None = None,
                exists: Callable[[Path], bool] = Path.is_file) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ if env is None else env
    if env.get("SIGPROXY_CONFIG"):
        return Path(env["SIGPROXY_CONFIG"])
    search = config_search_path(env)
    for p in search:
        if exists(p):
            return p
    raise ConfigError("", "no config file found; looked at " + ", ".join(str(p) for p in search)
                      + " (pass -c CONFIG)")

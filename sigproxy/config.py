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
import fnmatch
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .configtable import Secret, Table
from .errors import ConfigError
from .users import ROLE_SESSION, TAG_VALUE, USER_VAR, policy_problem, tag_key_problem, template_problem

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
    "loads",
    "parse_address",
    "parse_size",
    "client_allowed",
    "host_matches",
    "compile_host_globs",
    "split_host_entry",
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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_GLOB = re.compile(r"^[A-Za-z0-9*?.\-\[\]]+(:[0-9*?]+)?$|^\[[0-9A-Fa-f:.*?]+\](:[0-9*?]+)?$")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_allowed(networks: tuple[Network, ...], address: str | None) -> bool:
    """Whether a client address is inside ``networks`` (an empty allow-list admits everyone).

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged as its IPv4 address.
    """
    if not networks:
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsConfig:
    """``[connections.NAME.credentials]``: where a connection's AWS credentials come from.

    ``source`` picks the kind; each kind takes only its own keys (see ``_SOURCE_KEYS``)::

        source = "assume_role"
        role_arn = "arn:aws:iam::111122223333:role/sigproxy-assumable/tenant"
        external_id = "${env:TENANT_EXTERNAL_ID}"
        base = "chain"            # or another connection's name (role chaining)
    """

    source: Literal["static", "chain", "assume_role", "web_identity", "sts_endpoint"]
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    """``chain``: the shared-config profile to use."""
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None
    """Default ``sigproxy-<connection>``."""
    source_identity: str | None = None
    duration_seconds: int = 3600
    policy: str | None = None
    """An inline session policy (JSON text)."""
    policy_arns: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    base: str = "chain"
    """``assume_role``: ``"chain"`` or the connection whose credentials assume the role (role chaining)."""
    token_file: Path | None = None
    """``web_identity``: the OIDC token, read again at every refresh."""
    url: str | None = None
    """``sts_endpoint``: the custom STS endpoint."""
    auth: Literal["api_key", "basic"] | None = None
    api_key_header: str = "X-Api-Key"
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    """``[connections.NAME]``: one set of credentials and where they may be used."""

    name: str
    credentials: CredentialsConfig
    region: str | None = None
    """Default region, used when neither the request nor the host name says."""
    service: str | None = None
    """Force the signing service (e.g. ``"s3"``) for every request of this connection."""
    hosts: tuple[str, ...] = ()
    """The only targets this connection may sign for: globs on ``host`` or ``host:port``."""
    token: Secret | None = None
    """A proxy password: clients must send ``Proxy-Authorization: Basic NAME:TOKEN``."""
    sts_endpoint_url: str | None = None
    upstream_scheme: Literal["http", "https"] | None = None
    """Force the upstream scheme (client speaks http to us, we speak TLS upstream)."""
    verify_tls: bool = True
    """Verify the upstream's TLS certificate. ``false`` is logged as a warning at start."""
    require_role_path: str | None = None
    """Roles this connection assumes must have this in their path (``/sigproxy-assumable/``)."""
    s3_payload: Literal["signed", "unsigned"] = "signed"
    """Large S3 bodies: aws-chunked with signed chunks, or ``UNSIGNED-PAYLOAD`` (only over TLS upstream)."""
    client_secret: Secret | None = None
    """The secret clients sign with (key id = the connection's name); their chunk signatures are verified."""
    allowed_services: tuple[str, ...] = ()
    """Signing services this connection may sign for (empty: any)."""
    allowed_regions: tuple[str, ...] = ()
    """Regions this connection may sign for (empty: any)."""
    allowed_methods: tuple[str, ...] = ()
    """HTTP methods this connection may sign (empty: any; ``read_only = true`` means GET and HEAD)."""
    deny_amz_headers: tuple[str, ...] = ()
    """Globs of client-chosen ``x-amz-*`` headers refused (e.g. ``x-amz-acl``, ``x-amz-grant-*``)."""
    presigned: Literal["refuse", "passthrough"] = "refuse"
    """A request already presigned by someone else: refused (400), or forwarded untouched. Its key id names no
    connection: clients select this one by header or proxy credentials (or ``[proxy] unknown_key_id``)."""
    private_networks: tuple[Network, ...] = ()
    """Non-public networks (CIDRs) this connection may reach for any host it may sign for (SSRF guard), e.g.
    VPC interface endpoints with private DNS; otherwise only hosts named exactly may resolve to them."""
    user_header: bool = False
    """Take the end user's id from ``X-Sigproxy-User`` (required then) into the role session per user."""

    _hosts_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts_re", compile_host_globs(self.hosts))

    def allows(self, host: str, port: int) -> bool:
        """Whether this connection may sign for ``host:port``."""
        return self._hosts_re.fullmatch(f"{host.lower()}:{port}") is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[[routes]]``: requests to hosts matching ``host`` use ``connection``."""

    host: str
    connection: str
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """``[proxy]``."""

    listen: Address = field(default_factory=lambda: parse_address(DEFAULT_LISTEN, "proxy.listen"))
    default_connection: str | None = None
    max_buffered_body: int = 8 * 2**20
    """Bodies up to this size are read whole and hashed; larger ones stream (signed chunks) or spool."""
    max_body: int = 5 * 2**30
    """The largest request body accepted at all (S3's single PUT limit); over it: 413."""
    chunk_size: int = 64 * 2**10
    """Chunk size of the aws-chunked bodies sigproxy signs."""
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
    """An idle keep-alive client connection is closed after this long."""
    body_timeout: float = 60.0
    """Longest silence while a request body is read; then the request fails and the connection closes."""
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


# ---------------------------------------------------------------------------- helpers


def _glob_re(glob: str) -> str:
    # fnmatch.translate gives '(?s:PATTERN)\\Z'; drop the anchor, fullmatch anchors the whole alternation.
    return fnmatch.translate(glob).removesuffix(r"\Z")


def split_host_entry(raw: str) -> tuple[str, str]:
    """A ``hosts``/``passthrough`` entry -> (host part lower-cased and unbracketed, port glob, ``*`` if none)."""
    entry = raw.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else "*"
    if entry.count(":") > 1:  # an unbracketed IPv6 literal: no port
        return entry, "*"
    if ":" in entry:
        host, _, port = entry.rpartition(":")
        return host, port
    return entry, "*"


def compile_host_globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex over ``host:port`` (lower-case host; IPv6 unbracketed) for ``host`` / ``host:port`` globs."""
    parts = []
    for raw in patterns:
        host, port = split_host_entry(raw)
        parts.append(f"(?:{_glob_re(host)}):(?:{_glob_re(port)})")
    return re.compile("|".join(parts) or "(?!)")


def host_matches(pattern: str, host: str, port: int) -> bool:
    """Whether ``host:port`` matches a ``host`` or ``host:port`` glob (case-insensitive)."""
    return compile_host_globs((pattern,)).fullmatch(f"{host.lower()}:{port}") is not None


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


def _host_glob(value: str, path: str) -> str:
    if not value or not _HOST_GLOB.match(value):
        raise ConfigError(path, f"bad host glob {value!r}: expected 'host', '*.example.com' or 'host:port'")
    if value.strip("*?.:") == "":
        raise ConfigError(path, f"host glob {value!r} matches every host: list the hosts instead")
    if value.count("[") != value.count("]"):
        raise ConfigError(path, f"bad host glob {value!r}: unbalanced brackets")
    return value


def _networks(t: Table, name: str) -> tuple[Network, ...]:
    out = []
    for i, value in enumerate(t.strings(name)):
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{t.key(name)}[{i}]", f"expected a network like '10.0.0.0/8' or an address, "
                              f"got {value!r}") from exc
    return tuple(out)


def _url(value: str, path: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


# ---------------------------------------------------------------------------- the sections


_SOURCES = ("static", "chain", "assume_role", "web_identity", "sts_endpoint")
_SOURCE_KEYS: dict[str, frozenset[str]] = {
    "static": frozenset({"access_key_id", "secret_access_key", "session_token"}),
    "chain": frozenset({"profile"}),
    "assume_role": frozenset({"role_arn", "external_id", "session_name", "source_identity", "duration_seconds",
                              "policy", "policy_arns", "tags", "transitive_tag_keys", "base"}),
    "web_identity": frozenset({"role_arn", "token_file", "session_name", "duration_seconds"}),
    "sts_endpoint": frozenset({"url", "role_arn", "external_id", "auth", "api_key_header", "api_key", "username",
                               "password"}),
}
_ROLE_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")
_MAX_TAGS = 50  # STS AssumeRole: Tags (tagListType), at most 50
_USER_KEYS = frozenset({"session_name", "source_identity", "policy"})
_SIGPROXY_VAR = re.compile(r"\$\{sigproxy:[^}]*\}")


def _user_templates(t: Table, creds: CredentialsConfig, user_header: bool) -> None:
    """``${sigproxy:...}`` only as ``${sigproxy:user}``, only where it is replaced, only with ``user_header``;
    session name, source identity, tags and policy follow STS's rules, with room for any id (users.py)."""
    # (key path, value, whether USER_VAR is replaced there)
    values: list[tuple[str, str, bool]] = []
    for f in dataclasses.fields(creds):
        value = getattr(creds, f.name)
        if isinstance(value, str):
            values.append((f.name, value, f.name in _USER_KEYS))
        elif f.name == "tags":
            values += [(f"tags.{k}", k, False) for k, _ in value] + [(f"tags.{k}", v, True) for k, v in value]
        elif isinstance(value, tuple):
            values += [(f"{f.name}[{i}]", v, False) for i, v in enumerate(value) if isinstance(v, str)]
    for key, value, replaced in values:
        for m in _SIGPROXY_VAR.finditer(value):
            if m.group(0) != USER_VAR:
                raise ConfigError(t.key(key), f"unknown variable {m.group(0)!r}: the only one is {USER_VAR}")
            if not replaced:
                raise ConfigError(t.key(key), f"{USER_VAR} is only replaced in session_name, source_identity, "
                                  "policy and tag values")
            if not user_header:
                raise ConfigError(t.key(key), f"{USER_VAR} needs user_header = true on the connection")
    for key in ("session_name", "source_identity"):
        value = getattr(creds, key)
        # The id is mapped into STS's rule per request (users.render); here only what the config adds around it.
        if value is not None and (problem := template_problem(value, ROLE_SESSION)) is not None:
            raise ConfigError(t.key(key), problem)
    if len(creds.tags) > _MAX_TAGS:
        raise ConfigError(t.key("tags"), f"has {len(creds.tags)} tags; STS takes at most {_MAX_TAGS}")
    for k, v in creds.tags:
        problem = tag_key_problem(k) or template_problem(v, TAG_VALUE)
        if problem is not None:
            raise ConfigError(t.key(f"tags.{k}"), problem)
    if creds.policy is not None and (problem := policy_problem(creds.policy)) is not None:
        raise ConfigError(t.key("policy"), problem)


def _role_arn(t: Table, require_path: str | None) -> str:
    arn = t.string("role_arn", required=True) or ""
    if not _ROLE_ARN.match(arn):
        raise ConfigError(t.key("role_arn"), f"expected an IAM role ARN like "
                          f"'arn:aws:iam::111122223333:role/name', got {arn!r}")
    if require_path is not None:
        path = "/" + arn.split(":role/", 1)[1].rpartition("/")[0] + "/"
        if require_path not in path.replace("//", "/"):
            raise ConfigError(t.key("role_arn"), f"role path {path!r} does not contain require_role_path "
                              f"{require_path!r}: sigproxy may only assume roles under that path")
    return arn


def _credentials(t: Table, connection: str, require_path: str | None, *,
                 user_header: bool = False) -> CredentialsConfig:
    source = t.choice("source", _SOURCES, required=True)
    given = set(t.data) - {"source"}
    misplaced = sorted(given - _SOURCE_KEYS[source or ""])
    if misplaced and misplaced[0] in set().union(*_SOURCE_KEYS.values()):
        raise ConfigError(t.key(misplaced[0]), f"is not used by source = {source!r}")
    kwargs: dict[str, Any] = {"source": source}
    if source == "static":
        kwargs.update(access_key_id=t.string("access_key_id", required=True),
                      secret_access_key=t.secret("secret_access_key", required=True),
                      session_token=t.secret("session_token"))
    elif source == "chain":
        kwargs.update(profile=t.string("profile"))
    else:
        kwargs["role_arn"] = _role_arn(t, require_path)
        default = USER_VAR if user_header and source != "sts_endpoint" else f"sigproxy-{connection}"[:64]
        kwargs["session_name"] = t.string("session_name") or default
    if source in ("assume_role", "web_identity"):
        duration = t.integer("duration_seconds")
        if duration is not None:
            if not 900 <= duration <= 43200:
                raise ConfigError(t.key("duration_seconds"), f"must be between 900 and 43200, got {duration}")
            kwargs["duration_seconds"] = duration
    if source == "assume_role":
        policy = t.string("policy")
        if policy is not None:
            try:
                json.loads(policy)
            except (ValueError, RecursionError) as exc:
                raise ConfigError(t.key("policy"), f"is not valid JSON: {exc}") from exc
        tags_t = t.table("tags")
        tags: list[tuple[str, str]] = []
        if tags_t is not None:
            for key in tags_t.data:
                tags.append((key, tags_t.string(key, required=True, empty=True) or ""))  # STS allows ""
            tags_t.done()
        kwargs.update(external_id=t.string("external_id"), source_identity=t.string("source_identity"),
                      policy=policy, policy_arns=t.strings("policy_arns"), tags=tuple(tags),
                      transitive_tag_keys=t.strings("transitive_tag_keys"), base=t.string("base") or "chain")
    elif source == "web_identity":
        token_file = t.filepath("token_file")
        if token_file is None:
            raise ConfigError(t.key("token_file"), "is required")
        kwargs["token_file"] = token_file
    elif source == "sts_endpoint":
        url = t.string("url", required=True) or ""
        auth = t.choice("auth", ("api_key", "basic"), required=True)
        kwargs.update(url=_url(url, t.key("url")), external_id=t.string("external_id"), auth=auth)
        if auth == "api_key":
            kwargs.update(api_key_header=t.string("api_key_header") or "X-Api-Key",
                          api_key=t.secret("api_key", required=True))
        else:
            kwargs.update(username=t.string("username", required=True), password=t.secret("password", required=True))
    creds = CredentialsConfig(**kwargs)
    _user_templates(t, creds, user_header)
    t.done()
    return creds


_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


def _methods(t: Table) -> tuple[str, ...]:
    methods = tuple(m.upper() for m in t.strings("allowed_methods"))
    for i, m in enumerate(methods):
        if m not in _METHODS:
            raise ConfigError(f"{t.key('allowed_methods')}[{i}]", f"unknown HTTP method {m!r}")
    if t.boolean("read_only"):
        if methods and set(methods) - {"GET", "HEAD"}:
            raise ConfigError(t.key("read_only"), "read_only = true allows only GET and HEAD; drop allowed_methods")
        methods = ("GET", "HEAD")
    return methods


def _amz_globs(t: Table) -> tuple[str, ...]:
    globs = tuple(g.lower() for g in t.strings("deny_amz_headers"))
    for i, g in enumerate(globs):
        if not g.startswith("x-amz-"):
            raise ConfigError(f"{t.key('deny_amz_headers')}[{i}]", f"expected an x-amz-* header or glob, got {g!r}")
    return globs


def _connection(name: str, t: Table) -> ConnectionConfig:
    if not _NAME.match(name):
        raise ConfigError(t.path, "connection names use letters, digits, '.', '_' and '-' (up to 64)")
    creds_t = t.table("credentials")
    if creds_t is None:
        raise ConfigError(t.key("credentials"), "is required (a table with 'source')")
    require_path = t.string("require_role_path")
    if require_path is not None and not (require_path.startswith("/") and require_path.endswith("/")):
        raise ConfigError(t.key("require_role_path"),
                          f"expected a path like '/sigproxy-assumable/', got {require_path!r}")
    hosts = tuple(_host_glob(h, f"{t.key('hosts')}[{i}]") for i, h in enumerate(t.strings("hosts")))
    if not hosts:
        raise ConfigError(t.key("hosts"), "is required: the hosts this connection may sign for")
    sts = t.string("sts_endpoint_url")
    user_header = t.boolean("user_header") is True
    conn = ConnectionConfig(
        name=name,
        credentials=_credentials(creds_t, name, require_path, user_header=user_header),
        require_role_path=require_path,
        region=t.string("region"),
        service=t.string("service"),
        hosts=hosts,
        token=t.secret("token"),
        sts_endpoint_url=None if sts is None else _url(sts, t.key("sts_endpoint_url")),
        upstream_scheme=t.choice("upstream_scheme", ("http", "https")),  # type: ignore[arg-type]
        verify_tls=t.boolean("verify_tls") is not False,
        s3_payload=t.choice("s3_payload", ("signed", "unsigned")) or "signed",  # type: ignore[arg-type]
        client_secret=t.secret("client_secret"),
        allowed_services=tuple(v.lower() for v in t.strings("allowed_services")),
        allowed_regions=tuple(v.lower() for v in t.strings("allowed_regions")),
        allowed_methods=_methods(t),
        deny_amz_headers=_amz_globs(t),
        presigned=t.choice("presigned", ("refuse", "passthrough")) or "refuse",  # type: ignore[arg-type]
        user_header=user_header,
        private_networks=_networks(t, "private_networks"),
    )
    if conn.user_header and conn.credentials.source not in ("assume_role", "web_identity", "sts_endpoint"):
        raise ConfigError(t.key("user_header"), "needs credentials that are fetched per user: source = "
                          "\"assume_role\", \"web_identity\" or \"sts_endpoint\"")
    t.done()
    return conn


def _check_bases(connections: Mapping[str, ConnectionConfig]) -> None:
    """``base`` names ``chain`` or a defined connection, and role chains have no cycle."""
    for name, conn in connections.items():
        path = f"connections.{name}.credentials.base"
        seen = [name]
        current = conn
        while current.credentials.source == "assume_role" and current.credentials.base != "chain":
            base = current.credentials.base
            if base not in connections:
                raise ConfigError(path, f"unknown connection {base!r}: use \"chain\" or a connection's name")
            if base in seen:
                raise ConfigError(path, "role chain has a cycle: " + " -> ".join([*seen, base]))
            seen.append(base)
            current = connections[base]


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
        "passthrough": tuple(_host_glob(h, f"{t.key('passthrough')}[{i}]")
                             for i, h in enumerate(t.strings("passthrough"))),
        "connect_ports": t.ports("connect_ports"),
        "upstream_ca_file": t.filepath("upstream_ca_file"),
        "drain_seconds": t.number("drain_seconds"),
        "clients": _networks(t, "clients") or None,
        "header_timeout": t.number("header_timeout"),
        "idle_timeout": t.number("idle_timeout"),
        "body_timeout": t.number("body_timeout"),
        "auth_failure_window": t.number("auth_failure_window"),
        "unknown_key_id": t.choice("unknown_key_id", ("reject", "ignore")),
        "metrics_connection_label": t.choice("metrics_connection_label", ("name", "none")),
    }
    # upstream_connections: aiohttp reads a pool limit of 0 as "no limit", so 0 (or 0.5 rounded down)
    # must not get through.
    for key, low in (("upstream_connections", 1), ("max_connections", 1), ("max_connections_per_client", 1),
                     ("max_request_line", 256),
                     ("max_header_size", 256), ("max_headers", 8), ("auth_failures", 1),
                     ("credential_cache_users", 1)):
        value = t.integer(key)
        if value is not None:
            if value < low:
                raise ConfigError(t.key(key), f"must be at least {low}")
            kwargs[key] = value
    if listen is not None:
        kwargs["listen"] = parse_address(listen, t.key("listen"))
    if mbb is not None:
        kwargs["max_buffered_body"] = parse_size(mbb, t.key("max_buffered_body"))
    for key, low in (("max_body", 1), ("chunk_size", 8 * 2**10)):
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


def _build(data: Mapping[str, Any], env: Mapping[str, str], source: str, listen: str | None,
           admin_listen: str | None) -> Config:
    root = Table(data, "", env)
    proxy = _proxy(root.table("proxy"), env)
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
            connections[name] = _connection(name, sub)
    if not connections:
        raise ConfigError("connections", "define at least one [connections.NAME] table")

    def known(name: str | None, path: str) -> None:
        if name is not None and name not in connections:
            raise ConfigError(path, f"unknown connection {name!r} (defined: {', '.join(sorted(connections))})")

    known(proxy.default_connection, "proxy.default_connection")
    _check_bases(connections)
    routes = []
    for rt in root.tables("routes"):
        route = Route(
            host=_host_glob(rt.string("host", required=True) or "", rt.key("host")),
            connection=rt.string("connection", required=True) or "",
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
            upstream=_url(rt.string("upstream", required=True) or "", rt.key("upstream")),
            connection=rt.string("connection"),
            clients=_networks(rt, "clients"),
        )
        known(rev.connection, rt.key("connection"))
        rt.done()
        reverse.append(rev)
    root.done()
    return Config(
        proxy=proxy, connections=connections, routes=tuple(routes), reverse=tuple(reverse), source=source
    )


def loads(text: str, *, env: Mapping[str, str] | None = None, source: str = "<string>",
          listen: str | None = None, admin_listen: str | None = None) -> Config:
    """Parse TOML text into a :class:`Config`. ``listen`` overrides ``[proxy] listen``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{source}: not valid TOML: {exc}") from exc
    return _build(data, os.environ if env is None else env, source, listen, admin_listen)


def load(path: Path, *, env: Mapping[str, str] | None = None, listen: str | None = None,
         admin_listen: str | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config {str(path)!r}: {exc.strerror}") from exc
    return loads(text, env=env, source=str(path), listen=listen, admin_listen=admin_listen)


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

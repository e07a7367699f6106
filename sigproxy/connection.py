"""What a connection is: its dataclasses, the one parser that checks every key of a connection's table (for
the TOML file and the admin API alike), its JSON form, and the host globs it is allowed (their syntax and
matching are :mod:`sigproxy.hostglobs`').

A connection's table is the same whether it comes from ``[connections.NAME]`` in the config file (origin
``"file"``) or from ``POST /v1/connections`` (origin ``"store"``); :func:`parse_connection` reads both, with
``${env:...}``/``${file:...}`` references resolved only for the file. Every problem raises
:class:`~sigproxy.errors.ConfigError` naming the key path.
Must not: do I/O other than resolving a file config's references, know where connections are stored, import
aiohttp.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .clientcert import parse_subjects
from .configtable import Secret, Table
from .errors import ConfigError
from .hostglobs import HostSet, parse_host_glob
from .sigv4a import region_set_value
from .urlparts import split_url
from .users import ROLE_SESSION, TAG_VALUE, USER_VAR, policy_problem, tag_key_problem, template_problem

__all__ = [
    "Network",
    "CredentialsConfig",
    "ConnectionConfig",
    "SECRET_PATHS",
    "STORE_SOURCES",
    "parse_connection",
    "check_bases",
    "connection_json",
    "parse_url",
    "parse_networks",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    client_cert_subjects: tuple[str, ...] = ()
    """Client certificates that select this connection (RFC 4514 names, e.g. ``"CN=build-agent"``; see
    :mod:`sigproxy.clientcert`), on listeners with ``client_ca_file``."""
    signature_version: Literal["v4", "v4a"] = "v4"
    """``"v4a"``: sign every request with SigV4A (``AWS4-ECDSA-P256-SHA256``) for ``sigv4a_signing_region_set``
    (botocore's name for the signer). Multi-Region Access Point hosts and clients' own SigV4A requests get SigV4A
    whatever this says."""
    sigv4a_signing_region_set: tuple[str, ...] = ("*",)
    """The regions a SigV4A signature is valid in (AWS SDKs' ``sigv4a_signing_region_set``): names or patterns."""
    user_header: bool = False
    """Take the end user's id from ``X-Sigproxy-User`` (required then) into the role session per user."""
    origin: Literal["file", "store"] = "file"
    """Where the connection is defined: the config file (read-only at runtime) or the connection store."""
    state: Literal["active", "pending"] = "active"
    """``"pending"``: an ``assume_role`` store connection still onboarding (no ``role_arn`` yet): it signs
    nothing until its role is validated (``PATCH`` with ``credentials.role_arn``)."""

    host_set: HostSet = field(init=False, repr=False, compare=False)
    """:attr:`hosts` compiled, with the answers given so far kept (what :meth:`allows` asks)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_set", HostSet(self.hosts))

    def allows(self, host: str, port: int) -> bool:
        """Whether this connection may sign for ``host:port`` (:meth:`HostSet.allows`)."""
        return self.host_set.allows(host, port)


# ---------------------------------------------------------------------------- helpers


def parse_networks(t: Table, name: str) -> tuple[Network, ...]:
    out = []
    for i, value in enumerate(t.strings(name)):
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{t.key(name)}[{i}]", f"expected a network like '10.0.0.0/8' or an address, "
                              f"got {value!r}") from exc
    return tuple(out)


def parse_url(value: str, path: str) -> str:
    parts = split_url(value)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


# ---------------------------------------------------------------------------- the sections


_SOURCES = ("static", "chain", "assume_role", "web_identity", "sts_endpoint")
STORE_SOURCES = ("static", "assume_role", "sts_endpoint")
"""Credential sources a store connection may use. ``chain`` (this host's profiles, IMDS, environment) and
``web_identity`` (a token file on this host) read the proxy host's own files: only the config file, which
the operator writes, may name them."""
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("token",), ("client_secret",), ("credentials", "secret_access_key"), ("credentials", "session_token"),
    ("credentials", "api_key"), ("credentials", "password"),
)
"""The keys of a connection's table that hold secrets: write-only (shown as ``"***"``), encrypted at rest."""
SECRET_SHOWN = "***"  # noqa: S105 (the mask shown in place of a secret)
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
                 user_header: bool = False, origin: str = "file") -> CredentialsConfig:
    source = t.choice("source", _SOURCES, required=True)
    if origin == "store" and source not in STORE_SOURCES:
        raise ConfigError(t.key("source"), f"source = {source!r} reads this host's own files or environment: "
                          "define such a connection in the config file; the store takes "
                          + ", ".join(repr(s) for s in STORE_SOURCES))
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
        pending = origin == "store" and source == "assume_role" and "role_arn" not in t.data
        kwargs["role_arn"] = None if pending else _role_arn(t, require_path)
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
            t.missing("token_file", "is required")
        kwargs["token_file"] = token_file
    elif source == "sts_endpoint":
        url = t.string("url", required=True) or ""
        auth = t.choice("auth", ("api_key", "basic"), required=True)
        kwargs.update(url=parse_url(url, t.key("url")), external_id=t.string("external_id"), auth=auth)
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


def parse_connection(name: str, t: Table, *, origin: Literal["file", "store"] = "file") -> ConnectionConfig:
    """The connection ``name`` from its table ``t`` (``[connections.NAME]``, or an admin-API JSON object read
    through a :class:`Table` made with ``references=False``).

    ``origin="store"`` takes only :data:`STORE_SOURCES` and allows an ``assume_role`` without ``role_arn``:
    a *pending* connection (onboarding). Raises :class:`ConfigError` naming the key path at fault.
    """
    if not _NAME.match(name):
        raise ConfigError(t.path, "connection names use letters, digits, '.', '_' and '-' (up to 64)")
    creds_t = t.table("credentials")
    if creds_t is None:
        t.missing("credentials", "is required (a table with 'source')")
    require_path = t.string("require_role_path")
    if require_path is not None and not (require_path.startswith("/") and require_path.endswith("/")):
        raise ConfigError(t.key("require_role_path"),
                          f"expected a path like '/sigproxy-assumable/', got {require_path!r}")
    hosts = tuple(parse_host_glob(h, f"{t.key('hosts')}[{i}]") for i, h in enumerate(t.strings("hosts")))
    if not hosts:
        t.missing("hosts", "is required: the hosts this connection may sign for")
    sts = t.string("sts_endpoint_url")
    user_header = t.boolean("user_header") is True
    conn = ConnectionConfig(
        name=name,
        credentials=_credentials(creds_t, name, require_path, user_header=user_header, origin=origin),
        require_role_path=require_path,
        region=t.string("region"),
        service=t.string("service"),
        hosts=hosts,
        token=t.secret("token"),
        sts_endpoint_url=None if sts is None else parse_url(sts, t.key("sts_endpoint_url")),
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
        signature_version=t.choice("signature_version", ("v4", "v4a")) or "v4",  # type: ignore[arg-type]
        sigv4a_signing_region_set=_region_set(t),
        private_networks=parse_networks(t, "private_networks"),
        client_cert_subjects=parse_subjects(t.strings("client_cert_subjects"), t.key("client_cert_subjects")),
        origin=origin,
    )
    if conn.credentials.source == "assume_role" and conn.credentials.role_arn is None:
        conn = dataclasses.replace(conn, state="pending")
    if conn.user_header and conn.credentials.source not in ("assume_role", "web_identity", "sts_endpoint"):
        raise ConfigError(t.key("user_header"), "needs credentials that are fetched per user: source = "
                          "\"assume_role\", \"web_identity\" or \"sts_endpoint\"")
    t.done()
    return conn


def _region_set(t: Table) -> tuple[str, ...]:
    regions = t.strings("sigv4a_signing_region_set")
    if not regions:
        return ("*",)
    try:
        return tuple(region_set_value(regions).split(","))
    except ValueError as exc:
        raise ConfigError(t.key("sigv4a_signing_region_set"), f"{exc}") from None


def check_bases(connections: Mapping[str, ConnectionConfig]) -> None:
    """``base`` names ``chain`` or a defined active connection, and role chains have no cycle.

    Raises :class:`ConfigError` at ``connections.NAME.credentials.base``."""
    for name, conn in connections.items():
        path = f"connections.{name}.credentials.base"
        seen = [name]
        current = conn
        while current.credentials.source == "assume_role" and current.credentials.base != "chain":
            base = current.credentials.base
            if base not in connections:
                raise ConfigError(path, f"unknown connection {base!r}: use \"chain\" or a connection's name")
            if connections[base].state != "active":
                raise ConfigError(path, f"connection {base!r} is still pending: its role is not validated yet")
            if base in seen:
                raise ConfigError(path, "role chain has a cycle: " + " -> ".join([*seen, base]))
            seen.append(base)
            current = connections[base]


def _json_value(value: object) -> object:
    if isinstance(value, Secret):
        return SECRET_SHOWN
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


_CONNECTION_KEYS = tuple(f.name for f in dataclasses.fields(ConnectionConfig)
                         if f.init and f.name not in ("name", "credentials", "origin", "state"))


def connection_json(conn: ConnectionConfig) -> dict[str, Any]:
    """``conn`` as JSON: its table with ``name`` added, the same key names as the TOML file, plus read-only
    ``origin`` and ``state``; keys left at their default are omitted, secrets are ``"***"``.

    Feeding the table back (secrets given) to :func:`parse_connection` gives an equal connection."""
    out: dict[str, Any] = {"name": conn.name}
    defaults = {f.name: f.default for f in dataclasses.fields(ConnectionConfig)}
    for key in _CONNECTION_KEYS:
        value = getattr(conn, key)
        if value is not None and value != defaults[key]:
            out[key] = _json_value(value)
    c = conn.credentials
    creds: dict[str, Any] = {"source": c.source}
    for key in sorted(_SOURCE_KEYS[c.source]):
        value = getattr(c, key)
        if key == "api_key_header" and c.auth != "api_key":
            continue
        if key == "tags":
            if value:
                creds["tags"] = dict(value)
        elif value is not None and value != ():
            creds[key] = _json_value(value)
    out["credentials"] = creds
    out["origin"] = conn.origin
    out["state"] = conn.state
    return out

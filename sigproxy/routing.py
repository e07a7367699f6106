"""Pure request routing: which connection, may it sign for this host, which service and region, may it sign
this request (which headers go upstream and which are signed: :mod:`sigproxy.headerrules`).

Connection selection, first match wins:

0. the client's certificate, matched against the connections' ``client_cert_subjects`` (listeners with
   ``client_ca_file`` only); a request that also names a connection (1-3) must name that one

1. ``X-Sigproxy-Connection: NAME``
2. ``Proxy-Authorization: Basic NAME:TOKEN`` (or the CONNECT's, for requests inside its tunnel)
3. the access key id of the client's own signature (:func:`parse_client_key_id`: SigV4 or SigV2
   ``Authorization``, presigned ``X-Amz-Credential`` or ``AWSAccessKeyId``)
4. the reverse listener's ``connection``
5. ``[[routes]]`` host globs
6. ``[proxy] default_connection``

A name given in 1-3 that matches no connection fails closed: 407 naming the closest connection names, never
a fall-through to 4-6 (issue 12: a typo must not sign with another account). The one exception is opt-in:
``[proxy] unknown_key_id = "ignore"`` lets a key id that names no connection fall through (clients that carry
real AWS keys), and only the key id: an unknown header or proxy user is always refused.

Must not: do I/O, read the clock, import aiohttp, fetch credentials.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import hmac
import re
from collections.abc import Iterable, Mapping, Sized
from typing import Final
from urllib.parse import unquote

from .clientcert import Subject, connection_for_certificate
from .config import Config, ConnectionConfig, ReverseListener, Route
from .configtable import close_names
from .dialing import Dial
from .endpoints import is_mrap_host, parse_host
from .errors import (
    BadProxyToken,
    BadRequest,
    HostNotAllowed,
    PolicyRefused,
    ProxyAuthRequired,
    UnresolvableTarget,
    UnsupportedRequest,
)
from .fieldnames import AUTHORIZATION, X_AMZ_REGION_SET
from .records import Record
from .signing import policy_for
from .sigv4a import ALGORITHM as SIGV4A_ALGORITHM
from .sigv4a import REGION_PATTERN, region_set_value
from .urlparts import http_scheme

__all__ = [
    "Target",
    "ClientScope",
    "Selection",
    "parse_absolute_target",
    "parse_client_scope",
    "parse_client_key_id",
    "closest_names",
    "select_connection",
    "route_for",
    "redirect_target",
    "check_host",
    "resolve_service_region",
    "check_policy",
    "check_shape",
    "sigv4a_region_set",
    "presigned_by_client",
]

_CREDENTIAL: Final = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_PORTS: Final = {"http": 80, "https": 443}
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_SUGGEST: Final = 2000  # more connections than this: an unknown name gets no "closest" suggestions
# Request-target authorities whose split is kept (most clients talk to a handful of hosts), and the longest
# kept: a host name has at most 253 characters, so a longer authority is split each time instead.
_AUTHORITY_CACHE: Final = 512
_AUTHORITY_CACHED_LEN: Final = 270


class Target(Record):
    """Where a request goes, as the client meant it (raw path and query as sent)."""

    __match_args__ = ("scheme", "host", "port", "path", "query")

    def __init__(self, scheme: str, host: str, port: int, path: str, query: str) -> None:
        self.scheme: Final = scheme
        self.host: Final = host
        self.port: Final = port
        self.path: Final = path
        self.query: Final = query

    def at(self, host: str, port: int) -> Target:
        """This target on another host and port (the same scheme, path and query)."""
        return Target(self.scheme, host, port, self.path, self.query)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"


class ClientScope(Record):
    """What the client's own SigV4 credential said: key id, region, service."""

    __match_args__ = ("access_key_id", "region", "service")

    def __init__(self, access_key_id: str, region: str, service: str) -> None:
        self.access_key_id: Final = access_key_id
        self.region: Final = region
        self.service: Final = service


class Selection(Record):
    """The connection a request is signed for, and ``how`` it was chosen: ``header``, ``proxy-auth``,
    ``client-key``, ``listener``, ``route`` or ``default``."""

    __match_args__ = ("connection", "how")

    def __init__(self, connection: ConnectionConfig, how: str) -> None:
        self.connection: Final = connection
        self.how: Final = how


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise BadRequest(f"bad host in request target: {authority!r}")
        port_s = rest[1:]
    else:
        host, _, port_s = authority.partition(":")
    if not host:
        raise BadRequest("the request target has no host")
    if port_s:
        if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5) or not 0 < int(port_s) < 65536:
            raise BadRequest(f"bad port in request target: {port_s[:20]!r}")
        return host.lower(), int(port_s)
    return host.lower(), _PORTS[scheme]


_split_authority_cached: Final = functools.lru_cache(maxsize=_AUTHORITY_CACHE)(_split_authority)


def parse_absolute_target(raw: str) -> Target:
    """Split an absolute-form request target (``http://host:port/path?query``) keeping path and query raw.
    ``ws://`` and ``wss://`` (a WebSocket client's, e.g. aiohttp's) are ``http``'s and ``https``'s (RFC 6455 3)."""
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if scheme not in _PORTS:
        scheme = http_scheme(scheme)
    if not sep or scheme not in _PORTS:
        raise BadRequest(
            "this is a proxy: send absolute-form requests (set HTTP_PROXY), or use a [[reverse]] listener"
        )
    if "#" in rest:
        rest = rest.split("#", 1)[0]
    slash, mark = rest.find("/"), rest.find("?")
    if slash < 0 or 0 <= mark < slash:
        slash = mark if mark >= 0 else len(rest)
    authority, path_query = rest[:slash], rest[slash:]
    if "@" in authority:
        raise BadRequest("user information in the request target is not allowed")
    if len(authority) <= _AUTHORITY_CACHED_LEN:
        host, port = _split_authority_cached(authority, scheme)
    else:
        host, port = _split_authority(authority, scheme)
    path, _, query = path_query.partition("?")
    return Target(scheme, host, port, path or "/", query)


def parse_client_scope(authorization: str | None, query: str) -> ClientScope | None:
    """The credential scope of the client's own signature (header or presigned query), if any."""
    if authorization and authorization.startswith("AWS4-HMAC-SHA256"):
        m = _CREDENTIAL.search(authorization)
        if m:
            return ClientScope(m.group(1), m.group(3), m.group(4))
    if "X-Amz-Credential=" in query:
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "X-Amz-Credential":
                m = _CREDENTIAL.search("Credential=" + unquote(value))
                if m:
                    return ClientScope(m.group(1), m.group(3), m.group(4))
    return None


_KEY_ID_V4: Final = re.compile(r"Credential=([^/,\s]*)")
_KEY_ID_V2: Final = re.compile(r"AWS ([^:\s]*):", re.IGNORECASE)


def parse_client_key_id(authorization: str | None, query: str) -> str | None:
    """The access key id the client signed with, however it signed; ``None`` when it carries no signature.

    Read leniently (a malformed scope or a lower-case algorithm still names its key id, so a typo can't slip
    past as "unsigned"):
    ``Authorization: AWS4-<alg> Credential=KEY/...`` (SigV4, SigV4A), ``Authorization: AWS KEY:SIG`` (SigV2),
    then the query's ``X-Amz-Credential=KEY/...`` or ``AWSAccessKeyId=KEY`` (presigned URLs; names compared
    case-insensitively). The header wins over the query, as in :func:`parse_client_scope`.
    """
    if authorization:
        if authorization[:5].upper() == "AWS4-":
            m = _KEY_ID_V4.search(authorization)
            if m:
                return m.group(1)
        elif m := _KEY_ID_V2.match(authorization):
            return m.group(1)
    for part in query.split("&"):
        key, _, value = part.partition("=")
        low = key.lower()
        if low == "x-amz-credential":
            return unquote(value).split("/", 1)[0]
        if low == "awsaccesskeyid":
            return unquote(value)
    return None


def closest_names(name: str, names: Iterable[str]) -> str:
    """`` (closest: 'main', 'maint')`` for a name that matched none, or a sentence saying there is none close.

    Up to three names by :func:`~sigproxy.configtable.close_names` (difflib, cutoff 0.6, ignoring case): a typo
    finds its connection, while an unrelated value (an ``AKIA...`` key id) lists nothing -- the whole list is
    never shown.
    """
    if isinstance(names, Sized) and len(names) > _MAX_SUGGEST:
        # difflib over a fleet would cost every unknown name milliseconds of CPU: a cheap 407 stays cheap.
        return f" (none of the {len(names)} connections)"
    close = close_names(name, names)
    if not close:
        return " (no connection has a similar name)"
    return " (closest: " + ", ".join(repr(c) for c in close) + ")"


def _unknown(what: str, name: str, conns: Mapping[str, ConnectionConfig], advice: str,
             pending: frozenset[str] = frozenset()) -> ProxyAuthRequired:
    shown = name[:64] + ("..." if len(name) > 64 else "")
    if name in pending:
        return ProxyAuthRequired(f"{what} {shown!r} names a connection still pending onboarding: it signs once its "
                                 "role is validated (PATCH /v1/connections/NAME with credentials.role_arn)")
    return ProxyAuthRequired(f"{what} {shown!r} names no connection{closest_names(name, conns)}; {advice}")


def _basic(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadProxyToken("Proxy-Authorization must use the Basic scheme: NAME:TOKEN")
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except ValueError as exc:  # not base64 (binascii.Error), not ASCII, not UTF-8 (UnicodeDecodeError)
        raise BadProxyToken("Proxy-Authorization is not valid Basic credentials") from exc
    if not sep:
        raise BadProxyToken("Proxy-Authorization must be NAME:TOKEN")
    return user, password


def select_connection(
    config: Config,
    target: Target,
    *,
    connection_header: str | None,
    proxy_authorization: str | None,
    client_scope: ClientScope | None,
    listener: ReverseListener | None = None,
    client_key_id: str | None = None,
    client_cert: Subject | None = None,
) -> Selection:
    """Pick the connection for a request and check its token (module docstring: the order).

    ``client_key_id`` is the key id the client signed with (:func:`parse_client_key_id`); without it,
    ``client_scope``'s. ``client_cert``: the subject of the client's verified certificate; a connection whose
    ``client_cert_subjects`` it matches comes first (:func:`~.clientcert.connection_for_certificate`). Raises
    :class:`ProxyAuthRequired` (407 ``no_connection``) when nothing selects, a name given matches no connection,
    or a certificate matches several connections or another one than the name given, :class:`BadProxyToken`
    (407) for a missing or wrong token.
    """
    conns = config.connections
    basic = _basic(proxy_authorization)
    key_id = client_key_id if client_key_id is not None else client_scope.access_key_id if client_scope else None
    selection: Selection | None = None
    by_cert = None if client_cert is None else connection_for_certificate(
        conns, client_cert, connection_header.strip() if connection_header is not None else basic[0] if basic
        else key_id if key_id in conns else None)
    if by_cert is not None:
        selection = Selection(by_cert, "client-cert")
    elif connection_header is not None:
        name = connection_header.strip()
        if name not in conns:
            raise _unknown("X-Sigproxy-Connection", name, conns, "send a connection's name", config.pending)
        selection = Selection(conns[name], "header")
    elif basic is not None:
        if basic[0] not in conns:
            raise _unknown("the proxy user (Proxy-Authorization)", basic[0], conns,
                           "use a connection's name as the proxy user: http://NAME:TOKEN@host:port", config.pending)
        selection = Selection(conns[basic[0]], "proxy-auth")
    elif key_id is not None and key_id in conns:
        selection = Selection(conns[key_id], "client-key")
    elif key_id is not None and config.proxy.unknown_key_id == "reject":
        raise _unknown(
            "the access key id of the request's signature", key_id, conns,
            "set AWS_ACCESS_KEY_ID to a connection's name; clients that sign with real AWS keys select the "
            "connection with X-Sigproxy-Connection or proxy credentials, or need [proxy] unknown_key_id = "
            '"ignore"')
    elif listener is not None and listener.connection is not None:
        selection = Selection(conns[listener.connection], "listener")
    else:
        route = route_for(config, target)
        if route is not None:
            selection = Selection(conns[route.connection], "route")
        elif config.proxy.default_connection is not None:
            selection = Selection(conns[config.proxy.default_connection], "default")
    if selection is None:
        raise ProxyAuthRequired(
            "no connection selected: send 'X-Sigproxy-Connection: NAME', use proxy credentials "
            "(HTTP_PROXY=http://NAME:TOKEN@host:port), set AWS_ACCESS_KEY_ID=NAME in the client, "
            "add a [[routes]] entry for this host, or set [proxy] default_connection"
        )
    token = selection.connection.token
    if token is not None:
        given = basic[1] if basic is not None and basic[0] == selection.connection.name else None
        if given is None or not hmac.compare_digest(given.encode(), token.reveal().encode()):
            raise BadProxyToken(
                f"connection {selection.connection.name!r} needs its token: "
                "send Proxy-Authorization: Basic NAME:TOKEN"
            )
    return selection


def route_for(config: Config, target: Target) -> Route | None:
    """The first ``[[routes]]`` entry whose ``host`` glob matches the target's host and port, or ``None``."""
    for route in config.routes:
        if route.matches(target.host, target.port):
            return route
    return None


def redirect_target(config: Config, target: Target, listener: ReverseListener | None) -> tuple[Target, Dial | None]:
    """The target to sign and send, and where to connect for it (``None``: to the target itself).

    A reverse listener's ``dial``/``sign_host``/``tls_server_name`` apply to its requests; the forward proxy's
    requests take those of the first route matching the host the client named (:func:`route_for`), whichever
    way their connection is selected. See :mod:`sigproxy.dialing` for the defaults and the egress rule.
    """
    if listener is not None:
        redirect = listener.redirect
    elif config.redirecting_routes:
        route = route_for(config, target)
        redirect = route.redirect if route is not None else None
    else:
        return target, None
    if redirect is None:
        return target, None
    return redirect.apply(target)


def check_host(conn: ConnectionConfig, target: Target) -> None:
    """Refuse targets outside the connection's ``hosts``."""
    if not conn.host_set.allows(target.host, target.port):  # not conn.allows: no interpreted frame between
        raise HostNotAllowed(
            f"connection {conn.name!r} may not sign for {target.host}:{target.port}; "
            "add it to the connection's hosts"
        )


# AWS signing names, and region names or SigV4A region sets (entries as sigv4a.region_set_value takes them,
# comma-separated).
_SIGNING_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_REGION_NAME: Final = re.compile(rf"{REGION_PATTERN}(?:,{REGION_PATTERN})*")


def resolve_service_region(
    conn: ConnectionConfig,
    target: Target,
    *,
    service_header: str | None,
    region_header: str | None,
    client_scope: ClientScope | None,
    overrides: tuple[str, str] = ("send X-Sigproxy-Service", "send X-Sigproxy-Region"),
) -> tuple[str, str]:
    """Service: header, connection, client scope, host name. Region: header, client scope, host name,
    connection. Raises :class:`UnresolvableTarget` naming the setting to add; ``overrides`` says how the caller
    overrides each (the proxy's headers, or ``POST /v1/sign``'s fields)."""
    endpoint = parse_host(target.host)
    service = (
        service_header
        or conn.service
        or (client_scope.service if client_scope else None)
        or endpoint.service
    )
    region = (
        region_header
        or (client_scope.region if client_scope else None)
        or endpoint.region
        or conn.region
    )
    if not service:
        raise UnresolvableTarget(
            f"cannot tell which AWS service {target.host} is: set service on connection {conn.name!r} "
            f"or {overrides[0]}"
        )
    if not region:
        raise UnresolvableTarget(
            f"cannot tell which region {target.host} is in: set region on connection {conn.name!r} "
            f"or {overrides[1]}"
        )
    service, region = service.strip().lower(), region.strip().lower()
    # What a client chose (an override, its own credential scope) is signed into the scope and the key: a name
    # in AWS's alphabet, or refused (a byte that is not UTF-8 could not even be hashed).
    if (service_header or client_scope is not None) and not _SIGNING_NAME.fullmatch(service):
        raise UnresolvableTarget(f"the service given is not an AWS signing name (letters, digits and '-', such "
                                 f"as s3 or execute-api): {overrides[0]} with one")
    if (region_header or client_scope is not None) and not _REGION_NAME.fullmatch(region):
        raise UnresolvableTarget(f"the region given is not an AWS region name (letters, digits and '-', such as "
                                 f"us-east-1; a SigV4A region set: such names or '*', comma-separated): "
                                 f"{overrides[1]} with one")
    return service, region


def check_policy(conn: ConnectionConfig, method: str, service: str, region: str,
                 headers: Iterable[tuple[str, str]], *, websocket: bool = False) -> None:
    """What the connection may sign: services, regions, methods, client-chosen x-amz-* headers.

    ``websocket``: the request is a WebSocket handshake, whose messages may write whatever its method: refused
    on a connection that may sign no write method (``read_only``, or ``allowed_methods`` without POST, PUT,
    PATCH or DELETE). Raises :class:`PolicyRefused` naming the rule.
    """
    if conn.allowed_services and service not in conn.allowed_services:
        raise _refused(conn, f"service {service!r} is not in allowed_services")
    if conn.allowed_regions and region not in conn.allowed_regions:
        raise _refused(conn, f"region {region!r} is not in allowed_regions")
    if conn.allowed_methods:
        rule = "read_only" if conn.allowed_methods == ("GET", "HEAD") else "allowed_methods"
        if method.upper() not in conn.allowed_methods:
            raise _refused(conn, f"method {method} is not allowed ({rule})")
        if websocket and not _WRITE_METHODS.intersection(conn.allowed_methods):
            raise _refused(conn, f"a WebSocket's messages may write, and this connection signs no write method "
                                 f"({rule})")
    if conn.deny_amz_headers:
        for name, _ in headers:
            low = name.lower()
            if low.startswith("x-amz-") and any(fnmatch.fnmatchcase(low, g) for g in conn.deny_amz_headers):
                raise _refused(conn, f"header {low!r} is refused (deny_amz_headers)")


def _refused(conn: ConnectionConfig, why: str) -> PolicyRefused:
    return PolicyRefused(f"connection {conn.name!r}: {why}")


def presigned_by_client(query: str) -> bool:
    """Whether the query carries a presigned request's own signature (SigV4, or S3's legacy SigV2)."""
    low = query.lower()
    if "signature" not in low and "credential" not in low:
        return False  # each name below holds one of the two, and a name's lower case is part of the query's
    keys = {part.split("=", 1)[0].lower() for part in query.split("&")}
    return bool(keys & {"x-amz-signature", "x-amz-credential"}) or {"signature", "awsaccesskeyid"} <= keys


def check_shape(target: Target, headers: Mapping[str, str], service: str) -> None:
    """Refuse request shapes sigproxy does not sign correctly (never forwarded unsigned or signed wrongly).

    Raises :class:`UnsupportedRequest`.
    """
    if SIGV4A_ALGORITHM in target.query:
        raise UnsupportedRequest("a SigV4A presigned URL (X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256) is not re-signed "
                                 "by sigproxy: send the request unsigned, or with header auth, and sigproxy signs it")
    # The bucket as the server reads it: the path decoded once (``/b--x-s3%2Fk`` is bucket ``b--x-s3``). A path
    # with neither the suffix nor a percent sign can't name such a bucket: not decoded (most requests).
    path = target.path
    if policy_for(service).s3 and (
        "--x-s3" in target.host or (("--x-s3" in path or "%" in path)
                                    and unquote(path).lstrip("/").split("/", 1)[0].endswith("--x-s3"))
    ):
        raise UnsupportedRequest("S3 Express One Zone (--x-s3 buckets) needs session auth sigproxy does not do")


def sigv4a_region_set(conn: ConnectionConfig, target: Target, headers: Mapping[str, str]) -> str | None:
    """The region set to sign this request for with SigV4A (``"*"``, ``"us-east-1,us-west-2"``), or ``None`` for
    SigV4.

    SigV4A when the connection says ``signature_version = "v4a"``, the host is an S3 Multi-Region Access Point
    (:func:`~sigproxy.endpoints.is_mrap_host`), or the client signed with SigV4A itself (``Authorization:
    AWS4-ECDSA-P256-SHA256 ...``) or sent ``X-Amz-Region-Set``. The set is the client's ``X-Amz-Region-Set`` when it
    sent one, else the connection's ``sigv4a_signing_region_set`` (default ``*``). Raises
    :class:`UnsupportedRequest` for an ``X-Amz-Region-Set`` that is not a region set.
    """
    asked = headers.get(X_AMZ_REGION_SET)
    if not (asked is not None or conn.signature_version == "v4a" or is_mrap_host(target.host)
            or headers.get(AUTHORIZATION, "").startswith(SIGV4A_ALGORITHM)):
        return None
    if asked is None:
        return ",".join(conn.sigv4a_signing_region_set)
    try:
        return region_set_value(asked)
    except ValueError as exc:
        raise UnsupportedRequest(f"X-Amz-Region-Set: {exc}") from None

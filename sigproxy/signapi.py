"""Signing for programs that make their own requests: a JSON request description -> ``{url, headers}``.

The public Python API behind ``POST /v1/sign`` and ``sigproxy sign --json`` (issue 13; Workato's
``aws.generate_signature``). Two steps, both pure:

1. :func:`parse_sign_input` checks a decoded JSON object and returns a :class:`SignInput`; every problem is an
   :class:`~sigproxy.errors.InvalidField` (422) whose ``field`` is the JSON path at fault (``params.prefix``,
   ``headers.X-Foo``), or :class:`~sigproxy.errors.BadJson` (400) when the document is not an object.
2. :func:`sign` applies the connection's rules exactly as the proxy does (:func:`~sigproxy.routing.check_host`,
   :func:`~sigproxy.routing.resolve_service_region`, :func:`~sigproxy.routing.check_shape`,
   :func:`~sigproxy.routing.check_policy`) and signs with the proxy's own code
   (:func:`~sigproxy.prepare.sign_request` / :func:`~sigproxy.prepare.presign_request`), so the proxy, this API and
   ``sigproxy sign`` can never disagree. :meth:`SignOutput.to_json` is the answer's JSON.

Example::

    from datetime import UTC, datetime
    from sigproxy.signapi import parse_sign_input, sign

    request = parse_sign_input({"method": "GET", "host": "bucket.s3.eu-west-1.amazonaws.com",
                                "path": "/", "params": {"list-type": "2", "prefix": "a b"}})
    answer = sign(conn, creds, request, now=datetime.now(UTC)).to_json()
    # {"url": "https://bucket.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=a%20b",
    #  "headers": {"Host": ..., "X-Amz-Date": ..., "X-Amz-Content-SHA256": ..., "Authorization": ...}}

**The answer is a secret.** With temporary credentials it carries their session token (the
``X-Amz-Security-Token`` header, or that query parameter of a presigned URL): the caller needs it to send the
request, and anyone holding it can use the credentials until they expire. Treat the answer like a
credential: don't log it. The secret access key and the derived signing key are never part of it.

Rules come from the AWS SigV4 documentation, "Create a signed AWS API request"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html), and for presigned
URLs "Authenticating Requests: Using Query Parameters"
(https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html).

Must not: do I/O, read the clock, import aiohttp, fetch credentials (the caller passes them in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from multidict import CIMultiDict

from .config import ConnectionConfig
from .errors import BadJson, BadRequest, InvalidField
from .headerrules import HOP_BY_HOP
from .prepare import presign_request, sign_request
from .routing import (
    Target,
    check_host,
    check_policy,
    check_shape,
    parse_absolute_target,
    resolve_service_region,
    sigv4a_region_set,
)
from .signing import EMPTY_SHA256, PRESIGN_PARAMS, UNSIGNED_PAYLOAD, Credentials, Signature, Signer, sha256_hex
from .sigv4a import region_set_value
from .websocket import token_after_signing

__all__ = [
    "MAX_PRESIGN_SECONDS",
    "SIGNER_HEADERS",
    "SignInput",
    "SignOutput",
    "parse_sign_input",
    "sign",
]

MAX_PRESIGN_SECONDS = 604800
"""A presigned URL lives at most 7 days (``X-Amz-Expires``, "Authenticating Requests: Using Query Parameters",
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html). With temporary credentials it
stops working when they expire, whatever it says."""

SIGNER_HEADERS: Mapping[str, str] = {
    "authorization": "it is the signature this call computes",
    "x-amz-date": "the signer sets it to the signing time",
    "x-amz-security-token": "the signer adds the connection's session token when it has one",
    "x-amz-content-sha256": "send the body's hash as payload_sha256 (or the body as payload)",
    "x-amz-region-set": "send region_set to sign with SigV4A for it",
    "host": "it comes from url or host",
    "content-length": "the signer sets it from payload; with payload_sha256 your HTTP client sets it",
    "expect": "it is a hop-by-hop request header that is not signed; your HTTP client decides it",
}
"""Header names a caller may not give (lower case), with the reason: the signer owns them, or they are never
part of a signed request. Also refused: hop-by-hop headers (``Connection``, ``Transfer-Encoding``, ...),
``Proxy-*`` and ``X-Sigproxy-*``. Refusing them (rather than dropping them, as the proxy does with what a client
sent) means the answer never silently differs from what was asked."""

_KEYS = frozenset(
    {"connection", "method", "url", "host", "scheme", "path", "params", "headers", "payload", "payload_sha256",
     "service", "region", "presign", "region_set"}
)
# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# A signing name or region is one credential-scope component: no "/", no spaces.
_SCOPE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# What may appear in a path or query as sent (RFC 3986 pchar, "/", "?" and "%" for escapes): printable ASCII
# without space, '"', '#', '<', '>', '\', '^', '`', '{', '|', '}'.
_WIRE_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*$")
_MAX_HEADER_VALUE = 16384


def _name(value: str, limit: int = 64) -> str:
    """A caller's name shown in a message: truncated, repr'd."""
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


@dataclass(frozen=True, slots=True)
class SignInput:
    """One request to sign, checked. Build it with :func:`parse_sign_input` from JSON, or directly (the CLI does);
    the constructor checks every field too and raises :class:`~sigproxy.errors.InvalidField` naming it.

    ``method``: an HTTP token, upper-cased (``get`` -> ``GET``).
    ``target``: scheme, host, port, raw (percent-encoded) path and query as they go on the wire.
    ``headers``: ``(name, value)`` pairs to send and sign (names unique ignoring case; none of
    :data:`SIGNER_HEADERS`, hop-by-hop, ``Proxy-*`` or ``X-Sigproxy-*``). Which are signed is the proxy's rule:
    ``host``, ``content-type``, ``content-md5`` and every ``x-amz-*``; the others are returned to send as given.
    ``payload``: the body (bytes), or ``None``. ``payload_sha256``: the body's SHA-256 as 64 hex digits
    (lower-cased here), or ``UNSIGNED-PAYLOAD``; at most one of the two. Neither: an empty body.
    ``service``/``region``: override the signing name and region, as ``X-Sigproxy-Service``/``-Region`` do for
    the proxy. ``presign``: make a presigned URL valid this many seconds (1 to :data:`MAX_PRESIGN_SECONDS`)
    instead of header auth; it signs no body, so neither payload field may be given with it.
    ``region_set``: sign with SigV4A (``AWS4-ECDSA-P256-SHA256``) for these regions, ``"*"`` or
    ``"us-east-1,us-west-2"`` (normalised by :func:`~sigproxy.sigv4a.region_set_value`); without it, SigV4A still
    when the connection says ``signature_version = "v4a"`` or the host is an S3 Multi-Region Access Point.
    """

    method: str
    target: Target
    headers: tuple[tuple[str, str], ...] = ()
    payload: bytes | None = None
    payload_sha256: str | None = None
    service: str | None = None
    region: str | None = None
    presign: int | None = None
    region_set: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _TOKEN.match(self.method) or len(self.method) > 32:
            raise InvalidField(f"method {_name(str(self.method))} is not an HTTP method: send e.g. \"GET\" or "
                               "\"PUT\"", field="method")
        object.__setattr__(self, "method", self.method.upper())
        _check_query(self.target.query, "url")
        seen: dict[str, str] = {}
        for name, value in self.headers:
            _check_header(name, value, seen)
        if self.payload is not None and self.payload_sha256 is not None:
            raise InvalidField("give the body as payload or its hash as payload_sha256, not both",
                               field="payload_sha256")
        if self.payload_sha256 is not None:
            value = self.payload_sha256
            if value != UNSIGNED_PAYLOAD and not _HEX64.match(value):
                raise InvalidField(f"payload_sha256 {_name(value)} is neither a SHA-256 (64 hex digits) nor "
                                   f"{UNSIGNED_PAYLOAD!r}", field="payload_sha256")
            object.__setattr__(self, "payload_sha256", value if value == UNSIGNED_PAYLOAD else value.lower())
        for key in ("service", "region"):
            value = getattr(self, key)
            if value is not None and not _SCOPE_PART.match(value):
                raise InvalidField(f"{key} {_name(value)} is not a {'signing name' if key == 'service' else key}: "
                                   "letters, digits, '-', '.' and '_' (e.g. \"s3\", \"eu-west-1\")", field=key)
        if self.region_set is not None:
            try:
                object.__setattr__(self, "region_set", region_set_value(self.region_set))
            except (ValueError, TypeError, AttributeError) as exc:
                raise InvalidField(f"region_set: {exc}", field="region_set") from None
        if self.presign is not None:
            if isinstance(self.presign, bool) or not isinstance(self.presign, int):
                raise InvalidField("presign is the URL's lifetime in seconds: an integer", field="presign")
            if not 1 <= self.presign <= MAX_PRESIGN_SECONDS:
                raise InvalidField(f"presign is {self.presign} seconds; a presigned URL lives 1 to "
                                   f"{MAX_PRESIGN_SECONDS} seconds (7 days)", field="presign")
            for key in ("payload", "payload_sha256"):
                if getattr(self, key) is not None:
                    raise InvalidField(f"a presigned URL signs no body: drop {key} (or drop presign for header "
                                       "auth)", field=key)


@dataclass(frozen=True, slots=True)
class SignOutput:
    """A signed request: send ``method`` to ``url`` with ``headers`` (and the body, if any) and AWS accepts it.

    ``url``: scheme, authority, path and query exactly as they must be sent (S3 paths in the one spelling S3
    signs; query keys and values encoded per SigV4; for a presigned URL the ``X-Amz-*`` parameters, the session
    token among them when there is one). ``headers``: ``(name, value)`` in sending order, names unique:
    for header auth the caller's headers plus ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token`` (temporary
    credentials), ``X-Amz-Content-SHA256`` (S3, or when ``payload_sha256`` was given), ``Authorization``, and
    ``Content-Length`` when a non-empty ``payload`` was given; for a presigned URL the caller's headers plus
    ``Host`` -- those among them that are signed must be sent with the URL, and a client that sets ``Host``
    from the URL may leave that one out. ``signature``: the signature with its canonical request and string to
    sign (for debugging; no secret among them, but the canonical request holds the session token if any).
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    signature: Signature = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """``{"url": str, "headers": {name: value}}`` -- the answer of ``POST /v1/sign`` and
        ``sigproxy sign --json``. Holds the session token of temporary credentials: a secret."""
        return {"url": self.url, "headers": dict(self.headers)}


def _check_header(name: object, value: object, seen: dict[str, str]) -> None:
    where = f"headers.{name}"
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise InvalidField(f"header name {_name(str(name))} is not an HTTP field name (letters, digits, "
                           "'-' and the like)", field=where)
    if not isinstance(value, str):
        raise InvalidField(f"header {name} must be a string, not {_json_type(value)}", field=where)
    _check_unicode(value, where, f"header {name}")
    low = name.lower()
    if low in seen:
        raise InvalidField(f"header {name} is given twice ({seen[low]} and {name}); give it once",
                           field=where)
    seen[low] = name
    reason = SIGNER_HEADERS.get(low)
    if reason is None and (low in HOP_BY_HOP or low.startswith(("proxy-", "x-sigproxy-"))):
        reason = "it is a hop-by-hop or proxy header, never part of a signed request"
    if reason is not None:
        raise InvalidField(f"header {name} may not be given: {reason}", field=where)
    if len(value) > _MAX_HEADER_VALUE:
        raise InvalidField(f"header {name} is {len(value)} characters long; at most {_MAX_HEADER_VALUE}",
                           field=where)
    bad = next((c for c in value if (c < " " and c != "\t") or c == "\x7f"), None)
    if bad is not None:
        raise InvalidField(f"header {name} has a control character (U+{ord(bad):04X}); header values are one "
                           "line of text", field=where)


def _check_unicode(text: str, where: str, what: str) -> None:
    """JSON allows lone surrogates (``"\\ud800"``), which have no UTF-8 form: refuse them."""
    bad = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        raise InvalidField(f"{what} holds a lone surrogate (U+{ord(text[bad]):04X}) at position {bad + 1}, which "
                           "is not text: send valid Unicode", field=where)


def _check_query(query: str, where: str) -> None:
    for part in query.split("&"):
        key = unquote(part.partition("=")[0].replace("+", " "))
        if key.lower() in PRESIGN_PARAMS:
            raise InvalidField(f"query parameter {key} is set by the signer (it belongs to a presigned URL): "
                               "remove it; send presign to get a presigned URL", field=where)


def _object(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidField(f"{key} must be a JSON object, not {_json_type(value)}", field=key)
    return value


def _string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(f"{key} must be a string, not {_json_type(value)}", field=key)
    return value


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else "a string"


def _encode(text: str) -> str:
    # SigV4 UriEncode: everything but ASCII letters, digits and "-_.~" as %XX of its UTF-8 bytes, hex upper case.
    return quote(text, safe="-_.~")


def _query_from_params(params: dict[str, Any]) -> str:
    pairs: list[str] = []
    for key, value in params.items():
        where = f"params.{key}"
        if not key:
            raise InvalidField("a query parameter has an empty name", field=where)
        _check_unicode(key, where, "a query parameter's name")
        if key.lower() in PRESIGN_PARAMS:
            raise InvalidField(f"query parameter {key} is set by the signer (it belongs to a presigned URL): "
                               "remove it; send presign to get a presigned URL", field=where)
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise InvalidField(f"query parameter {key} has an empty list: give a string, or leave it out",
                               field=where)
        for i, item in enumerate(values):
            if not isinstance(item, str):
                at = f"{where}[{i}]" if isinstance(value, list) else where
                raise InvalidField(f"query parameter {key} must be a string or a list of strings, not "
                                   f"{_json_type(item)} (send numbers as strings: \"2\")", field=at)
            _check_unicode(item, where, f"query parameter {key}")
            pairs.append(f"{_encode(key)}={_encode(item)}")
    return "&".join(pairs)


def _check_wire(text: str, where: str, what: str) -> None:
    if not _WIRE_CHARS.match(text):
        bad = next(c for c in text if not _WIRE_CHARS.match(c))
        raise InvalidField(f"{what} holds {bad!r}, which can't be sent as is: percent-encode it "
                           f"({quote(bad, safe='')})", field=where)


def _target(data: dict[str, Any]) -> Target:
    url, host = _string(data, "url"), _string(data, "host")
    if (url is None) == (host is None):
        raise InvalidField("give either url (\"https://host/path?query\") or host (with path and params)",
                           field="url" if url is not None else "host")
    if url is not None:
        for key in ("scheme", "path", "params"):
            if key in data:
                raise InvalidField(f"{key} goes with host, not url: put it in url, or send host, path and params",
                                   field=key)
        if "#" in url:
            raise InvalidField("url has a fragment ('#...'), which is never sent: remove it", field="url")
        _check_wire(url.partition("://")[2], "url", "url")
        try:
            return parse_absolute_target(url)
        except BadRequest:
            raise InvalidField(f"url {_name(url, 200)} is not an absolute http:// or https:// URL with a host "
                               "(and optional port, no user information)", field="url") from None
    assert host is not None
    scheme = _string(data, "scheme") or "https"
    if scheme not in ("http", "https"):
        raise InvalidField(f"scheme {_name(scheme)} is neither \"https\" (the default) nor \"http\"",
                           field="scheme")
    if not host or any(c in host for c in "/?#@%") or not _WIRE_CHARS.match(host):
        raise InvalidField(f"host {_name(host)} is not a host name with an optional port (\"bucket.s3.amazonaws"
                           ".com\", \"127.0.0.1:9000\")", field="host")
    path = _string(data, "path")
    if path is None:
        path = "/"
    if not path.startswith("/"):
        raise InvalidField(f"path {_name(path)} must start with \"/\"", field="path")
    _check_wire(path, "path", "path")
    if "?" in path:
        raise InvalidField("path holds '?': give the query as params ({\"name\": \"value\"})", field="path")
    params = _object(data, "params")
    query = _query_from_params(params) if params is not None else ""
    try:
        target = parse_absolute_target(f"{scheme}://{host}/")
    except BadRequest:
        raise InvalidField(f"host {_name(host)} is not a host name with an optional port (\"bucket.s3.amazonaws"
                           ".com\", \"127.0.0.1:9000\")", field="host") from None
    return Target(target.scheme, target.host, target.port, path, query)


def parse_sign_input(data: object) -> SignInput:
    """Check a decoded JSON document and return the request it describes.

    The document (keys; all but ``method`` and one of ``url``/``host`` optional)::

        {"connection": str,            # read by the caller (which connection signs); only type-checked here
         "method": str,                # an HTTP method, upper-cased: "GET", "put"
         "url": str,                   # "https://host[:port]/path?query", path and query percent-encoded as sent
         "host": str,                  # instead of url: "host" or "host:port"; with
         "scheme": "https" | "http",   #   (default "https"),
         "path": str,                  #   "/..." percent-encoded as sent (default "/"), and
         "params": {str: str | [str]}, #   query parameters, unencoded; encoded here by SigV4's rules, in order
         "headers": {str: str},        # headers to send and sign (see SignInput, SIGNER_HEADERS)
         "payload": str,               # the body, sent as UTF-8; or
         "payload_sha256": str,        #   its SHA-256, 64 hex digits, or "UNSIGNED-PAYLOAD"
         "service": str, "region": str,# override the signing name and region
         "presign": int,               # seconds: a presigned URL (1..604800) instead of header auth
         "region_set": str | [str]}    # SigV4A for these regions: "*", "us-east-1,us-west-2" or a list

    Raises :class:`~sigproxy.errors.BadJson` when ``data`` is not an object, and
    :class:`~sigproxy.errors.InvalidField` for anything else wrong, ``field`` naming the JSON path (``method``,
    ``headers.X-Foo``, ``params.prefix``, ``params.k[1]``, or the unknown key) and the message what to send.
    """
    if not isinstance(data, dict):
        raise BadJson(f"the request body must be a JSON object, not {_json_type(data)}")
    for key in data:
        if key not in _KEYS:
            raise InvalidField(f"unknown key {_name(str(key))}; the keys are " + ", ".join(sorted(_KEYS)),
                               field=str(key))
    _string(data, "connection")
    method = data.get("method")
    if method is None:
        raise InvalidField("method is required: \"GET\", \"PUT\", \"POST\", ...", field="method")
    if not isinstance(method, str):
        raise InvalidField(f"method must be a string, not {_json_type(method)}", field="method")
    target = _target(data)
    headers = _object(data, "headers") or {}
    seen: dict[str, str] = {}
    for name, value in headers.items():
        _check_header(name, value, seen)
    payload = _string(data, "payload")
    if payload is not None:
        _check_unicode(payload, "payload", "payload")
    presign = data.get("presign")
    if presign is not None and (isinstance(presign, bool) or not isinstance(presign, int)):
        raise InvalidField(f"presign is the URL's lifetime in seconds: an integer, not {_json_type(presign)}",
                           field="presign")
    return SignInput(
        method=method,
        target=target,
        headers=tuple(headers.items()),
        payload=payload.encode() if payload is not None else None,
        payload_sha256=_string(data, "payload_sha256"),
        service=_string(data, "service"),
        region=_string(data, "region"),
        presign=presign,
        region_set=_region_set(data),
    )


def _region_set(data: dict[str, Any]) -> str | None:
    value = data.get("region_set")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise InvalidField(f"region_set is a string (\"*\", \"us-east-1,us-west-2\") or a list of strings, not "
                       f"{_json_type(value)}", field="region_set")


def sign(conn: ConnectionConfig, creds: Credentials, request: SignInput, *, now: datetime,
         signer: Signer | None = None,
         overrides: tuple[str, str] = ('give "service"', 'give "region"')) -> SignOutput:
    """Sign ``request`` with ``creds`` for connection ``conn`` at time ``now`` (timezone-aware).

    Applies the connection's rules as the proxy does, in the proxy's order: the target must be in ``hosts``
    (:class:`~sigproxy.errors.HostNotAllowed`, 403, also for a ``host`` override outside it); the service and
    region come from ``request.service``/``region``, then the connection, then the host name
    (:class:`~sigproxy.errors.UnresolvableTarget`, 400, naming what to add); shapes sigproxy does not sign
    (someone's SigV4A presigned URL, S3 Express) are refused (:class:`~sigproxy.errors.UnsupportedRequest`, 400);
    the connection's
    ``allowed_services``/``regions``/``methods``, ``read_only`` and ``deny_amz_headers`` hold
    (:class:`~sigproxy.errors.PolicyRefused`, 403). Then header auth (:func:`~sigproxy.prepare.sign_request`) or,
    with ``request.presign``, query auth (:func:`~sigproxy.prepare.presign_request`): the same code the proxy
    signs with. SigV4A (for ``request.region_set``, or the connection's ``sigv4a_signing_region_set`` when it
    says ``signature_version = "v4a"`` or the host is an S3 Multi-Region Access Point) in both forms.

    The payload hash signed: ``payload_sha256`` as given (and then sent as ``X-Amz-Content-SHA256`` for every
    service, so the server knows it), else the SHA-256 of ``payload`` (``X-Amz-Content-SHA256`` only where the
    service requires it, S3), else the empty body's. Presigned URLs sign ``UNSIGNED-PAYLOAD`` for S3 and the
    empty body's hash for other services, as botocore does.

    ``signer``: a :class:`~sigproxy.signing.Signer` to reuse its derived-key cache (a fresh one otherwise).
    ``overrides``: how the caller sets the service and the region, named in the ``UnresolvableTarget`` message
    (the JSON fields by default; ``sigproxy sign`` names its options).
    Pure: no I/O, no clock. Raises ``ValueError`` for a naive ``now``. The result holds the session token of
    temporary credentials (see the module docstring): treat it as a secret.
    """
    target = request.target
    check_host(conn, target)
    region_set = request.region_set or sigv4a_region_set(conn, target, {})
    service, region = resolve_service_region(conn, target, service_header=request.service,
                                             region_header=region_set or request.region, client_scope=None,
                                             overrides=overrides)
    check_shape(target, CIMultiDict(request.headers), service)
    check_policy(conn, request.method, service, region, request.headers)
    signer = signer or Signer()
    if request.presign is not None:
        out = presign_request(signer, creds, method=request.method, target=target, headers=request.headers,
                              service=service, region=region, now=now, expires=request.presign,
                              upstream_scheme=conn.upstream_scheme, region_set=region_set,
                              token_after_signing=token_after_signing(service))
    else:
        headers = list(request.headers)
        if request.payload_sha256 is not None:
            payload_hash = request.payload_sha256
            headers.append(("X-Amz-Content-SHA256", payload_hash))
        else:
            payload_hash = sha256_hex(request.payload) if request.payload else EMPTY_SHA256
        out = sign_request(signer, creds, method=request.method, target=target, headers=headers,
                           payload_hash=payload_hash, body_length=len(request.payload or b""),
                           service=service, region=region, now=now, upstream_scheme=conn.upstream_scheme,
                           region_set=region_set)
    return SignOutput(out.method, out.url, out.headers, out.signature)

"""Pure: a routed request -> the exact request to send upstream, signed.

Owns: which headers go upstream and which are signed, the payload hash choice, the S3 path and query
normalisation, and header auth vs presigning; what differs by service comes from
:func:`sigproxy.signing.policy_for`. Used by the proxy handler and by ``sigproxy sign``, so the
two can never disagree.
Must not: do I/O, read the clock, import aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Final, Literal

from . import sigv4a, websocket
from .errors import UnsupportedRequest
from .headerrules import is_signed_header, upstream_headers, upstream_headers_lower
from .records import Record
from .routing import Target
from .signing import (
    EMPTY_SHA256,
    PRESIGN_PARAMS,
    UNSIGNED_PAYLOAD,
    CanonicalInput,
    Credentials,
    Signature,
    Signer,
    SigningPolicy,
    amz_date,
    encode_query,
    normalize_query,
    normalize_s3_path,
    policy_for,
    sha256_hex,
    uri_encode,
)
from .streaming import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER

__all__ = ["SignedRequest", "payload_mode", "payload_hash_for", "presign_request", "sign_handshake", "sign_request",
           "untouched_request"]

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
# Payload hashes a client may have chosen that are kept as they are (the body goes through untouched).
_KEEP_PAYLOAD: Final = frozenset({UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_TRAILER})
# Client headers the signer sets itself (their values come from the payload hash and the region set).
_SIGNER_SET: Final = frozenset({"x-amz-content-sha256", "x-amz-region-set"})
_SIGNED_STREAMING: Final = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER})
# SigV4A chunk signing (ECDSA) is not re-signed: refused, never forwarded unsigned or signed wrongly.
_SIGV4A_STREAMING: Final = frozenset(
    {"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"}
)


class SignedRequest(Record):
    """A request signed: ``url`` is its scheme, authority, path and query exactly as they go on the wire."""

    __match_args__ = ("method", "url", "headers", "signature")

    def __init__(self, method: str, url: str, headers: tuple[tuple[str, str], ...], signature: Signature) -> None:
        self.method: Final = method
        self.url: Final = url
        self.headers: Final = headers
        self.signature: Final = signature


def payload_mode(claimed: str) -> Literal["none", "keep", "resign", "other"]:
    """What a client's ``x-amz-content-sha256`` asks for: ``keep`` (a hex SHA-256, ``UNSIGNED-PAYLOAD`` or
    ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: the body goes through untouched), ``resign`` (SigV4 chunk
    signing), ``none`` (no value) or ``other``.

    Raises :class:`UnsupportedRequest` for SigV4A chunk signing.
    """
    if not claimed:
        return "none"
    if claimed in _SIGV4A_STREAMING:
        raise UnsupportedRequest(f"x-amz-content-sha256 {claimed} (SigV4A chunk signing) is not supported")
    if claimed in _KEEP_PAYLOAD or _HEX64.match(claimed):
        return "keep"
    if claimed in _SIGNED_STREAMING:
        return "resign"
    return "other"


def payload_hash_for(claimed: str | None, body: bytes) -> str:
    """The payload hash to sign: the client's own choice when it is one we can keep, else the body's.

    A streaming payload mode (``STREAMING-...``) is kept too: ``sign`` then prints the seed signature.
    """
    claimed = (claimed or "").strip()
    if payload_mode(claimed) in ("keep", "resign"):
        return claimed
    return sha256_hex(body) if body else EMPTY_SHA256


def _wire(target: Target, policy: SigningPolicy) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    """The path and query pairs as they go upstream (and are signed)."""
    path = normalize_s3_path(target.path) if policy.s3 else target.path
    if not target.query:
        return path, ()
    return path, tuple(p for p in normalize_query(target.query) if p[0].lower() not in PRESIGN_PARAMS)


def sign_request(
    signer: Signer,
    creds: Credentials,
    *,
    method: str,
    target: Target,
    headers: Iterable[tuple[str, str]],
    payload_hash: str,
    body_length: int | None,
    service: str,
    region: str,
    now: datetime,
    upstream_scheme: str | None = None,
    region_set: str | None = None,
) -> SignedRequest:
    """Header auth: strip what must not go upstream, add ``Host``, ``X-Amz-Date``, the session token and
    ``X-Amz-Content-SHA256`` (when the service requires it, :func:`~sigproxy.signing.policy_for`, or the
    client sent one), then sign.

    ``region_set`` (a :func:`~sigproxy.sigv4a.region_set_value`): sign with SigV4A for it instead, adding
    ``X-Amz-Region-Set`` (``region`` is then not part of the signature)."""
    policy = policy_for(service)
    kept, sent = upstream_headers_lower(headers)
    out: list[tuple[str, str]] = []
    signed: list[tuple[str, str]] = []
    for name, value, low in kept:
        if low not in _SIGNER_SET:
            out.append((name, value))
            if is_signed_header(low):
                signed.append((name, value))
    authority = target.authority
    # Every header added here is signed.
    added = [("Host", authority), ("X-Amz-Date", amz_date(now))]
    if creds.session_token:
        added.append(("X-Amz-Security-Token", creds.session_token))
    if policy.payload_header or "x-amz-content-sha256" in sent:
        added.append(("X-Amz-Content-SHA256", payload_hash))
    if region_set is not None:
        added.append((sigv4a.REGION_SET_HEADER, region_set))
    out += added
    signed += added
    path, query = _wire(target, policy)
    canonical = CanonicalInput(method, path, query, tuple(signed), payload_hash)
    if region_set is not None:
        sig = sigv4a.sign_headers(canonical, creds, service=service, now=now, policy=policy)
    else:
        sig = signer.sign_headers(canonical, creds, region=region, service=service, now=now, policy=policy)
    out.append(("Authorization", sig.authorization))
    if body_length:
        out.append(("Content-Length", str(body_length)))
    qs = encode_query(query) if query else ""
    url = f"{upstream_scheme or target.scheme}://{authority}{path}{'?' if qs else ''}{qs}"
    return SignedRequest(method, url, tuple(out), sig)


def untouched_request(*, method: str, target: Target, headers: Iterable[tuple[str, str]], body_length: int | None,
                      upstream_scheme: str | None = None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A presigned request forwarded as the client sent it: raw path and query, its own headers minus
    hop-by-hop and proxy ones (``Authorization`` among them: :func:`~sigproxy.headerrules.upstream_headers`).
    Returns (url, headers)."""
    out = upstream_headers(headers)
    out.append(("Host", target.authority))
    if body_length:
        out.append(("Content-Length", str(body_length)))
    url = f"{upstream_scheme or target.scheme}://{target.authority}{target.path}"
    return url + (f"?{target.query}" if target.query else ""), tuple(out)


def presign_request(
    signer: Signer,
    creds: Credentials,
    *,
    method: str,
    target: Target,
    headers: Iterable[tuple[str, str]],
    service: str,
    region: str,
    now: datetime,
    expires: int,
    upstream_scheme: str | None = None,
    region_set: str | None = None,
    token_after_signing: bool = False,
) -> SignedRequest:
    """Query auth: a presigned URL. Signs ``host`` plus any ``x-amz-*``/content headers given;
    S3's signing names use ``UNSIGNED-PAYLOAD``, other services the empty body's hash. ``region_set``: SigV4A
    for that region set (``X-Amz-Region-Set`` in the query) instead of SigV4 for ``region``.

    ``token_after_signing``: the session token is appended to the query after signing, outside the canonical
    request, as AWS IoT requires of its MQTT-over-WebSocket URLs (AWS IoT developer guide; aws-c-mqtt's
    ``omit_session_token``); otherwise it is signed like every presign parameter."""
    policy = policy_for(service)
    authority = target.authority
    out = [(k, v) for k, v, low in upstream_headers_lower(headers)[0] if low not in _SIGNER_SET]
    out.append(("Host", authority))
    path, query = _wire(target, policy)
    origin = f"{upstream_scheme or target.scheme}://{authority}"
    signed = tuple((k, v) for k, v in out if is_signed_header(k))
    canonical = CanonicalInput(method, path, query, signed, UNSIGNED_PAYLOAD if policy.s3 else EMPTY_SHA256)
    token = creds.session_token if token_after_signing else None
    if token:
        creds = replace(creds, session_token=None)
    if region_set is not None:
        sig = sigv4a.presign(canonical, creds, service=service, region_set=region_set, now=now, expires=expires,
                             policy=policy)
    else:
        sig = signer.presign(canonical, creds, region=region, service=service, now=now, expires=expires,
                             policy=policy)
    qs = encode_query(sig.query if not token else (*sig.query, ("X-Amz-Security-Token", uri_encode(token))))
    return SignedRequest(method, f"{origin}{path}?{qs}", tuple(out), sig)


def sign_handshake(signer: Signer, creds: Credentials, *, target: Target, headers: Iterable[tuple[str, str]],
                   service: str, region: str, now: datetime, upstream_scheme: str | None = None,
                   region_set: str | None = None) -> tuple[str, SignedRequest]:
    """A WebSocket handshake (``GET``, no body) signed as AWS wants it for the resolved signing name ``service``
    (:func:`sigproxy.websocket.signing_for`: header auth, or AWS IoT's presigned URL with the session token
    after signing, valid :data:`~sigproxy.websocket.PRESIGN_EXPIRES` seconds). Returns the signing name used
    and the request; its ``Upgrade`` and ``Connection`` are for the caller to add (never signed)."""
    how = websocket.signing_for(service)
    if how.form == "query":
        return how.service, presign_request(
            signer, creds, method="GET", target=target, headers=headers, service=how.service, region=region, now=now,
            expires=websocket.PRESIGN_EXPIRES, upstream_scheme=upstream_scheme, region_set=region_set,
            token_after_signing=how.token_after_signing)
    return how.service, sign_request(signer, creds, method="GET", target=target, headers=headers,
                                     payload_hash=EMPTY_SHA256, body_length=None, service=how.service, region=region,
                                     now=now, upstream_scheme=upstream_scheme, region_set=region_set)

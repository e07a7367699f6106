"""Pure AWS Signature Version 4: canonical request, string to sign, signing key, header and query auth.

Owns: turning a request *as it will be sent* (method, raw path, raw query pairs, headers, payload hash)
plus credentials, scope and a time into a :class:`Signature` with every intermediate.
Must not: do I/O, read the clock, log anything, import aiohttp or asyncio.

The rules follow the AWS SigV4 documentation and agree with botocore's signer:

* How each service wants its requests signed comes from one table keyed by signing name,
  :data:`SIGNING_POLICIES` (read through :func:`policy_for`); everything else in sigproxy asks it.
* S3 (``SigningPolicy.s3``): the URI path is used as sent, encoded once, no dot-segment removal; what is
  sent is :func:`normalize_s3_path` of the client's path, so the path signed is the one S3 servers compute.
* Every other service: dot segments and empty segments removed, then the (already encoded) path is
  encoded again (``%20`` -> ``%2520``), as the spec's test suite requires.
* Query pairs are kept in order with duplicates (botocore's ``dict(parse_qsl(...))`` loses them);
  the canonical form sorts them by encoded key, then encoded value.
* Header values are trimmed and runs of spaces collapsed; repeated headers are joined with ``,``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

from .headerrules import lower_name
from .records import Record

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "PRESIGN_PARAMS",
    "Credentials",
    "SigningPolicy",
    "SIGNING_POLICIES",
    "policy_for",
    "CanonicalInput",
    "Signature",
    "Signer",
    "amz_date",
    "hash_text",
    "sha256_hex",
    "uri_encode",
    "canonical_path",
    "normalize_s3_path",
    "normalize_query",
    "encode_query",
    "canonical_query",
    "canonical_headers",
    "canonical_request",
    "presign_auth_params",
    "without_presign_params",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
EMPTY_SHA256: Final = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
# Query parameters that carry a presigned request's own auth; a re-signed request must not keep them.
PRESIGN_PARAMS: Final = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
        "x-amz-region-set",  # SigV4A's presigned form (aws-c-auth source/aws_signing.c)
    }
)
# Characters SigV4's UriEncode leaves alone besides ASCII letters and digits.
_UNRESERVED: Final = "-_.~"
# A path :func:`normalize_s3_path` gives back as it is: nothing to decode, nothing to encode.
_PLAIN_PATH: Final = re.compile(r"[A-Za-z0-9/_.~-]+")
_SECOND: Final = timedelta(seconds=1)
# Bound on derived keys kept: one per (secret, date, region, service) in use; a day's worth for many tenants.
_KEY_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class Credentials:
    """One immutable credential snapshot, used for a whole request."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningPolicy:
    """How a service wants its requests signed; one per signing name in :data:`SIGNING_POLICIES`."""

    s3: bool = False
    """S3's rules (botocore's ``S3SigV4Auth``/``S3SigV4QueryAuth``): the path is sent as
    :func:`normalize_s3_path` gives it and signed as sent (no dot-segment removal, encoded once);
    presigned URLs sign ``UNSIGNED-PAYLOAD``."""
    payload_header: bool = False
    """``x-amz-content-sha256`` is sent and signed on every request, whether or not the client sent one."""
    chunked: bool = False
    """A large body may go as ``aws-chunked`` with signed chunks (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``), or
    as ``UNSIGNED-PAYLOAD`` over TLS where the connection says so."""


_DEFAULT_POLICY: Final = SigningPolicy()
# botocore signs every one of S3's signing names with S3SigV4Auth (handlers.S3_SIGNING_NAMES, read by
# handlers.set_operation_specific_signer; client._resolve_signature_version gives s3 and s3control "s3v4").
# S3SigV4Auth: X-Amz-Content-SHA256 always set (_modify_request_before_signing), the path not normalised
# (_normalize_url_path). S3 API reference, "Signature Calculations for the Authorization Header": the
# x-amz-content-sha256 header is required for all SigV4 requests; the SigV4 guide, "Create a canonical
# request": each path segment is URI-encoded twice "except for Amazon S3 which only gets URI-encoded
# once", and S3 paths are not normalised. aws-chunked uploads: "Transferring Payload in Multiple Chunks"
# (S3 API reference).
_S3: Final = SigningPolicy(s3=True, payload_header=True, chunked=True)
_HASH_HEADER: Final = SigningPolicy(payload_header=True)

_POLICIES: Final[dict[str, SigningPolicy]] = {
    # S3, including S3 Control (botocore's s3control model signs as "s3").
    "s3": _S3,
    # S3 on Outposts, S3 Object Lambda, S3 Express One Zone: botocore handlers.S3_SIGNING_NAMES.
    "s3-outposts": _S3,
    "s3-object-lambda": _S3,
    "s3express": _S3,
    # S3 Glacier: "Common Request Headers" (Glacier developer guide): x-amz-content-sha256 is required for
    # Upload Archive and Upload Part (botocore handlers.add_glacier_checksums adds it, with the tree hash);
    # signed with plain SigV4Auth otherwise (normalised, double-encoded path), no aws-chunked.
    "glacier": _HASH_HEADER,
    # OpenSearch Serverless: the OpenSearch Service developer guide requires x-amz-content-sha256 on signed
    # requests (serverless-clients.html#serverless-signing); without it a request with a body gets 403
    # (x-aoss-response-hint X01:gw-helper-deny: aws-es-proxy issue #132, fixed by adding the header in
    # aws-es-proxy #133, opensearch-java #339, opensearch-js #366). Plain SigV4 otherwise.
    "aoss": _HASH_HEADER,
}
SIGNING_POLICIES: Final[Mapping[str, SigningPolicy]] = MappingProxyType(_POLICIES)
"""Signing names that sign differently from plain SigV4. Every other service: :class:`SigningPolicy()`."""


def policy_for(service: str) -> SigningPolicy:
    """How requests for the signing name ``service`` are signed (the one place that decides it)."""
    return _POLICIES.get(service, _DEFAULT_POLICY)  # the dict itself: a mappingproxy's get is a method call


class CanonicalInput(Record):
    """A request exactly as it will go on the wire.

    ``path`` is the raw, percent-encoded path as sent; ``query`` the raw pairs as sent (encoded, in order,
    duplicates kept; ``None`` value for a key sent without ``=``); ``headers`` the headers to sign
    (lower-case or not, repeated names allowed) and must include ``host``.
    """

    __match_args__ = ("method", "path", "query", "headers", "payload_hash")

    def __init__(self, method: str, path: str, query: tuple[tuple[str, str | None], ...],
                 headers: tuple[tuple[str, str], ...], payload_hash: str) -> None:
        self.method: Final = method
        self.path: Final = path
        self.query: Final = query
        self.headers: Final = headers
        self.payload_hash: Final = payload_hash


class Signature(Record):
    """The outcome of signing, with every intermediate (no secret among them). ``authorization``: the
    ``Authorization`` header value (header auth) or ``""`` (query auth); ``query``: for query auth, the full
    query to send, presign parameters included."""

    __match_args__ = ("canonical_request", "string_to_sign", "credential_scope", "signed_headers", "signature",
                      "amz_date", "authorization", "query")

    def __init__(self, canonical_request: str, string_to_sign: str,  # noqa: PLR0917  # as a dataclass
                 credential_scope: str, signed_headers: str, signature: str, amz_date: str, authorization: str,
                 query: tuple[tuple[str, str | None], ...] = ()) -> None:
        self.canonical_request: Final = canonical_request
        self.string_to_sign: Final = string_to_sign
        self.credential_scope: Final = credential_scope
        self.signed_headers: Final = signed_headers
        self.signature: Final = signature
        self.amz_date: Final = amz_date
        self.authorization: Final = authorization
        self.query: Final = query


# The second amz_date formatted last: (its start, the next second's start, its stamp), all UTC. Empty at first.
_NEVER: Final = datetime.max.replace(tzinfo=UTC)
_last_stamp: tuple[datetime, datetime, str] = (_NEVER, _NEVER, "")


def amz_date(now: datetime) -> str:
    """``20150830T123600Z`` for an aware datetime (converted to UTC).

    The stamp of the last second formatted is kept: a proxy signs many requests a second, each at the clock's
    ``now``, and every time within that second has the same stamp.
    """
    global _last_stamp  # noqa: PLW0603 -- one tuple, swapped whole: safe to read from any thread
    if now.tzinfo is not UTC:
        if now.tzinfo is None:
            raise ValueError("signing time must be timezone-aware")
        now = now.astimezone(UTC)
    start, end, stamp = _last_stamp
    if start <= now < end:
        return stamp
    stamp = f"{now.year:04d}{now.month:02d}{now.day:02d}T{now.hour:02d}{now.minute:02d}{now.second:02d}Z"
    start = now.replace(microsecond=0)
    with contextlib.suppress(OverflowError):  # the very last second (9999-12-31T23:59:59Z) is not kept
        _last_stamp = (start, start + _SECOND, stamp)
    return stamp


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_text(text: str) -> str:
    """The hex SHA-256 of a canonical request: its UTF-8 bytes, where a header value that was not UTF-8 (held as
    surrogate escapes, as sigproxy decodes what it receives) counts as the bytes that came: the signature
    covers what was sent and a client's can be checked, where a strict encode would fail."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def uri_encode(text: str, safe: str = "") -> str:
    """SigV4's URI encoding: every byte but the unreserved characters (and ``safe``) percent-encoded."""
    return quote(text, safe=_UNRESERVED + safe)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, plus what AWS services require: empty segments are dropped too.
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
        else:
            out.append(seg)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def canonical_path(raw_path: str, policy: SigningPolicy) -> str:
    """The canonical URI for a raw (already percent-encoded) path."""
    if policy.s3:
        return raw_path or "/"
    return quote(_remove_dot_segments(raw_path), safe="/~")


def normalize_s3_path(raw_path: str) -> str:
    """The path S3 servers sign for a client's raw path: percent-decoded once, then encoded with SigV4's
    UriEncode, ``/`` kept (``%2F`` and ``%2f`` become ``/``, ``%7E`` ``~``, ``+`` ``%2B``, ``!`` ``%21``,
    hex upper-cased; a ``%`` not followed by two hex digits is a literal ``%``).

    The S3 server decodes the path into a key and checks the signature against that key encoded again:
    Ceph RGW's ``get_v4_canonical_uri`` is ``aws4_uri_recode`` (``url_decode`` then ``aws4_uri_encode``
    with ``/`` unencoded) in ``rgw_auth_s3.h``; s3rver (``lib/middleware/authentication.js``) encodes
    the decoded bucket and key segment by segment; botocore sends a key encoded the same way
    (``percent_encode(key, safe="/~")``) and signs it as sent. So sigproxy sends this form and signs that
    same string: both sides then agree whatever spelling the client chose. Bytes are kept as they are
    (not decoded as UTF-8), so a key that is not UTF-8 reaches the server unchanged for it to judge.
    """
    if not raw_path:
        return "/"
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path
    raw = unquote_to_bytes(raw_path.encode("utf-8", "surrogateescape"))
    return quote_from_bytes(raw, safe="/" + _UNRESERVED)


def _recode(text: str) -> str:
    """A raw query key or value percent-decoded once and encoded again with SigV4's UriEncode, byte for byte:
    ``%e9`` (not UTF-8) stays the byte it names (``%E9``), never a replacement character."""
    return quote_from_bytes(unquote_to_bytes(text.replace("+", " ").encode("utf-8", "surrogateescape")),
                            safe=_UNRESERVED)


def normalize_query(raw_query: str) -> tuple[tuple[str, str | None], ...]:
    """Split a raw query into pairs and re-encode each key and value with SigV4's UriEncode.

    ``+`` is read as a space (form encoding), then sent as ``%20``, the only spelling AWS signs. Bytes are
    kept as they are, as :func:`normalize_s3_path` keeps a path's: a value that is not UTF-8 reaches the
    server unchanged for it to judge.
    """
    if not raw_query:
        return ()
    pairs: list[tuple[str, str | None]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        pairs.append((_recode(key), _recode(value) if eq else None))
    return tuple(pairs)


def encode_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The query string to send for already-encoded pairs."""
    return "&".join(k if v is None else f"{k}={v}" for k, v in pairs)


def canonical_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    if pairs == ():  # most requests: no query at all
        return ""
    return "&".join([f"{k}={v}" for k, v in sorted([(k, v or "") for k, v in pairs])])


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """``(canonical headers block, signed headers list)``."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = lower_name(name.strip())
        text = " ".join(value.split())  # trimmed, runs of whitespace as one space (SigV4's Trimall)
        if key in merged:
            merged[key] += "," + text
        else:
            merged[key] = text
    names = sorted(merged)
    return "".join([f"{n}:{merged[n]}\n" for n in names]), ";".join(names)


def canonical_request(req: CanonicalInput, query: Iterable[tuple[str, str | None]], policy: SigningPolicy,
                      ) -> tuple[str, str]:
    """``(canonical request, signed headers list)`` for ``req`` sent with ``query`` (its own query, or with a
    presigned URL's auth parameters added). The same for SigV4 and SigV4A (aws-c-auth
    ``source/aws_signing.c``, ``s_build_canonical_request_sigv4``: only the scope and the added headers differ).
    """
    header_block, signed = canonical_headers(req.headers)
    creq = (f"{req.method.upper()}\n{canonical_path(req.path, policy)}\n{canonical_query(query)}\n"
            f"{header_block}\n{signed}\n{req.payload_hash}")
    return creq, signed


def presign_auth_params(algorithm: str, credential: str, *, stamp: str, expires: int, signed: str,
                        session_token: str | None) -> list[tuple[str, str | None]]:
    """A presigned URL's auth parameters before ``X-Amz-Signature``, encoded; ``credential`` is
    ``KEY/SCOPE``. Raises :class:`ValueError` when ``expires`` is not 1 second to 7 days (SigV4 docs)."""
    if not 1 <= expires <= 604800:
        raise ValueError("expires must be between 1 second and 7 days")
    auth: list[tuple[str, str | None]] = [
        ("X-Amz-Algorithm", algorithm),
        ("X-Amz-Credential", uri_encode(credential)),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", uri_encode(signed)),
    ]
    if session_token:
        auth.append(("X-Amz-Security-Token", uri_encode(session_token)))
    return auth


def without_presign_params(query: Iterable[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
    """``query`` without any presigned URL auth parameter (:data:`PRESIGN_PARAMS`)."""
    return tuple(p for p in query if unquote(p[0]).lower() not in PRESIGN_PARAMS)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


# HMAC's inner and outer pads (RFC 2104) as byte translation tables, as the hmac module builds them.
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))
_SHA256_BLOCK: Final = 64


def _derive_key(secret: str, date: str, region: str, service: str) -> tuple[bytes, Callable[[bytes], str]]:
    """``kSigning`` and a function giving the hex HMAC-SHA256 of a message under it.

    The function starts from the key's padded inner and outer hashes, computed here once (RFC 2104: what
    :func:`hmac.new` does on every call), so a signature costs four hash calls instead of a keyed MAC set-up.
    """
    k_date = _hmac(f"AWS4{secret}".encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    key = _hmac(k_service, "aws4_request")
    padded = key.ljust(_SHA256_BLOCK, b"\0")  # 32 bytes: shorter than a block, so used as it is
    inner, outer = hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD))

    def mac(msg: bytes) -> str:
        inner_hash = inner.copy()
        inner_hash.update(msg)
        outer_hash = outer.copy()
        outer_hash.update(inner_hash.digest())
        return outer_hash.hexdigest()

    return key, mac


class Signer:
    """SigV4 signer with a bounded cache of derived signing keys (the expensive part: four HMACs), each kept
    with its HMAC pads hashed.

    Pure apart from that cache: callers pass the time; nothing is read from the environment.
    """

    __slots__ = ("_keys",)

    def __init__(self, key_cache_size: int = _KEY_CACHE_SIZE) -> None:
        # functools' LRU cache (in C): a hit is a dict lookup, where a Python-level cache costs a microsecond.
        self._keys = functools.lru_cache(maxsize=key_cache_size)(_derive_key)

    def signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        """The derived key ``kSigning`` for one day, region and service."""
        return self._keys(secret, date, region, service)[0]

    def _sign(
        self,
        *,
        req: CanonicalInput,
        query: tuple[tuple[str, str | None], ...],
        creds: Credentials,
        region: str,
        service: str,
        stamp: str,
        policy: SigningPolicy,
    ) -> tuple[str, str, str, str, str]:
        date = stamp[:8]
        scope = f"{date}/{region}/{service}/aws4_request"
        creq, signed = canonical_request(req, query, policy)
        sts = f"{ALGORITHM}\n{stamp}\n{scope}\n{hash_text(creq)}"
        sig = self._keys(creds.secret_access_key, date, region, service)[1](sts.encode())
        return creq, sts, scope, signed, sig

    def sign_headers(
        self,
        req: CanonicalInput,
        creds: Credentials,
        *,
        region: str,
        service: str,
        now: datetime,
        policy: SigningPolicy = SigningPolicy(),
    ) -> Signature:
        """Header auth. ``req.headers`` must already hold ``x-amz-date`` (= :func:`amz_date` of ``now``),
        ``x-amz-security-token`` when there is a session token, and ``x-amz-content-sha256`` for S3.
        """
        stamp = amz_date(now)
        creq, sts, scope, signed, sig = self._sign(
            req=req, query=req.query, creds=creds, region=region, service=service, stamp=stamp, policy=policy
        )
        authz = f"{ALGORITHM} Credential={creds.access_key_id}/{scope}, SignedHeaders={signed}, Signature={sig}"
        return Signature(creq, sts, scope, signed, sig, stamp, authz, req.query)

    def presign(
        self,
        req: CanonicalInput,
        creds: Credentials,
        *,
        region: str,
        service: str,
        now: datetime,
        expires: int,
        policy: SigningPolicy = SigningPolicy(),
    ) -> Signature:
        """Query auth (a presigned URL). ``Signature.query`` is the query to send."""
        stamp = amz_date(now)
        scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
        _, signed = canonical_headers(req.headers)
        auth = presign_auth_params(ALGORITHM, f"{creds.access_key_id}/{scope}", stamp=stamp, expires=expires,
                                   signed=signed, session_token=creds.session_token)
        query = without_presign_params(req.query) + tuple(auth)
        creq, sts, scope, signed, sig = self._sign(
            req=req, query=query, creds=creds, region=region, service=service, stamp=stamp, policy=policy
        )
        final = (*query, ("X-Amz-Signature", sig))
        return Signature(creq, sts, scope, signed, sig, stamp, "", final)


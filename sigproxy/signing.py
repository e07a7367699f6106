"""Pure AWS Signature Version 4: canonical request, string to sign, signing key, header and query auth.

Owns: turning a request *as it will be sent* (method, raw path, raw query pairs, headers, payload hash)
plus credentials, scope and a time into a :class:`Signature` with every intermediate.
Must not: do I/O, read the clock, log anything, import aiohttp or asyncio.

The rules follow the AWS SigV4 documentation and agree with botocore's signer:

* S3 (``SigningPolicy.s3``): the URI path is used as sent, encoded once, no dot-segment removal.
* Every other service: dot segments and empty segments removed, then the (already encoded) path is
  encoded again (``%20`` -> ``%2520``), as the spec's test suite requires.
* Query pairs are kept in order with duplicates (botocore's ``dict(parse_qsl(...))`` loses them);
  the canonical form sorts them by encoded key, then encoded value.
* Header values are trimmed and runs of spaces collapsed; repeated headers are joined with ``,``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from cachetools import LRUCache

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "PRESIGN_PARAMS",
    "Credentials",
    "SigningPolicy",
    "CanonicalInput",
    "Signature",
    "Signer",
    "amz_date",
    "sha256_hex",
    "canonical_path",
    "normalize_s3_path",
    "normalize_query",
    "encode_query",
    "canonical_query",
    "canonical_headers",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Query parameters that carry a presigned request's own auth; a re-signed request must not keep them.
PRESIGN_PARAMS = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
    }
)
# Characters SigV4's UriEncode leaves alone besides ASCII letters and digits.
_UNRESERVED = "-_.~"
# Bound on derived keys kept: one per (secret, date, region, service) in use; a day's worth for many tenants.
_KEY_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Credentials:
    """One immutable credential snapshot, used for a whole request."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningPolicy:
    """How a service wants its requests canonicalised."""

    s3: bool = False
    """S3 rules: no path normalisation, single encoding, ``x-amz-content-sha256`` always sent."""


@dataclass(frozen=True, slots=True)
class CanonicalInput:
    """A request exactly as it will go on the wire.

    ``path`` is the raw, percent-encoded path as sent; ``query`` the raw pairs as sent (encoded, in order,
    duplicates kept; ``None`` value for a key sent without ``=``); ``headers`` the headers to sign
    (lower-case or not, repeated names allowed) and must include ``host``.
    """

    method: str
    path: str
    query: tuple[tuple[str, str | None], ...]
    headers: tuple[tuple[str, str], ...]
    payload_hash: str


@dataclass(frozen=True, slots=True)
class Signature:
    """The outcome of signing, with every intermediate (no secret among them)."""

    canonical_request: str
    string_to_sign: str
    credential_scope: str
    signed_headers: str
    signature: str
    amz_date: str
    authorization: str
    """The ``Authorization`` header value (header auth) or ``""`` (query auth)."""
    query: tuple[tuple[str, str | None], ...] = ()
    """For query auth: the full query to send, presign parameters included."""


def amz_date(now: datetime) -> str:
    """``20150830T123600Z`` for an aware datetime (converted to UTC)."""
    if now.tzinfo is None:
        raise ValueError("signing time must be timezone-aware")
    t = now.astimezone(UTC)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _uri_encode(text: str, safe: str = "") -> str:
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
    """Re-encode each segment of an S3 path the way S3 canonicalises it (``%2F`` stays inside a segment).

    S3 decodes the path and encodes it again when it checks a signature; sending the normalised form and
    signing that same string keeps both sides equal whatever encoding the client chose.
    """
    if not raw_path:
        return "/"
    return "/".join(_uri_encode(unquote(seg)) for seg in raw_path.split("/"))


def normalize_query(raw_query: str) -> tuple[tuple[str, str | None], ...]:
    """Split a raw query into pairs and re-encode each key and value with SigV4's UriEncode.

    ``+`` is read as a space (form encoding), then sent as ``%20``, the only spelling AWS signs.
    """
    if not raw_query:
        return ()
    pairs: list[tuple[str, str | None]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        norm_key = _uri_encode(unquote(key.replace("+", " ")))
        norm_val = _uri_encode(unquote(value.replace("+", " "))) if eq else None
        pairs.append((norm_key, norm_val))
    return tuple(pairs)


def encode_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The query string to send for already-encoded pairs."""
    return "&".join(k if v is None else f"{k}={v}" for k, v in pairs)


def canonical_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted((k, v or "") for k, v in pairs))


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """``(canonical headers block, signed headers list)``."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return block, ";".join(names)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


class Signer:
    """SigV4 signer with a bounded cache of derived signing keys (the expensive part: four HMACs).

    Pure apart from that cache: callers pass the time; nothing is read from the environment.
    """

    __slots__ = ("_keys",)

    def __init__(self, key_cache_size: int = _KEY_CACHE_SIZE) -> None:
        self._keys: LRUCache[tuple[str, str, str, str], bytes] = LRUCache(maxsize=key_cache_size)

    def signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        """The derived key ``kSigning`` for one day, region and service."""
        cache_key = (secret, date, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            k_date = _hmac(f"AWS4{secret}".encode(), date)
            k_region = _hmac(k_date, region)
            k_service = _hmac(k_region, service)
            key = _hmac(k_service, "aws4_request")
            self._keys[cache_key] = key
        return key

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
        header_block, signed = canonical_headers(req.headers)
        creq = "\n".join(
            (
                req.method.upper(),
                canonical_path(req.path, policy),
                canonical_query(query),
                header_block,
                signed,
                req.payload_hash,
            )
        )
        sts = "\n".join((ALGORITHM, stamp, scope, sha256_hex(creq.encode("utf-8"))))
        key = self.signing_key(creds.secret_access_key, date, region, service)
        sig = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
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
        if not 1 <= expires <= 604800:
            raise ValueError("expires must be between 1 second and 7 days")
        stamp = amz_date(now)
        scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
        _, signed = canonical_headers(req.headers)
        auth: list[tuple[str, str | None]] = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", _uri_encode(f"{creds.access_key_id}/{scope}")),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", _uri_encode(signed)),
        ]
        if creds.session_token:
            auth.append(("X-Amz-Security-Token", _uri_encode(creds.session_token)))
        kept = tuple(p for p in req.query if unquote(p[0]).lower() not in PRESIGN_PARAMS)
        query = kept + tuple(auth)
        creq, sts, scope, signed, sig = self._sign(
            req=req, query=query, creds=creds, region=region, service=service, stamp=stamp, policy=policy
        )
        final = (*query, ("X-Amz-Signature", sig))
        return Signature(creq, sts, scope, signed, sig, stamp, "", final)


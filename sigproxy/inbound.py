"""Pure verification of the client's own SigV4 signature, made with a connection's ``client_secret``.

A connection that sets ``client_secret`` turns the placeholder key pair of its clients into a real local
credential: clients sign with ``AWS_ACCESS_KEY_ID=<connection name>`` and ``AWS_SECRET_ACCESS_KEY=<client
secret>`` in any unmodified SDK, and sigproxy checks that signature (header auth or a presigned query) before
re-signing with the real credentials. Chunk signatures of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` uploads are
checked as the body streams (:mod:`sigproxy.bodies`), chained from the seed signature verified here.

The canonical request is rebuilt from the request *as received*: method, raw path and query, the headers the
client named in ``SignedHeaders`` (``Host`` as sent included) and the payload hash the client used. Where
clients legitimately differ (S3 path spelling, query encoding, the payload hash of a presigned URL), each
plausible canonical form is tried; every one of them still needs the secret to match.

Owns: parsing the client's ``Authorization`` header and presign parameters, the time window, the comparison.
Must not: do I/O, read the clock (callers pass ``now``), import aiohttp, log.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import unquote

from .errors import ClientSignatureInvalid
from .records import Record
from .signing import (
    ALGORITHM,
    EMPTY_SHA256,
    PRESIGN_PARAMS,
    UNSIGNED_PAYLOAD,
    CanonicalInput,
    Credentials,
    Signer,
    encode_query,
    normalize_query,
    normalize_s3_path,
    policy_for,
)

__all__ = [
    "MAX_SKEW",
    "MAX_PRESIGN_EXPIRES",
    "ClientAuthorization",
    "ReceivedRequest",
    "parse_authorization",
    "verify_header_auth",
    "verify_presigned",
]

MAX_SKEW: Final = timedelta(minutes=15)
"""How far a client's ``X-Amz-Date`` may be from our clock (AWS's own window)."""
MAX_PRESIGN_EXPIRES: Final = 604800
_SCOPE: Final = re.compile(r"^([^/\s]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request$")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME: Final = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_MAX_AUTHORIZATION: Final = 8192
_Pairs = tuple[tuple[str, str | None], ...]


class ClientAuthorization(Record):
    """The parts of a client's SigV4 signature (header ``Authorization`` or presign parameters); ``date`` is
    the credential scope's ``YYYYMMDD``."""

    __match_args__ = ("access_key_id", "date", "region", "service", "signed_headers", "signature")

    def __init__(self, access_key_id: str, date: str, region: str, service: str,  # noqa: PLR0917  # as a dataclass
                 signed_headers: tuple[str, ...], signature: str) -> None:
        self.access_key_id: Final = access_key_id
        self.date: Final = date
        self.region: Final = region
        self.service: Final = service
        self.signed_headers: Final = signed_headers
        self.signature: Final = signature


class ReceivedRequest(Record):
    """A request exactly as the client sent it to sigproxy: ``path`` raw and percent-encoded as received (origin
    form), ``query`` raw as received, without ``?``."""

    __match_args__ = ("method", "path", "query", "headers")

    def __init__(self, method: str, path: str, query: str, headers: Sequence[tuple[str, str]]) -> None:
        self.method: Final = method
        self.path: Final = path
        self.query: Final = query
        self.headers: Final = headers


def _invalid(message: str) -> ClientSignatureInvalid:
    return ClientSignatureInvalid(f"client signature invalid: {message}")


def _scope(credential: str) -> tuple[str, str, str, str]:
    m = _SCOPE.match(credential)
    if m is None:
        raise _invalid("Credential must be KEYID/YYYYMMDD/REGION/SERVICE/aws4_request")
    return m.group(1), m.group(2), m.group(3), m.group(4)


def _signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not _HEADER_NAME.match(n) for n in names):
        raise _invalid("SignedHeaders must be lower-case header names separated by ';'")
    if list(names) != sorted(set(names)):
        raise _invalid("SignedHeaders must be sorted and without duplicates")
    if "host" not in names:
        raise _invalid("SignedHeaders must include host")
    return names


def _signature(value: str) -> str:
    if not _HEX64.match(value):
        raise _invalid("Signature must be 64 lower-case hex digits")
    return value


def parse_authorization(value: str) -> ClientAuthorization:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

    Raises :class:`ClientSignatureInvalid` for anything else (the message names what is wrong, never a value
    the client could use to probe the secret).
    """
    if len(value) > _MAX_AUTHORIZATION:
        raise _invalid("Authorization header too long")
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _invalid(f"Authorization must use {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, field_value = part.strip().partition("=")
        if not eq or name not in ("Credential", "SignedHeaders", "Signature") or name in fields:
            raise _invalid("Authorization must hold Credential, SignedHeaders and Signature once each")
        fields[name] = field_value.strip()
    if len(fields) != 3:
        raise _invalid("Authorization must hold Credential, SignedHeaders and Signature")
    key_id, date, region, service = _scope(fields["Credential"])
    return ClientAuthorization(key_id, date, region, service, _signed_headers(fields["SignedHeaders"]),
                               _signature(fields["Signature"]))


def _parse_amz_date(value: str | None) -> datetime:
    if not value:
        raise _invalid("X-Amz-Date is missing")
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _invalid("X-Amz-Date must look like 20260101T000000Z") from None


def _header_values(headers: Sequence[tuple[str, str]], names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    out: list[tuple[str, str]] = []
    for name in names:
        if name not in by_name:
            raise _invalid(f"signed header {name!r} is not in the request")
        out.extend((name, v) for v in by_name[name])
    return tuple(out)


def _raw_pairs(query: str) -> _Pairs:
    pairs: list[tuple[str, str | None]] = []
    for part in query.split("&"):
        if part:
            key, eq, value = part.partition("=")
            pairs.append((key, value if eq else None))
    return tuple(pairs)


def _candidates(req: ReceivedRequest, s3: bool, query_pairs: _Pairs) -> list[tuple[str, _Pairs]]:
    """(path, query pairs) spellings a client may have signed: as sent, and SigV4's normal form (for S3 the
    path S3 servers sign, :func:`~sigproxy.signing.normalize_s3_path`, which is also what sigproxy sends)."""
    paths = [req.path or "/"]
    if s3:
        alt = normalize_s3_path(req.path)
        if alt not in paths:
            paths.append(alt)
    queries = [query_pairs]
    normal = normalize_query(encode_query(query_pairs))
    if normal != query_pairs:
        queries.append(normal)
    return [(p, q) for p in paths for q in queries]


def _matches(req: ReceivedRequest, auth: ClientAuthorization, *, signer: Signer, secret: str, when: datetime,
             query: _Pairs, payload_hashes: Sequence[str]) -> bool:
    headers = _header_values(req.headers, auth.signed_headers)
    creds = Credentials(auth.access_key_id, secret)
    policy = policy_for(auth.service)
    for path, pairs in _candidates(req, policy.s3, query):
        for payload_hash in payload_hashes:
            canonical = CanonicalInput(req.method.upper(), path, pairs, headers, payload_hash)
            sig = signer.sign_headers(canonical, creds, region=auth.region, service=auth.service, now=when,
                                      policy=policy)
            if hmac.compare_digest(sig.signature, auth.signature):
                return True
    return False


def _check_key(auth: ClientAuthorization, expected_key_id: str) -> None:
    if auth.access_key_id != expected_key_id:
        raise _invalid(f"signed with key id {auth.access_key_id!r}; this connection's clients sign with key id "
                       f"{expected_key_id!r} and its client_secret")


def verify_header_auth(req: ReceivedRequest, *, secret: str, expected_key_id: str, payload_hashes: Sequence[str],
                       now: datetime, signer: Signer) -> ClientAuthorization:
    """Check a header-auth signature made with ``secret``; returns its parts (the seed of signed chunks).

    ``payload_hashes``: the payload hash(es) the client may have signed (its ``x-amz-content-sha256``, or
    the body's hash). Raises :class:`ClientSignatureInvalid`.
    """
    authorization = next((v for k, v in req.headers if k.lower() == "authorization"), None)
    if authorization is None:
        raise _invalid("the request has no Authorization header")
    auth = parse_authorization(authorization)
    _check_key(auth, expected_key_id)
    stamp = next((v for k, v in req.headers if k.lower() == "x-amz-date"), None)
    when = _parse_amz_date(stamp)
    if abs(now - when) > MAX_SKEW:
        raise _invalid("X-Amz-Date is more than 15 minutes away from the proxy's clock (replayed too late, "
                       "or the client's clock is off)")
    if auth.date != when.strftime("%Y%m%d"):
        raise _invalid("the credential scope's date is not X-Amz-Date's date")
    if not _matches(req, auth, signer=signer, secret=secret, when=when, query=_raw_pairs(req.query),
                    payload_hashes=payload_hashes):
        raise _invalid("the signature does not match (wrong client_secret, or the request was changed)")
    return auth


def _presign_fields(pairs: _Pairs) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in pairs:
        name = unquote(key)
        if name.lower() in PRESIGN_PARAMS:
            if name in fields:
                raise _invalid(f"{name} appears twice in the query")
            fields[name] = unquote(value or "")
    return fields


def verify_presigned(req: ReceivedRequest, *, secret: str, expected_key_id: str, now: datetime,
                     signer: Signer) -> str:
    """Check a presigned URL made with ``secret``; returns the query without its presign parameters.

    Raises :class:`ClientSignatureInvalid` (also when it has expired or is dated in the future).
    """
    pairs = _raw_pairs(req.query)
    fields = _presign_fields(pairs)
    if fields.get("X-Amz-Algorithm") != ALGORITHM:
        raise _invalid(f"X-Amz-Algorithm must be {ALGORITHM}")
    for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if name not in fields:
            raise _invalid(f"the presigned URL has no {name}")
    key_id, date, region, service = _scope(fields["X-Amz-Credential"])
    auth = ClientAuthorization(key_id, date, region, service, _signed_headers(fields["X-Amz-SignedHeaders"]),
                               _signature(fields["X-Amz-Signature"]))
    _check_key(auth, expected_key_id)
    when = _parse_amz_date(fields["X-Amz-Date"])
    expires_s = fields["X-Amz-Expires"]
    if (not (expires_s.isascii() and expires_s.isdigit()) or len(expires_s) > 6
            or not 1 <= int(expires_s) <= MAX_PRESIGN_EXPIRES):
        raise _invalid("X-Amz-Expires must be 1 to 604800 seconds")
    if when - now > MAX_SKEW:
        raise _invalid("X-Amz-Date is in the future")
    if now > when + timedelta(seconds=int(expires_s)):
        raise _invalid("the presigned URL has expired")
    if auth.date != when.strftime("%Y%m%d"):
        raise _invalid("the credential scope's date is not X-Amz-Date's date")
    signed_query = tuple(p for p in pairs if unquote(p[0]) != "X-Amz-Signature")
    declared = next((v for k, v in req.headers if k.lower() == "x-amz-content-sha256"), None)
    hashes = [h for h in (declared, UNSIGNED_PAYLOAD, EMPTY_SHA256) if h]
    if not _matches(req, auth, signer=signer, secret=secret, when=when, query=signed_query, payload_hashes=hashes):
        raise _invalid("the signature does not match (wrong client_secret, or the URL was changed)")
    return encode_query(p for p in pairs if unquote(p[0]).lower() not in PRESIGN_PARAMS)

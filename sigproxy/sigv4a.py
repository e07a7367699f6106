"""Pure AWS Signature Version 4A (``AWS4-ECDSA-P256-SHA256``): key derivation, string to sign, header and query auth.

Owns: the ECDSA P-256 key derived from a credential, and signing a :class:`~sigproxy.signing.CanonicalInput`
for a *region set* (``*``, or regions such as ``us-east-1,us-west-2``) rather than one region.
Must not: do I/O, read the clock, log anything, expose a derived key.

SigV4A follows aws-c-auth (the AWS common runtime's signer, which botocore uses for it through awscrt):

* Key (``source/key_derivation.c``, ``aws_ecc_key_pair_new_ecdsa_p256_key_from_aws_credentials``): NIST SP 800-108
  KDF in counter mode over HMAC-SHA256 keyed with ``"AWS4A" + secret``; fixed input
  ``00000001 || "AWS4-ECDSA-P256-SHA256" || 00 || access key id || counter || 00000100``; counter 1 to 254; a
  candidate ``c`` greater than ``n - 2`` (P-256's order) takes the next counter, else ``d = c + 1``.
* Canonical request (``source/aws_signing.c``): SigV4's (:func:`~sigproxy.signing.canonical_request`), with
  ``X-Amz-Region-Set`` signed as a header (header auth) or a query parameter (query auth).
* Scope ``DATE/SERVICE/aws4_request`` (no region); string to sign
  ``AWS4-ECDSA-P256-SHA256\\nAMZDATE\\nSCOPE\\nhex(sha256(canonical request))``; the signature is the hex of
  the DER-encoded ECDSA signature over SHA-256 of the string to sign (``s_sign_string_to_sign_ecdsa``'s role
  in ``aws_signing.c``). ECDSA signatures are randomised: two signings of one request differ, both verify.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .signing import (
    CanonicalInput,
    Credentials,
    Signature,
    SigningPolicy,
    amz_date,
    canonical_headers,
    canonical_request,
    hash_text,
    presign_auth_params,
    without_presign_params,
)

__all__ = [
    "ALGORITHM",
    "REGION_PATTERN",
    "REGION_SET_HEADER",
    "derive_private_key",
    "public_key",
    "region_set_value",
    "string_to_sign",
    "sign_headers",
    "presign",
]

ALGORITHM = "AWS4-ECDSA-P256-SHA256"
REGION_SET_HEADER = "X-Amz-Region-Set"
# P-256's group order minus 2 (aws-c-auth key_derivation.c s_n_minus_2; FIPS 186-4 D.1.2.3).
_N_MINUS_2 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 - 2
_MAX_COUNTER = 254  # key_derivation.c MAX_KEY_DERIVATION_COUNTER_VALUE
# One derived key per credential in use; derivation is one or two HMACs plus an EC point multiplication.
_KEY_CACHE_SIZE = 1024
REGION_PATTERN = r"[a-z0-9*][a-z0-9*-]*"
"""A region (us-east-1) or a wildcard pattern (*, us-*): the values AWS documents for a region set's entries."""
_REGION = re.compile(REGION_PATTERN)
_ECDSA = ec.ECDSA(hashes.SHA256())


def region_set_value(regions: str | Iterable[str]) -> str:
    """The ``X-Amz-Region-Set`` value for ``regions`` (``"*"``, ``"us-east-1,us-west-2"`` or a list of names).

    Raises :class:`ValueError`, naming the bad entry, for an empty set or an entry that is not a region name
    or wildcard pattern (lower-case letters, digits, ``-`` and ``*``).
    """
    items = regions.split(",") if isinstance(regions, str) else list(regions)
    names = [r.strip() for r in items]
    if not names or not all(names):
        raise ValueError("region set is empty: give '*' or region names such as 'us-east-1,us-west-2'")
    for name in names:
        if not _REGION.fullmatch(name):
            raise ValueError(f"region set entry {name!r} is not a region name or pattern (such as us-east-1 or *)")
    return ",".join(names)


def _derive(access_key_id: str, secret_access_key: str) -> ec.EllipticCurvePrivateKey:
    key = b"AWS4A" + secret_access_key.encode()
    for counter in range(1, _MAX_COUNTER + 1):
        fixed = (b"\x00\x00\x00\x01" + ALGORITHM.encode() + b"\x00" + access_key_id.encode()
                 + bytes([counter]) + b"\x00\x00\x01\x00")
        candidate = int.from_bytes(hmac.new(key, fixed, hashlib.sha256).digest(), "big")
        if candidate <= _N_MINUS_2:
            return ec.derive_private_key(candidate + 1, ec.SECP256R1())
    raise ValueError("no SigV4A key could be derived from this credential")  # 2**-8000 odds: never in practice


_derive_cached = functools.lru_cache(maxsize=_KEY_CACHE_SIZE)(_derive)


def derive_private_key(access_key_id: str, secret_access_key: str) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 private key SigV4A signs with for one credential (aws-c-auth ``key_derivation.c``).

    Cached per ``(access key id, secret)``, at most 1024 kept. Never log or return the key outside signing;
    :func:`public_key` is what may be shown. Raises :class:`ValueError` only if all 254 counters give a
    candidate above ``n - 2`` (odds about ``2**-8000``).
    """
    return _derive_cached(access_key_id, secret_access_key)


def public_key(creds: Credentials) -> ec.EllipticCurvePublicKey:
    """The public half of :func:`derive_private_key` for ``creds`` (what a verifier checks signatures with)."""
    return derive_private_key(creds.access_key_id, creds.secret_access_key).public_key()


def string_to_sign(creq: str, stamp: str, scope: str) -> str:
    """``AWS4-ECDSA-P256-SHA256\\n<amz date>\\n<scope>\\n<hex SHA-256 of the canonical request>``
    (aws-c-auth ``aws_signing_build_string_to_sign``)."""
    return f"{ALGORITHM}\n{stamp}\n{scope}\n{hash_text(creq)}"


def _sign(req: CanonicalInput, query: tuple[tuple[str, str | None], ...], creds: Credentials, *, service: str,
          stamp: str, policy: SigningPolicy) -> tuple[str, str, str, str, str]:
    scope = f"{stamp[:8]}/{service}/aws4_request"
    creq, signed = canonical_request(req, query, policy)
    sts = string_to_sign(creq, stamp, scope)
    der = derive_private_key(creds.access_key_id, creds.secret_access_key).sign(sts.encode(), _ECDSA)
    return creq, sts, scope, signed, der.hex()


def sign_headers(req: CanonicalInput, creds: Credentials, *, service: str, now: datetime,
                 policy: SigningPolicy) -> Signature:
    """Header auth. ``req.headers`` must already hold ``x-amz-date`` (= :func:`~sigproxy.signing.amz_date` of
    ``now``), ``x-amz-region-set`` (:func:`region_set_value`), ``x-amz-security-token`` with a session token and
    ``x-amz-content-sha256`` for S3. Raises :class:`ValueError` when ``x-amz-region-set`` is missing.
    """
    if not any(name.lower() == "x-amz-region-set" for name, _ in req.headers):
        raise ValueError("SigV4A header auth needs an X-Amz-Region-Set header among the signed headers")
    stamp = amz_date(now)
    creq, sts, scope, signed, sig = _sign(req, req.query, creds, service=service, stamp=stamp, policy=policy)
    authz = f"{ALGORITHM} Credential={creds.access_key_id}/{scope}, SignedHeaders={signed}, Signature={sig}"
    return Signature(creq, sts, scope, signed, sig, stamp, authz, req.query)


def presign(req: CanonicalInput, creds: Credentials, *, service: str, region_set: str, now: datetime, expires: int,
            policy: SigningPolicy) -> Signature:
    """Query auth (a presigned URL): the SigV4 presign parameters plus ``X-Amz-Region-Set`` (aws-c-auth
    ``s_add_authorization_query_params``). ``region_set`` is a :func:`region_set_value`; ``expires`` is in
    seconds, 1 to 604800 (:class:`ValueError` otherwise). ``Signature.query`` is the query to send.
    """
    stamp = amz_date(now)
    scope = f"{stamp[:8]}/{service}/aws4_request"
    _, signed = canonical_headers(req.headers)
    auth = presign_auth_params(ALGORITHM, f"{creds.access_key_id}/{scope}", stamp=stamp, expires=expires,
                               signed=signed, session_token=creds.session_token)
    auth.append((REGION_SET_HEADER, quote(region_set, safe="-_.~")))  # SigV4 UriEncode
    query = without_presign_params(req.query) + tuple(auth)
    creq, sts, scope, signed, sig = _sign(req, query, creds, service=service, stamp=stamp, policy=policy)
    return Signature(creq, sts, scope, signed, sig, stamp, "", (*query, ("X-Amz-Signature", sig)))

"""A local HTTP server that checks every request's SigV4 signature with botocore's own signer: a stand-in for
an AWS endpoint moto and RGW cannot play (an OpenSearch Serverless collection, Glacier, S3 on Outposts).

For each request it rebuilds, from what arrived, the request botocore would have signed: method, the raw path
and query as received, the headers named in ``SignedHeaders`` (values as received), the body. It then computes
the signature with :class:`botocore.auth.SigV4Auth`, or :class:`~botocore.auth.S3SigV4Auth` for the signing
names botocore signs with S3's rules (``botocore.handlers.S3_SIGNING_NAMES``), for the scope and
``X-Amz-Date`` the request claims, and compares. Like S3 it also checks a hex ``x-amz-content-sha256``
against the body. With ``require_content_sha256`` it refuses a request whose signature does not cover
``x-amz-content-sha256``, as OpenSearch Serverless does (403 with ``x-aoss-response-hint:
X01:gw-helper-deny``).

SigV4A (``AWS4-ECDSA-P256-SHA256``) requests are checked too (:func:`_check_sigv4a`): the canonical request comes
from botocore's SigV4 code (SigV4A's is the same, aws-c-auth ``aws_signing.c``), the string to sign is built as
aws-c-auth builds it, and awscrt is asked to sign the same request as received (same date, region set, payload
hash); awscrt's signature must verify over that string to sign with the public key, which proves both the string
to sign and the key are awscrt's for this very request. Only then is the received signature verified with that key.
The public key is sigproxy's derivation (:func:`sigproxy.sigv4a.public_key`), accepted only because awscrt's own
signature verifies under it.

It answers 200 with JSON ``{"service", "region", "signed_headers", "content_sha256", "path", "body_sha256"}``, or
403 with ``{"error": reason}``; every answer is also appended to ``Verifier.seen``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import awscrt.auth as crt_auth
import awscrt.http as crt_http
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.handlers import S3_SIGNING_NAMES
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sigproxy import sigv4a
from sigproxy.signing import Credentials as SigproxyCredentials

__all__ = ["Verifier", "add_signed_headers", "start_verifier"]

_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")
_AUTH_V4A = re.compile(r"^AWS4-ECDSA-P256-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/aws4_request, "
                       r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]+)$")
# Headers awscrt adds itself when signing (aws-c-auth refuses a request that already has them).
_CRT_ADDS = frozenset({"x-amz-date", "x-amz-region-set", "x-amz-content-sha256", "x-amz-security-token"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Verifier:
    url: str
    access_key: str
    secret_key: str
    seen: list[dict[str, Any]] = field(default_factory=list)


def add_signed_headers(request: AWSRequest, names: list[str], get_all: Callable[[str], list[str] | None],
                       stamp: str) -> None:
    """Put the headers named in ``SignedHeaders`` on the request botocore is to sign, with every value received
    (``get_all``: the server's lookup, all values of one name), and ``stamp`` as the signing time. Raises
    ``ValueError`` for a signed header that did not arrive."""
    for name in names:
        values = get_all(name)
        if not values:
            raise ValueError(f"signed header {name} is missing")
        for value in values:
            request.headers[name] = value  # botocore's HTTPHeaders keeps repeated names
    request.context["timestamp"] = stamp


def _check(handler: BaseHTTPRequestHandler, body: bytes, v: Verifier, require_content_sha256: bool) -> dict[str, Any]:
    """The JSON answer for one request; raises ``ValueError(reason)`` when it must be refused."""
    if handler.headers.get("Authorization", "").startswith("AWS4-ECDSA-P256-SHA256"):
        return _check_sigv4a(handler, body, v)
    m = _AUTH.match(handler.headers.get("Authorization", ""))
    if m is None:
        raise ValueError("no SigV4 Authorization header")
    key_id, date, region, service, signed, signature = m.groups()
    if key_id != v.access_key:
        raise ValueError(f"unknown access key {key_id}")
    names = signed.split(";")
    if "host" not in names:
        raise ValueError("host is not signed")
    stamp = handler.headers.get("X-Amz-Date", "")
    if stamp[:8] != date:
        raise ValueError("X-Amz-Date does not match the scope's date")
    declared = handler.headers.get("X-Amz-Content-SHA256")
    if require_content_sha256 and "x-amz-content-sha256" not in names:
        raise ValueError("x-amz-content-sha256 is required and must be signed")
    if declared is not None and _HEX64.match(declared) and declared != hashlib.sha256(body).hexdigest():
        raise ValueError("x-amz-content-sha256 does not match the body")

    request = AWSRequest(method=handler.command, url=f"http://{handler.headers['Host']}{handler.path}", data=body)
    add_signed_headers(request, names, handler.headers.get_all, stamp)
    auth_cls = S3SigV4Auth if service in S3_SIGNING_NAMES else SigV4Auth
    signer = auth_cls(Credentials(v.access_key, v.secret_key), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, signature):
        raise ValueError("SignatureDoesNotMatch")
    return {"service": service, "region": region, "signed_headers": names, "content_sha256": declared,
            "path": handler.path, "body_sha256": hashlib.sha256(body).hexdigest()}


def _check_sigv4a(handler: BaseHTTPRequestHandler, body: bytes, v: Verifier) -> dict[str, Any]:
    m = _AUTH_V4A.match(handler.headers.get("Authorization", ""))
    if m is None:
        raise ValueError("malformed SigV4A Authorization header")
    key_id, date, service, signed, signature = m.groups()
    if key_id != v.access_key:
        raise ValueError(f"unknown access key {key_id}")
    names = signed.split(";")
    if "host" not in names or "x-amz-region-set" not in names:
        raise ValueError("host and x-amz-region-set must be signed")
    stamp, region_set = handler.headers.get("X-Amz-Date", ""), handler.headers["X-Amz-Region-Set"]
    if stamp[:8] != date:
        raise ValueError("X-Amz-Date does not match the scope's date")
    declared = handler.headers.get("X-Amz-Content-SHA256")
    payload = declared or hashlib.sha256(body).hexdigest()
    if declared is not None and _HEX64.match(declared) and declared != hashlib.sha256(body).hexdigest():
        raise ValueError("x-amz-content-sha256 does not match the body")
    s3 = service in S3_SIGNING_NAMES
    # The canonical request by botocore's SigV4 code, the string to sign as aws-c-auth writes it.
    request = AWSRequest(method=handler.command, url=f"http://{handler.headers['Host']}{handler.path}", data=body)
    for name in names:
        for value in handler.headers.get_all(name) or ():
            request.headers[name] = value
    request.context["timestamp"] = stamp
    auth_cls = S3SigV4Auth if s3 else SigV4Auth
    creq = auth_cls(Credentials(v.access_key, v.secret_key), service, "unused").canonical_request(request)
    sts = f"AWS4-ECDSA-P256-SHA256\n{stamp}\n{date}/{service}/aws4_request\n{hashlib.sha256(creq.encode()).hexdigest()}"
    key = sigv4a.public_key(SigproxyCredentials(v.access_key, v.secret_key))
    # awscrt signs the same request: its signature verifies only over awscrt's string to sign, with awscrt's key.
    crt_request = crt_http.HttpRequest(handler.command, handler.path, crt_http.HttpHeaders(
        [(n, val) for n in names if n not in _CRT_ADDS for val in handler.headers.get_all(n) or ()]))
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4_ASYMMETRIC,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(v.access_key, v.secret_key),
        region=region_set, service=service, date=datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        use_double_uri_encode=not s3, should_normalize_uri_path=not s3, signed_body_value=payload,
        signed_body_header_type=(crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256
                                 if "x-amz-content-sha256" in names else crt_auth.AwsSignedBodyHeaderType.NONE))
    crt_auth.aws_sign_request(crt_request, config).result()
    crt_signature = crt_request.headers.get("Authorization").rsplit("Signature=", 1)[1]
    ecdsa = ec.ECDSA(hashes.SHA256())
    try:
        key.verify(bytes.fromhex(crt_signature), sts.encode(), ecdsa)
    except InvalidSignature:
        raise ValueError("verifier fault: awscrt's string to sign or key differs from the verifier's") from None
    try:
        key.verify(bytes.fromhex(signature), sts.encode(), ecdsa)
    except InvalidSignature:
        raise ValueError("SignatureDoesNotMatch") from None
    return {"service": service, "region_set": region_set, "signed_headers": names, "content_sha256": declared,
            "path": handler.path, "body_sha256": hashlib.sha256(body).hexdigest(), "algorithm": sigv4a.ALGORITHM}


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of concurrent upstream connections (tests/integration/
    # test_workers.py sends 200) would wait out SYN retransmits for seconds.
    request_queue_size = 256


def start_verifier(access_key: str, secret_key: str, *,
                   require_content_sha256: bool = False) -> tuple[Verifier, Callable[[], None]]:
    """``(verifier, stop)``: listening on 127.0.0.1 (port 0) before this returns."""
    verifier = Verifier("", access_key, secret_key)

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            try:
                answer, status = _check(self, body, verifier, require_content_sha256), 200
            except ValueError as exc:
                answer, status = {"error": str(exc)}, 403
            verifier.seen.append({"status": status, **answer})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 403 and require_content_sha256:
                self.send_header("x-aoss-response-hint", "X01:gw-helper-deny")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    verifier.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return verifier, stop

"""Inbound verification of a client's SigV4 signature, judged by signatures that others made: AWS's own
test suite (signed requests published with their secret) and botocore's signers (header and query auth,
S3 and other services). Tampering with any signed part, a wrong secret or key id, or a stale date fails."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigproxy.authlimit import AuthFailures
from sigproxy.errors import ClientSignatureInvalid, TooManyAuthFailures
from sigproxy.inbound import ReceivedRequest, parse_authorization, verify_header_auth, verify_presigned
from sigproxy.signing import EMPTY_SHA256, Signer, sha256_hex
from tests.unit.test_signing_vectors import CASES, ERRATA, SUITE_CREDS, SUITE_TIME, SuiteCase, parse_raw_request

SIGNER = Signer()
KEY_ID = "main"
SECRET = "local-client-secret/with+odd=chars"
WHEN = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def received_from_sreq(case: SuiteCase) -> ReceivedRequest:
    method, path, query, headers, _ = parse_raw_request(case.sreq)
    return ReceivedRequest(method, path, query, headers)


SUITE_OK = [c for c in CASES if c.name not in ERRATA]


@pytest.mark.parametrize("case", SUITE_OK, ids=[c.name for c in SUITE_OK])
def test_aws_suite_signed_requests_verify(case: SuiteCase) -> None:
    req = received_from_sreq(case)
    auth = verify_header_auth(req, secret=SUITE_CREDS.secret_access_key, expected_key_id="AKIDEXAMPLE",
                              payload_hashes=[sha256_hex(case.body)], now=SUITE_TIME, signer=SIGNER)
    assert auth.service == "service" and auth.region == "us-east-1"


@pytest.mark.parametrize("case", SUITE_OK[:6], ids=[c.name for c in SUITE_OK[:6]])
def test_aws_suite_wrong_secret_or_key_fails(case: SuiteCase) -> None:
    req = received_from_sreq(case)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify_header_auth(req, secret="not-the-secret", expected_key_id="AKIDEXAMPLE",
                           payload_hashes=[sha256_hex(case.body)], now=SUITE_TIME, signer=SIGNER)
    with pytest.raises(ClientSignatureInvalid, match="key id"):
        verify_header_auth(req, secret=SUITE_CREDS.secret_access_key, expected_key_id="other",
                           payload_hashes=[sha256_hex(case.body)], now=SUITE_TIME, signer=SIGNER)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify_header_auth(req, secret=SUITE_CREDS.secret_access_key, expected_key_id="AKIDEXAMPLE",
                           payload_hashes=[sha256_hex(case.body + b"x")], now=SUITE_TIME, signer=SIGNER)


def boto_sign(auth_cls: type[SigV4Auth], method: str, url: str, *, service: str, region: str = "eu-west-1",
              headers: dict[str, str] | None = None, body: bytes = b"", when: datetime = WHEN,
              secret: str = SECRET, expires: int | None = None) -> AWSRequest:
    creds = BotoCredentials(KEY_ID, secret)
    auth = auth_cls(creds, service, region) if expires is None else auth_cls(creds, service, region, expires)  # type: ignore[call-arg]
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when.replace(tzinfo=None)):
        auth.add_auth(request)
    return request


def as_received(request: AWSRequest, *, host: str | None = None) -> ReceivedRequest:
    parts = urlsplit(request.url)
    headers = [(k, v) for k, v in request.headers.items()]
    headers.append(("Host", host or parts.netloc))
    return ReceivedRequest(request.method, parts.path or "/", parts.query, headers)


def verify(req: ReceivedRequest, hashes: list[str], *, now: datetime = WHEN, secret: str = SECRET) -> None:
    verify_header_auth(req, secret=secret, expected_key_id=KEY_ID, payload_hashes=hashes, now=now, signer=SIGNER)


SERVICES = [("dynamodb", "https://dynamodb.eu-west-1.amazonaws.com/"),
            ("sts", "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"),
            ("execute-api", "https://abc.execute-api.eu-west-1.amazonaws.com/prod/a%20b/./c?x=1&x=0&y"),
            ("es", "https://search-x.eu-west-1.es.amazonaws.com/idx/_search?q=a%2Bb")]


@pytest.mark.parametrize(("service", "url"), SERVICES)
def test_botocore_header_auth_verifies(service: str, url: str) -> None:
    body = b'{"TableName": "t"}'
    request = boto_sign(SigV4Auth, "POST", url, service=service, body=body,
                        headers={"Content-Type": "application/x-amz-json-1.0",
                                 "X-Amz-Target": "DynamoDB_20120810.GetItem"})
    verify(as_received(request), [sha256_hex(body)])
    with pytest.raises(ClientSignatureInvalid):
        verify(as_received(request), [sha256_hex(body + b" ")])
    tampered = as_received(request)
    tampered = ReceivedRequest(tampered.method, tampered.path, tampered.query,
                               [(k, "DynamoDB_20120810.DeleteTable" if k == "X-Amz-Target" else v)
                                for k, v in tampered.headers])
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(tampered, [sha256_hex(body)])
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(as_received(request, host="evil.example"), [sha256_hex(body)])
    moved = as_received(request)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(ReceivedRequest("PUT", moved.path, moved.query, moved.headers), [sha256_hex(body)])
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(ReceivedRequest(moved.method, moved.path + "x", moved.query, moved.headers), [sha256_hex(body)])
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(as_received(request), [sha256_hex(body)], secret=SECRET + "x")


def test_s3_header_auth_with_declared_payload_hash() -> None:
    url = "https://bucket.s3.eu-west-1.amazonaws.com/key%20with%20space/%E2%82%AC?x-id=PutObject"
    seen = set()
    for scheme, body in (("https", b"x" * 10), ("http", b"data")):
        request = boto_sign(S3SigV4Auth, "PUT", url.replace("https", scheme), service="s3", body=body)
        claimed = request.headers["X-Amz-Content-SHA256"]
        seen.add(claimed)
        verify(as_received(request), [claimed])
        with pytest.raises(ClientSignatureInvalid):
            verify(as_received(request), [sha256_hex(b"other")])
    assert len(seen) == 2


S3_SLASH_SPELLINGS = ["/bucket/q%2Fr", "/bucket/q%2fr", "/bucket/q/r"]


@pytest.mark.parametrize("service", ["s3", "s3-outposts"])
@pytest.mark.parametrize("sent", S3_SLASH_SPELLINGS)
def test_s3_encoded_slash_verifies_as_s3_servers_check_it(service: str, sent: str) -> None:
    """A client that signed the path S3 servers compute (botocore's S3SigV4Auth for the key ``q/r``) verifies
    however it spelled the slash on the wire, for every S3 signing name, as RGW accepts it
    (tests/integration/test_rgw.py::test_key_spellings); the same signature on another key does not."""
    request = boto_sign(S3SigV4Auth, "PUT", "https://h.example/bucket/q/r", service=service, body=b"x")
    got = as_received(request)
    claimed = [request.headers["X-Amz-Content-SHA256"]]
    verify(ReceivedRequest(got.method, sent, got.query, got.headers), claimed)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify(ReceivedRequest(got.method, "/bucket/q%2Fs", got.query, got.headers), claimed)


@pytest.mark.parametrize("sent", S3_SLASH_SPELLINGS)
def test_s3_presigned_encoded_slash_verifies(sent: str) -> None:
    """The same for a presigned URL: verify_presigned tries the same path spellings as header auth."""
    got = as_received(presign(S3SigV4QueryAuth, "https://h.example/bucket/q/r", "s3"))
    verify_presigned(ReceivedRequest(got.method, sent, got.query, got.headers), secret=SECRET,
                     expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)


def test_time_window() -> None:
    request = boto_sign(SigV4Auth, "GET", SERVICES[1][1], service="sts")
    req = as_received(request)
    verify(req, [EMPTY_SHA256], now=WHEN + timedelta(minutes=14, seconds=59))
    verify(req, [EMPTY_SHA256], now=WHEN - timedelta(minutes=14))
    with pytest.raises(ClientSignatureInvalid, match="15 minutes"):
        verify(req, [EMPTY_SHA256], now=WHEN + timedelta(minutes=15, seconds=1))
    with pytest.raises(ClientSignatureInvalid, match="15 minutes"):
        verify(req, [EMPTY_SHA256], now=WHEN - timedelta(minutes=16))


def test_missing_signed_header_or_date() -> None:
    request = boto_sign(SigV4Auth, "GET", SERVICES[1][1], service="sts")
    req = as_received(request)
    no_date = ReceivedRequest(req.method, req.path, req.query, [(k, v) for k, v in req.headers if k != "X-Amz-Date"])
    with pytest.raises(ClientSignatureInvalid, match="X-Amz-Date"):
        verify(no_date, [EMPTY_SHA256])
    no_host = ReceivedRequest(req.method, req.path, req.query, [(k, v) for k, v in req.headers if k != "Host"])
    with pytest.raises(ClientSignatureInvalid, match="'host' is not in the request"):
        verify(no_host, [EMPTY_SHA256])


@pytest.mark.parametrize("value", [
    "", "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256 Credential=a/20260101/x/y/aws4_request",
    "AWS4-HMAC-SHA256 Credential=main/20260101/r/s/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 Credential=main/2026/r/s/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=main/20260101/r/s/aws4_request, SignedHeaders=x-amz-date, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=main/20260101/r/s/aws4_request, SignedHeaders=x;host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=main/20260101/r/s/aws4_request, SignedHeaders=host, Signature=" + "G" * 64,
    "AWS4-HMAC-SHA256 Credential=main/20260101/r/s/aws4_request, SignedHeaders=host, Signature=00, Signature=11",
    "AWS4-HMAC-SHA256 " + "x" * 9000,
])
def test_malformed_authorization(value: str) -> None:
    with pytest.raises(ClientSignatureInvalid):
        parse_authorization(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parse_authorization_raises_only_its_error(value: str) -> None:
    with contextlib.suppress(ClientSignatureInvalid):
        parse_authorization(value)


def presign(auth_cls: type[SigV4QueryAuth], url: str, service: str, *, expires: int = 300,
            when: datetime = WHEN) -> AWSRequest:
    return boto_sign(auth_cls, "GET", url, service=service, expires=expires, when=when)


@pytest.mark.parametrize(("auth_cls", "service", "url"), [
    (S3SigV4QueryAuth, "s3", "https://bucket.s3.eu-west-1.amazonaws.com/a/b%20c.txt?versionId=3&response-content-type=text%2Fplain"),
    (SigV4QueryAuth, "sts", "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"),
])
def test_botocore_presigned_urls_verify(auth_cls: type[SigV4QueryAuth], service: str, url: str) -> None:
    request = presign(auth_cls, url, service)
    req = as_received(request)
    stripped = verify_presigned(req, secret=SECRET, expected_key_id=KEY_ID, now=WHEN + timedelta(seconds=299),
                                signer=SIGNER)
    assert stripped == urlsplit(url).query
    with pytest.raises(ClientSignatureInvalid, match="expired"):
        verify_presigned(req, secret=SECRET, expected_key_id=KEY_ID, now=WHEN + timedelta(seconds=301), signer=SIGNER)
    with pytest.raises(ClientSignatureInvalid, match="future"):
        verify_presigned(req, secret=SECRET, expected_key_id=KEY_ID, now=WHEN - timedelta(minutes=16), signer=SIGNER)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify_presigned(req, secret="other", expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)
    longer = req.query.replace("X-Amz-Expires=300", "X-Amz-Expires=3600")
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify_presigned(ReceivedRequest(req.method, req.path, longer, req.headers), secret=SECRET,
                         expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)
    with pytest.raises(ClientSignatureInvalid, match="does not match"):
        verify_presigned(ReceivedRequest("DELETE", req.path, req.query, req.headers), secret=SECRET,
                         expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)


@pytest.mark.parametrize("expires", ["0", "604801", "9" * 4301, "-1", "1e3", "٣"])
def test_presigned_expires_out_of_range(expires: str) -> None:
    """Found by fuzzing: a 4301-digit X-Amz-Expires made int() raise ValueError (a 500 instead of a 403)."""
    request = presign(S3SigV4QueryAuth, "https://b.s3.amazonaws.com/k", "s3")
    req = as_received(request)
    query = req.query.replace("X-Amz-Expires=300", f"X-Amz-Expires={expires}")
    with pytest.raises(ClientSignatureInvalid, match="X-Amz-Expires"):
        verify_presigned(ReceivedRequest(req.method, req.path, query, req.headers), secret=SECRET,
                         expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)


def test_presigned_needs_every_parameter() -> None:
    request = presign(S3SigV4QueryAuth, "https://b.s3.amazonaws.com/k", "s3")
    req = as_received(request)
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                 "X-Amz-Signature"):
        query = "&".join(p for p in req.query.split("&") if not p.startswith(name + "="))
        with pytest.raises(ClientSignatureInvalid):
            verify_presigned(ReceivedRequest(req.method, req.path, query, req.headers), secret=SECRET,
                             expected_key_id=KEY_ID, now=WHEN, signer=SIGNER)


def test_auth_failures_window() -> None:
    now = [100.0]
    failures = AuthFailures(3, 60, clock=lambda: now[0], max_addresses=2)
    for _ in range(3):
        failures.check("10.0.0.1")
        failures.record("10.0.0.1")
    with pytest.raises(TooManyAuthFailures) as info:
        failures.check("10.0.0.1")
    assert info.value.retry_after == 60
    failures.check("10.0.0.2")  # another address is not affected
    now[0] += 59.5
    with pytest.raises(TooManyAuthFailures) as info:
        failures.check("10.0.0.1")
    assert info.value.retry_after == 1
    now[0] += 1
    failures.check("10.0.0.1")  # the window has passed
    failures.record("10.0.0.3")
    failures.record("10.0.0.4")
    failures.record("10.0.0.5")  # bounded: the oldest address is forgotten
    assert len(failures._entries) == 2

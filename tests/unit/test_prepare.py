"""sigproxy.prepare: a routed request -> the exact signed request that goes upstream."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.handlers import S3_SIGNING_NAMES

from sigproxy.errors import UnsupportedRequest
from sigproxy.prepare import SignedRequest, payload_hash_for, presign_request, sign_request, untouched_request
from sigproxy.routing import parse_absolute_target
from sigproxy.signing import (
    EMPTY_SHA256,
    SIGNING_POLICIES,
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    SigningPolicy,
    policy_for,
)

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION = "FwoGZXIvYXdzEXAMPLE/SESSION+TOKEN=="
NOW = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
STAMP = "20150830T123600Z"
BODY = b"hello world"
BODY_SHA = hashlib.sha256(BODY).hexdigest()

CREDS = Credentials(KEY_ID, SECRET)
SESSION_CREDS = Credentials(KEY_ID, SECRET, session_token=SESSION)

# What a client may send that must never reach the upstream as sent.
CLIENT_NOISE = [
    ("Authorization", "AWS4-HMAC-SHA256 Credential=main/20240101/eu-west-1/s3/aws4_request, Signature=old"),
    ("X-Amz-Date", "20240101T000000Z"),
    ("X-Amz-Security-Token", "client-token"),
    ("Host", "wrong.example"),
    ("Content-Length", "999"),
    ("Proxy-Authorization", "Basic bWFpbjp4"),
    ("X-Sigproxy-Connection", "main"),
    ("X-Sigproxy-Region", "eu-west-1"),
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "1"),
    ("Expect", "100-continue"),
    ("Transfer-Encoding", "chunked"),
]
STRIPPED = {k.lower() for k, _ in CLIENT_NOISE} - {"authorization", "x-amz-date", "host", "content-length"}


def sign(url: str, headers: list[tuple[str, str]], *, service: str, region: str = "eu-west-1",
         creds: Credentials = CREDS, body: bytes = b"", method: str = "PUT",
         upstream_scheme: str | None = None) -> SignedRequest:
    claimed = next((v for k, v in headers if k.lower() == "x-amz-content-sha256"), None)
    return sign_request(
        Signer(), creds, method=method, target=parse_absolute_target(url), headers=headers,
        payload_hash=payload_hash_for(claimed, body), body_length=len(body), service=service, region=region,
        now=NOW, upstream_scheme=upstream_scheme,
    )


def as_dict(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Headers by lower-case name, asserting that none is repeated."""
    out = {k.lower(): v for k, v in headers}
    assert len(out) == len(headers), headers
    return out


def signed_headers(authorization: str) -> list[str]:
    return authorization.split("SignedHeaders=")[1].split(",", maxsplit=1)[0].split(";")


class TestSignRequestS3:
    URL = "https://bucket.s3.eu-west-1.amazonaws.com/dir/key%20x.txt?x-id=PutObject"

    def test_headers(self) -> None:
        """S3 gets Host, X-Amz-Date, X-Amz-Content-SHA256 (the body's hash), Authorization and Content-Length;
        the client's own auth, hop-by-hop, Proxy-* and X-Sigproxy-* headers are gone."""
        req = sign(self.URL, [*CLIENT_NOISE, ("Content-Type", "text/plain"), ("User-Agent", "t/1")],
                   service="s3", body=BODY)
        headers = as_dict(req.headers)
        assert headers == {
            "content-type": "text/plain",
            "user-agent": "t/1",
            "host": "bucket.s3.eu-west-1.amazonaws.com",
            "x-amz-date": STAMP,
            "x-amz-content-sha256": BODY_SHA,
            "authorization": req.signature.authorization,
            "content-length": str(len(BODY)),
        }
        assert not STRIPPED & set(headers)
        assert req.method == "PUT"
        assert req.url == self.URL

    def test_authorization(self) -> None:
        """Authorization carries the scope and signs host, content-type and x-amz-* but not user-agent."""
        req = sign(self.URL, [("Content-Type", "text/plain"), ("User-Agent", "t/1"), ("X-Amz-Meta-A", "1")],
                   service="s3", body=BODY)
        authz = as_dict(req.headers)["authorization"]
        assert authz.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20150830/eu-west-1/s3/aws4_request, ")
        assert signed_headers(authz) == ["content-type", "host", "x-amz-content-sha256", "x-amz-date",
                                         "x-amz-meta-a"]
        assert authz.endswith(f"Signature={req.signature.signature}")

    def test_empty_body(self) -> None:
        """Without a body there is no Content-Length and S3's payload hash is the empty string's."""
        req = sign("https://bucket.s3.amazonaws.com/", [], service="s3", method="GET")
        headers = as_dict(req.headers)
        assert "content-length" not in headers
        assert headers["x-amz-content-sha256"] == EMPTY_SHA256

    def test_client_hash_kept_once(self) -> None:
        """The client's X-Amz-Content-SHA256 (UNSIGNED-PAYLOAD) is kept, and sent only once."""
        req = sign(self.URL, [("x-amz-content-sha256", UNSIGNED_PAYLOAD)], service="s3", body=BODY)
        assert as_dict(req.headers)["x-amz-content-sha256"] == UNSIGNED_PAYLOAD

    def test_session_token(self) -> None:
        """With a session token, X-Amz-Security-Token is ours (not the client's) and signed."""
        req = sign(self.URL, CLIENT_NOISE, service="s3", creds=SESSION_CREDS, body=BODY)
        headers = as_dict(req.headers)
        assert headers["x-amz-security-token"] == SESSION
        assert "x-amz-security-token" in signed_headers(headers["authorization"])

    def test_no_session_token(self) -> None:
        """Without a session token no X-Amz-Security-Token is sent, even if the client sent one."""
        req = sign(self.URL, CLIENT_NOISE, service="s3", body=BODY)
        assert "x-amz-security-token" not in as_dict(req.headers)

    def test_presign_params_dropped(self) -> None:
        """A client's presign query parameters are not forwarded with header auth; other pairs are."""
        url = ("https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&versionId=3"
               "&X-Amz-Credential=main%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=dead"
               "&x-amz-date=20240101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host")
        req = sign(url, [], service="s3", region="us-east-1", method="GET")
        assert req.url == "https://bucket.s3.amazonaws.com/k?versionId=3"

    def test_upstream_scheme(self) -> None:
        """upstream_scheme switches the scheme of the URL sent; Host stays as the client addressed it."""
        req = sign("http://bucket.s3.amazonaws.com/k", [], service="s3", region="us-east-1",
                   upstream_scheme="https", method="GET")
        assert req.url == "https://bucket.s3.amazonaws.com/k"
        assert as_dict(req.headers)["host"] == "bucket.s3.amazonaws.com"

    def test_non_default_port(self) -> None:
        """A non-default port is part of Host and of the URL."""
        req = sign("http://127.0.0.1:5000/bucket/k", [], service="s3", region="us-east-1", method="GET")
        assert as_dict(req.headers)["host"] == "127.0.0.1:5000"
        assert req.url == "http://127.0.0.1:5000/bucket/k"


class TestSignRequestOtherServices:
    URL = "https://sqs.eu-west-1.amazonaws.com/"
    FORM = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]

    def test_no_content_sha_unless_sent(self) -> None:
        """Outside S3, X-Amz-Content-SHA256 is not added when the client did not send one."""
        req = sign(self.URL, [*CLIENT_NOISE, *self.FORM], service="sqs", body=BODY, method="POST")
        headers = as_dict(req.headers)
        assert set(headers) == {"content-type", "host", "x-amz-date", "authorization", "content-length"}
        assert signed_headers(headers["authorization"]) == ["content-type", "host", "x-amz-date"]
        assert req.signature.canonical_request.endswith(BODY_SHA)

    def test_content_sha_when_sent(self) -> None:
        """Outside S3, a client-sent X-Amz-Content-SHA256 is sent once, with the hash that was signed."""
        req = sign(self.URL, [("X-Amz-Content-SHA256", "garbage"), *self.FORM], service="sqs", body=BODY,
                   method="POST")
        headers = as_dict(req.headers)
        assert headers["x-amz-content-sha256"] == BODY_SHA
        assert "x-amz-content-sha256" in signed_headers(headers["authorization"])

    def test_content_sha_named_in_connection(self) -> None:
        """A client-sent X-Amz-Content-SHA256 that its Connection header names is still what asks for the header
        outside S3: sent once, signed, with the hash that was signed."""
        req = sign(self.URL, [("Connection", "X-Amz-Content-SHA256"), ("X-Amz-Content-SHA256", "garbage"),
                              *self.FORM], service="sqs", body=BODY, method="POST")
        headers = as_dict(req.headers)
        assert headers["x-amz-content-sha256"] == BODY_SHA
        assert "x-amz-content-sha256" in signed_headers(headers["authorization"])

    def test_session_token(self) -> None:
        """With a session token outside S3, X-Amz-Security-Token is sent and signed."""
        req = sign(self.URL, self.FORM, service="sqs", creds=SESSION_CREDS, body=BODY, method="POST")
        headers = as_dict(req.headers)
        assert headers["x-amz-security-token"] == SESSION
        assert signed_headers(headers["authorization"]) == ["content-type", "host", "x-amz-date",
                                                            "x-amz-security-token"]

    def test_no_body(self) -> None:
        """Without a body there is no Content-Length."""
        req = sign(self.URL + "?Action=ListQueues", [], service="sqs", method="GET")
        assert "content-length" not in as_dict(req.headers)


class TestPresignRequest:
    URL = ("https://bucket.s3.amazonaws.com/k%20y?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=old%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z"
           "&X-Amz-Expires=60&X-Amz-SignedHeaders=host&x-amz-security-token=client&X-Amz-Signature=dead")

    def presign(self, creds: Credentials = CREDS, service: str = "s3") -> SignedRequest:
        return presign_request(
            Signer(), creds, method="GET", target=parse_absolute_target(self.URL),
            headers=[("User-Agent", "t/1"), ("X-Sigproxy-Connection", "main")], service=service,
            region="us-east-1", now=NOW, expires=3600,
        )

    def test_query(self) -> None:
        """The presigned query holds the client's other pairs, then fresh auth params, X-Amz-Signature last;
        none of the client's presign params survive."""
        req = self.presign()
        parts = urlsplit(req.url)
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "bucket.s3.amazonaws.com", "/k%20y")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        assert [k for k, _ in pairs] == ["versionId", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                                         "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"]
        values = dict(pairs)
        assert values["X-Amz-Credential"] == f"{KEY_ID}/20150830/us-east-1/s3/aws4_request"
        assert values["X-Amz-Date"] == STAMP
        assert values["X-Amz-Expires"] == "3600"
        assert values["X-Amz-SignedHeaders"] == "host"
        assert values["X-Amz-Signature"] == req.signature.signature
        assert parts.query.endswith(f"&X-Amz-Signature={req.signature.signature}")
        assert "dead" not in req.url
        assert "old" not in req.url
        assert "client" not in req.url

    def test_session_token(self) -> None:
        """With a session token the presigned URL carries ours, once."""
        pairs = parse_qsl(urlsplit(self.presign(SESSION_CREDS).url).query)
        tokens = [v for k, v in pairs if k.lower() == "x-amz-security-token"]
        assert tokens == [SESSION]

    def test_payload_hash(self) -> None:
        """S3 presigns with UNSIGNED-PAYLOAD; other services with the empty body's hash."""
        assert self.presign().signature.canonical_request.endswith("\n" + UNSIGNED_PAYLOAD)
        assert self.presign(service="execute-api").signature.canonical_request.endswith("\n" + EMPTY_SHA256)

    def test_headers(self) -> None:
        """The headers to send with a presigned URL are the client's, minus X-Sigproxy-*, plus Host."""
        assert self.presign().headers == (("User-Agent", "t/1"), ("Host", "bucket.s3.amazonaws.com"))


class TestPayloadHashFor:
    @pytest.mark.parametrize(
        "claimed", [BODY_SHA, EMPTY_SHA256, UNSIGNED_PAYLOAD, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
    )
    def test_kept(self, claimed: str) -> None:
        """A lower-case hex hash, UNSIGNED-PAYLOAD and STREAMING-UNSIGNED-PAYLOAD-TRAILER are kept as sent."""
        assert payload_hash_for(claimed, b"something else") == claimed
        assert payload_hash_for(f" {claimed} ", b"") == claimed

    @pytest.mark.parametrize("claimed", [None, "", "garbage", BODY_SHA.upper(), BODY_SHA[:-1], "unsigned-payload"])
    def test_computed(self, claimed: str | None) -> None:
        """Anything else is replaced by the body's hash (the empty string's for no body)."""
        assert payload_hash_for(claimed, BODY) == BODY_SHA
        assert payload_hash_for(claimed, b"") == EMPTY_SHA256

    @pytest.mark.parametrize(
        "claimed",
        ["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", " STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER "],
    )
    def test_sigv4a_chunk_signed_refused(self, claimed: str) -> None:
        """SigV4A chunk-signed uploads are refused with 400 unsupported_request naming the value."""
        with pytest.raises(UnsupportedRequest) as info:
            payload_hash_for(claimed, BODY)
        assert (info.value.status, info.value.code) == (400, "unsupported_request")
        assert claimed.strip() in info.value.message


@pytest.mark.parametrize("claimed", ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                     "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"])
def test_chunk_signed_mode_is_kept(claimed: str) -> None:
    """A SigV4 chunk-signed mode is kept: it is the payload hash of the seed signature."""
    assert payload_hash_for(claimed, BODY) == claimed


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs at NOW (it reads the clock through botocore.auth.get_current_datetime)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: NOW.replace(tzinfo=None))


class TestAgainstBotocore:
    @pytest.mark.usefixtures("frozen_botocore")
    def test_s3(self) -> None:
        """An S3 PUT signed by prepare equals botocore's S3SigV4Auth: same hash header and Authorization."""
        url = "https://bucket.s3.eu-west-1.amazonaws.com/dir/key%20x.txt?x-id=PutObject"
        headers = [("Content-Type", "text/plain"), ("X-Amz-Meta-Colour", "deep  blue")]
        ours = as_dict(sign(url, headers, service="s3", creds=SESSION_CREDS, body=BODY).headers)

        boto = AWSRequest(method="PUT", url=url, data=BODY, headers=dict(headers))
        botocore.auth.S3SigV4Auth(BotoCredentials(KEY_ID, SECRET, SESSION), "s3", "eu-west-1").add_auth(boto)

        for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token", "Authorization"):
            assert ours[name.lower()] == boto.headers[name], name

    @pytest.mark.usefixtures("frozen_botocore")
    @pytest.mark.parametrize(
        ("method", "url", "service", "headers", "body"),
        [
            ("POST", "https://sqs.eu-west-1.amazonaws.com/", "sqs",
             [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
             b"Action=ListQueues&Version=2012-11-05"),
            ("GET", "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/a%20b/./c?b=2&a=1&a=0", "execute-api",
             [("X-Amz-Meta-X", "1")], b""),
        ],
        ids=["sqs-post", "execute-api-get"],
    )
    def test_other_service(self, method: str, url: str, service: str, headers: list[tuple[str, str]],
                           body: bytes) -> None:
        """A non-S3 request signed by prepare equals botocore's SigV4Auth Authorization."""
        ours = as_dict(sign(url, headers, service=service, creds=SESSION_CREDS, body=body, method=method).headers)

        boto = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        botocore.auth.SigV4Auth(BotoCredentials(KEY_ID, SECRET, SESSION), service, "eu-west-1").add_auth(boto)

        assert "X-Amz-Content-SHA256" not in boto.headers
        for name in ("X-Amz-Date", "X-Amz-Security-Token", "Authorization"):
            assert ours[name.lower()] == boto.headers[name], name

    @pytest.mark.usefixtures("frozen_botocore")
    def test_s3_presign(self) -> None:
        """An S3 presigned URL from prepare carries the same signature as botocore's S3SigV4QueryAuth."""
        url = "https://bucket.s3.us-east-1.amazonaws.com/dir/key%20x.txt?versionId=3"
        ours = presign_request(
            Signer(), CREDS, method="GET", target=parse_absolute_target(url), headers=[], service="s3",
            region="us-east-1", now=NOW, expires=3600,
        )
        boto = AWSRequest(method="GET", url=url)
        botocore.auth.S3SigV4QueryAuth(BotoCredentials(KEY_ID, SECRET), "s3", "us-east-1",
                                       expires=3600).add_auth(boto)
        boto_query = dict(parse_qsl(urlsplit(boto.url).query))
        assert dict(parse_qsl(urlsplit(ours.url).query)) == boto_query
        assert boto_query["X-Amz-Signature"] == ours.signature.signature


class TestServiceTable:
    """What differs by signing name comes from sigproxy.signing.SIGNING_POLICIES, checked here against
    botocore: S3SigV4Auth for botocore's S3 signing names, SigV4Auth (given the same header) for the others."""

    JSON = b'{"query": {"match_all": {}}}'

    def test_members(self) -> None:
        """S3's rules for exactly botocore's S3 signing names (handlers.S3_SIGNING_NAMES); the payload hash
        header also for glacier and aoss; nothing else differs from plain SigV4."""
        assert {n for n, p in SIGNING_POLICIES.items() if p.s3} == set(S3_SIGNING_NAMES)
        assert {n for n, p in SIGNING_POLICIES.items() if p.chunked} == set(S3_SIGNING_NAMES)
        assert {n for n, p in SIGNING_POLICIES.items() if p.payload_header} == {*S3_SIGNING_NAMES, "glacier", "aoss"}
        assert policy_for("es") == policy_for("sqs") == SigningPolicy()

    @pytest.mark.usefixtures("frozen_botocore")
    @pytest.mark.parametrize("service", sorted(n for n, p in SIGNING_POLICIES.items() if p.payload_header))
    @pytest.mark.parametrize(("method", "body"), [("POST", JSON), ("GET", b"")], ids=["post", "get"])
    def test_payload_hash_header(self, service: str, method: str, body: bytes) -> None:
        """The issue's unsigned ``POST /index/_search`` (and a GET) gets X-Amz-Content-SHA256 = the body's
        hash, signed; botocore's signer computes the same Authorization."""
        url = "https://abc123.us-east-1.aoss.amazonaws.com/index/_search"
        headers = [("Content-Type", "application/json")]
        ours = as_dict(sign(url, headers, service=service, region="us-east-1", creds=SESSION_CREDS, body=body,
                            method=method).headers)
        assert ours["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
        assert signed_headers(ours["authorization"]) == ["content-type", "host", "x-amz-content-sha256",
                                                         "x-amz-date", "x-amz-security-token"]

        boto = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        boto_creds = BotoCredentials(KEY_ID, SECRET, SESSION)
        if service in S3_SIGNING_NAMES:
            botocore.auth.S3SigV4Auth(boto_creds, service, "us-east-1").add_auth(boto)
        else:
            # What the OpenSearch clients' signers do for aoss (and botocore's Glacier handler for uploads).
            boto.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
            botocore.auth.SigV4Auth(boto_creds, service, "us-east-1").add_auth(boto)
        assert ours["authorization"] == boto.headers["Authorization"]

    @pytest.mark.usefixtures("frozen_botocore")
    @pytest.mark.parametrize("service", sorted(S3_SIGNING_NAMES))
    def test_s3_paths(self, service: str) -> None:
        """Every S3 signing name sends the path S3 servers sign (``%2F`` as ``/``, dot segments and ``//``
        kept) and signs it as botocore's S3SigV4Auth does the URL sent."""
        req = sign("https://h.example/bucket/a%2Fb/../c//d!", [], service=service, region="us-east-1", body=BODY)
        assert req.url == "https://h.example/bucket/a/b/../c//d%21"
        boto = AWSRequest(method="PUT", url=req.url, data=BODY)
        botocore.auth.S3SigV4Auth(BotoCredentials(KEY_ID, SECRET), service, "us-east-1").add_auth(boto)
        assert as_dict(req.headers)["authorization"] == boto.headers["Authorization"]

    @pytest.mark.usefixtures("frozen_botocore")
    @pytest.mark.parametrize("service", sorted(S3_SIGNING_NAMES))
    def test_s3_presign(self, service: str) -> None:
        """Every S3 signing name presigns UNSIGNED-PAYLOAD over the S3 path, as botocore's S3SigV4QueryAuth."""
        url = "https://h.example/bucket/q%2Fr"
        ours = presign_request(Signer(), CREDS, method="GET", target=parse_absolute_target(url), headers=[],
                               service=service, region="us-east-1", now=NOW, expires=60)
        assert urlsplit(ours.url).path == "/bucket/q/r"
        boto = AWSRequest(method="GET", url="https://h.example/bucket/q/r")
        botocore.auth.S3SigV4QueryAuth(BotoCredentials(KEY_ID, SECRET), service, "us-east-1",
                                       expires=60).add_auth(boto)
        assert dict(parse_qsl(urlsplit(ours.url).query)) == dict(parse_qsl(urlsplit(boto.url).query))


def test_a_presigned_request_passed_through_keeps_its_own_headers_but_no_auth_or_hop_by_hop() -> None:
    """presigned = "passthrough": the URL as the client sent it; its headers without Authorization, proxy and
    hop-by-hop ones; Host and the body's length set again."""
    url = "https://bucket.s3.us-east-1.amazonaws.com/k%20ey?X-Amz-Signature=abc&x-id=GetObject"
    headers = [("Authorization", "AWS4-HMAC-SHA256 Credential=x"), ("authorization", "again"),
               ("Proxy-Authorization", "Basic eA=="), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
               ("Host", "client.example"), ("Range", "bytes=0-9"), ("X-Amz-Meta-A", "b")]
    wire, out = untouched_request(method="PUT", target=parse_absolute_target(url), headers=headers, body_length=5)
    assert wire == url
    assert out == (("Range", "bytes=0-9"), ("X-Amz-Meta-A", "b"), ("Host", "bucket.s3.us-east-1.amazonaws.com"),
                   ("Content-Length", "5"))

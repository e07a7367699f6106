"""The signer against published answers: AWS's SigV4 test suite and the worked S3 examples.

The suite (``tests/vectors/aws4_testsuite``, see its README) gives, for each raw request, the exact
canonical request, string to sign and ``Authorization`` value. Every one of its 31 cases runs here; none
is skipped.

How a ``.req`` becomes a :class:`CanonicalInput`:

* **path**: the request-line path as written, signed with the non-S3 policy. The suite writes paths
  unencoded (``/example space/``, ``/ሴ``); :func:`canonical_path` removes dot segments and empty
  segments and UriEncodes what is left, which gives the suite's single-encoded canonical URI. (A path
  that arrives already percent-encoded is encoded a second time, as botocore and the spec require for
  non-S3 services; the differential test covers that case.)
* **query**: ``normalize_query(raw)``, not the raw ``&``/``=`` split. The two agree for every case whose
  query is plain unreserved ASCII (checked below), but ``get-vanilla-utf8-query`` sends ``ሴ=bar``
  unencoded and expects ``%E1%88%B4=bar``: raw pairs would put the bare character into the canonical
  query. The proxy does the same: it normalises a query before signing and sends the normalised form.
* **headers**: every header of the ``.req`` (the suite signs them all). A line that starts with a space
  or tab continues the previous header; the suite's expected output (``my-header1:value1,value2,value3``)
  treats each continuation line as one more value of that header, so that is how it is read here. (A
  real HTTP/1.1 parser rejects or unfolds obs-fold before the proxy sees the request.)
* **payload hash**: ``sha256`` of the body after the blank line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sigproxy.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    CanonicalInput,
    Credentials,
    Signature,
    Signer,
    SigningPolicy,
    encode_query,
    normalize_query,
    normalize_s3_path,
    sha256_hex,
)

SUITE = Path(__file__).resolve().parents[1] / "vectors" / "aws4_testsuite"
SUITE_CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
SUITE_CASE_COUNT = 31


@dataclass(frozen=True)
class SuiteCase:
    name: str
    method: str
    path: str
    raw_query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    creq: str
    sts: str
    authz: str
    sreq: str


def parse_raw_request(text: str) -> tuple[str, str, str, tuple[tuple[str, str], ...], bytes]:
    """``(method, path, raw query, headers, body)`` of a suite ``.req``."""
    head, _, body = text.partition("\n\n")
    request_line, *lines = head.split("\n")
    method, rest = request_line.split(" ", 1)
    uri = rest.rsplit(" ", 1)[0]  # the path may hold a space ("GET /example space/ HTTP/1.1")
    path, _, raw_query = uri.partition("?")
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            headers.append((headers[-1][0], line))
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, path, raw_query, tuple(headers), body.encode("utf-8")


def load_suite() -> list[SuiteCase]:
    cases = []
    for req_file in sorted(SUITE.rglob("*.req")):
        name = req_file.stem

        def read(ext: str, req_file: Path = req_file, name: str = name) -> str:
            return (req_file.parent / f"{name}.{ext}").read_text(encoding="utf-8")

        method, path, raw_query, headers, body = parse_raw_request(read("req"))
        cases.append(
            SuiteCase(
                name,
                method,
                path,
                raw_query,
                headers,
                body,
                read("creq"),
                read("sts"),
                read("authz"),
                read("sreq"),
            )
        )
    return cases


CASES = load_suite()

# The two cases whose published files disagree with each other (see the suite README). The canonical
# request is checked against ``.creq`` as for every case; the string to sign and the signature are
# checked by signing the headers AWS evidently signed to produce ``.sts`` (found by recomputing the
# hash), and the Authorization header against the one in ``.sreq``, which names those headers.
ERRATA: dict[str, dict[str, str | None]] = {
    # ``.sts``/``.authz``/``.sreq`` leave Content-Length out of the signed headers.
    "post-x-www-form-urlencoded": {"content-length": None},
    # ... and were computed with ``charset=utf8`` (no hyphen); ``.authz`` still lists content-length.
    "post-x-www-form-urlencoded-parameters": {
        "content-length": None,
        "content-type": "application/x-www-form-urlencoded; charset=utf8",
    },
}


def suite_input(case: SuiteCase, headers: tuple[tuple[str, str], ...] | None = None) -> CanonicalInput:
    return CanonicalInput(
        method=case.method,
        path=case.path,
        query=normalize_query(case.raw_query),
        headers=case.headers if headers is None else headers,
        payload_hash=sha256_hex(case.body),
    )


def sign_suite(req: CanonicalInput) -> Signature:
    return Signer().sign_headers(req, SUITE_CREDS, region="us-east-1", service="service", now=SUITE_TIME)


def sreq_authorization(sreq: str) -> str:
    match = re.search(r"^Authorization: (.*)$", sreq, re.MULTILINE)
    assert match, "no Authorization line in .sreq"
    return match.group(1)


def test_the_whole_suite_is_here() -> None:
    assert len(CASES) == SUITE_CASE_COUNT
    assert len({c.name for c in CASES}) == SUITE_CASE_COUNT


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_aws_suite_case(case: SuiteCase) -> None:
    sig = sign_suite(suite_input(case))
    assert sig.canonical_request == case.creq

    overrides = ERRATA.get(case.name)
    if overrides is None:
        assert sig.string_to_sign == case.sts
        assert sig.authorization == case.authz
        assert sreq_authorization(case.sreq) == case.authz
        return

    # Upstream erratum: sign what AWS actually signed for .sts/.authz.
    headers = tuple(
        (name, overrides.get(name.lower(), value))
        for name, value in case.headers
        if not (name.lower() in overrides and overrides[name.lower()] is None)
    )
    sig = sign_suite(suite_input(case, headers))
    assert sig.string_to_sign == case.sts
    assert sig.signature == case.authz.rsplit("Signature=", 1)[1]
    assert sig.authorization == sreq_authorization(case.sreq)


@pytest.mark.parametrize("name", sorted(ERRATA))
def test_errata_are_in_the_published_files(name: str) -> None:
    """If a corrected copy of the suite replaces these files, this fails: drop the ERRATA entry."""
    case = next(c for c in CASES if c.name == name)
    assert hashlib.sha256(case.creq.encode()).hexdigest() != case.sts.rsplit("\n", 1)[1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_query_input_choice(case: SuiteCase) -> None:
    """Raw pairs and ``normalize_query`` agree except where the suite sends unencoded UTF-8."""
    raw = tuple(
        (k, v if eq else None) for k, eq, v in (part.partition("=") for part in case.raw_query.split("&") if part)
    )
    if case.name == "get-vanilla-utf8-query":
        assert raw == (("\u1234", "bar"),)
        assert normalize_query(case.raw_query) == (("%E1%88%B4", "bar"),)
    else:
        assert normalize_query(case.raw_query) == raw


def test_suite_session_token_header_is_signed_only_when_present() -> None:
    before = next(c for c in CASES if c.name == "post-sts-header-before")
    after = next(c for c in CASES if c.name == "post-sts-header-after")
    assert "x-amz-security-token" in sign_suite(suite_input(before)).signed_headers
    assert "x-amz-security-token" not in sign_suite(suite_input(after)).signed_headers
    assert "X-Amz-Security-Token:" in after.sreq  # added after signing, as the case intends


# --- Amazon S3 worked examples -------------------------------------------------------------------
# "Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk"
# (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html) and "Authenticating
# Requests: Using Query Parameters" (.../API/sigv4-query-string-auth.html). The documented
# Authorization values have no space after the commas; S3 accepts both spellings, ours has ", ".

S3_CREDS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
S3_TIME = datetime(2013, 5, 24, tzinfo=UTC)
S3_HOST = "examplebucket.s3.amazonaws.com"
S3_STS_PREFIX = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
S3_CRED = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
PUT_BODY = b"Welcome to Amazon S3."
PUT_HASH = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"


@dataclass(frozen=True)
class S3Example:
    name: str
    method: str
    key: str
    raw_query: str
    extra_headers: tuple[tuple[str, str], ...]
    payload_hash: str
    creq: str
    sts_hash: str
    signed_headers: str
    signature: str


S3_EXAMPLES = [
    S3Example(
        "get-object",
        "GET",
        "/test.txt",
        "",
        (("Range", "bytes=0-9"),),
        EMPTY_SHA256,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
        f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}",
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    S3Example(
        "put-object",
        "PUT",
        "/test$file.text",
        "",
        (("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")),
        PUT_HASH,
        "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\nhost:examplebucket.s3.amazonaws.com\n"
        f"x-amz-content-sha256:{PUT_HASH}\nx-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
        f"date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n{PUT_HASH}",
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    S3Example(
        "get-bucket-lifecycle",
        "GET",
        "/",
        "lifecycle",
        (),
        EMPTY_SHA256,
        "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\n"
        f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
        f"host;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}",
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
        "host;x-amz-content-sha256;x-amz-date",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    ),
    S3Example(
        "get-bucket-list-objects",
        "GET",
        "/",
        "max-keys=2&prefix=J",
        (),
        EMPTY_SHA256,
        "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\n"
        f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
        f"host;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}",
        "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
]


def test_put_example_payload_hash() -> None:
    assert sha256_hex(PUT_BODY) == PUT_HASH


@pytest.mark.parametrize("ex", S3_EXAMPLES, ids=lambda e: e.name)
def test_s3_documented_header_auth(ex: S3Example) -> None:
    req = CanonicalInput(
        method=ex.method,
        # The key as S3 sends and signs it: "$" goes on the wire as "%24".
        path=normalize_s3_path(ex.key),
        query=normalize_query(ex.raw_query),
        headers=(
            ("Host", S3_HOST),
            *ex.extra_headers,
            ("x-amz-content-sha256", ex.payload_hash),
            ("x-amz-date", "20130524T000000Z"),
        ),
        payload_hash=ex.payload_hash,
    )
    sig = Signer().sign_headers(
        req, S3_CREDS, region="us-east-1", service="s3", now=S3_TIME, policy=SigningPolicy(s3=True)
    )
    assert sig.canonical_request == ex.creq
    assert sig.string_to_sign == S3_STS_PREFIX + ex.sts_hash
    assert sig.signature == ex.signature
    documented = f"{S3_CRED}SignedHeaders={ex.signed_headers},Signature={ex.signature}"
    assert sig.authorization.replace(", ", ",") == documented


def test_s3_documented_presigned_url() -> None:
    req = CanonicalInput(
        method="GET",
        path="/test.txt",
        query=(),
        headers=(("Host", S3_HOST),),
        payload_hash=UNSIGNED_PAYLOAD,
    )
    sig = Signer().presign(
        req,
        S3_CREDS,
        region="us-east-1",
        service="s3",
        now=S3_TIME,
        expires=86400,
        policy=SigningPolicy(s3=True),
    )
    auth_query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    )
    assert sig.canonical_request == (
        f"GET\n/test.txt\n{auth_query}\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    )
    assert sig.string_to_sign == (S3_STS_PREFIX + "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04")
    assert sig.signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    assert sig.authorization == ""
    assert encode_query(sig.query) == (
        f"{auth_query}&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )

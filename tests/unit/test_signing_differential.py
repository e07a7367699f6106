"""Differential tests: our signer and botocore's sign the same generated requests the same way.

Each example builds one request the way botocore would put it on the wire: the path percent-encoded
with botocore's own quoting (``percent_encode(path, safe="/~")``, sometimes leaving sub-delims
unencoded as other clients do), the query from ``percent_encode`` pairs (repeated keys, empty keys and
values, keys without ``=``, unicode), header values with runs of spaces and padding, repeated header
names. botocore signs it from the URL (``SigV4Auth``/``S3SigV4Auth``, ``SigV4QueryAuth``/
``S3SigV4QueryAuth``) with its clock patched (``botocore.auth.get_current_datetime``, which every
botocore signer reads in the installed version); our :class:`Signer` signs the *same* encoded path and
raw query pairs. The canonical request and the Authorization header (or the presigned query and its
signature) must be equal.

botocore is given only the headers the proxy signs (``host``, ``x-amz-*``, ``content-type``,
``content-md5``), so both sign the same set; botocore adds ``X-Amz-Date``, ``X-Amz-Security-Token``
and, for S3, ``X-Amz-Content-SHA256`` itself, and we add the same to our input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.utils import percent_encode, percent_encode_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigproxy.signing import (
    EMPTY_SHA256,
    PRESIGN_PARAMS,
    UNSIGNED_PAYLOAD,
    CanonicalInput,
    Credentials,
    Signer,
    SigningPolicy,
    amz_date,
    canonical_headers,
    canonical_path,
    encode_query,
    hash_text,
    normalize_query,
    normalize_s3_path,
    sha256_hex,
)

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SIGNER = Signer()

# The autouse ``clean_environ`` fixture is function scoped; it only scrubs the environment, which no
# example changes, so sharing it across examples is fine.
DIFF_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PROP_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- strategies ----------------------------------------------------------------------------------

SUB_DELIMS = "!$&'()*+,;=:@"
# Path and query text is built from fragments rather than single characters (far fewer draws per
# example): ASCII letters and digits, every reserved and unreserved punctuation mark, space, percent
# (alone and in escapes), and non-ASCII letters of two, three and four UTF-8 bytes.
FRAGMENTS = [
    *"aZ09-_.~ %+/?#[]",
    *SUB_DELIMS,
    "\u00e9",
    "\u00fc",
    "\u1234",
    "\u6f22",
    "\U0001f600",
    "abc",
    "a b",
    "  ",
    "..",
    "%41",
    "%2F",
    "%zz",
    "x=y",
    "k&v",
    "a+b",
]
text = st.lists(st.sampled_from(FRAGMENTS), max_size=4).map("".join)

path_segment = st.one_of(
    st.sampled_from(["", ".", "..", "a", "b.txt", "~user", "%41", "a%2Fb"]),
    st.lists(st.sampled_from([f for f in FRAGMENTS if "/" not in f]), min_size=1, max_size=4).map("".join),
)


# Strategies are built once, here, not inside the composites: building them per example is most of
# the cost of an example.
_segments = st.lists(path_segment, max_size=6)
_extra_path_safe = st.sampled_from(["", SUB_DELIMS])


@st.composite
def encoded_paths(draw: st.DrawFn) -> str:
    """A path as a client puts it on the wire: percent-encoded, with ``/``, dots and ``//`` kept."""
    raw = "/" + "/".join(draw(_segments))
    if draw(st.booleans()):
        raw += "/"
    # botocore quotes keys with safe "/~"; some clients also leave sub-delims as they are.
    return percent_encode(raw, safe="/~" + draw(_extra_path_safe))


_nonempty_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map("".join)
# A key may be empty only when "=" follows it ("=v", "="); a key sent without "=" is never empty.
_pair = st.one_of(st.tuples(text, text), st.tuples(_nonempty_text, st.none()))
_pairs = st.lists(_pair, max_size=6)
_unique_pairs = st.lists(_pair, max_size=6, unique_by=lambda kv: kv[0])


@st.composite
def query_pairs(draw: st.DrawFn, unique: bool = False) -> list[tuple[str, str | None]]:
    """Encoded ``(key, value)`` pairs (``None``: the key was sent without ``=``)."""
    raw = draw(_unique_pairs if unique else _pairs)
    if not unique and raw and draw(st.booleans()):
        raw.append(raw[0])  # an exact duplicate pair
    return [(percent_encode(k), None if v is None else percent_encode(v)) for k, v in raw]


_BASE_HEADER_NAMES = [
    "x-amz-meta-a",
    "x-amz-meta-key-2",
    "x-amz-meta-9",
    "x-amz-acl",
    "x-amz-storage-class",
    "x-amz-tagging",
    "content-type",
    "content-md5",
]
# Each name in several spellings: the signer must lower-case names and merge repeats across spellings.
_header_name = st.sampled_from(_BASE_HEADER_NAMES).flatmap(
    lambda n: st.sampled_from([n, n.upper(), n.title(), n[:3].upper() + n[3:]]).map(lambda spelled: (n, spelled))
)
# Values with padding, runs of spaces and tabs, and ordinary punctuation.
_header_value = st.lists(st.sampled_from([*"aZ09 \t-_.,;:=/\"'()", "  ", "   ", "abc", " x  y "]), max_size=6).map(
    "".join
)
_MD5_VALUES = ["1B2M2Y8AsgTpgAmY7PhCfg==", "XrY7u+Ae7tCTyyK7j1rNww==", "rL0Y20zC+Fzt72VPzMSk2A=="]
_header_specs = st.lists(
    st.tuples(
        _header_name,
        _header_value,
        st.sampled_from(_MD5_VALUES),
        st.one_of(st.none(), _header_value),  # a second header of the same name, other spelling
    ),
    max_size=4,
)


@st.composite
def amz_headers(draw: st.DrawFn, presign: bool = False) -> list[tuple[str, str]]:
    """Headers the proxy would sign, names in random case, some repeated."""
    out: list[tuple[str, str]] = []
    for (name, spelled), text_value, md5, again in draw(_header_specs):
        value = md5 if name == "content-md5" else text_value
        if presign and name == "content-type" and value == "application/x-www-form-urlencoded; charset=utf-8":
            continue  # botocore drops its own auto-set form content type from presigned URLs
        out.append((spelled, value))
        if again is not None:
            out.append((name.upper(), md5 if name == "content-md5" else again))
    return out


methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"])
hosts = st.sampled_from(
    ["example.amazonaws.com", "bucket.s3.us-west-2.amazonaws.com", "127.0.0.1:9000", "localhost:8443"]
)
regions = st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2", "cn-north-1"])
services = st.sampled_from(["service", "execute-api", "sqs", "es", "sts"])
# Session tokens: only their characters matter to signing ("+", "/", "=" need encoding in a query).
tokens = st.sampled_from(
    [None, "token", "FQoGZXIvYXdzEXAMPLE+/Tok//en==", "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4"]
)
times = st.integers(0, 3_000_000_000).map(lambda s: datetime(2000, 1, 1) + timedelta(seconds=s))


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class Generated:
    method: str
    host: str
    path: str
    query: list[tuple[str, str | None]]
    headers: list[tuple[str, str]]
    body: bytes
    token: str | None
    region: str
    service: str
    when: datetime  # naive UTC, as botocore's clock gives it

    @property
    def url(self) -> str:
        q = encode_query(self.query)
        return f"https://{self.host}{self.path}" + (f"?{q}" if q else "")

    @property
    def now(self) -> datetime:
        return self.when.replace(tzinfo=UTC)


def botocore_request(g: Generated) -> AWSRequest:
    request = AWSRequest(method=g.method, url=g.url, data=g.body)
    for name, value in g.headers:
        request.headers[name] = value  # HTTPHeaders appends: repeated names are kept
    return request


def run_botocore(auth: SigV4Auth, request: AWSRequest, when: datetime) -> str:
    """Sign with botocore at ``when``; return the canonical request it built."""
    captured: list[str] = []
    real_sts = auth.string_to_sign

    def spy(req: AWSRequest, creq: str) -> str:
        captured.append(creq)
        return real_sts(req, creq)

    def fixed_clock() -> datetime:
        return when

    auth.string_to_sign = spy  # type: ignore[method-assign]  # this signer object is used once
    # Every botocore SigV4 signer reads the time through this module-level name (a plain function,
    # not a MagicMock: cheaper per example).
    with mock.patch.object(botocore.auth, "get_current_datetime", new=fixed_clock):
        auth.add_auth(request)
    assert len(captured) == 1
    return captured[0]


def boto_creds(g: Generated) -> BotoCredentials:
    return BotoCredentials(ACCESS_KEY, SECRET_KEY, g.token)


def our_creds(g: Generated) -> Credentials:
    return Credentials(ACCESS_KEY, SECRET_KEY, g.token)


@st.composite
def generated(draw: st.DrawFn, *, s3: bool, presign: bool = False) -> Generated:
    query = draw(query_pairs(unique=presign))
    if presign:
        query = [(k, v) for k, v in query if unquote(k).lower() not in PRESIGN_PARAMS]
    return Generated(
        method=draw(methods),
        host=draw(hosts),
        path=draw(encoded_paths()),
        query=query,
        headers=draw(amz_headers(presign=presign)),
        body=b"" if presign else draw(st.binary(max_size=64)),
        token=draw(tokens),
        region=draw(regions),
        service="s3" if s3 else draw(services),
        when=draw(times),
    )


def host_of(g: Generated) -> tuple[str, str]:
    return ("host", g.host)


# --- header auth ---------------------------------------------------------------------------------


@DIFF_SETTINGS
@given(g=generated(s3=False), unsigned=st.booleans())
def test_header_auth_matches_botocore(g: Generated, unsigned: bool) -> None:
    request = botocore_request(g)
    extra: list[tuple[str, str]] = []
    if unsigned:
        request.context["payload_signing_enabled"] = False  # botocore sends UNSIGNED-PAYLOAD
        payload = UNSIGNED_PAYLOAD
        extra.append(("x-amz-content-sha256", UNSIGNED_PAYLOAD))
    else:
        payload = sha256_hex(g.body)
    boto_creq = run_botocore(SigV4Auth(boto_creds(g), g.service, g.region), request, g.when)

    headers = [host_of(g), *g.headers, ("x-amz-date", amz_date(g.now)), *extra]
    if g.token:
        headers.append(("x-amz-security-token", g.token))
    ours = SIGNER.sign_headers(
        CanonicalInput(g.method, g.path, tuple(g.query), tuple(headers), payload),
        our_creds(g),
        region=g.region,
        service=g.service,
        now=g.now,
    )
    assert ours.canonical_request == boto_creq
    assert ours.authorization == request.headers["Authorization"]


@DIFF_SETTINGS
@given(g=generated(s3=True), unsigned=st.booleans())
def test_s3_header_auth_matches_botocore(g: Generated, unsigned: bool) -> None:
    request = botocore_request(g)
    if unsigned:
        request.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": False})
        payload = UNSIGNED_PAYLOAD
    else:
        payload = sha256_hex(g.body)
    boto_creq = run_botocore(S3SigV4Auth(boto_creds(g), "s3", g.region), request, g.when)
    assert request.headers["X-Amz-Content-SHA256"] == payload

    headers = [host_of(g), *g.headers, ("x-amz-date", amz_date(g.now)), ("x-amz-content-sha256", payload)]
    if g.token:
        headers.append(("x-amz-security-token", g.token))
    ours = SIGNER.sign_headers(
        CanonicalInput(g.method, g.path, tuple(g.query), tuple(headers), payload),
        our_creds(g),
        region=g.region,
        service="s3",
        now=g.now,
        policy=SigningPolicy(s3=True),
    )
    assert ours.canonical_request == boto_creq
    assert ours.authorization == request.headers["Authorization"]


# --- query auth (presigned URLs) -----------------------------------------------------------------


def check_presign(g: Generated, auth: SigV4QueryAuth, policy: SigningPolicy, payload: str, expires: int) -> None:
    """botocore's query signer re-reads the query through ``parse_qs`` into a dict, so repeated keys
    collapse: presign examples use distinct keys (header auth covers repeats). It hashes the (empty)
    body for non-S3 services and uses UNSIGNED-PAYLOAD for S3."""
    request = botocore_request(g)
    boto_creq = run_botocore(auth, request, g.when)
    boto_query = urlsplit(request.url).query
    boto_pairs = parse_qsl(boto_query, keep_blank_values=True)

    ours = SIGNER.presign(
        CanonicalInput(g.method, g.path, tuple(g.query), (host_of(g), *g.headers), payload),
        our_creds(g),
        region=g.region,
        service=g.service,
        now=g.now,
        expires=expires,
        policy=policy,
    )
    assert ours.canonical_request == boto_creq
    assert ours.signature == boto_pairs[-1][1]
    assert boto_pairs[-1][0] == "X-Amz-Signature"
    # Same parameters on the wire (botocore spells a key sent without "=" as "key=").
    assert sorted(parse_qsl(encode_query(ours.query), keep_blank_values=True)) == sorted(boto_pairs)
    assert urlsplit(request.url).path == g.path


@DIFF_SETTINGS
@given(g=generated(s3=False, presign=True), expires=st.integers(1, 604800))
def test_presign_matches_botocore(g: Generated, expires: int) -> None:
    auth = SigV4QueryAuth(boto_creds(g), g.service, g.region, expires=expires)
    check_presign(g, auth, SigningPolicy(), EMPTY_SHA256, expires)


@DIFF_SETTINGS
@given(g=generated(s3=True, presign=True), expires=st.integers(1, 604800))
def test_s3_presign_matches_botocore(g: Generated, expires: int) -> None:
    auth = S3SigV4QueryAuth(boto_creds(g), "s3", g.region, expires=expires)
    check_presign(g, auth, SigningPolicy(s3=True), UNSIGNED_PAYLOAD, expires)


# --- normalisation properties --------------------------------------------------------------------

raw_text = st.text(max_size=30)
key_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


# Values a header may carry: any text, whitespace of every kind (tabs, NBSP, U+3000, vertical tab, U+0085) likely.
header_value = st.text(st.one_of(st.characters(exclude_categories=("Cs",)),
                                 st.sampled_from(" \t\x0b\x0c\x1c\x85\xa0\u2003\u3000")), max_size=24)


@PROP_SETTINGS
@given(value=header_value)
def test_canonical_header_values_are_trimmed_as_sigv4_says(value: str) -> None:
    """A value as the canonical request has it: trimmed, each run of whitespace one space (SigV4's Trimall,
    what botocore's _header_value does: ``" ".join(value.split())``), whatever whitespace it holds."""
    block, signed = canonical_headers([("X-Amz-Meta-A", value), ("Host", "h")])
    assert block == f"host:h\nx-amz-meta-a:{' '.join(value.split())}\n" and signed == "host;x-amz-meta-a"


@PROP_SETTINGS
@given(raw=raw_text)
def test_normalize_s3_path_is_idempotent(raw: str) -> None:
    once = normalize_s3_path(raw)
    assert normalize_s3_path(once) == once


@PROP_SETTINGS
@given(key=key_text)
def test_normalize_s3_path_keeps_botocore_encoding(key: str) -> None:
    wire = "/bucket/" + percent_encode(key, safe="/~")
    assert normalize_s3_path(wire) == wire
    assert canonical_path(wire, SigningPolicy(s3=True)) == wire


@PROP_SETTINGS
@given(key=key_text, extra_safe=st.sampled_from(["", SUB_DELIMS, "!$'()*,;:@+="]))
def test_normalize_s3_path_undoes_other_clients_encodings(key: str, extra_safe: str) -> None:
    """However a client spelled the key, the normalised path is botocore's spelling of it."""
    client = "/" + quote(key, safe="/" + extra_safe)
    assert normalize_s3_path(client) == "/" + percent_encode(key, safe="/~")


@PROP_SETTINGS
@given(key=key_text, extra_safe=st.sampled_from(["", SUB_DELIMS]))
def test_normalize_s3_path_encoded_slash_is_a_slash(key: str, extra_safe: str) -> None:
    """A client that encodes the key's slashes too (``%2F``) gets the same path as one that doesn't: S3
    servers decode ``%2F`` to ``/`` before they sign (see :data:`S3_PATH_SPELLINGS`)."""
    client = "/bucket/" + quote(key, safe=extra_safe)
    assert normalize_s3_path(client) == "/bucket/" + percent_encode(key, safe="/~")


# A client's spelling of an S3 path -> what sigproxy sends and signs. What Ceph RGW 16.2 does with each
# is measured by tests/integration/test_rgw.py::test_key_spellings (RGW accepts that signature and stores
# the key shown); RGW's canonical URI is aws4_uri_recode(request URI): url_decode, then aws4_uri_encode
# with "/" kept (src/rgw/rgw_auth_s3.h, get_v4_canonical_uri); s3rver encodes its decoded bucket and key the
# same way (lib/middleware/authentication.js). Until this was fixed, "%2F" stayed encoded and was signed
# as "%2F": RGW and s3rver answered 403 SignatureDoesNotMatch (issue 12, part 4).
S3_PATH_SPELLINGS = [
    ("/b/q%2Fr", "/b/q/r"),  # RGW stores "q/r"
    ("/b/q%2fr", "/b/q/r"),
    ("/b%2Fk", "/b/k"),  # bucket "b", key "k"
    ("/b/dd%2F%2Fee", "/b/dd//ee"),  # S3 keeps empty segments
    ("/b/sub%2F..%2Fx", "/b/sub/../x"),  # and dot segments: RGW stores "sub/../x"
    ("/b/a+b", "/b/a%2Bb"),  # "+" in a path is a literal plus
    ("/b/a%2Bb", "/b/a%2Bb"),
    ("/b/a%2bb", "/b/a%2Bb"),  # hex case normalised
    ("/b/a%20b", "/b/a%20b"),
    ("/b/a b", "/b/a%20b"),
    ("/b/t%7Eu", "/b/t~u"),  # unreserved characters are sent as themselves
    ("/b/%41BC", "/b/ABC"),
    ("/b/v~w", "/b/v~w"),
    ("/b/p%25q", "/b/p%25q"),  # RGW stores "p%q"
    ("/b/50%", "/b/50%25"),  # a "%" without two hex digits is a literal "%": RGW stores "50%"
    ("/b/x%zzy", "/b/x%25zzy"),
    ("/b/e!*'()f", "/b/e%21%2A%27%28%29f"),
    ("/b/g=h:i@j$k&l,m;n", "/b/g%3Dh%3Ai%40j%24k%26l%2Cm%3Bn"),
    ("/b/%C3%A9t%C3%A9", "/b/%C3%A9t%C3%A9"),
    ("/b/%e2%82%ac", "/b/%E2%82%AC"),
    ("/b/\u00e9t\u00e9", "/b/%C3%A9t%C3%A9"),  # raw UTF-8 in the path
    ("/b/x%FFy", "/b/x%FFy"),  # not UTF-8: the bytes go as they are (RGW: 400 InvalidObjectName)
    ("", "/"),
    ("//x//", "//x//"),
]


@pytest.mark.parametrize(("client", "sent"), S3_PATH_SPELLINGS)
def test_normalize_s3_path_spellings(client: str, sent: str) -> None:
    """Each spelling is sent, and signed, as the path S3 servers compute from the key they decode."""
    assert normalize_s3_path(client) == sent
    assert canonical_path(sent, SigningPolicy(s3=True)) == sent


@PROP_SETTINGS
@given(raw=st.text(max_size=40))
def test_normalize_query_is_idempotent(raw: str) -> None:
    once = normalize_query(raw)
    assert normalize_query(encode_query(once)) == once


@PROP_SETTINGS
@given(pairs=st.lists(st.tuples(key_text, key_text), max_size=6))
def test_normalize_query_keeps_botocore_encoding(pairs: list[tuple[str, str]]) -> None:
    wire = percent_encode_sequence(pairs)
    expected = tuple((percent_encode(k), percent_encode(v)) for k, v in pairs)
    assert normalize_query(wire) == expected
    assert encode_query(normalize_query(wire)) == wire


def test_normalize_query_plus_and_edges() -> None:
    assert normalize_query("a+b=c+d") == (("a%20b", "c%20d"),)  # form encoding: "+" is a space
    assert normalize_query("a%2Bb=%2b") == (("a%2Bb", "%2B"),)  # an encoded plus stays a plus
    assert normalize_query("k") == (("k", None),)
    assert normalize_query("k=") == (("k", ""),)
    assert normalize_query("=v") == (("", "v"),)
    assert normalize_query("a=1&&b=2&") == (("a", "1"), ("b", "2"))
    assert normalize_query("a=1&a=1&a=0") == (("a", "1"), ("a", "1"), ("a", "0"))
    assert normalize_query("x=a=b") == (("x", "a%3Db"),)
    assert normalize_query("\u1234=%e1%88%b4") == (("%E1%88%B4", "%E1%88%B4"),)
    assert normalize_query("") == ()


QUERY_BYTES = [  # (raw query as a client sends it, the query sent upstream and signed)
    ("a=%e9", "a=%E9"),  # latin-1 e-acute: not UTF-8, kept (was %EF%BF%BD, U+FFFD)
    ("b=%ff%fe", "b=%FF%FE"),
    ("%e9k=v", "%E9k=v"),  # in a key too
    ("c=caf%c3%a9", "c=caf%C3%A9"),  # UTF-8: as before
    ("d=%c3", "d=%C3"),  # a UTF-8 sequence cut short
    ("e=%zz&f=%", "e=%25zz&f=%25"),  # a % without two hex digits is a literal %
    ("g=x+%e9+y", "g=x%20%E9%20y"),
]


@pytest.mark.parametrize(("raw", "sent"), QUERY_BYTES)
def test_normalize_query_keeps_bytes(raw: str, sent: str) -> None:
    """A query's percent-encoded bytes reach the server as they are, as a path's do (normalize_s3_path):
    a backend gets the data the client sent, and a server re-encoding what it decodes signs the same."""
    assert encode_query(normalize_query(raw)) == sent
    assert normalize_query(sent) == normalize_query(raw)


def test_a_canonical_request_hashes_the_bytes_that_came() -> None:
    """A header value that was not UTF-8 is held as surrogate escapes (h1server decodes with surrogateescape):
    the canonical request's hash is over the bytes received, not a crash (a tester's find: a 500)."""
    creq = "GET\n/\n\ncontent-type:\udcff\udcfe\nhost:h\n\ncontent-type;host\n" + EMPTY_SHA256
    raw = creq.encode("utf-8", "surrogateescape")
    assert b"\xff\xfe" in raw
    assert hash_text(creq) == hashlib.sha256(raw).hexdigest()
    assert hash_text("caf\u00e9") == hashlib.sha256("caf\u00e9".encode()).hexdigest()

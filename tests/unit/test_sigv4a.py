"""SigV4A (``AWS4-ECDSA-P256-SHA256``) proven against awscrt, the AWS common runtime botocore signs SigV4A with.

ECDSA signatures are randomised, so signatures are never compared. Instead awscrt signs a request (its own key
derivation from the credential, its own canonical request and string to sign) and the signature it produced is
verified with *our* public key (:func:`sigproxy.sigv4a.public_key`) over *our* string to sign. ECDSA verification
succeeds only if both the key and the signed bytes are the same, so each pass proves that our derived key equals
awscrt's and that our string to sign (hence canonical request) equals awscrt's byte for byte. The reverse (our
signature checked by awscrt's own ECDSA, ``awscrt.crypto.EC.verify``) checks our DER encoding; awscrt exposes no
API to derive the credential's key or to verify a SigV4A request, so the key it checks with is ours (proven equal
to awscrt's by the first direction).
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from unittest import mock
from urllib.parse import quote

import awscrt.auth as crt_auth
import awscrt.http as crt_http
import botocore.auth  # imported before botocore.crt.auth (botocore.auth imports it back)
import botocore.crt.auth
import pytest
from awscrt.crypto import EC
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigproxy import sigv4a
from sigproxy.configtable import Table
from sigproxy.connection import ConnectionConfig, CredentialsConfig, connection_json, parse_connection
from sigproxy.endpoints import Endpoint, is_mrap_host, parse_host
from sigproxy.errors import ConfigError, InvalidField, UnsupportedRequest
from sigproxy.routing import parse_absolute_target, sigv4a_region_set
from sigproxy.signapi import parse_sign_input, sign
from sigproxy.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    CanonicalInput,
    Credentials,
    amz_date,
    encode_query,
    normalize_query,
    normalize_s3_path,
    policy_for,
    sha256_hex,
)

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TOKEN_CREDS = Credentials("ASIAEXAMPLE", "secret/with+chars", "FwoGZXIvYXdzEJr//////////token=")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ECDSA = ec.ECDSA(hashes.SHA256())
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SEGMENTS = st.lists(st.sampled_from(["a", "Key", "my key", "caf\u00e9", "\u6f22\u5b57", "x+y", "a=b", "~t", "50%",
                                     "\U0001f600", "dir", "v1.2"]), min_size=0, max_size=4)
QUERY = st.lists(st.tuples(st.sampled_from(["list-type", "prefix", "a", "Action", "k\u00e9y", "tagging"]),
                           st.sampled_from(["", "2", "a b", "x/y", "caf\u00e9", "*"])), max_size=4)
HEADERS = st.lists(st.tuples(st.sampled_from(["x-amz-meta-a", "Content-Type", "X-Amz-Acl", "x-amz-tagging"]),
                             st.sampled_from(["text/plain", "  padded  value ", "private", "k=v&x=y"])), max_size=3)


def _crt_sign(method: str, path: str, query: tuple[tuple[str, str | None], ...], headers: list[tuple[str, str]],
              creds: Credentials, *, service: str, region_set: str, payload_hash: str,
              query_auth: bool = False) -> crt_http.HttpRequest:
    """awscrt signs the request as it goes on the wire; the signed request is returned."""
    s3 = policy_for(service).s3
    qs = encode_query(query)
    request = crt_http.HttpRequest(method, path + (f"?{qs}" if qs else ""), crt_http.HttpHeaders(headers))
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4_ASYMMETRIC,
        signature_type=(crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS if query_auth
                        else crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS),
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(
            creds.access_key_id, creds.secret_access_key, creds.session_token),
        region=region_set, service=service, date=NOW,
        use_double_uri_encode=not s3, should_normalize_uri_path=not s3,
        signed_body_value=payload_hash,
        signed_body_header_type=(crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256 if s3 and not query_auth
                                 else crt_auth.AwsSignedBodyHeaderType.NONE),
        expiration_in_seconds=900 if query_auth else None,
    )
    crt_auth.aws_sign_request(request, config).result()
    return request


def _wire_path(segments: list[str], service: str) -> str:
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    return normalize_s3_path(path) if policy_for(service).s3 else path


def _verifies(creds: Credentials, der_hex: str, sts: str) -> bool:
    try:
        sigv4a.public_key(creds).verify(bytes.fromhex(der_hex), sts.encode(), ECDSA)
    except InvalidSignature:
        return False
    return True


@SETTINGS
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE"]), segments=SEGMENTS, raw_query=QUERY, extra=HEADERS,
       service=st.sampled_from(["s3", "s3-object-lambda", "execute-api", "sqs"]),
       region_set=st.sampled_from(["*", "us-east-1", "us-east-1,eu-west-1", "us-*"]),
       body=st.sampled_from([b"", b"hello", "caf\u00e9".encode()]), token=st.booleans())
def test_awscrt_header_signature_verifies_over_our_string_to_sign(method, segments, raw_query, extra, service,
                                                                   region_set, body, token):
    """awscrt's header-auth SigV4A signature verifies with our derived public key over our string to sign."""
    creds = TOKEN_CREDS if token else CREDS
    path = _wire_path(segments, service)
    query = normalize_query("&".join(f"{quote(k)}={quote(v)}" for k, v in raw_query))
    payload = sha256_hex(body) if body else EMPTY_SHA256
    headers = [("Host", "mrap-alias.mrap.accesspoint.s3-global.amazonaws.com"), *extra]
    signed = _crt_sign(method, path, query, headers, creds, service=service, region_set=region_set,
                       payload_hash=payload)
    sent = [(k, v) for k, v in signed.headers if k != "Authorization"]
    authorization = signed.headers.get("Authorization")
    ours = sigv4a.sign_headers(CanonicalInput(method, path, query, tuple(sent), payload), creds, service=service,
                               now=NOW, policy=policy_for(service))
    their_sig = authorization.rsplit("Signature=", 1)[1]
    assert authorization.rsplit("Signature=", 1)[0] == ours.authorization.rsplit("Signature=", 1)[0]
    assert _verifies(creds, their_sig, ours.string_to_sign)
    # And our own signature verifies under the same public key.
    assert _verifies(creds, ours.signature, ours.string_to_sign)


@SETTINGS
@given(method=st.sampled_from(["GET", "PUT"]), segments=SEGMENTS, raw_query=QUERY,
       service=st.sampled_from(["s3", "execute-api"]), region_set=st.sampled_from(["*", "us-west-2,eu-central-1"]),
       token=st.booleans())
def test_awscrt_presigned_signature_verifies_over_our_string_to_sign(method, segments, raw_query, service,
                                                                      region_set, token):
    """awscrt's presigned (query) SigV4A signature verifies over our string to sign; the query we send holds the
    same parameters as awscrt's."""
    creds = TOKEN_CREDS if token else CREDS
    path = _wire_path(segments, service)
    query = normalize_query("&".join(f"{quote(k)}={quote(v)}" for k, v in raw_query))
    payload = UNSIGNED_PAYLOAD if policy_for(service).s3 else EMPTY_SHA256
    headers = [("Host", "example.com")]
    signed = _crt_sign(method, path, query, headers, creds, service=service, region_set=region_set,
                       payload_hash=payload, query_auth=True)
    their_query = signed.path.split("?", 1)[1]
    their_pairs = dict(p.split("=", 1) for p in their_query.split("&") if "=" in p)
    ours = sigv4a.presign(CanonicalInput(method, path, query, tuple(headers), payload), creds, service=service,
                          region_set=region_set, now=NOW, expires=900, policy=policy_for(service))
    our_pairs = {k: v for k, v in ours.query if v is not None}
    their_sig = their_pairs.pop("X-Amz-Signature")
    our_pairs.pop("X-Amz-Signature")
    assert our_pairs == their_pairs
    assert _verifies(creds, their_sig, ours.string_to_sign)


def test_tampered_request_does_not_verify():
    """The check can fail: awscrt's signature does not verify over the string to sign of a changed request, nor
    under another credential's key."""
    headers = [("Host", "example.com")]
    signed = _crt_sign("GET", "/bucket/key", (), headers, CREDS, service="s3", region_set="*",
                       payload_hash=EMPTY_SHA256)
    their_sig = signed.headers.get("Authorization").rsplit("Signature=", 1)[1]
    sent = tuple((k, v) for k, v in signed.headers if k != "Authorization")
    good = sigv4a.sign_headers(CanonicalInput("GET", "/bucket/key", (), sent, EMPTY_SHA256), CREDS, service="s3",
                               now=NOW, policy=policy_for("s3"))
    assert _verifies(CREDS, their_sig, good.string_to_sign)
    tampered = sigv4a.sign_headers(CanonicalInput("GET", "/bucket/other", (), sent, EMPTY_SHA256), CREDS,
                                   service="s3", now=NOW, policy=policy_for("s3"))
    assert not _verifies(CREDS, their_sig, tampered.string_to_sign)
    other = Credentials("AKIDEXAMPLE", "a different secret")
    assert not _verifies(other, their_sig, good.string_to_sign)


def test_awscrt_ecdsa_verifies_our_signature():
    """awscrt's ECDSA (aws-c-cal) accepts our DER signature over SHA-256 of our string to sign, with the public key
    the awscrt round trip above proved equal to awscrt's own; and rejects it over other bytes."""
    req = CanonicalInput("PUT", "/b/k", (), (("Host", "h"), ("X-Amz-Date", amz_date(NOW)),
                                              ("X-Amz-Region-Set", "*")), EMPTY_SHA256)
    ours = sigv4a.sign_headers(req, CREDS, service="s3", now=NOW, policy=policy_for("s3"))
    der = sigv4a.public_key(CREDS).public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    key = EC.new_key_from_der_data(der)
    assert key.verify(hashlib.sha256(ours.string_to_sign.encode()).digest(), bytes.fromhex(ours.signature))
    assert not key.verify(hashlib.sha256(b"other").digest(), bytes.fromhex(ours.signature))


@pytest.mark.parametrize(("auth_cls", "service", "url", "body"), [
    (botocore.crt.auth.CrtS3SigV4AsymAuth, "s3",
     "https://mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com/my%20key.txt?tagging=", b"data"),
    (botocore.crt.auth.CrtSigV4AsymAuth, "execute-api",
     "https://abc.execute-api.us-east-1.amazonaws.com/prod/items?limit=2", b'{"a": 1}'),
])
def test_botocore_sigv4a_signer_verifies_over_our_string_to_sign(auth_cls, service, url, body):
    """botocore's own SigV4A signers (which call awscrt) set the headers we expect and their signature verifies
    over our string to sign for what they sent."""
    request = AWSRequest(method="PUT", url=url, data=body, headers={"Content-Type": "text/plain"})
    with mock.patch.object(botocore.crt.auth, "get_current_datetime", return_value=NOW):
        auth_cls(BotoCredentials(CREDS.access_key_id, CREDS.secret_access_key), service, "*").add_auth(request)
    sent = [(k, v) for k, v in request.headers.items() if k.lower() not in ("authorization", "user-agent")]
    path, _, qs = url.split("://", 1)[1].partition("/")[2].partition("?")
    payload = request.headers.get("X-Amz-Content-SHA256") or sha256_hex(body)
    assert request.headers["X-Amz-Region-Set"] == "*"
    ours = sigv4a.sign_headers(CanonicalInput("PUT", "/" + path, normalize_query(qs), tuple(sent), payload), CREDS,
                               service=service, now=NOW, policy=policy_for(service))
    assert _verifies(CREDS, request.headers["Authorization"].rsplit("Signature=", 1)[1], ours.string_to_sign)


def test_derived_key_is_cached_and_deterministic():
    """One key per credential: the same object again, and a different credential gives a different key."""
    assert sigv4a.derive_private_key("AKID", "s") is sigv4a.derive_private_key("AKID", "s")
    a = sigv4a.public_key(Credentials("AKID", "s")).public_numbers()
    b = sigv4a.public_key(Credentials("AKID2", "s")).public_numbers()
    assert a != b


@pytest.mark.parametrize(("given_set", "expected"), [
    ("*", "*"), ("us-east-1, us-west-2", "us-east-1,us-west-2"), (["eu-*"], "eu-*"),
])
def test_region_set_value(given_set, expected):
    assert sigv4a.region_set_value(given_set) == expected


@pytest.mark.parametrize("bad", ["", "us-east-1,", "US-EAST-1", "us east", [], ["a/b"]])
def test_region_set_value_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="region set"):
        sigv4a.region_set_value(bad)


def test_header_auth_requires_region_set_header():
    req = CanonicalInput("GET", "/", (), (("Host", "h"), ("X-Amz-Date", amz_date(NOW))), EMPTY_SHA256)
    with pytest.raises(ValueError, match="X-Amz-Region-Set"):
        sigv4a.sign_headers(req, CREDS, service="s3", now=NOW, policy=policy_for("s3"))


# --- where SigV4A is chosen: MRAP hosts, the connection opt-in, clients, POST /v1/sign --------------------------

MRAP = "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com"
CONN = ConnectionConfig(name="acme", credentials=CredentialsConfig(source="static"), region="us-west-2",
                        hosts=("*.amazonaws.com",))


def test_mrap_hosts_are_s3_with_region_set_star():
    assert parse_host(MRAP) == Endpoint("s3", "*", False)
    assert is_mrap_host(MRAP)
    assert not is_mrap_host("bucket.s3.us-east-1.amazonaws.com")
    assert not is_mrap_host("mrap.accesspoint.s3-global.amazonaws.com")  # no alias


@pytest.mark.parametrize(("conn", "host", "headers", "expected"), [
    (CONN, "bucket.s3.us-east-1.amazonaws.com", {}, None),
    (CONN, MRAP, {}, "*"),
    (dataclasses.replace(CONN, signature_version="v4a"), "sqs.us-east-1.amazonaws.com", {}, "*"),
    (dataclasses.replace(CONN, signature_version="v4a", sigv4a_signing_region_set=("us-east-1", "eu-west-1")),
     "sqs.us-east-1.amazonaws.com", {}, "us-east-1,eu-west-1"),
    (CONN, "s3.amazonaws.com", {"Authorization": "AWS4-ECDSA-P256-SHA256 Credential=k/20260101/s3/aws4_request"}, "*"),
    (CONN, "s3.amazonaws.com", {"X-Amz-Region-Set": "us-west-2, us-east-1"}, "us-west-2,us-east-1"),
])
def test_sigv4a_region_set_choice(conn, host, headers, expected):
    target = parse_absolute_target(f"https://{host}/k")
    assert sigv4a_region_set(conn, target, headers) == expected


def test_bad_client_region_set_is_refused():
    with pytest.raises(UnsupportedRequest, match="X-Amz-Region-Set"):
        sigv4a_region_set(CONN, parse_absolute_target("https://s3.amazonaws.com/k"), {"X-Amz-Region-Set": "a b"})


def test_connection_config_keys():
    """signature_version and sigv4a_signing_region_set parse, round-trip through connection_json, and a bad
    region set names the key."""
    table = {"hosts": ["*.amazonaws.com"], "credentials": {"source": "static", "access_key_id": "a",
                                                           "secret_access_key": "b"},
             "signature_version": "v4a", "sigv4a_signing_region_set": ["us-east-1", "eu-*"]}
    conn = parse_connection("c", Table(table, "connections.c", {}))
    assert (conn.signature_version, conn.sigv4a_signing_region_set) == ("v4a", ("us-east-1", "eu-*"))
    out = connection_json(conn)
    assert out["signature_version"] == "v4a"
    assert out["sigv4a_signing_region_set"] == ["us-east-1", "eu-*"]
    with pytest.raises(ConfigError, match="sigv4a_signing_region_set"):
        parse_connection("c", Table({**table, "sigv4a_signing_region_set": ["US EAST"]}, "connections.c", {}))
    with pytest.raises(ConfigError, match="signature_version"):
        parse_connection("c", Table({**table, "signature_version": "v4A"}, "connections.c", {}))


def test_sign_api_region_set_header_and_presigned():
    """POST /v1/sign with region_set: SigV4A in both forms, each verifying over its string to sign with the key
    awscrt's signatures verify under (above)."""
    header = sign(CONN, CREDS, parse_sign_input({"method": "GET", "url": f"https://{MRAP}/k",
                                                 "region_set": ["*"]}), now=NOW)
    headers = dict(header.headers)
    assert headers["X-Amz-Region-Set"] == "*"
    assert headers["Authorization"].startswith("AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20260102/s3/aws4_request")
    assert _verifies(CREDS, header.signature.signature, header.signature.string_to_sign)
    url = sign(CONN, CREDS, parse_sign_input({"method": "GET", "url": "https://sqs.us-east-1.amazonaws.com/",
                                              "region_set": "us-east-1,us-west-2", "presign": 60}), now=NOW).url
    assert "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256" in url
    assert "X-Amz-Region-Set=us-east-1%2Cus-west-2" in url


@pytest.mark.parametrize(("doc", "field"), [
    ({"region_set": "us east"}, "region_set"), ({"region_set": 3}, "region_set"), ({"region_set": ""}, "region_set"),
    ({"headers": {"X-Amz-Region-Set": "*"}}, "headers.X-Amz-Region-Set"),
])
def test_sign_api_refuses_bad_region_set(doc, field):
    with pytest.raises(InvalidField) as info:
        parse_sign_input({"method": "GET", "url": f"https://{MRAP}/k", **doc})
    assert info.value.field == field


def test_the_suite_signs_with_botocore_s_own_signers_as_production_does() -> None:
    """awscrt is here for the proofs above; botocore must not switch to its CRT signers because of it
    (tests/conftest.py sets BOTO_DISABLE_CRT before botocore is imported)."""
    import botocore.compat

    assert botocore.compat.HAS_CRT is False

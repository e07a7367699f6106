"""sigproxy.signapi: JSON validation names every field at fault; what ``sign`` returns is what botocore signs.

botocore signs the request as the caller will send it (our URL, the caller's headers, the body) with its clock
patched to the same instant (``botocore.auth.get_current_datetime``) and the same credentials; the
Authorization header (or the presigned query and its signature) must be equal. botocore is given only headers
sigproxy signs (``host``, ``content-type``, ``content-md5``, ``x-amz-*``), as in test_signing_differential.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from sigproxy import signapi
from sigproxy.config import ConnectionConfig, CredentialsConfig
from sigproxy.errors import BadJson, HostNotAllowed, InvalidField, PolicyRefused, UnresolvableTarget
from sigproxy.signapi import SignInput, SignOutput, parse_sign_input, sign
from sigproxy.signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, Credentials
from tests.unit.test_layers import FORBIDDEN, PACKAGE, imported_roots

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE/SESSION+TOKEN=="
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "20260102T030405Z"

CONN = ConnectionConfig(
    name="acme", credentials=CredentialsConfig(source="static"), region="us-west-2",
    hosts=("*.amazonaws.com", "127.0.0.1:*"),
)


def creds(token: str | None) -> Credentials:
    return Credentials(KEY_ID, SECRET, token)


# --- validation ----------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"connection": "acme", "method": "GET", "url": "https://sts.amazonaws.com/"}


def with_(**changes: Any) -> dict[str, Any]:
    doc = {**GOOD, **changes}
    return {k: v for k, v in doc.items() if v is not None}


HOST_FORM: dict[str, Any] = {"method": "GET", "host": "bucket.s3.amazonaws.com"}


@pytest.mark.parametrize(
    ("doc", "field", "needle"),
    [
        (with_(bogus=1), "bogus", "unknown key 'bogus'"),
        (with_(connection=3), "connection", "connection must be a string"),
        (with_(method=None), "method", "method is required"),
        (with_(method=["GET"]), "method", "must be a string, not an array"),
        (with_(method="GE T"), "method", "not an HTTP method"),
        (with_(method=""), "method", "not an HTTP method"),
        (with_(url=None), "host", "give either url"),
        (with_(host="s3.amazonaws.com"), "url", "give either url"),
        (with_(url="sts.amazonaws.com/"), "url", "absolute http:// or https:// URL"),
        (with_(url="ftp://sts.amazonaws.com/"), "url", "absolute http://"),
        (with_(url="https://user@sts.amazonaws.com/"), "url", "no user information"),
        (with_(url="https://sts.amazonaws.com:99999/"), "url", "absolute"),
        (with_(url="https://sts.amazonaws.com/a b"), "url", "percent-encode it (%20)"),
        (with_(url="https://sts.amazonaws.com/#frag"), "url", "fragment"),
        (with_(url="https://sts.amazonaws.com/?X-Amz-Signature=abc"), "url", "set by the signer"),
        (with_(url=7), "url", "url must be a string, not a number"),
        (with_(path="/x"), "path", "path goes with host"),
        (with_(params={"a": "b"}), "params", "params goes with host"),
        ({**HOST_FORM, "path": "x"}, "path", "must start with \"/\""),
        ({**HOST_FORM, "path": "/a?b=c"}, "path", "give the query as params"),
        ({**HOST_FORM, "path": "/caf\u00e9"}, "path", "percent-encode it (%C3%A9)"),
        ({**HOST_FORM, "host": "a.com/x"}, "host", "not a host name"),
        ({**HOST_FORM, "host": "a.com:0"}, "host", "not a host name"),
        ({**HOST_FORM, "host": ""}, "host", "not a host name"),
        ({**HOST_FORM, "scheme": "ftp"}, "scheme", "neither \"https\""),
        ({**HOST_FORM, "params": ["a"]}, "params", "params must be a JSON object, not an array"),
        ({**HOST_FORM, "params": {"prefix": 3}}, "params.prefix", "not a number (send numbers as strings"),
        ({**HOST_FORM, "params": {"k": ["a", None]}}, "params.k[1]", "not null"),
        ({**HOST_FORM, "params": {"k": []}}, "params.k", "empty list"),
        ({**HOST_FORM, "params": {"": "v"}}, "params.", "empty name"),
        ({**HOST_FORM, "params": {"X-Amz-Credential": "x"}}, "params.X-Amz-Credential", "set by the signer"),
        ({**HOST_FORM, "params": {"k": "\ud800"}}, "params.k", "lone surrogate"),
        (with_(headers="X-Foo: 1"), "headers", "headers must be a JSON object, not a string"),
        (with_(headers={"X-Foo": 1}), "headers.X-Foo", "must be a string, not a number"),
        (with_(headers={"X Foo": "1"}), "headers.X Foo", "not an HTTP field name"),
        (with_(headers={"X-Foo": "a\r\nX-Bar: b"}), "headers.X-Foo", "control character (U+000D)"),
        (with_(headers={"X-Foo": "a", "x-foo": "b"}), "headers.x-foo", "given twice"),
        (with_(headers={"Authorization": "AWS4-HMAC-SHA256 ..."}), "headers.Authorization", "signature"),
        (with_(headers={"X-Amz-Date": STAMP}), "headers.X-Amz-Date", "signing time"),
        (with_(headers={"x-amz-security-token": "t"}), "headers.x-amz-security-token", "session token"),
        (with_(headers={"X-Amz-Content-Sha256": EMPTY_SHA256}), "headers.X-Amz-Content-Sha256", "payload_sha256"),
        (with_(headers={"Host": "evil.example"}), "headers.Host", "comes from url or host"),
        (with_(headers={"Content-Length": "3"}), "headers.Content-Length", "your HTTP client"),
        (with_(headers={"Transfer-Encoding": "chunked"}), "headers.Transfer-Encoding", "hop-by-hop"),
        (with_(headers={"Proxy-Authorization": "Basic x"}), "headers.Proxy-Authorization", "proxy header"),
        (with_(headers={"X-Sigproxy-Connection": "x"}), "headers.X-Sigproxy-Connection", "proxy header"),
        (with_(payload=b"x".decode(), payload_sha256=EMPTY_SHA256), "payload_sha256", "not both"),
        (with_(payload={"a": 1}), "payload", "payload must be a string, not an object"),
        (with_(payload="\udcff"), "payload", "lone surrogate"),
        (with_(payload_sha256="abc"), "payload_sha256", "64 hex digits"),
        (with_(payload_sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), "payload_sha256", "UNSIGNED-PAYLOAD"),
        (with_(service="s3/x"), "service", "not a signing name"),
        (with_(service=""), "service", "not a signing name"),
        (with_(region="eu west"), "region", "not a region"),
        (with_(region=1), "region", "region must be a string"),
        (with_(presign=0), "presign", "1 to 604800 seconds"),
        (with_(presign=604801), "presign", "1 to 604800 seconds"),
        (with_(presign=1.5), "presign", "an integer, not a number"),
        (with_(presign=True), "presign", "an integer, not a boolean"),
        (with_(presign="60"), "presign", "an integer, not a string"),
        (with_(presign=60, payload="x"), "payload", "signs no body"),
        (with_(presign=60, payload_sha256=UNSIGNED_PAYLOAD), "payload_sha256", "signs no body"),
    ],
)
def test_invalid_input_names_its_field(doc: dict[str, Any], field: str, needle: str) -> None:
    """Every problem is a 422 invalid_field whose ``field`` is the JSON path and whose message says what to send."""
    with pytest.raises(InvalidField) as err:
        parse_sign_input(doc)
    assert err.value.field == field
    assert needle in err.value.message
    assert err.value.status == 422
    assert err.value.body()["error"]["field"] == field


@pytest.mark.parametrize("doc", [[], "GET", None, 3])
def test_not_an_object_is_bad_json(doc: object) -> None:
    """A document that is not a JSON object is a 400 bad_json."""
    with pytest.raises(BadJson) as err:
        parse_sign_input(doc)
    assert err.value.status == 400


def test_parse_normalises() -> None:
    """Method upper-cased, hash lower-cased, host with port split, params encoded by SigV4 in order."""
    got = parse_sign_input({"method": "put", "host": "LOCALHOST:9000", "scheme": "http", "path": "/b/k%20x",
                            "params": {"prefix": "a b/\u00e9+", "k": ["1", "2"], "empty": ""},
                            "payload_sha256": "AB" * 32, "headers": {"X-Amz-Meta-A": "b"}})
    assert got.method == "PUT"
    assert got.payload_sha256 == "ab" * 32
    assert (got.target.scheme, got.target.host, got.target.port, got.target.path) == ("http", "localhost", 9000,
                                                                                        "/b/k%20x")
    assert got.target.query == "prefix=a%20b%2F%C3%A9%2B&k=1&k=2&empty="
    assert got.headers == (("X-Amz-Meta-A", "b"),)
    assert parse_sign_input({"method": "GET", "host": "s3.amazonaws.com"}).target.path == "/"


def test_constructor_checks_too() -> None:
    """SignInput built directly (the CLI does) is checked like the JSON."""
    target = parse_sign_input(GOOD).target
    with pytest.raises(InvalidField) as err:
        SignInput(method="GET", target=target, headers=(("Authorization", "x"),))
    assert err.value.field == "headers.Authorization"
    with pytest.raises(InvalidField) as err:
        SignInput(method="GET", target=target, presign=10**7)
    assert err.value.field == "presign"


def test_signapi_is_pure() -> None:
    """signapi imports no network or async library (the layering rule of the pure modules)."""
    assert not imported_roots(PACKAGE / "signapi.py") & FORBIDDEN


# --- the connection's rules ----------------------------------------------------------------------


def test_host_override_outside_hosts_is_refused() -> None:
    """A host outside the connection's hosts is refused exactly as the proxy refuses it (403 host_not_allowed)."""
    with pytest.raises(HostNotAllowed, match=r"may not sign for evil\.example:443"):
        sign(CONN, creds(None), parse_sign_input({"method": "GET", "host": "evil.example", "service": "s3"}),
             now=NOW)
    with pytest.raises(HostNotAllowed, match=r"10\.0\.0\.1:9000"):
        sign(CONN, creds(None), parse_sign_input({"method": "GET", "host": "10.0.0.1:9000"}), now=NOW)


def test_policy_applies() -> None:
    """A read-only connection can't get a PUT signed here either; deny_amz_headers holds too."""
    ro = ConnectionConfig(name="ro", credentials=CredentialsConfig(source="static"), hosts=("*.amazonaws.com",),
                          allowed_methods=("GET", "HEAD"), deny_amz_headers=("x-amz-acl",))
    url = "https://b.s3.us-east-1.amazonaws.com/k"
    with pytest.raises(PolicyRefused, match="read_only"):
        sign(ro, creds(None), parse_sign_input({"method": "PUT", "url": url}), now=NOW)
    with pytest.raises(PolicyRefused, match="x-amz-acl"):
        sign(ro, creds(None), parse_sign_input({"method": "GET", "url": url, "headers": {"x-amz-acl": "public"}}),
             now=NOW)


def test_unresolvable_service_names_the_override() -> None:
    """An IP host with no service on the connection: 400 naming the "service" field (not the proxy's header)."""
    with pytest.raises(UnresolvableTarget, match="which AWS service") as info:
        sign(CONN, creds(None), parse_sign_input({"method": "GET", "host": "127.0.0.1:9000"}), now=NOW)
    assert 'give "service"' in info.value.message and "X-Sigproxy" not in info.value.message


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(CONN, creds(None), parse_sign_input(GOOD), now=datetime(2026, 1, 1))


# --- matching botocore ---------------------------------------------------------------------------


def botocore_sign(auth: SigV4Auth, method: str, url: str, headers: dict[str, str], body: bytes,
                  *, context: dict[str, Any] | None = None) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    request.context.update(context or {})
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        auth.add_auth(request)
    return request


def signed_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items()
            if k.lower() in ("content-type", "content-md5") or k.lower().startswith("x-amz-")}


HEADER_CASES = [
    pytest.param(
        {"method": "GET", "host": "abc123.execute-api.us-west-2.amazonaws.com", "path": "/prod/items",
         "params": {"q": "a b \u00e9\u6f22", "tag": ["x", "y", "x"], "sort": "-date"}},
        SigV4Auth, "execute-api", "us-west-2", None,
        "https://abc123.execute-api.us-west-2.amazonaws.com/prod/items"
        "?q=a%20b%20%C3%A9%E6%BC%A2&tag=x&tag=y&tag=x&sort=-date",
        id="get-params-unicode-repeated"),
    pytest.param(
        {"method": "POST", "url": "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/orders",
         "headers": {"Content-Type": "application/json"}, "payload": '{"id": 1, "note": "caf\u00e9"}'},
        SigV4Auth, "execute-api", "eu-west-1", None, None, id="post-json-execute-api"),
    pytest.param(
        {"method": "POST", "url": "https://sts.amazonaws.com/",
         "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
         "payload": "Action=GetCallerIdentity&Version=2011-06-15", "region": "us-east-1"},
        SigV4Auth, "sts", "us-east-1", TOKEN, None, id="post-sts-session-token"),
    pytest.param(
        {"method": "POST", "url": "https://dynamodb.us-east-1.amazonaws.com/",
         "headers": {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.GetItem"},
         "payload": '{"TableName": "t", "Key": {"id": {"S": "1"}}}'},
        SigV4Auth, "dynamodb", "us-east-1", None, None, id="post-dynamodb"),
    pytest.param(
        {"method": "PUT", "url": "https://bucket.s3.us-west-2.amazonaws.com/dir/my%20file.txt?tagging",
         "headers": {"Content-Type": "text/plain", "X-Amz-Meta-Note": "a  b"}, "payload": "hello"},
        S3SigV4Auth, "s3", "us-west-2", None, "https://bucket.s3.us-west-2.amazonaws.com/dir/my%20file.txt?tagging",
        id="s3-put-payload"),
    pytest.param(
        {"method": "PUT", "url": "https://bucket.s3.us-west-2.amazonaws.com/k.bin",
         "payload_sha256": hashlib.sha256(b"binary\x00body").hexdigest()},
        S3SigV4Auth, "s3", "us-west-2", TOKEN, None, id="s3-put-payload-sha256"),
    pytest.param(
        {"method": "PUT", "url": "https://bucket.s3.us-west-2.amazonaws.com/k.bin",
         "payload_sha256": UNSIGNED_PAYLOAD, "headers": {"Content-MD5": "XrY7u+Ae7tCTyyK7j1rNww=="}},
        S3SigV4Auth, "s3", "us-west-2", None, None, id="s3-put-unsigned-payload"),
    pytest.param(
        {"method": "GET", "host": "127.0.0.1:9000", "scheme": "http", "path": "/bucket",
         "params": {"list-type": "2", "prefix": "a b/"}, "service": "s3", "region": "eu-central-1"},
        S3SigV4Auth, "s3", "eu-central-1", None, "http://127.0.0.1:9000/bucket?list-type=2&prefix=a%20b%2F",
        id="host-override-with-port"),
]


@pytest.mark.parametrize(("doc", "auth_cls", "service", "region", "token", "url"), HEADER_CASES)
def test_header_auth_matches_botocore(doc: dict[str, Any], auth_cls: type[SigV4Auth], service: str, region: str,
                                      token: str | None, url: str | None) -> None:
    """``sign`` gives botocore's Authorization for the request as sent, and the headers it needs."""
    out = sign(CONN, creds(token), parse_sign_input(doc), now=NOW)
    if url is not None:
        assert out.url == url
    body = hashlib.sha256(b"binary\x00body").hexdigest() == doc.get("payload_sha256")
    raw = b"binary\x00body" if body else (doc.get("payload") or "").encode()
    given = doc.get("headers", {})
    context: dict[str, Any] = {}
    if doc.get("payload_sha256") == UNSIGNED_PAYLOAD:
        context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": False})
    boto_headers = signed_only(given)
    if doc.get("payload_sha256") and auth_cls is SigV4Auth:
        boto_headers["X-Amz-Content-SHA256"] = doc["payload_sha256"]
    request = botocore_sign(auth_cls(BotoCredentials(KEY_ID, SECRET, token), service, region), doc["method"].upper(),
                            out.url, boto_headers, raw, context=context)
    headers = dict(out.headers)
    assert headers["Authorization"] == request.headers["Authorization"]
    assert headers["X-Amz-Date"] == STAMP
    assert headers["Host"] == urlsplit(out.url).netloc
    for name, value in given.items():
        assert headers[name] == value
    if token:
        assert headers["X-Amz-Security-Token"] == token == request.headers["X-Amz-Security-Token"]
    else:
        assert "X-Amz-Security-Token" not in headers
    if auth_cls is S3SigV4Auth or doc.get("payload_sha256"):
        assert headers["X-Amz-Content-SHA256"] == request.headers["X-Amz-Content-SHA256"]
    if doc.get("payload"):
        assert headers["Content-Length"] == str(len(raw))
    assert SECRET not in json.dumps(out.to_json())
    assert out.to_json() == {"url": out.url, "headers": headers}


PRESIGN_CASES = [
    pytest.param(
        {"method": "GET", "host": "bucket.s3.us-west-2.amazonaws.com", "path": "/dir/a%20b.txt",
         "params": {"response-content-type": "text/plain; charset=utf-8"}, "presign": 300},
        S3SigV4QueryAuth, "s3", "us-west-2", TOKEN, id="s3-get-session-token"),
    pytest.param(
        {"method": "PUT", "url": "https://bucket.s3.us-west-2.amazonaws.com/up.bin", "presign": 604800,
         "headers": {"Content-Type": "application/octet-stream", "X-Amz-Meta-Who": "me"}},
        S3SigV4QueryAuth, "s3", "us-west-2", None, id="s3-put-with-headers-7-days"),
    pytest.param(
        {"method": "GET", "url": "https://abc.execute-api.us-west-2.amazonaws.com/prod/x?q=a%20b", "presign": 60},
        SigV4QueryAuth, "execute-api", "us-west-2", None, id="execute-api"),
]


@pytest.mark.parametrize(("doc", "auth_cls", "service", "region", "token"), PRESIGN_CASES)
def test_presign_matches_botocore(doc: dict[str, Any], auth_cls: type[SigV4QueryAuth], service: str, region: str,
                                  token: str | None) -> None:
    """A presigned URL equal to botocore's (same parameters, same signature); headers: the signed ones + Host."""
    out = sign(CONN, creds(token), parse_sign_input(doc), now=NOW)
    unsigned = out.url.split("?X-Amz-Algorithm=", 1)[0].split("&X-Amz-Algorithm=", 1)[0]
    given = doc.get("headers", {})
    auth = auth_cls(BotoCredentials(KEY_ID, SECRET, token), service, region, expires=doc["presign"])
    request = botocore_sign(auth, doc["method"], unsigned, dict(given), b"")
    assert sorted(parse_qsl(urlsplit(out.url).query, keep_blank_values=True)) == \
        sorted(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
    assert urlsplit(out.url).path == urlsplit(request.url).path
    assert dict(out.headers) == {**given, "Host": urlsplit(out.url).netloc}
    assert (f"X-Amz-Expires={doc['presign']}" in out.url) and ("X-Amz-Security-Token" in out.url) == bool(token)


# --- the CLI prints the same shape ---------------------------------------------------------------


def test_cli_json_is_to_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`sigproxy sign --json` prints exactly SignOutput.to_json(); with a session token it needs --show-token."""
    from sigproxy.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[connections.acme]
region = "us-west-2"
hosts = ["*.amazonaws.com"]
[connections.acme.credentials]
source = "static"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
session_token = "{TOKEN}"
""")
    url = "https://bucket.s3.us-west-2.amazonaws.com/k?x=1"
    args = ["sign", "-c", str(cfg), "--connection", "acme", "--date", STAMP, "-X", "PUT", "--data", "body",
            "-H", "Content-Type: text/plain", "--json", url]
    assert main(args) == 2
    assert "--json: these credentials carry a session token" in capsys.readouterr().err
    assert main([*args, "--show-token"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected: SignOutput = sign(CONN, creds(TOKEN), parse_sign_input(
        {"method": "PUT", "url": url, "payload": "body", "headers": {"Content-Type": "text/plain"}}), now=NOW)
    assert printed == expected.to_json()
    assert main([*args[:-2], "--presign", "--show-token", "--json", url]) == 2  # --data with --presign
    assert "(payload): a presigned URL signs no body" in capsys.readouterr().err
    assert main([*args[:7], "-H", "Authorization: x", url]) == 2
    assert "invalid_field (headers.Authorization)" in capsys.readouterr().err


def test_module_documents_the_secret() -> None:
    """The public API says the answer holds the session token and never the secret key."""
    doc = signapi.__doc__ or ""
    assert "session token" in doc and "never part of it" in doc


def test_iot_device_gateway_presign_has_the_token_after_the_signature() -> None:
    """``service: iotdevicegateway`` (AWS IoT's MQTT over WebSocket) presigns as AWS IoT wants: the signature is
    botocore's for the URL without the session token, which is appended after it; a ``wss://`` URL is taken."""
    doc = {"method": "GET", "url": "wss://abc-ats.iot.us-west-2.amazonaws.com/mqtt", "service": "iotdevicegateway",
           "presign": 300}
    out = sign(CONN, creds(TOKEN), parse_sign_input(doc), now=NOW)
    base, _, query = out.url.partition("?")
    signed, _, token = query.rpartition("&X-Amz-Security-Token=")
    assert base == "https://abc-ats.iot.us-west-2.amazonaws.com/mqtt"
    assert token == "FwoGZXIvYXdzEXAMPLE%2FSESSION%2BTOKEN%3D%3D" and "Security-Token" not in signed
    request = AWSRequest("GET", base, headers={"Host": "abc-ats.iot.us-west-2.amazonaws.com"})
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4QueryAuth(BotoCredentials(KEY_ID, SECRET), "iotdevicegateway", "us-west-2", expires=300).add_auth(request)
    assert dict(parse_qsl(urlsplit(request.url).query)) == dict(parse_qsl(signed))

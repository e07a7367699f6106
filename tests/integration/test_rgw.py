"""S3 through the proxy against Ceph's RADOS Gateway, which checks what moto does not: the body against
``x-amz-content-sha256`` and presigned URLs."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from tests.conftest import ROOT, Proxy
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.rgw import RGW

BUCKET = "sigproxy-rgw"


def rgw_config(rgw: RGW, *, secret: str | None = None, service: str = 's3') -> str:
    return f"""
[proxy]
default_connection = "ceph"
max_buffered_body = "32MiB"

[connections.ceph]
region = "us-east-1"
service = "{service}"
hosts = ["127.0.0.1:*"]
[connections.ceph.credentials]
source = "static"
access_key_id = "{rgw.access_key}"
secret_access_key = "{secret or rgw.secret_key}"
"""


@pytest.fixture(scope="module")
def bucket(rgw: RGW) -> str:
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def rgw_proxy(rgw: RGW, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    return sigproxy_factory(rgw_config(rgw))


def test_list_put_get_head(rgw: RGW, bucket: str, rgw_proxy: Proxy, tmp_path: Path) -> None:
    """curl ListBuckets, a 5 MiB PutObject (body hash checked by RGW), byte-identical GetObject, HEAD."""
    listing = curl(rgw_proxy, f"{rgw.endpoint}/")
    assert status_of(listing) == 200, listing
    assert f"<Name>{bucket}</Name>" in listing.stdout
    data = os.urandom(5 * 2**20)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    url = f"{rgw.endpoint}/{bucket}/dir/five%20mib.bin"
    put = curl(rgw_proxy, "-T", str(src), url)
    assert status_of(put) == 200, put
    get = curl(rgw_proxy, "-o", str(dst), url)
    assert status_of(get) == 200, get
    assert dst.read_bytes() == data
    head = curl(rgw_proxy, "-I", url)
    assert status_of(head) == 200, head
    assert f"content-length: {len(data)}" in head.stdout.lower()


def test_client_payload_hash_is_kept_and_checked(rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """A hex x-amz-content-sha256 from the client is signed as given, so RGW catches a body that
    doesn't match it; without one the proxy hashes the body itself."""
    url = f"{rgw.endpoint}/{bucket}/claimed.txt"
    wrong = hashlib.sha256(b"something else").hexdigest()
    bad = curl(rgw_proxy, "-X", "PUT", "--data-binary", "payload", "-H", f"x-amz-content-sha256: {wrong}", url)
    assert status_of(bad) == 400, bad
    assert "XAmzContentSHA256Mismatch" in bad.stdout
    right = hashlib.sha256(b"payload").hexdigest()
    good = curl(rgw_proxy, "-X", "PUT", "--data-binary", "payload", "-H", f"x-amz-content-sha256: {right}", url)
    assert status_of(good) == 200, good
    plain = curl(rgw_proxy, "-X", "PUT", "--data-binary", "payload2", url)
    assert status_of(plain) == 200, plain


def test_wrong_secret_refused(rgw: RGW, bucket: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """RGW refuses what a wrong secret signed."""
    proxy = sigproxy_factory(rgw_config(rgw, secret="x" * 40))
    r = curl(proxy, f"{rgw.endpoint}/{bucket}/")
    assert status_of(r) == 403, r
    assert "SignatureDoesNotMatch" in r.stdout


def test_aws_cli_cp(aws_cli: str, rgw: RGW, bucket: str, rgw_proxy: Proxy, tmp_path: Path) -> None:
    """The AWS CLI through the proxy against RGW: upload and download byte-identical."""
    data = os.urandom(1_000_000)
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    src.write_bytes(data)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HTTP_PROXY": rgw_proxy.url,
           "AWS_ACCESS_KEY_ID": "ceph", "AWS_SECRET_ACCESS_KEY": "placeholder", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    for args in (["s3", "cp", str(src), f"s3://{bucket}/cli/a.bin"],
                 ["s3", "cp", f"s3://{bucket}/cli/a.bin", str(dst)]):
        r = subprocess.run([aws_cli, "--endpoint-url", rgw.endpoint, *args], env=env, capture_output=True,
                           text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == data


def _sigproxy(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigproxy", *args, "-c", str(config)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)


def _stored_and_presigned(rgw: RGW, bucket: str, tmp_path: Path, key: str, body: bytes, path: str) -> str:
    """Store ``body`` under ``key`` directly, then `sigproxy sign --presign` the URL of ``path`` (as spelled)."""
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    cfg = tmp_path / "c.toml"
    cfg.write_text(rgw_config(rgw))
    r = _sigproxy("sign", "--connection", "ceph", "--presign", "--expires", "300", f"{rgw.endpoint}/{bucket}/{path}",
                  config=cfg)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_presigned_url_from_sign_is_fetchable(rgw: RGW, bucket: str, tmp_path: Path) -> None:
    """`sigproxy sign --presign` makes a URL RGW serves without any proxy; a tampered one is refused."""
    url = _stored_and_presigned(rgw, bucket, tmp_path, "pre/signed file.txt", b"presigned!",
                                "pre/signed%20file.txt")
    assert "X-Amz-Signature=" in url
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(url, timeout=10) as resp:
        assert resp.read() == b"presigned!"
    tampered = url.replace("signed%20file", "signed%20filf")
    with pytest.raises(urllib.error.HTTPError) as err:
        no_proxy.open(tampered, timeout=10)
    assert err.value.code == 403


def test_sign_headers_work_with_curl(rgw: RGW, bucket: str, tmp_path: Path) -> None:
    """The headers printed by `sigproxy sign` make a PUT that RGW accepts, sent directly with curl."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(rgw_config(rgw))
    url = f"{rgw.endpoint}/{bucket}/signed-put.txt"
    r = _sigproxy("sign", "--connection", "ceph", "-X", "PUT", "--data", "signed body",
                  "-H", "Content-Type: text/plain", url, config=cfg)
    assert r.returncode == 0, r.stderr
    headers = [h for line in r.stdout.splitlines() for h in ("-H", line)]
    put = subprocess.run(["curl", "-sS", "--noproxy", "*", "-X", "PUT", "--data-binary", "signed body",
                          *headers, "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=30,
                         check=False)
    assert status_of(put) == 200, put


def test_unsigned_boto3(rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """boto3 with UNSIGNED through the proxy against RGW (which checks the body hash too)."""
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    cfg = BotoConfig(signature_version=UNSIGNED, proxies={"http": rgw_proxy.url}, s3={"addressing_style": "path"})
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name="us-east-1", config=cfg)
    body = os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="boto3/ü ni code+plus (1).bin", Body=body)
    assert s3.get_object(Bucket=bucket, Key="boto3/ü ni code+plus (1).bin")["Body"].read() == body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="boto3/")["Contents"]]
    assert keys == ["boto3/ü ni code+plus (1).bin"]


def test_presigned_passthrough(rgw: RGW, bucket: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Someone else's presigned URL: refused by default; forwarded untouched (RGW checks its own signature)
    when the connection sets presigned = "passthrough". Its key id (theirs) names no connection, so the
    client selects the connection by header; without that it is a 407 like any unknown key id."""
    from botocore.config import Config as BotoConfig

    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      config=BotoConfig(signature_version="s3v4"), aws_access_key_id=rgw.access_key,
                      aws_secret_access_key=rgw.secret_key)
    s3.put_object(Bucket=bucket, Key="presigned-by-them.txt", Body=b"theirs")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned-by-them.txt"},
                                    ExpiresIn=300)
    assert "X-Amz-Signature=" in url
    refusing = sigproxy_factory(rgw_config(rgw))
    assert status_of(curl(refusing, url)) == 407
    r = curl(refusing, "-H", "X-Sigproxy-Connection: ceph", url)
    assert status_of(r) == 400
    assert "already presigned" in r.stdout
    passing = sigproxy_factory(rgw_config(rgw).replace('service = "s3"', 'service = "s3"\npresigned = "passthrough"'))
    ok = curl(passing, "-H", "X-Sigproxy-Connection: ceph", url)
    assert status_of(ok) == 200, ok
    assert ok.stdout.startswith("theirs")
    tampered = curl(passing, "-H", "X-Sigproxy-Connection: ceph", url.replace("presigned-by-them", "presigned-by-thex"))
    assert status_of(tampered) == 403


def raw_http(proxy: Proxy, method: str, url: str, body: bytes = b"", *, extra: str = "") -> tuple[int, bytes]:
    """One request through the forward proxy with ``url`` in the request line exactly as given (curl and
    HTTP libraries re-encode or refuse some spellings); ``extra``: more header lines, each ending CRLF.
    Returns (status, raw response body)."""
    host, port = proxy.address.rsplit(":", 1)
    authority = url.split("/", 3)[2]
    head = (f"{method} {url} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n")
    data = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# A client's spelling of a key (after "/<bucket>/") -> the key RGW stores. RGW signs the path it decodes,
# encoded again (aws4_uri_recode), and sigproxy sends and signs that path: see normalize_s3_path and
# tests/unit/test_signing_differential.py::S3_PATH_SPELLINGS.
KEY_SPELLINGS = [
    ("q%2Fr", "q/r"),
    ("q%2fr", "q/r"),
    ("dd%2F%2Fee", "dd//ee"),
    ("sub%2F..%2Fx", "sub/../x"),
    ("..%2F..%2Fescape", "../../escape"),  # stays a key in this bucket: S3 does not normalise
    ("a+b", "a+b"),
    ("a%2Bb", "a+b"),
    ("a%2bb", "a+b"),
    ("a%20b", "a b"),
    ("t%7Eu", "t~u"),
    ("v~w", "v~w"),
    ("%41BC", "ABC"),
    ("p%25q", "p%q"),
    ("x%zzy", "x%zzy"),
    ("pct%", "pct%"),
    ("e!*'()f", "e!*'()f"),
    ("g=h:i@j$k&l,m;n", "g=h:i@j$k&l,m;n"),
    ("%C3%A9t%C3%A9", "\u00e9t\u00e9"),
    ("%e2%82%ac", "\u20ac"),
]


@pytest.mark.parametrize(("spelled", "key"), KEY_SPELLINGS, ids=[s for s, _ in KEY_SPELLINGS])
def test_key_spellings(spelled: str, key: str, rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """A PUT through the proxy with the key spelled as a raw client sends it: RGW accepts the signature and
    stores the key it decodes; a GET of that key returns the body. Before the fix an encoded slash was
    signed as "%2F" and RGW answered 403 SignatureDoesNotMatch (issue 12, part 4)."""
    prefix = f"spell-{hashlib.sha256(spelled.encode()).hexdigest()[:8]}-"
    body = f"stored as {key}".encode()
    status, answer = raw_http(rgw_proxy, "PUT", f"{rgw.endpoint}/{bucket}/{prefix}{spelled}", body)
    assert status == 200, answer
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert listed == [prefix + key]
    assert s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read() == body
    status, answer = raw_http(rgw_proxy, "GET", f"{rgw.endpoint}/{bucket}/{prefix}{spelled}")
    assert (status, answer) == (200, body)


def test_encoded_slash_after_bucket(rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """``/<bucket>%2F<key>``: RGW reads bucket and key from the decoded path, and so does the signature."""
    status, answer = raw_http(rgw_proxy, "PUT", f"{rgw.endpoint}/{bucket}%2Fspell-bucket-slash", b"b")
    assert status == 200, answer
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    assert s3.get_object(Bucket=bucket, Key="spell-bucket-slash")["Body"].read() == b"b"


def test_key_not_utf8_reaches_rgw_unchanged(rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """A key that is not UTF-8 (``%FF``) is sent byte for byte: the signature holds and RGW judges the name
    (400 InvalidObjectName). Before, the path was decoded as UTF-8 with replacement characters and RGW
    silently stored a different key, ``x\ufffdy``."""
    status, answer = raw_http(rgw_proxy, "PUT", f"{rgw.endpoint}/{bucket}/spell-x%FFy", b"b")
    assert status == 400, answer
    assert b"InvalidObjectName" in answer


def test_query_not_utf8_reaches_rgw_unchanged(rgw: RGW, bucket: str, rgw_proxy: Proxy) -> None:
    """A query value that is not UTF-8 (``%E9``) is sent and signed byte for byte: RGW, which decodes the
    query and encodes it again to check the signature, accepts it and lists under the prefix it decoded.
    Before, the value was decoded as UTF-8 with replacement characters: RGW got ``%EF%BF%BD``, a different
    prefix, and answered the listing of that one."""
    status, answer = raw_http(rgw_proxy, "GET", f"{rgw.endpoint}/{bucket}?list-type=2&prefix=spell-q%E9z")
    assert status == 200, answer
    assert b"<Prefix>spell-q\xe9z</Prefix>" in answer, answer


def test_presign_encoded_slash(rgw: RGW, bucket: str, tmp_path: Path,
                               sigproxy_factory: Callable[..., Proxy]) -> None:
    """`sigproxy sign --presign` of a path with an encoded slash presigns the key RGW decodes: the URL carries
    "/" and RGW serves it (before, it signed "%2F" and RGW answered 403). Spelled with "%2F" again, the URL
    is the same request to RGW, directly and through presigned = "passthrough", which forwards the
    client's path untouched."""
    url = _stored_and_presigned(rgw, bucket, tmp_path, "pre/q/r", b"slash", "pre/q%2Fr")
    assert f"/{bucket}/pre/q/r?X-Amz-" in url
    respelled = url.replace("/pre/q/r?", "/pre/q%2Fr?")
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for each in (url, respelled):
        with no_proxy.open(each, timeout=10) as resp:
            assert resp.read() == b"slash"
    passing = sigproxy_factory(rgw_config(rgw).replace('service = "s3"', 'service = "s3"\npresigned = "passthrough"'))
    # The URL's key id is RGW's real one, which names no connection: the header selects it.
    status, answer = raw_http(passing, "GET", respelled, extra="X-Sigproxy-Connection: ceph\r\n")
    assert (status, answer) == (200, b"slash")

"""A body's content-coding is never decoded, re-encoded or re-framed, in either direction (issue 12, part 2).

Before: aiohttp's server decoded ``Content-Encoding: gzip``/``deflate`` request bodies before sigproxy read
them, so RGW refused the upload (XAmzContentSHA256Mismatch), moto stored the *decoded* bytes under
``Content-Encoding: gzip``, and a body labelled gzip that was not gzip was a 499. Judged by RGW (which
checks the body against the signed hash), moto, the AWS CLI and curl; every intake path (forward, reverse,
inside a CONNECT tunnel) and every body mode (buffered, spooled, passthrough, unsigned, signed chunks,
re-signed client chunks), with valid and invalid gzip and other codings aiohttp knows.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from tests.conftest import Proxy, moto_config
from tests.integration.test_bodies import BUCKET, chunk_signed_request, rgw_config, s3, stored
from tests.integration.test_https import sigproxy_cli
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto
from tests.servers.rgw import RGW

MIB = 2**20


@pytest.fixture(scope="module")
def bucket(rgw: RGW) -> str:
    client = s3(rgw)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    return BUCKET


def gzipped(size: int) -> bytes:
    """Valid gzip whose compressed size is about ``size`` (random data barely compresses)."""
    return gzip.compress(os.urandom(size), compresslevel=1)


BODIES: dict[str, Callable[[int], bytes]] = {
    "gzip": gzipped,
    "not-gzip": os.urandom,  # labelled gzip, not gzip at all
}


def put(proxy: Proxy, url: str, data: bytes, tmp_path: Path, *headers: str, stdin: bool = False) -> int:
    """PUT ``data`` with curl through the forward proxy; ``stdin``: unknown length (chunked)."""
    path = tmp_path / "body"
    path.write_bytes(data)
    args = ["curl", "-sS", "-x", proxy.url, "-o", "/dev/null", "-w", "%{http_code}"]
    for header in headers:
        args += ["-H", header]
    args += ["-T", "-" if stdin else str(path), url]
    r = subprocess.run(args, input=data if stdin else None, capture_output=True, timeout=60, check=False)
    return int(r.stdout or 0)


def encoding_of(rgw: RGW, key: str) -> str | None:
    return s3(rgw).head_object(Bucket=BUCKET, Key=key).get("ContentEncoding")  # type: ignore[no-any-return]


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize(("case", "mode"), [("small", "buffered"), ("large", "signed-chunks"),
                                            ("unknown-length", "spooled"), ("client-hash", "passthrough"),
                                            ("unsigned-payload", "passthrough")])
def test_forward_modes_keep_gzip_bytes(case: str, mode: str, body: str, rgw: RGW, bucket: str, tmp_path: Path,
                                       sigproxy_factory: Callable[..., Proxy]) -> None:
    """Each body mode through the forward proxy: RGW (which hashes the body) stores exactly the bytes sent,
    with Content-Encoding: gzip kept. A large gzip body goes aws-chunked like any other: sigproxy adds nothing
    to its Content-Encoding (RGW 16 would store an added aws-chunked as the object's encoding)."""
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
    data = BODIES[body](3 * MIB if case in ("large", "unknown-length") else 40_000)
    key = f"coding/{case}-{body}.bin"
    headers = ["Content-Encoding: gzip"]
    if case == "client-hash":
        headers.append(f"x-amz-content-sha256: {hashlib.sha256(data).hexdigest()}")
    elif case == "unsigned-payload":
        headers.append("x-amz-content-sha256: UNSIGNED-PAYLOAD")
    status = put(proxy, f"{rgw.endpoint}/{bucket}/{key}", data, tmp_path, *headers, stdin=case == "unknown-length")
    assert status == 200, proxy.output[-3:]
    assert stored(rgw, key) == data
    assert encoding_of(rgw, key) == "gzip"
    proxy.written(f'"body":"{mode}"')


@pytest.mark.parametrize("coding", [None, "identity"])
def test_a_large_body_is_stored_with_the_coding_it_came_with(coding: str | None, rgw: RGW, bucket: str,
                                                              tmp_path: Path,
                                                              sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 07: a large body sent aws-chunked with signed chunks had Content-Encoding: aws-chunked
    added, which RGW 16 stored as the object's encoding: every later GET and HEAD said aws-chunked of an object
    uploaded with none. Now its encoding is what the client sent, or none."""
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
    data = os.urandom(3 * MIB)
    key = f"coding/large-{coding}.bin"
    assert put(proxy, f"{rgw.endpoint}/{bucket}/{key}", data, tmp_path,
               *([f"Content-Encoding: {coding}"] if coding else [])) == 200
    assert stored(rgw, key) == data
    assert encoding_of(rgw, key) == coding
    proxy.written('"body":"signed-chunks"')


@pytest.mark.parametrize("coding", ["deflate", "br", "zstd", "gzip, identity", "x-gzip", "compress"])
def test_other_codings_untouched(coding: str, rgw: RGW, bucket: str, tmp_path: Path,
                                 sigproxy_factory: Callable[..., Proxy]) -> None:
    """Codings aiohttp decodes (deflate; br, zstd where their modules exist) and ones it doesn't: stored as
    sent, the header as sent."""
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
    data = zlib.compress(os.urandom(20_000)) if coding == "deflate" else os.urandom(20_000)
    key = f"coding/other-{coding.replace(', ', '-')}.bin"
    assert put(proxy, f"{rgw.endpoint}/{bucket}/{key}", data, tmp_path, f"Content-Encoding: {coding}") == 200
    assert stored(rgw, key) == data
    assert encoding_of(rgw, key) == coding


@pytest.mark.parametrize("body", list(BODIES))
def test_resigned_client_chunks_keep_gzip(body: str, rgw: RGW, bucket: str,
                                          sigproxy_factory: Callable[..., Proxy]) -> None:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD with Content-Encoding: aws-chunked,gzip: the aws-chunked framing is
    decoded and re-signed (that is the job), the gzip content kept byte for byte and labelled gzip."""
    proxy = sigproxy_factory(rgw_config(rgw))
    data = BODIES[body](200_000)
    key = f"coding/resigned-{body}.bin"
    status, answer = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/{key}", data, connection="ceph",
                                          content_encoding="aws-chunked,gzip")
    assert status == 200, answer
    assert stored(rgw, key) == data
    # Forwarded as the client sent it: AWS S3 stores "gzip", RGW 16 keeps "aws-chunked,gzip".
    assert encoding_of(rgw, key) in ("gzip", "aws-chunked,gzip")


def test_reverse_listener_keeps_gzip(rgw: RGW, bucket: str, tmp_path: Path,
                                     sigproxy_factory: Callable[..., Proxy]) -> None:
    """A [[reverse]] listener: a small and a large gzip body stored byte-identical."""
    proxy = sigproxy_factory(rgw_config(rgw) + f'\n[[reverse]]\nlisten = "127.0.0.1:0"\n'
                                               f'upstream = "{rgw.endpoint}"\nconnection = "ceph"\n')
    for size in (30_000, 3 * MIB):
        data = gzipped(size)
        key = f"coding/reverse-{size}.gz"
        (tmp_path / "b").write_bytes(data)
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Encoding: gzip",
                            "-T", str(tmp_path / "b"), f"{proxy.reverse[0]}/{bucket}/{key}"],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.stdout == "200", proxy.output[-3:]
        assert stored(rgw, key) == data
        assert encoding_of(rgw, key) == "gzip"


def test_tunnel_keeps_gzip(rgw: RGW, bucket: str, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Inside a CONNECT tunnel to RGW's TLS port: a gzip body (and one labelled gzip that isn't) stored as sent."""
    port = rgw.tls_endpoint.rsplit(":", 1)[1]
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy=f'default_connection = "ceph"\nconnect_ports = [{port}]\n'
                                                         f'upstream_ca_file = "{rgw.ca_file}"\n'
                                                         f'state_dir = "{tmp_path / "state"}"'))
    bundle = tmp_path / "bundle.pem"
    assert sigproxy_cli("ca", "-c", str(proxy.config), "--bundle", str(bundle)).returncode == 0
    for name, data in (("gz", gzipped(50_000)), ("not-gz", os.urandom(50_000))):
        key = f"coding/tunnel-{name}"
        (tmp_path / "b").write_bytes(data)
        r = subprocess.run(["curl", "-sS", "-x", proxy.url, "--cacert", str(bundle), "-o", "/dev/null",
                            "-w", "%{http_code}", "-H", "Content-Encoding: gzip", "-T", str(tmp_path / "b"),
                            f"{rgw.tls_endpoint}/{bucket}/{key}"],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.stdout == "200", (r.stderr, proxy.output[-3:])
        assert stored(rgw, key) == data


@pytest.mark.parametrize("size", [10_000, 500_000])
def test_responses_keep_their_coding(size: int, rgw: RGW, bucket: str, tmp_path: Path,
                                     sigproxy_factory: Callable[..., Proxy]) -> None:
    """A gzip object read back through the proxy (small responses are read whole, large ones streamed):
    the stored bytes, Content-Encoding and Content-Length as stored; HEAD gives the same length."""
    data = gzipped(size)
    key = f"coding/stored-{size}.gz"
    s3(rgw).put_object(Bucket=BUCKET, Key=key, Body=data, ContentEncoding="gzip")
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
    out = tmp_path / "got"
    r = curl(proxy, "-D", str(tmp_path / "head"), "-o", str(out), "-H", "Accept-Encoding: gzip",
             f"{rgw.endpoint}/{bucket}/{key}")
    assert status_of(r) == 200, r
    assert out.read_bytes() == data
    head = (tmp_path / "head").read_text().lower()
    assert "content-encoding: gzip" in head
    assert f"content-length: {len(data)}" in head
    h = curl(proxy, "-I", f"{rgw.endpoint}/{bucket}/{key}")
    assert status_of(h) == 200, h
    assert f"content-length: {len(data)}" in h.stdout.lower()


class TestAwsCli:
    """`aws s3 cp FILE.gz --content-encoding gzip` through HTTP_PROXY, then the CLI's own download."""

    @staticmethod
    def env(proxy: Proxy, tmp_path: Path) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HTTP_PROXY": proxy.url,
                "AWS_ACCESS_KEY_ID": "ceph", "AWS_SECRET_ACCESS_KEY": "placeholder", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true"}

    @pytest.mark.parametrize("size", [40_000, 12 * MIB])  # one PutObject; a multipart upload
    def test_rgw(self, size: int, aws_cli: str, rgw: RGW, bucket: str, tmp_path: Path,
                 sigproxy_factory: Callable[..., Proxy]) -> None:
        proxy = sigproxy_factory(rgw_config(rgw))
        src = tmp_path / "file.gz"
        src.write_bytes(gzipped(size))
        key = f"coding/cli-{size}.gz"
        env = self.env(proxy, tmp_path)
        up = subprocess.run([aws_cli, "--endpoint-url", rgw.endpoint, "s3", "cp", str(src), f"s3://{bucket}/{key}",
                             "--content-encoding", "gzip"], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
        assert up.returncode == 0, up.stderr + "".join(proxy.output[-3:])
        assert stored(rgw, key) == src.read_bytes()
        assert encoding_of(rgw, key) == "gzip"
        down = tmp_path / "down.gz"
        got = subprocess.run([aws_cli, "--endpoint-url", rgw.endpoint, "s3", "cp", f"s3://{bucket}/{key}",
                              str(down)], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert got.returncode == 0, got.stderr
        assert down.read_bytes() == src.read_bytes()

    def test_moto(self, aws_cli: str, moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
        proxy = sigproxy_factory(moto_config(moto))
        src = tmp_path / "file.gz"
        src.write_bytes(gzipped(100_000))
        env = {**self.env(proxy, tmp_path), "AWS_ACCESS_KEY_ID": "main"}
        up = subprocess.run([aws_cli, "--endpoint-url", moto.endpoint, "s3", "cp", str(src),
                             f"s3://{moto.bucket}/coding/cli.gz", "--content-encoding", "gzip"], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
        assert up.returncode == 0, up.stderr
        got = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key
                           ).get_object(Bucket=moto.bucket, Key="coding/cli.gz")
        assert got["Body"].read() == src.read_bytes()
        assert got["ContentEncoding"] == "gzip"

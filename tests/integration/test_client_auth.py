"""Who may use a connection, through a real `sigproxy run` in front of moto (IAM auth on):

* ``client_secret``: unmodified clients (boto3, the AWS CLI) sign with ``AWS_ACCESS_KEY_ID=<connection>`` and
  the client secret; sigproxy verifies that signature (header auth, presigned URLs) before re-signing with the
  real keys, which moto then checks. A wrong secret, an unsigned request, a tampered or expired presigned URL:
  403 ``client_signature_invalid`` and nothing reaches moto.
* failed tokens and client signatures are counted per client address: past ``auth_failures`` → 429.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import Proxy, moto_config
from tests.errorbody import error_body
from tests.integration.test_https import https_config, sigproxy_cli
from tests.servers.moto_server import Moto

CLIENT_SECRET = "local-client-secret-for-tests"


def config(moto: Moto, extra_proxy: str = "") -> str:
    return moto_config(moto, connection=f'client_secret = "{CLIENT_SECRET}"',
                       proxy=f"auth_failures = 4\nauth_failure_window = 30\n{extra_proxy}")


@pytest.fixture
def secret_proxy(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    return sigproxy_factory(config(moto))


@contextmanager
def proxied_client(moto: Moto, proxy: Proxy, service: str, *, secret: str = CLIENT_SECRET,
                   key_id: str = "main") -> Iterator[object]:
    client = boto3.client(service, endpoint_url=moto.endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                          aws_secret_access_key=secret,
                          config=BotoConfig(proxies={"http": proxy.url}, retries={"max_attempts": 1},
                                            signature_version="s3v4"))
    try:
        yield client
    finally:
        client.close()


def raw(proxy: Proxy, method: str, url: str,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = proxy.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, url, headers={"Host": urlsplit(url).netloc, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def error_code(body: bytes) -> str:
    """The snake code of an error answered in sigproxy's JSON or in the request's AWS protocol."""
    return str(error_body(body)["code"])


class TestClientSecret:
    def test_boto3_signed_with_client_secret_is_resigned(self, moto: Moto, secret_proxy: Proxy) -> None:
        """STS and S3 calls signed with the client secret reach moto re-signed with the real keys."""
        with proxied_client(moto, secret_proxy, "sts") as sts:
            arn = sts.get_caller_identity()["Arn"]  # type: ignore[attr-defined]
        assert arn == moto.user_arn
        with proxied_client(moto, secret_proxy, "s3") as s3:
            s3.put_object(Bucket=moto.bucket, Key="client-auth/a.txt", Body=b"hello")  # type: ignore[attr-defined]
            got = s3.get_object(Bucket=moto.bucket, Key="client-auth/a.txt")  # type: ignore[attr-defined]
            assert got["Body"].read() == b"hello"
        secret_proxy.written('"connection":"main"')

    def test_wrong_secret_or_unsigned_is_refused(self, moto: Moto, secret_proxy: Proxy) -> None:
        with proxied_client(moto, secret_proxy, "s3", secret="not-the-client-secret") as s3, \
                pytest.raises(ClientError) as info:
            s3.put_object(Bucket=moto.bucket, Key="client-auth/never.txt", Body=b"x")  # type: ignore[attr-defined]
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["x-sigproxy-error"] == "client_signature_invalid"
        assert info.value.response["Error"]["Code"] == "SigproxyClientSignatureInvalid"  # S3's XML, read by botocore
        # Selected by header but unsigned: refused too, the proxy's token-less front door stays shut.
        status, _, body = raw(secret_proxy, "GET", f"{moto.endpoint}/{moto.bucket}/client-auth/a.txt",
                              {"X-Sigproxy-Connection": "main", "X-Sigproxy-Service": "s3"})
        assert status == 403 and error_code(body) == "client_signature_invalid", body
        error = error_body(body)
        assert error["format"] == "rest-xml" and "AWS_ACCESS_KEY_ID=main" in error["message"], error
        # Nothing was stored by the refused PUT (checked through the proxy with the right secret).
        with proxied_client(moto, secret_proxy, "s3") as s3, pytest.raises(ClientError) as missing:
            s3.head_object(Bucket=moto.bucket, Key="client-auth/never.txt")  # type: ignore[attr-defined]
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    def test_presigned_url_made_with_client_secret(self, moto: Moto, secret_proxy: Proxy) -> None:
        """A URL presigned with the client secret is verified, stripped of its presign parameters and signed
        again with the real keys; tampered or expired URLs get 403."""
        with proxied_client(moto, secret_proxy, "s3") as s3:
            s3.put_object(Bucket=moto.bucket, Key="client-auth/p.txt", Body=b"presigned body")  # type: ignore[attr-defined]
            url = s3.generate_presigned_url(  # type: ignore[attr-defined]
                "get_object", Params={"Bucket": moto.bucket, "Key": "client-auth/p.txt"}, ExpiresIn=60)
            short = s3.generate_presigned_url(  # type: ignore[attr-defined]
                "get_object", Params={"Bucket": moto.bucket, "Key": "client-auth/p.txt"}, ExpiresIn=1)
        status, _, body = raw(secret_proxy, "GET", url)
        assert (status, body) == (200, b"presigned body")
        tampered = url.replace("client-auth/p.txt", "client-auth/a.txt")
        status, _, body = raw(secret_proxy, "GET", tampered)
        assert status == 403 and error_code(body) == "client_signature_invalid", body
        time.sleep(2.1)
        status, _, body = raw(secret_proxy, "GET", short)
        assert status == 403 and b"expired" in body, body

    def test_aws_cli_with_client_secret(self, aws_cli: str, moto: Moto, secret_proxy: Proxy) -> None:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HTTP_PROXY": secret_proxy.url,
               "AWS_ACCESS_KEY_ID": "main", "AWS_SECRET_ACCESS_KEY": CLIENT_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
               "AWS_EC2_METADATA_DISABLED": "true"}
        ok = subprocess.run([aws_cli, "--endpoint-url", moto.endpoint, "--output", "json", "sts",
                             "get-caller-identity"], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["Arn"] == moto.user_arn
        bad = subprocess.run([aws_cli, "--endpoint-url", moto.endpoint, "sts", "get-caller-identity"],
                             capture_output=True, text=True, env={**env, "AWS_SECRET_ACCESS_KEY": "guess"},
                             timeout=120, check=False)
        assert bad.returncode != 0, bad.stderr
        assert "An error occurred (SigproxyClientSignatureInvalid) when calling the GetCallerIdentity operation: " \
            "client signature invalid" in bad.stderr, bad.stderr


class TestAuthFailureLimit:
    def test_bad_signatures_then_429(self, moto: Moto, secret_proxy: Proxy) -> None:
        """Four bad signatures from one address, then 429 with Retry-After even for a good one."""
        for _ in range(4):
            with proxied_client(moto, secret_proxy, "s3", secret="guess") as s3, pytest.raises(ClientError) as info:
                s3.list_buckets()  # type: ignore[attr-defined]
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with proxied_client(moto, secret_proxy, "s3") as s3, pytest.raises(ClientError) as info:
            s3.list_buckets()  # type: ignore[attr-defined]
        meta = info.value.response["ResponseMetadata"]
        assert meta["HTTPStatusCode"] == 429
        assert meta["HTTPHeaders"]["x-sigproxy-error"] == "too_many_auth_failures"
        assert 1 <= int(meta["HTTPHeaders"]["retry-after"]) <= 30

    def test_wrong_tokens_then_429(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        proxy = sigproxy_factory(moto_config(moto, connection='token = "right-token"',
                                             proxy="auth_failures = 3"))
        url = f"{moto.endpoint}/"

        def basic(token: str) -> dict[str, str]:
            value = base64.b64encode(f"main:{token}".encode()).decode()
            return {"Proxy-Authorization": f"Basic {value}", "X-Sigproxy-Service": "s3"}

        status, _, _ = raw(proxy, "GET", url, basic("right-token"))
        assert status == 200
        for guess in ("a", "b", "c"):
            status, _, body = raw(proxy, "GET", url, basic(guess))
            assert status == 407 and error_code(body) == "bad_proxy_token"
        status, headers, body = raw(proxy, "GET", url, basic("right-token"))
        assert status == 429 and error_code(body) == "too_many_auth_failures"
        assert "Retry-After" in headers
        assert "right-token" not in proxy.stop()


class TestClientSecretThroughTunnel:
    def test_boto3_over_https_proxy(self, moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Inside an intercepted CONNECT tunnel the client signs for the real host; its signature (over a
        STREAMING-UNSIGNED-PAYLOAD-TRAILER upload, and a GET) is verified, a wrong secret refused."""
        proxy = sigproxy_factory(https_config(moto, tmp_path / "state",
                                              connection=f'client_secret = "{CLIENT_SECRET}"'))
        bundle = tmp_path / "bundle.pem"
        made = sigproxy_cli("ca", "-c", str(proxy.config), "--bundle", str(bundle))
        assert made.returncode == 0, made.stderr

        def client(secret: str) -> object:
            cfg = BotoConfig(proxies={"https": proxy.url}, s3={"addressing_style": "path"},
                             retries={"max_attempts": 1})
            return boto3.client("s3", endpoint_url=moto.tls_endpoint, region_name="us-east-1", verify=str(bundle),
                                aws_access_key_id="main", aws_secret_access_key=secret, config=cfg)

        good = client(CLIENT_SECRET)
        body = os.urandom(70_000)
        good.put_object(Bucket=moto.bucket, Key="tls/client-auth ü.bin", Body=body)  # type: ignore[attr-defined]
        got = good.get_object(Bucket=moto.bucket, Key="tls/client-auth ü.bin")  # type: ignore[attr-defined]
        assert got["Body"].read() == body
        with pytest.raises(ClientError) as info:
            client("guess").get_object(Bucket=moto.bucket, Key="tls/client-auth ü.bin")  # type: ignore[attr-defined]
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    def test_wrong_tokens_on_connect_then_429(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """CONNECT's Proxy-Authorization is counted too, and shares the count with plain requests."""
        proxy = sigproxy_factory(moto_config(moto, connection='token = "right-token"', proxy="auth_failures = 2"))
        host, port = proxy.address.rsplit(":", 1)

        def connect(token: str) -> bytes:
            value = base64.b64encode(f"main:{token}".encode()).decode()
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(f"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n"
                             f"Proxy-Authorization: Basic {value}\r\n\r\n".encode())
                return sock.recv(4096)

        assert connect("wrong").startswith(b"HTTP/1.1 407")
        status, _, _ = raw(proxy, "GET", f"{moto.endpoint}/", {
            "Proxy-Authorization": "Basic " + base64.b64encode(b"main:also-wrong").decode()})
        assert status == 407
        answer = connect("right-token")
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"Retry-After:" in answer and b"too_many_auth_failures" in answer

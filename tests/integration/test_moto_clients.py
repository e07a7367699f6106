"""Unmodified clients (curl, the AWS CLI, boto3) through the forward proxy, verified by moto's own SigV4
checks: the proxy signs with the IAM user's real keys; the clients hold none."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from tests.conftest import Proxy, moto_config
from tests.servers.moto_server import Moto


def curl(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-x", proxy.url, "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def status_of(result: subprocess.CompletedProcess[str]) -> int:
    return int(result.stdout.rsplit("\n", 1)[-1])


def aws(cli: str, proxy: Proxy, moto: Moto, *args: str, key_id: str = "main") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "HTTP_PROXY": proxy.url,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": "placeholder-not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [cli, "--endpoint-url", moto.endpoint, "--output", "json", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


class TestCurl:
    def test_list_buckets(self, moto: Moto, moto_proxy: Proxy) -> None:
        """An unsigned curl ListBuckets through the proxy is accepted by moto."""
        r = curl(moto_proxy, "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/")
        assert status_of(r) == 200, r
        assert f"<Name>{moto.bucket}</Name>" in r.stdout

    def test_put_and_get_5mib(self, moto: Moto, moto_proxy: Proxy, tmp_path: Path) -> None:
        """A 5 MiB PutObject (curl sends Expect: 100-continue) and a byte-identical GetObject."""
        data = os.urandom(5 * 2**20)
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.write_bytes(data)
        url = f"{moto.endpoint}/{moto.bucket}/curl/five.bin"
        put = curl(moto_proxy, "-H", "X-Sigproxy-Service: s3", "-T", str(src), url)
        assert status_of(put) == 200, put
        get = curl(moto_proxy, "-H", "X-Sigproxy-Service: s3", "-o", str(dst), url)
        assert status_of(get) == 200, get
        assert dst.read_bytes() == data

    def test_wrong_secret_is_refused_by_moto(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """With a wrong secret in the connection, moto refuses the signature: the verifier bites."""
        proxy = sigproxy_factory(moto_config(moto, secret="wrong" + moto.secret_key[5:]))
        r = curl(proxy, "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/")
        assert status_of(r) == 403, r
        assert "SignatureDoesNotMatch" in r.stdout


class TestAwsCli:
    def test_s3_ls_cp_both_ways(self, aws_cli: str, moto: Moto, moto_proxy: Proxy, tmp_path: Path) -> None:
        """`aws s3 ls` and `aws s3 cp` up and down, with AWS_ACCESS_KEY_ID naming the connection."""
        data = os.urandom(300_000)
        src, dst = tmp_path / "up.bin", tmp_path / "down.bin"
        src.write_bytes(data)
        up = aws(aws_cli, moto_proxy, moto, "s3", "cp", str(src), f"s3://{moto.bucket}/cli/up.bin")
        assert up.returncode == 0, up.stderr
        ls = aws(aws_cli, moto_proxy, moto, "s3", "ls", f"s3://{moto.bucket}/cli/")
        assert ls.returncode == 0, ls.stderr
        assert "up.bin" in ls.stdout
        down = aws(aws_cli, moto_proxy, moto, "s3", "cp", f"s3://{moto.bucket}/cli/up.bin", str(dst))
        assert down.returncode == 0, down.stderr
        assert dst.read_bytes() == data

    def test_dynamodb_json_protocol(self, aws_cli: str, moto: Moto, moto_proxy: Proxy) -> None:
        """A JSON-protocol service: DynamoDB PutItem and GetItem."""
        item = json.dumps({"id": {"S": "cli-1"}, "v": {"S": "hello  world"}})
        put = aws(aws_cli, moto_proxy, moto, "dynamodb", "put-item", "--table-name", moto.table, "--item", item)
        assert put.returncode == 0, put.stderr
        get = aws(aws_cli, moto_proxy, moto, "dynamodb", "get-item", "--table-name", moto.table,
                  "--key", json.dumps({"id": {"S": "cli-1"}}))
        assert get.returncode == 0, get.stderr
        assert json.loads(get.stdout)["Item"]["v"]["S"] == "hello  world"

    def test_sqs_send_message(self, aws_cli: str, moto: Moto, moto_proxy: Proxy) -> None:
        """SQS SendMessage through the proxy."""
        r = aws(aws_cli, moto_proxy, moto, "sqs", "send-message", "--queue-url", moto.queue_url,
                "--message-body", "hi there")
        assert r.returncode == 0, r.stderr
        assert "MessageId" in r.stdout

    def test_sts_query_protocol(self, aws_cli: str, moto: Moto, moto_proxy: Proxy) -> None:
        """A query-protocol service: STS GetCallerIdentity returns the proxy's identity, not the client's."""
        r = aws(aws_cli, moto_proxy, moto, "sts", "get-caller-identity")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["Arn"] == moto.user_arn

    def test_iam_query_protocol(self, aws_cli: str, moto: Moto, moto_proxy: Proxy) -> None:
        """IAM ListUsers (query protocol, global service)."""
        r = aws(aws_cli, moto_proxy, moto, "iam", "list-users")
        assert r.returncode == 0, r.stderr
        assert "sigproxy" in r.stdout

    def test_access_key_selects_connection(self, aws_cli: str, moto: Moto,
                                           sigproxy_factory: Callable[..., Proxy]) -> None:
        """With no default connection, AWS_ACCESS_KEY_ID=NAME alone selects it; an unknown key gets 407."""
        text = moto_config(moto).replace('default_connection = "main"', "")
        proxy = sigproxy_factory(text)
        ok = aws(aws_cli, proxy, moto, "sts", "get-caller-identity", key_id="main")
        assert ok.returncode == 0, ok.stderr
        bad = aws(aws_cli, proxy, moto, "sts", "get-caller-identity", key_id="AKIAUNKNOWN")
        assert bad.returncode != 0
        assert "An error occurred (SigproxyNoConnection) when calling the GetCallerIdentity operation: " in bad.stderr


def _service_header(client: object, service: str) -> None:
    def add(request: object, **_: object) -> None:
        request.headers["X-Sigproxy-Service"] = service  # type: ignore[attr-defined]

    client.meta.events.register(f"before-send.{service}.*", add)  # type: ignore[attr-defined]


class TestBoto3Unsigned:
    def test_unsigned_boto3(self, moto: Moto, moto_proxy: Proxy) -> None:
        """boto3 with botocore's UNSIGNED config: the proxy does all the signing."""
        cfg = BotoConfig(signature_version=UNSIGNED, proxies={"http": moto_proxy.url},
                         s3={"addressing_style": "path"})
        s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1", config=cfg)
        # Unsigned requests to 127.0.0.1 carry no credential scope: the service comes from a header.
        _service_header(s3, "s3")
        s3.put_object(Bucket=moto.bucket, Key="boto3/ü ni code+plus.txt", Body=b"x" * 1000,
                      Metadata={"who": "  spaced   out  "})
        got = s3.get_object(Bucket=moto.bucket, Key="boto3/ü ni code+plus.txt")
        assert got["Body"].read() == b"x" * 1000
        listing = s3.list_objects_v2(Bucket=moto.bucket, Prefix="boto3/")
        assert [o["Key"] for o in listing["Contents"]] == ["boto3/ü ni code+plus.txt"]
        sts_client = boto3.client("sts", endpoint_url=moto.endpoint, region_name="us-east-1", config=cfg)
        _service_header(sts_client, "sts")
        assert sts_client.get_caller_identity()["Arn"] == moto.user_arn


@pytest.mark.parametrize("method", ["HEAD", "DELETE"])
def test_head_and_delete(method: str, moto: Moto, moto_proxy: Proxy) -> None:
    """HEAD answers headers only (moto reports Content-Length 0 for HEAD; RGW tests check the length);
    DELETE answers 204."""
    url = f"{moto.endpoint}/{moto.bucket}/hd-{method}.txt"
    # (a form content type would make moto's werkzeug swallow the body as form fields)
    put = curl(moto_proxy, "-H", "X-Sigproxy-Service: s3", "-H", "Content-Type: text/plain", "-X", "PUT",
               "--data-binary", "12345", url)
    assert status_of(put) == 200, put
    args = ["-I"] if method == "HEAD" else ["-X", "DELETE"]
    r = curl(moto_proxy, "-H", "X-Sigproxy-Service: s3", *args, url)
    assert status_of(r) == (200 if method == "HEAD" else 204), r
    if method == "HEAD":
        assert '"827ccb0eea8a706c4c34a16891f84e7b"' in r.stdout  # md5 of "12345"

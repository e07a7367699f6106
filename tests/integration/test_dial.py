"""Dial one address, send and sign another host name (issue 17, item 2), through the real ``sigproxy run`` to
moto in server mode with signature checks.

The connection signs for ``s3.us-east-1.amazonaws.com`` (its ``hosts`` name only AWS names, not 127.0.0.1)
while ``dial`` sends the TCP connection to moto on 127.0.0.1: moto checks each signature against the ``Host``
it received, so a request signed for one host and sent with another, or with a wrong secret, is refused. A
plain-socket server records the head sigproxy writes, to show which ``Host`` goes on the wire.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import Proxy
from tests.integration.test_user_header import access_log
from tests.servers.moto_server import Moto

SERVICE_HOST = "s3.us-east-1.amazonaws.com"


def config(moto: Moto, *, secret: str | None = None, proxy: str = "", tail: str = "", region: bool = True) -> str:
    return f"""
[proxy]
{proxy}
[connections.main]
{'region = "us-east-1"' if region else ""}
hosts = ["{SERVICE_HOST}", "*.s3.us-east-1.amazonaws.com"]
[connections.main.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{secret or moto.secret_key}"
{tail}
"""


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def reverse(upstream: str, extra: str) -> str:
    return f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nconnection = "main"\n{extra}\n'


def cli(aws_cli: str, tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_ACCESS_KEY_ID": "main",
           "AWS_SECRET_ACCESS_KEY": "placeholder", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run([aws_cli, "--endpoint-url", endpoint, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def s3(endpoint: str, *, proxy: str | None = None) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="main",
                        aws_secret_access_key="placeholder",
                        config=BotoConfig(proxies={"http": proxy} if proxy else {}, retries={"max_attempts": 1},
                                          s3={"addressing_style": "path"}))


def test_reverse_listener_dials_moto_while_signing_the_service_host(
        aws_cli: str, moto: Moto, sigproxy_factory: Callable[..., Proxy], tmp_path: Path) -> None:
    """The AWS CLI through a reverse listener whose upstream is S3's name and whose dial is moto: a bucket is
    created, an object put and read back; moto accepted every signature (made for the service host)."""
    proxy = sigproxy_factory(config(moto, tail=reverse(f"http://{SERVICE_HOST}",
                                                       f'dial = "127.0.0.1:{port_of(moto.endpoint)}"')))
    endpoint = proxy.reverse[0]
    bucket = f"dial-{uuid.uuid4().hex[:12]}"
    body = tmp_path / "body.txt"
    body.write_text("through the dial\n")
    steps = [("s3api", "create-bucket", "--bucket", bucket),
             ("s3api", "put-object", "--bucket", bucket, "--key", "k", "--body", str(body)),
             ("s3", "cp", f"s3://{bucket}/k", str(tmp_path / "back.txt"))]
    for step in steps:
        r = cli(aws_cli, tmp_path, endpoint, *step)
        assert r.returncode == 0, (step, r.stderr, "".join(proxy.output[-20:]))
    assert (tmp_path / "back.txt").read_text() == "through the dial\n"
    lines = access_log(proxy, 3)
    assert {line["dial"] for line in lines} == {f"127.0.0.1:{port_of(moto.endpoint)}"}
    assert all(line["host"] == SERVICE_HOST and line["status"] == 200 for line in lines), lines
    assert "reverse listener for http://s3.us-east-1.amazonaws.com: dial 127.0.0.1:" in proxy.written("dial 127")


def test_a_wrong_secret_is_refused_by_moto(aws_cli: str, moto: Moto, sigproxy_factory: Callable[..., Proxy],
                                           tmp_path: Path) -> None:
    """The same listener signing with a wrong secret: moto refuses (the signature is really checked)."""
    proxy = sigproxy_factory(config(moto, secret="wrong-secret", tail=reverse(
        f"http://{SERVICE_HOST}", f'dial = "127.0.0.1:{port_of(moto.endpoint)}"')))
    r = cli(aws_cli, tmp_path, proxy.reverse[0], "s3api", "list-objects-v2", "--bucket", moto.bucket)
    assert r.returncode != 0
    assert "SignatureDoesNotMatch" in r.stderr, r.stderr


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[bytes]]]:
    """A plain TCP server on 127.0.0.1 that records each request head and answers 200 with an empty body."""
    heads: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                heads.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1], heads
    finally:
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not: the join waited its 5 s)
        srv.close()
        thread.join(5)


def test_the_host_on_the_wire_is_the_signed_host(moto: Moto, sigproxy_factory: Callable[..., Proxy],
                                                  recorder: tuple[int, list[bytes]]) -> None:
    """``sign_host`` replaces the upstream's host in the Host header and the signature; ``dial`` decides only
    where the connection goes."""
    port, heads = recorder
    proxy = sigproxy_factory(config(moto, tail=reverse(
        "http://storage.internal:9000/prefix", f'dial = "127.0.0.1:{port}"\nsign_host = "{SERVICE_HOST}"')))
    with urllib.request.urlopen(f"{proxy.reverse[0]}/b/k") as resp:
        assert resp.status == 200
    head = heads[0].decode()
    assert head.startswith("GET /prefix/b/k HTTP/1.1\r\n")
    assert f"\r\nHost: {SERVICE_HOST}\r\n" in head
    assert "/us-east-1/s3/aws4_request, SignedHeaders=host;" in head


def test_tls_is_checked_against_the_dialled_name_or_tls_server_name(
        moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """An https upstream named for S3, dialled at moto's TLS port: the certificate (127.0.0.1, localhost) is
    checked against the dialled address, or ``tls_server_name``; one naming S3 itself fails verification."""
    assert moto.tls_endpoint is not None and moto.ca_file is not None
    dial = f'dial = "127.0.0.1:{port_of(moto.tls_endpoint)}"'
    proxy = sigproxy_factory(config(
        moto, proxy=f'upstream_ca_file = "{moto.ca_file}"',
        tail=reverse(f"https://{SERVICE_HOST}", dial)
        + reverse(f"https://{SERVICE_HOST}", f'{dial}\ntls_server_name = "localhost"')
        + reverse(f"https://{SERVICE_HOST}", f'{dial}\ntls_server_name = "{SERVICE_HOST}"')))
    for endpoint in proxy.reverse[:2]:
        listed = s3(endpoint).list_objects_v2(Bucket=moto.bucket)
        assert listed["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as info:
        s3(proxy.reverse[2]).list_objects_v2(Bucket=moto.bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.response["Error"]["Message"], info.value.response


def test_a_route_dials_for_the_hosts_it_matches(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The forward proxy: clients name S3; the route sends their connections to moto. boto3 puts and gets."""
    route = (f'[[routes]]\nhost = "{SERVICE_HOST}"\nconnection = "main"\n'
             f'dial = "127.0.0.1:{port_of(moto.endpoint)}"\n')
    proxy = sigproxy_factory(config(moto, tail=route))
    client = s3(f"http://{SERVICE_HOST}", proxy=proxy.url)
    client.put_object(Bucket=moto.bucket, Key="routed", Body=b"via the route")
    assert client.get_object(Bucket=moto.bucket, Key="routed")["Body"].read() == b"via the route"
    assert {line["dial"] for line in access_log(proxy, 2)} == {f"127.0.0.1:{port_of(moto.endpoint)}"}


def test_a_route_sign_host_gives_service_and_region(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """An unsigned client names an internal alias; the route signs S3's name, whose region and service are the
    ones used (the connection has no region, the alias says nothing); moto accepts the signature."""
    route = ('[[routes]]\nhost = "storage.internal"\nconnection = "main"\n'
             f'dial = "127.0.0.1:{port_of(moto.endpoint)}"\nsign_host = "{SERVICE_HOST}"\n')
    proxy = sigproxy_factory(config(moto, tail=route, region=False))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open(f"http://storage.internal/{moto.bucket}?list-type=2") as resp:
        assert resp.status == 200
        assert b"<ListBucketResult" in resp.read()
    line = access_log(proxy, 1)[-1]
    assert (line["host"], line["sign_host"], line["service"], line["region"]) == (
        "storage.internal", SERVICE_HOST, "s3", "us-east-1")


def test_a_reload_changes_a_routes_dial(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Routes' dial settings apply on SIGHUP (and are logged again); before, the route dials a closed port."""
    closed = socket.create_server(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()

    def text(port: object) -> str:
        return config(moto, tail=f'[[routes]]\nhost = "{SERVICE_HOST}"\nconnection = "main"\n'
                                 f'dial = "127.0.0.1:{port}"\n')

    proxy = sigproxy_factory(text(dead_port))
    client = s3(f"http://{SERVICE_HOST}", proxy=proxy.url)
    with pytest.raises(ClientError) as info:
        client.head_bucket(Bucket=moto.bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    proxy.rewrite(text(port_of(moto.endpoint)))
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.written("config reloaded")
    assert f"route for {SERVICE_HOST}: dial 127.0.0.1:{port_of(moto.endpoint)}" in "".join(proxy.output)
    assert client.head_bucket(Bucket=moto.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200

"""A connection name that matches none fails closed, whichever way the client gave it (issue 12, part 6).

The real proxy in front of moto, with two connections: ``prod`` (the default) and ``main``. A client that
means ``main`` but types ``mian`` -- in ``X-Sigproxy-Connection``, the proxy user, a CONNECT's proxy
credentials, the access key id of its SigV4 or SigV2 signature, or of a presigned URL -- gets 407 naming
``main``, and its PutObject never reaches moto (checked with moto directly). Before the fix the key id forms
were signed as ``prod``. ``[proxy] unknown_key_id = "ignore"`` is the opt-in fallback.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import Proxy
from tests.errorbody import error_body
from tests.integration.test_moto_clients import curl, status_of
from tests.integration.test_operations import CLONE
from tests.integration.test_user_header import access_log
from tests.servers.moto_server import Moto


def two_connections(moto: Moto, *, proxy: str = "", reverse: bool = False) -> str:
    conns = "".join(CLONE.format(name=name, access_key=moto.access_key, secret=moto.secret_key)
                    for name in ("prod", "main"))
    tls = moto.tls_endpoint.rsplit(":", 1)[1] if moto.tls_endpoint else "443"
    rev = f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{moto.endpoint}"\nconnection = "main"\n'
    return (f'[proxy]\ndefault_connection = "prod"\nconnect_ports = [443, {tls}]\n{proxy}\n' + conns
            + (rev if reverse else ""))


def direct(moto: Moto) -> BaseClient:
    return boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                        aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)


def exists(moto: Moto, key: str) -> bool:
    try:
        direct(moto).head_object(Bucket=moto.bucket, Key=key)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def via_proxy(moto: Moto, proxy_url: str, key_id: str, endpoint: str | None = None) -> BaseClient:
    """boto3 signing with ``key_id`` (SigV4), through the forward proxy (or straight at ``endpoint``)."""
    config = BotoConfig(proxies={} if endpoint else {"http": proxy_url}, retries={"max_attempts": 1},
                        s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint or moto.endpoint, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key="placeholder", config=config)


def error(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The error as sigproxy's JSON or, when the request carries a SigV4 scope, as S3's XML."""
    return error_body(r.stdout.rsplit("\n", 1)[0])


def presigned(moto: Moto, key: str, key_id: str) -> str:
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                          aws_secret_access_key="placeholder", config=BotoConfig(signature_version="s3v4"))
    return client.generate_presigned_url("put_object", Params={"Bucket": moto.bucket, "Key": key}, ExpiresIn=300)


def curl_way(way: str, proxy: Proxy, moto: Moto, key: str) -> subprocess.CompletedProcess[str]:
    """A PutObject of ``key`` through the proxy naming ``mian`` in one way (curl, raw HTTP headers)."""
    url = f"{moto.endpoint}/{moto.bucket}/{key}"
    put = ["-X", "PUT", "--data-binary", "typo"]
    if way == "header":
        return curl(proxy, *put, "-H", "X-Sigproxy-Connection: mian", url)
    if way == "proxy-user":
        return subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-x", f"http://mian:x@{proxy.address}", *put,
                               url], capture_output=True, text=True, timeout=60, check=False)
    if way == "sigv4-presigned":
        return curl(proxy, *put, presigned(moto, key, "mian"))
    if way == "sigv2-header":
        return curl(proxy, *put, "-H", "Authorization: AWS mian:c2lnbmF0dXJlLW5vdC1jaGVja2Vk", url)
    if way == "sigv2-presigned":
        return curl(proxy, *put, f"{url}?AWSAccessKeyId=mian&Expires=4102444800&Signature=abc%3D")
    if way == "sigv4-lower-case-algorithm":
        return curl(proxy, *put, "-H", "Authorization: aws4-hmac-sha256 Credential=mian/20260101/us-east-1/s3/"
                    "aws4_request, SignedHeaders=host, Signature=00", url)
    raise AssertionError(way)


@pytest.mark.parametrize("way", ["header", "proxy-user", "sigv4-presigned", "sigv2-header", "sigv2-presigned",
                                 "sigv4-lower-case-algorithm"])
def test_typo_is_407_naming_the_closest(way: str, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """curl naming `mian` any of these ways: 407 no_connection naming 'main', and moto never sees the PUT."""
    proxy = sigproxy_factory(two_connections(moto))
    key = f"typo/{way}-{uuid.uuid4().hex}"
    r = curl_way(way, proxy, moto, key)
    assert status_of(r) == 407, r
    err = error(r)
    assert err["code"] == "no_connection"
    assert "'mian' names no connection (closest: 'main')" in err["message"]
    assert "placeholder" not in r.stdout and moto.secret_key not in r.stdout
    assert not exists(moto, key)


@pytest.mark.parametrize("name", ["X-Sigproxy-Connection", "Proxy-Authorization", "Authorization"])
def test_a_name_given_twice_is_refused(name: str, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A header that names a connection, sent twice (the right name, then a typo): 400, never first-wins."""
    proxy = sigproxy_factory(two_connections(moto))
    key = f"twice/{name}-{uuid.uuid4().hex}"
    value = {"X-Sigproxy-Connection": "{}", "Proxy-Authorization": "Basic {}",
             "Authorization": "AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/s3/aws4_request, "
                              "SignedHeaders=host, Signature=00"}[name]
    if name == "Proxy-Authorization":
        names = [base64.b64encode(f"{n}:".encode()).decode() for n in ("main", "mian")]
    else:
        names = ["main", "mian"]
    r = curl(proxy, "-X", "PUT", "--data-binary", "x", "-H", f"{name}: {value.format(names[0])}",
             "-H", f"{name}: {value.format(names[1])}", f"{moto.endpoint}/{moto.bucket}/{key}")
    assert status_of(r) == 400, r
    assert f"{name} is given 2 times" in error(r)["message"]
    assert not exists(moto, key)


def test_boto3_typo_in_access_key_id(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """boto3 with AWS_ACCESS_KEY_ID=mian (SigV4 header): 407 and nothing stored, where it used to be signed as
    the default connection `prod`; the intended name works."""
    proxy = sigproxy_factory(two_connections(moto))
    key = f"typo/boto3-{uuid.uuid4().hex}"
    with pytest.raises(ClientError) as info:
        via_proxy(moto, proxy.url, "mian").put_object(Bucket=moto.bucket, Key=key, Body=b"typo")
    meta = info.value.response["ResponseMetadata"]
    assert (meta["HTTPStatusCode"], meta["HTTPHeaders"]["x-sigproxy-error"]) == (407, "no_connection")
    assert not exists(moto, key)
    via_proxy(moto, proxy.url, "main").put_object(Bucket=moto.bucket, Key=key, Body=b"meant")
    assert exists(moto, key)
    proxy.stop()
    assert [(e.get("connection"), e["status"]) for e in access_log(proxy)] == [(None, 407), ("main", 200)]


def connect(proxy: Proxy, port: int, user: str) -> bytes:
    """A raw CONNECT with proxy credentials ``user:x``; the head of the answer (and its body, if any)."""
    host, proxy_port = proxy.address.rsplit(":", 1)
    creds = base64.b64encode(f"{user}:x".encode()).decode()
    with socket.create_connection((host, int(proxy_port)), timeout=15) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Proxy-Authorization: Basic {creds}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or (answer.startswith(b"HTTP/1.1 407") and not answer.endswith(b"}")):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def test_connect_with_typo_in_proxy_credentials(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """HTTPS_PROXY=http://mian:x@...: the CONNECT itself is refused with 407 naming 'main' (no tunnel, so
    nothing can reach moto); `main` gets its tunnel."""
    assert moto.tls_endpoint is not None
    port = int(moto.tls_endpoint.rsplit(":", 1)[1])
    proxy = sigproxy_factory(two_connections(moto))
    refused = connect(proxy, port, "mian")
    assert refused.startswith(b"HTTP/1.1 407"), refused
    body = json.loads(refused.split(b"\r\n\r\n", 1)[1])
    assert "'mian' names no connection (closest: 'main')" in body["error"]["message"]
    assert connect(proxy, port, "main").startswith(b"HTTP/1.1 200 Connection established")


def test_unknown_key_id_ignore_is_the_opt_in(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """[proxy] unknown_key_id = "ignore": a key id naming no connection falls through to the default (here,
    real-looking keys on a forward proxy); a typo in the header is still refused."""
    proxy = sigproxy_factory(two_connections(moto, proxy='unknown_key_id = "ignore"'))
    key = f"fallback/{uuid.uuid4().hex}"
    via_proxy(moto, proxy.url, "AKIAIOSFODNN7EXAMPLE").put_object(Bucket=moto.bucket, Key=key, Body=b"x")
    assert exists(moto, key)
    header = curl_way("header", proxy, moto, f"fallback/header-{uuid.uuid4().hex}")
    assert status_of(header) == 407
    proxy.stop()
    assert [(e["connection"], e["selected_by"]) for e in access_log(proxy) if e.get("status") == 200] == [
        ("prod", "default")]


@pytest.mark.parametrize("setting", ["", 'unknown_key_id = "ignore"'])
def test_reverse_listener_with_real_looking_keys(setting: str, moto: Moto,
                                                 sigproxy_factory: Callable[..., Proxy]) -> None:
    """A client with its own real-looking keys on a reverse listener bound to `main`: refused by default
    (the key id names no connection), served as the listener's connection with unknown_key_id = "ignore"."""
    proxy = sigproxy_factory(two_connections(moto, proxy=setting, reverse=True))
    key = f"reverse/{uuid.uuid4().hex}"
    client = via_proxy(moto, proxy.url, "AKIAIOSFODNN7EXAMPLE", endpoint=proxy.reverse[0])
    if not setting:
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=moto.bucket, Key=key, Body=b"x")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 407
        assert not exists(moto, key)
    else:
        client.put_object(Bucket=moto.bucket, Key=key, Body=b"x")
        assert exists(moto, key)
        proxy.stop()
        assert [(e["connection"], e["selected_by"]) for e in access_log(proxy)] == [("main", "listener")]

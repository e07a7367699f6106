"""Every byte of a TLS stream arrives, even when the peer closes while sigproxy has paused reading.

The fault class (issue 12, part 1): uvloop's own TLS protocol (``uvloop/sslproto.pyx``, ``eof_received``)
treats a TCP FIN as an abort and discards the decrypted-but-unread data still in its buffer when the
application had paused reading. sigproxy pauses reading an upstream whenever its client is slower than the
upstream, and moto (werkzeug) closes its TLS connections without a close_notify right after the last byte,
so ranged downloads over HTTPS came back 224-240 KiB short. Judged here by real clients (boto3, curl) and
real upstreams (moto over TLS, and a plain ``ssl`` origin that closes straight after its last write).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import trustme
from botocore.config import Config as BotoConfig

from tests.conftest import Proxy
from tests.integration.test_https import https_config, sigproxy_cli
from tests.servers.moto_server import Moto

MIB = 2**20


@pytest.fixture(scope="module")
def big_object(moto: Moto) -> tuple[str, bytes]:
    """A 64 MiB object in moto (uploaded directly, signed by boto3 with moto's keys)."""
    data = b"".join(i.to_bytes(4, "big") * (MIB // 4) for i in range(64))
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                      aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    key = "tls-streams/64mib.bin"
    s3.put_object(Bucket=moto.bucket, Key=key, Body=data)
    return key, data


def _bundle(proxy: Proxy, tmp_path: Path) -> Path:
    path = tmp_path / "bundle.pem"
    result = sigproxy_cli("ca", "-c", str(proxy.config), "--bundle", str(path))
    assert result.returncode == 0, result.stderr
    return path


def _short_reads(proxy: Proxy) -> list[str]:
    return [line[:400] for line in proxy.output if "ended early" in line or "Traceback" in line]


def test_concurrent_ranged_downloads_through_tunnel(moto: Moto, big_object: tuple[str, bytes], tmp_path: Path,
                                                    sigproxy_factory: Callable[..., Proxy]) -> None:
    """32 ranged GETs of 2 MiB from 8 threads through HTTPS_PROXY, client retries off: all complete and
    byte-identical (before the fix, about half came back short)."""
    key, data = big_object
    proxy = sigproxy_factory(https_config(moto, tmp_path / "state"))
    bundle = _bundle(proxy, tmp_path)
    cfg = BotoConfig(proxies={"https": proxy.url}, retries={"max_attempts": 1, "mode": "standard"},
                     max_pool_connections=8, read_timeout=120, s3={"addressing_style": "path"})
    s3 = boto3.client("s3", endpoint_url=moto.tls_endpoint, region_name="us-east-1", verify=str(bundle),
                      aws_access_key_id="main", aws_secret_access_key="placeholder", config=cfg)
    ranges = [(i * 2 * MIB, (i + 1) * 2 * MIB - 1) for i in range(32)]

    def fetch(span: tuple[int, int]) -> bool:
        start, end = span
        try:
            body = s3.get_object(Bucket=moto.bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
        except Exception:
            return False
        return body == data[start:end + 1]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, ranges))
    assert results.count(True) == len(ranges), "".join(_short_reads(proxy)[-5:])
    assert not _short_reads(proxy)


def test_slow_curl_gets_every_byte(moto: Moto, big_object: tuple[str, bytes], tmp_path: Path,
                                   sigproxy_factory: Callable[..., Proxy]) -> None:
    """curl reading at 8 MiB/s through the tunnel: sigproxy pauses reading moto for most of the transfer,
    and moto closes right after its last byte. The whole object arrives."""
    key, data = big_object
    proxy = sigproxy_factory(https_config(moto, tmp_path / "state", connection='service = "s3"'))
    bundle = _bundle(proxy, tmp_path)
    out = tmp_path / "out.bin"
    result = subprocess.run(
        ["curl", "-sS", "--fail", "--limit-rate", "8M", "-x", proxy.url, "--cacert", str(bundle),
         "-H", "Range: bytes=0-16777215", "-o", str(out),
         f"{moto.tls_endpoint}/{moto.bucket}/{key}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr + "".join(_short_reads(proxy)[-5:])
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data[:16 * MIB]).digest()


# --- an origin that closes (FIN, no close_notify) straight after its last byte -----------------------------

@pytest.fixture(scope="module")
def closing_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, bytes]]:
    """A TLS origin answering every request with 2 MiB, ``Connection: close``, then a bare TCP close."""
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    ca_file = tmp_path_factory.mktemp("origin") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    body = os.urandom(2 * MIB)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head:
                    part = tls.recv(4096)
                    if not part:
                        return
                    head += part
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                # No unwrap(): a bare FIN after the data, as werkzeug and many servers do.
        except OSError:
            pass

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], ca_file, body
    finally:
        stop.set()
        listener.close()
        thread.join()


def _origin_config(port: int, ca_file: Path, state: Path, *, reverse: bool) -> str:
    listener = f'\n[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "https://localhost:{port}"\n' \
               'connection = "main"\n' if reverse else ""
    return f"""
[proxy]
default_connection = "main"
state_dir = "{state}"
upstream_ca_file = "{ca_file}"
connect_ports = [{port}]

[connections.main]
region = "us-east-1"
hosts = ["localhost:{port}"]
service = "execute-api"
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
{listener}"""


@pytest.mark.parametrize("path", ["tunnel", "reverse"])
def test_slow_readers_behind_closing_origin(path: str, closing_origin: tuple[int, Path, bytes], tmp_path: Path,
                                            sigproxy_factory: Callable[..., Proxy]) -> None:
    """Through a CONNECT tunnel and through a reverse listener to an https upstream: 12 curl transfers at
    once, each reading slowly, all get every byte from an origin that closes right after writing them."""
    port, ca_file, body = closing_origin
    proxy = sigproxy_factory(_origin_config(port, ca_file, tmp_path / "state", reverse=path == "reverse"))
    if path == "tunnel":
        bundle = _bundle(proxy, tmp_path)
        args, url = ["-x", proxy.url, "--cacert", str(bundle)], f"https://localhost:{port}/x"
    else:
        args, url = [], f"{proxy.reverse[0]}/x"
    outs = [tmp_path / f"out{i}.bin" for i in range(12)]
    transfers = [arg for out in outs for arg in ("-o", str(out), url)]
    result = subprocess.run(["curl", "-sS", "--fail", "--parallel", "--parallel-immediate", "--parallel-max", "12",
                             "--limit-rate", "1M", *args, *transfers],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr + "".join(_short_reads(proxy)[-5:])
    assert all(out.read_bytes() == body for out in outs)

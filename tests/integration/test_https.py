"""HTTPS_PROXY: CONNECT tunnels terminated with sigproxy's own CA, requests inside signed and sent to moto
over TLS (trusted through upstream_ca_file), moto's signature checks the judge; passthrough and refusals."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import trustme
from botocore.config import Config as BotoConfig

from tests.conftest import ROOT, Proxy
from tests.servers.moto_server import Moto


def tls_port(moto: Moto) -> int:
    assert moto.tls_endpoint is not None
    return int(moto.tls_endpoint.rsplit(":", 1)[1])


def https_config(moto: Moto, state_dir: Path, *, extra_proxy: str = "", connection: str = "") -> str:
    return f"""
[proxy]
default_connection = "main"
state_dir = "{state_dir}"
upstream_ca_file = "{moto.ca_file}"
connect_ports = [443, {tls_port(moto)}]
{extra_proxy}

[connections.main]
region = "us-east-1"
hosts = ["127.0.0.1:*", "localhost:*"]
sts_endpoint_url = "{moto.endpoint}"
{connection}
[connections.main.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"
"""


def sigproxy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigproxy", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)


@pytest.fixture
def https_proxy(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    return sigproxy_factory(https_config(moto, tmp_path / "state"))


@pytest.fixture
def bundle(https_proxy: Proxy, tmp_path: Path) -> Path:
    """The trust bundle from `sigproxy ca --bundle` (system store + our CA)."""
    path = tmp_path / "bundle.pem"
    r = sigproxy_cli("ca", "-c", str(https_proxy.config), "--bundle", str(path))
    assert r.returncode == 0, r.stderr
    return path


def aws(cli: str, proxy: Proxy, moto: Moto, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HTTPS_PROXY": proxy.url,
           "AWS_CA_BUNDLE": str(bundle), "AWS_ACCESS_KEY_ID": "main", "AWS_SECRET_ACCESS_KEY": "placeholder",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run([cli, "--endpoint-url", str(moto.tls_endpoint), "--output", "json", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def curl(proxy_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--proxy", proxy_url, "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


class TestThroughHttpsProxy:
    def test_aws_cli(self, aws_cli: str, moto: Moto, https_proxy: Proxy, bundle: Path, tmp_path: Path) -> None:
        """The AWS CLI over HTTPS_PROXY with placeholder keys: s3 ls, s3 cp both ways (byte-identical),
        DynamoDB (JSON protocol) and STS (query protocol)."""
        data = os.urandom(150_000)
        src, dst = tmp_path / "up.bin", tmp_path / "down.bin"
        src.write_bytes(data)
        up = aws(aws_cli, https_proxy, moto, bundle, "s3", "cp", str(src), f"s3://{moto.bucket}/tls/up.bin")
        assert up.returncode == 0, up.stderr
        ls = aws(aws_cli, https_proxy, moto, bundle, "s3", "ls", f"s3://{moto.bucket}/tls/")
        assert ls.returncode == 0, ls.stderr
        assert "up.bin" in ls.stdout
        down = aws(aws_cli, https_proxy, moto, bundle, "s3", "cp", f"s3://{moto.bucket}/tls/up.bin", str(dst))
        assert down.returncode == 0, down.stderr
        assert dst.read_bytes() == data
        tables = aws(aws_cli, https_proxy, moto, bundle, "dynamodb", "list-tables")
        assert tables.returncode == 0, tables.stderr
        assert moto.table in json.loads(tables.stdout)["TableNames"]
        who = aws(aws_cli, https_proxy, moto, bundle, "sts", "get-caller-identity")
        assert who.returncode == 0, who.stderr
        assert json.loads(who.stdout)["Arn"] == moto.user_arn

    def test_boto3(self, moto: Moto, https_proxy: Proxy, bundle: Path) -> None:
        """boto3 with placeholder keys over HTTPS_PROXY (its uploads use STREAMING-UNSIGNED-PAYLOAD-TRAILER)."""
        cfg = BotoConfig(proxies={"https": https_proxy.url}, s3={"addressing_style": "path"})
        s3 = boto3.client("s3", endpoint_url=moto.tls_endpoint, region_name="us-east-1", verify=str(bundle),
                          aws_access_key_id="main", aws_secret_access_key="placeholder", config=cfg)
        body = os.urandom(70_000)
        s3.put_object(Bucket=moto.bucket, Key="tls/boto3 ü.bin", Body=body)
        assert s3.get_object(Bucket=moto.bucket, Key="tls/boto3 ü.bin")["Body"].read() == body

    def test_curl(self, moto: Moto, https_proxy: Proxy, bundle: Path, tmp_path: Path) -> None:
        """Unsigned curl through the tunnel: PUT and a byte-identical GET."""
        data = os.urandom(1_000_000)
        (tmp_path / "f").write_bytes(data)
        url = f"{moto.tls_endpoint}/{moto.bucket}/tls/curl.bin"
        put = curl(https_proxy.url, "--cacert", str(bundle), "-H", "X-Sigproxy-Service: s3", "-T",
                   str(tmp_path / "f"), url)
        assert put.stdout.endswith("\n200"), put
        for _attempt in range(2):
            get = curl(https_proxy.url, "--cacert", str(bundle), "-H", "X-Sigproxy-Service: s3", "-o",
                       str(tmp_path / "g"), url)
            # Seen once under full-suite load: moto's TLS server cut a response short. The proxy then aborts
            # the client connection (curl exit 18) as it must; that one case is retried, nothing else.
            if get.returncode != 18:
                break
            https_proxy.written("Not enough data to satisfy content length")  # that cut, logged: once more
        assert get.returncode == 0, get
        assert get.stdout.endswith("\n200"), get
        assert (tmp_path / "g").read_bytes() == data

    def test_connect_proxy_authorization_applies_inside(self, moto: Moto, tmp_path: Path, bundle: Path,
                                                        sigproxy_factory: Callable[..., Proxy]) -> None:
        """Proxy credentials on the CONNECT select the connection and satisfy its token for every request in
        the tunnel; a wrong token is refused at the CONNECT with 407."""
        text = https_config(moto, tmp_path / "state", connection='token = "tunnel-token-1"\nservice = "s3"')
        proxy = sigproxy_factory(text.replace('default_connection = "main"', ""))
        host = proxy.address
        ok = curl(f"http://main:tunnel-token-1@{host}", "--cacert", str(bundle), f"{moto.tls_endpoint}/")
        assert ok.stdout.endswith("\n200"), ok
        assert f"<Name>{moto.bucket}</Name>" in ok.stdout
        bad = curl(f"http://main:nope@{host}", "--cacert", str(bundle), f"{moto.tls_endpoint}/")
        assert "407" in bad.stderr or bad.stdout.endswith("\n407"), bad
        assert "tunnel-token-1" not in proxy.stop()


class TestRefusals:
    def test_client_without_our_ca_fails_handshake(self, moto: Moto, https_proxy: Proxy) -> None:
        """A client that doesn't trust sigproxy's CA gets a TLS failure, never an unsigned request."""
        r = curl(https_proxy.url, "-H", "X-Sigproxy-Service: s3", f"{moto.tls_endpoint}/")
        assert r.returncode == 60, r  # curl: peer certificate cannot be authenticated

    def test_unlisted_host_refused(self, https_proxy: Proxy) -> None:
        """CONNECT to a host no connection may sign for and not in passthrough: 403."""
        r = curl(https_proxy.url, "https://example.com/")
        assert r.returncode != 0
        assert "403" in r.stderr

    def test_connect_port_not_allowed(self, https_proxy: Proxy) -> None:
        """CONNECT to a port outside connect_ports: 403 naming the setting."""
        reply = raw_connect(https_proxy, b"CONNECT 127.0.0.1:8443 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 403")
        assert b"connect_ports" in reply

    def test_connect_without_port(self, https_proxy: Proxy) -> None:
        """CONNECT without a port: 400 and the connection closed."""
        reply = raw_connect(https_proxy, b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")

    def test_garbage_instead_of_client_hello(self, moto: Moto, https_proxy: Proxy, bundle: Path) -> None:
        """Garbage after the 200: the tunnel is closed, and the proxy goes on serving others."""
        with socket.create_connection(("127.0.0.1", int(https_proxy.address.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(f"CONNECT 127.0.0.1:{tls_port(moto)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            s.sendall(b"\x00garbage that is not a TLS client hello\r\n" * 10)
            rest = b""
            while chunk := s.recv(4096):
                rest += chunk
            assert b"HTTP" not in rest
        ok = curl(https_proxy.url, "--cacert", str(bundle), "-H", "X-Sigproxy-Service: s3", f"{moto.tls_endpoint}/")
        assert ok.stdout.endswith("\n200"), ok


def raw_connect(proxy: Proxy, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", int(proxy.address.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A plain HTTPS server for `localhost` with its own (trustme) CA: a passthrough target."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca_file = tmp_path / "origin-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        def do_GET(self) -> None:
            body = b"straight from the origin"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], ca_file
    server.shutdown()
    server.server_close()


def test_passthrough_is_tunnelled_untouched(moto: Moto, tmp_path: Path, tls_origin: tuple[int, Path],
                                            sigproxy_factory: Callable[..., Proxy]) -> None:
    """A passthrough host gets a blind tunnel: the client verifies the origin's own certificate."""
    port, origin_ca = tls_origin
    text = https_config(moto, tmp_path / "state",
                        extra_proxy=f'passthrough = ["localhost:{port}"]').replace(
        f"connect_ports = [443, {tls_port(moto)}]", f"connect_ports = [443, {tls_port(moto)}, {port}]").replace(
        'hosts = ["127.0.0.1:*", "localhost:*"]', 'hosts = ["127.0.0.1:*"]')
    proxy = sigproxy_factory(text)
    r = curl(proxy.url, "--cacert", str(origin_ca), f"https://localhost:{port}/")
    assert r.stdout == "straight from the origin\n200", r


def test_passthrough_glob_cannot_reach_loopback(moto: Moto, tmp_path: Path, tls_origin: tuple[int, Path],
                                                sigproxy_factory: Callable[..., Proxy]) -> None:
    """The SSRF guard covers blind tunnels too: a passthrough glob never reaches a loopback address (403
    address_not_allowed, no bytes relayed); only an exact name or address in passthrough does."""
    port, origin_ca = tls_origin
    text = https_config(moto, tmp_path / "state", extra_proxy=f'passthrough = ["local*:{port}"]').replace(
        f"connect_ports = [443, {tls_port(moto)}]", f"connect_ports = [443, {tls_port(moto)}, {port}]").replace(
        'hosts = ["127.0.0.1:*", "localhost:*"]', 'hosts = ["127.0.0.1:*"]')
    proxy = sigproxy_factory(text)
    reply = raw_connect(proxy, f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"address_not_allowed" in reply, reply
    assert b"loopback" in reply
    r = curl(proxy.url, "--cacert", str(origin_ca), f"https://localhost:{port}/")
    assert "straight from the origin" not in r.stdout


def test_ca_key_private_and_reused(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The CA key is 0600; a restart reuses the same CA; `ca --pem` and `ca --env` agree with the files."""
    state = tmp_path / "state"
    first = sigproxy_factory(https_config(moto, state))
    cert_path, key_path = state / "ca-cert.pem", state / "ca-key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = cert_path.read_bytes()
    first.stop()
    second = sigproxy_factory(https_config(moto, state))
    assert cert_path.read_bytes() == before
    where = sigproxy_cli("ca", "-c", str(second.config))
    assert where.stdout.strip() == str(cert_path)
    pem = sigproxy_cli("ca", "-c", str(second.config), "--pem")
    assert pem.stdout.encode() == before
    env = sigproxy_cli("ca", "-c", str(second.config), "--env")
    assert env.returncode == 0, env.stderr
    assert f"export AWS_CA_BUNDLE={state / 'ca-bundle.pem'}" in env.stdout
    assert f"export NODE_EXTRA_CA_CERTS={cert_path}" in env.stdout
    assert before.decode() in (state / "ca-bundle.pem").read_text()


def test_upstream_tls_is_verified(moto: Moto, tmp_path: Path, bundle: Path,
                                  sigproxy_factory: Callable[..., Proxy]) -> None:
    """Without upstream_ca_file, moto's certificate (from a private CA) fails verification: 502. A connection
    with verify_tls = false skips the check, and the start logs a warning saying so."""
    text = https_config(moto, tmp_path / "state").replace(f'upstream_ca_file = "{moto.ca_file}"\n', "")
    strict = sigproxy_factory(text)
    r = curl(strict.url, "--cacert", str(bundle), "-H", "X-Sigproxy-Service: s3", f"{moto.tls_endpoint}/")
    assert r.stdout.endswith("\n502"), r
    assert "<Code>SigproxyUpstreamError</Code>" in r.stdout  # S3's XML error: X-Sigproxy-Service says s3
    lax = sigproxy_factory(text.replace('region = "us-east-1"', 'region = "us-east-1"\nverify_tls = false'))
    ok = curl(lax.url, "--cacert", str(bundle), "-H", "X-Sigproxy-Service: s3", f"{moto.tls_endpoint}/")
    assert ok.stdout.endswith("\n200"), ok
    assert "does not verify upstream TLS certificates" in lax.stop()

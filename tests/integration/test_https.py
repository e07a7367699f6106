"""HTTPS_PROXY: CONNECT tunnels terminated with sigproxy's own CA, requests inside signed and sent to moto
over TLS (trusted through upstream_ca_file), moto's signature checks the judge; passthrough and refusals."""

from __future__ import annotations

import base64
import json
import os
import re
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

from tests.conftest import ROOT, Proxy, _start_proxy
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


HOSTILE_CONFIG = """
[proxy]
default_connection = "main"
connect_ports = [443]
passthrough = ["*.pass.example:443"]

[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["*.sign.example:*", "127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
"""

_LABEL_64 = b"a" * 64  # one over RFC 1035's 63: Python's idna codec refuses to look it up (UnicodeError)


def _connect_head(target: bytes, *fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"\r\n".join([b"CONNECT " + target + b" " + version, *fields]) + b"\r\n\r\n"


def _status_and_code(reply: bytes) -> tuple[int, str | None]:
    head = reply.partition(b"\r\n\r\n")[0].decode("utf-8", "surrogateescape")
    code = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                 if line.lower().startswith("x-sigproxy-error:")), None)
    return int(head.split(" ", 2)[1]), code


class TestConnectHeadBytes:
    """A CONNECT head is read by the front door, not the HTTP server: it used to be decoded as latin-1 (a UTF-8
    ``é`` became ``Ã©``), every other head as UTF-8 with surrogateescape. Now the same: the bytes that came are
    what is judged and logged; a byte that is not ASCII where a consumer reads it (the target's host, port and
    version, a field name, Proxy-Authorization) is a clear 4xx, never a 500, a 2xx or a client left waiting."""

    CASES = [  # (head, status, code)
        # The target's host: as latin-1 these passed the hosts glob and were intercepted (200), a certificate
        # minted for the mojibake; now the host is not a DNS name.
        (_connect_head(b"caf\xc3\xa9.sign.example:443"), 400, "bad_request"),
        (_connect_head(b"caf\xe9.sign.example:443"), 400, "bad_request"),
        (_connect_head(b"a\xe2\x80\xa8b.sign.example:443"), 400, "bad_request"),  # U+2028: a line break to readers
        (_connect_head(b"a\nforged.sign.example:443"), 400, "bad_request"),
        # A passthrough host with a label over 63 characters: the lookup raised UnicodeError in the CONNECT's
        # task, which died, the client left waiting (a 500 since bugs there are answered); now refused first.
        (_connect_head(_LABEL_64 + b".pass.example:443"), 400, "bad_request"),
        (_connect_head(b"127.0.0.1:44\xd9\xa3"), 400, "bad_request"),  # ARABIC-INDIC DIGIT THREE
        (_connect_head(b"127.0.0.1:443", version=b"HTTP/1.\xff"), 400, "bad_request"),
        (_connect_head(b"127.0.0.1:443", b"X-\xff: v"), 400, "bad_request"),
        (_connect_head(b"127.0.0.1:443", b"a line with no colon"), 400, "bad_request"),
        (_connect_head(b"127.0.0.1:443", b"Proxy-Authorization: Basic \xff\xfe"), 407, "bad_proxy_token"),
        (_connect_head(b"127.0.0.1:443", b"Proxy-Authorization: Basic " + base64.b64encode(b"main:t\xe9")),
         407, "bad_proxy_token"),
        # A value nothing reads may hold obs-text (RFC 9110 5.5), as on every other head: the tunnel opens.
        (_connect_head(b"127.0.0.1:443", b"User-Agent: caf\xe9 \xff"), 200, None),
        # The method is case-sensitive (RFC 9110 9.1): "connect" and "Connect" are no CONNECT; the front door took
        # them for one and opened the tunnel. Now the HTTP server reads them: no method it knows.
        (_connect_head(b"127.0.0.1:443").replace(b"CONNECT", b"connect", 1), 400, "bad_request"),
        (_connect_head(b"127.0.0.1:443").replace(b"CONNECT", b"Connect", 1), 400, "bad_request"),
    ]

    @pytest.mark.parametrize("fmt", ["json", "text"])
    def test_each_byte_is_a_clear_4xx_and_the_log_is_not_forged(self, fmt: str, tmp_path: Path) -> None:
        """Every case over a raw socket to a real `sigproxy run`: its status and code, an answer within
        seconds. Then the log: every line is one whole line (JSON, or text starting with its timestamp); the
        client's U+2028 and LF are escaped, never written."""
        config = tmp_path / "sigproxy.toml"
        config.write_text(HOSTILE_CONFIG + '\n[store]\nurl = ""\n')
        env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
        proxy = _start_proxy(config, env, ["--listen", "127.0.0.1:0", "--admin-listen", "", "--workers", "1",
                                           "--log-format", fmt], admin=False)
        try:
            got = []
            for head, _, _ in self.CASES:
                with socket.create_connection(("127.0.0.1", int(proxy.address.rsplit(":", 1)[1])), timeout=10) as s:
                    s.sendall(head)
                    got.append(_status_and_code(s.recv(65536)))
            assert got == [(status, code) for _, status, code in self.CASES]
        finally:
            output = proxy.stop()
        lines = [line for line in output.split("\n")[:-1] if not line.startswith("sigproxy: ")]  # stdout's
        assert lines and "\u2028" not in output and "\u2029" not in output
        if fmt == "json":
            messages = "\n".join(json.loads(line)["msg"] for line in lines)
        else:
            assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) for line in lines), output
            messages = output
        assert "target 'a\\u2028b.sign.example" in messages and "target 'a\\nforged.sign.example" in messages
        assert "unexpected error" not in output and "Traceback" not in output

    def test_a_host_that_cannot_be_looked_up_is_a_502_not_a_500(self, sigproxy_factory: Callable[..., Proxy]) -> None:
        """The same name, absolute form through the forward proxy, on a host the connection signs for: the
        lookup's UnicodeError was an unexpected error (500, a traceback). Now the name does not resolve: 502."""
        proxy = sigproxy_factory(HOSTILE_CONFIG)
        host = _LABEL_64.decode() + ".sign.example"
        reply = raw_connect(proxy, f"GET http://{host}/k HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                            .encode())
        assert _status_and_code(reply) == (502, "upstream_error"), reply[:300]
        assert "unexpected error" not in proxy.stop()

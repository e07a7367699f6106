"""TLS on sigproxy's own listeners (``tls = "self"``, ``tls_cert_file``/``tls_key_file``), with real processes:
curl and the AWS CLI through a TLS forward listener (plain HTTP to moto, and CONNECT tunnels inside the TLS
connection), a reverse TLS listener with curl, old TLS and plain HTTP refused and logged, and a silent client
cut off at header_timeout. Moto's signature check is the judge of every request that reaches it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import Proxy, moto_config
from tests.integration.test_https import https_config, sigproxy_cli
from tests.servers.moto_server import Moto


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def tls_forward(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    """A forward listener over TLS with a certificate minted from sigproxy's CA (``tls = "self"``)."""
    return sigproxy_factory(https_config(moto, tmp_path / "state", extra_proxy='tls = "self"\nheader_timeout = 2'))


@pytest.fixture
def bundle(tls_forward: Proxy, tmp_path: Path) -> Path:
    """`sigproxy ca --bundle`: trusts the listener's certificate and the interception leaves alike."""
    path = tmp_path / "bundle.pem"
    r = sigproxy_cli("ca", "-c", str(tls_forward.config), "--bundle", str(path))
    assert r.returncode == 0, r.stderr
    return path


class TestTlsForwardListener:
    def test_listening_line_says_https(self, tls_forward: Proxy) -> None:
        assert tls_forward.url.startswith("https://127.0.0.1:")

    def test_curl_plain_http_to_moto(self, moto: Moto, tls_forward: Proxy, tmp_path: Path) -> None:
        """An http:// request through the TLS proxy: signed by sigproxy (curl sends no signature), moto checks."""
        ca = tmp_path / "state" / "ca-cert.pem"
        r = _curl("--proxy", tls_forward.url, "--proxy-cacert", str(ca), "-H", "X-Sigproxy-Service: s3",
                  f"{moto.endpoint}/{moto.bucket}?list-type=2")
        assert r.stdout.endswith("\n200"), r
        assert "<ListBucketResult" in r.stdout

    def test_curl_connect_inside_tls(self, moto: Moto, tls_forward: Proxy, tmp_path: Path, bundle: Path) -> None:
        """https:// through the TLS proxy: curl's CONNECT and then its TLS to the (intercepted) upstream run
        inside the TLS connection to the proxy; a PUT and a byte-identical GET."""
        ca = tmp_path / "state" / "ca-cert.pem"
        data = os.urandom(300_000)
        (tmp_path / "f").write_bytes(data)
        url = f"{moto.tls_endpoint}/{moto.bucket}/tlslisten/curl.bin"
        common = ["--proxy", tls_forward.url, "--proxy-cacert", str(ca), "--cacert", str(bundle),
                  "-H", "X-Sigproxy-Service: s3"]
        put = _curl(*common, "-T", str(tmp_path / "f"), url)
        assert put.stdout.endswith("\n200"), put
        get = _curl(*common, "-o", str(tmp_path / "g"), url)
        assert get.stdout.endswith("\n200"), get
        assert (tmp_path / "g").read_bytes() == data

    def test_aws_cli_https_proxy(self, aws_cli: str, moto: Moto, tls_forward: Proxy, bundle: Path) -> None:
        """The AWS CLI v1 with HTTPS_PROXY=https://... and one bundle (AWS_CA_BUNDLE) trusting both the
        listener's certificate and the interception CA: STS over HTTPS (CONNECT inside TLS) and S3 over HTTP."""
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
               "HTTPS_PROXY": tls_forward.url, "HTTP_PROXY": tls_forward.url, "AWS_CA_BUNDLE": str(bundle),
               "AWS_ACCESS_KEY_ID": "main", "AWS_SECRET_ACCESS_KEY": "placeholder",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}

        def aws(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([aws_cli, "--endpoint-url", endpoint, "--output", "json", *args],
                                  capture_output=True, text=True, env=env, timeout=120, check=False)

        assert moto.tls_endpoint is not None
        who = aws(moto.tls_endpoint, "sts", "get-caller-identity")
        assert who.returncode == 0, who.stderr
        assert json.loads(who.stdout)["Arn"] == moto.user_arn
        tables = aws(moto.endpoint, "dynamodb", "list-tables")
        assert tables.returncode == 0, tables.stderr
        assert moto.table in json.loads(tables.stdout)["TableNames"]
        out = tls_forward.written('"service":"dynamodb"')  # both went through the proxy (access log)
        assert '"service":"sts"' in out

    def test_untrusted_listener_certificate_refused(self, moto: Moto, tls_forward: Proxy) -> None:
        """A client that doesn't trust sigproxy's CA fails on the proxy's certificate (curl exit 60)."""
        r = _curl("--proxy", tls_forward.url, "--proxy-cacert", str(moto.ca_file), f"{moto.endpoint}/")
        assert r.returncode == 60, r
        tls_forward.written("TLS handshake with client 127.0.0.1 on the forward listener failed")

    def test_tls_1_1_refused(self, tls_forward: Proxy) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else OpenSSL 3 won't even offer TLS 1.1
        with socket.create_connection(("127.0.0.1", _port(tls_forward.url)), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        out = tls_forward.written("offered no TLS version sigproxy accepts (TLS 1.2 or newer)")
        assert "Traceback" not in out

    def test_tls_1_2_accepted(self, tls_forward: Proxy, tmp_path: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "state" / "ca-cert.pem"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", _port(tls_forward.url)), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.selected_alpn_protocol() is None  # none offered
            tls.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 ")

    def test_plain_http_to_tls_port_is_closed_and_logged(self, tls_forward: Proxy) -> None:
        with socket.create_connection(("127.0.0.1", _port(tls_forward.url)), timeout=10) as raw:
            raw.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
            began = time.monotonic()
            while raw.recv(4096):  # whatever comes (an alert, or nothing), the connection ends
                pass
            assert time.monotonic() - began < 5
        out = tls_forward.written("the client sent plain HTTP to a TLS listener: use https://")
        assert "Traceback" not in out

    def test_silent_client_cut_at_header_timeout(self, tls_forward: Proxy) -> None:
        with socket.create_connection(("127.0.0.1", _port(tls_forward.url)), timeout=10) as raw:
            began = time.monotonic()
            assert raw.recv(100) == b""
            assert 1.5 < time.monotonic() - began < 6
        tls_forward.written("no TLS handshake within header_timeout (2 s)")


def test_reverse_listener_with_cert_files(moto: Moto, tmp_path: Path,
                                          sigproxy_factory: Callable[..., Proxy]) -> None:
    """A ``[[reverse]]`` listener with a certificate and key from files (trustme's CA): curl over TLS, signed
    by sigproxy, checked by moto; a client that doesn't trust that CA fails."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_pem))
    reverse = (f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{moto.endpoint}"\nconnection = "main"\n'
               f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    proxy = sigproxy_factory(moto_config(moto, extra=reverse))
    url = proxy.reverse[0]
    assert url.startswith("https://127.0.0.1:")
    r = _curl("--cacert", str(ca_pem), "-H", "X-Sigproxy-Service: s3", f"{url}/{moto.bucket}?list-type=2")
    assert r.stdout.endswith("\n200"), r
    assert "<ListBucketResult" in r.stdout
    port = _port(url)
    r = _curl("--cacert", str(ca_pem), "-H", "X-Sigproxy-Service: s3",
              f"https://localhost:{port}/{moto.bucket}?list-type=2")
    assert r.stdout.endswith("\n200"), r
    bad = _curl(f"{url}/{moto.bucket}")  # the system store doesn't know trustme's CA
    assert bad.returncode == 60, bad
    assert str(key) not in "".join(proxy.output) or "BEGIN" not in "".join(proxy.output)


def test_reverse_listener_minted_for_localhost(moto: Moto, tmp_path: Path,
                                               sigproxy_factory: Callable[..., Proxy]) -> None:
    """``tls = "self"`` on a loopback listener: the minted certificate names 127.0.0.1 and localhost."""
    reverse = f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{moto.endpoint}"\nconnection = "main"\ntls = "self"\n'
    proxy = sigproxy_factory(moto_config(moto, extra=reverse))
    ca = tmp_path / "state" / "ca-cert.pem"
    port = _port(proxy.reverse[0])
    for host in ("127.0.0.1", "localhost"):
        r = _curl("--cacert", str(ca), "-H", "X-Sigproxy-Service: s3",
                  f"https://{host}:{port}/{moto.bucket}?list-type=2")
        assert r.stdout.endswith("\n200"), (host, r)


def test_mismatched_key_refused_at_start(moto: Moto, tmp_path: Path) -> None:
    """`sigproxy check`-like refusal: a key that isn't the certificate's is a config error naming the key."""
    ca = trustme.CA()
    one, two = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    two.private_key_pem.write_to_path(str(key))
    config = tmp_path / "c.toml"
    config.write_text(moto_config(moto, proxy=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'))
    r = sigproxy_cli("run", "-c", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "")
    assert r.returncode != 0
    assert "proxy.tls_cert_file" in r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout

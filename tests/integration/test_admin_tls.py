"""TLS on the admin listener (``admin_tls_cert_file``/``admin_tls_key_file``), with real processes and curl: the
health endpoints and the bearer-token API over HTTPS, a client that doesn't trust the certificate refused, plain
HTTP to the TLS port closed and logged, the same under ``workers = 2`` (the supervisor serves the admin
listener), and a half-given pair refused at start naming the missing key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import ROOT, Proxy, moto_config
from tests.integration.test_https import sigproxy_cli
from tests.servers.moto_server import Moto

TOKEN = "admin-tls-test-token-0123456789abcdef"


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def admin_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A certificate for 127.0.0.1 and localhost from trustme's CA: (cert, key, CA) files."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = tmp_path / "admin.crt", tmp_path / "admin.key", tmp_path / "admin-ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    ca.cert_pem.write_to_path(str(ca_pem))
    return cert, key, ca_pem


def _config(moto: Moto, cert: Path, key: Path) -> str:
    return moto_config(moto, proxy=f'admin_tls_cert_file = "{cert}"\nadmin_tls_key_file = "{key}"\n'
                                   "header_timeout = 2") + f'\n[admin]\ntoken = "{TOKEN}"\n'


@pytest.mark.parametrize("workers", [1, 2])
def test_admin_over_tls(moto: Moto, admin_pair: tuple[Path, Path, Path], workers: int,
                        sigproxy_factory: Callable[..., Proxy]) -> None:
    """/healthz and the token-guarded /v1 API answer over HTTPS (one process, and the supervisor of two
    workers); the token is still required; a client without the CA fails on the certificate."""
    cert, key, ca = admin_pair
    proxy = sigproxy_factory(_config(moto, cert, key), workers=workers, admin=True)
    assert proxy.admin is not None
    assert proxy.admin.startswith("https://127.0.0.1:"), proxy.admin
    r = _curl("--cacert", str(ca), f"{proxy.admin}/healthz")
    assert r.stdout.endswith("\n200"), r
    r = _curl("--cacert", str(ca), "-H", f"Authorization: Bearer {TOKEN}", f"{proxy.admin}/v1/connections")
    assert r.stdout.endswith("\n200"), r
    assert '"main"' in r.stdout
    r = _curl("--cacert", str(ca), f"{proxy.admin}/v1/connections")
    assert r.stdout.endswith("\n401"), r
    port = int(proxy.admin.rsplit(":", 1)[1])
    r = _curl("--cacert", str(ca), f"https://localhost:{port}/readyz")
    assert r.stdout.endswith("\n200"), r
    # `sigproxy connections` trusts the system store, or the file SSL_CERT_FILE names (OpenSSL's variable).
    cli = subprocess.run([sys.executable, "-m", "sigproxy", "connections", "list", "--url", proxy.admin],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                         env={**os.environ, "SIGPROXY_ADMIN_TOKEN": TOKEN, "SSL_CERT_FILE": str(ca)})
    assert cli.returncode == 0, cli
    assert "main" in cli.stdout
    untrusted = _curl(f"{proxy.admin}/healthz")  # the system store doesn't know trustme's CA
    assert untrusted.returncode == 60, untrusted
    out = proxy.written("TLS handshake with client 127.0.0.1 on the admin listener failed")
    assert TOKEN not in out
    assert "PRIVATE KEY" not in out


def test_plain_http_to_tls_admin_is_closed_and_logged(moto: Moto, admin_pair: tuple[Path, Path, Path],
                                                      sigproxy_factory: Callable[..., Proxy]) -> None:
    cert, key, _ca = admin_pair
    proxy = sigproxy_factory(_config(moto, cert, key), admin=True)
    assert proxy.admin is not None
    port = int(proxy.admin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        began = time.monotonic()
        while raw.recv(4096):  # an alert or nothing; never an HTTP answer in clear
            pass
        assert time.monotonic() - began < 5
    out = proxy.written("on the admin listener failed: the client sent plain HTTP to a TLS listener")
    assert "Traceback" not in out


@pytest.mark.parametrize(("given", "missing"), [("admin_tls_cert_file", "admin_tls_key_file"),
                                                ("admin_tls_key_file", "admin_tls_cert_file")])
def test_half_a_pair_is_refused_naming_the_other_key(moto: Moto, admin_pair: tuple[Path, Path, Path],
                                                     tmp_path: Path, given: str, missing: str) -> None:
    cert, key, _ca = admin_pair
    path = cert if given == "admin_tls_cert_file" else key
    config = tmp_path / "c.toml"
    config.write_text(moto_config(moto, proxy=f'{given} = "{path}"'))
    r = sigproxy_cli("run", "-c", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
    assert r.returncode == 2, r
    assert f"proxy.{missing}" in r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout


def test_admin_key_not_the_certificates_is_refused(moto: Moto, tmp_path: Path) -> None:
    ca = trustme.CA()
    one, two = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    two.private_key_pem.write_to_path(str(key))
    config = tmp_path / "c.toml"
    config.write_text(moto_config(moto, proxy=f'admin_tls_cert_file = "{cert}"\nadmin_tls_key_file = "{key}"'))
    r = sigproxy_cli("run", "-c", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
    assert r.returncode == 2, r
    assert "proxy.admin_tls_cert_file" in r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout

"""Client certificates on sigproxy's TLS listeners (``client_ca_file``), with real processes and curl: a client
with a certificate from that CA is served (moto checks the signature), a client without one or with one from
another CA fails the handshake and is logged, on the forward listener (``--proxy-cert``) and a reverse listener
(``--cert``); misconfigurations are refused at start naming the key."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import Proxy, moto_config
from tests.integration.test_https import sigproxy_cli, tls_port
from tests.servers.moto_server import Moto


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Pki:
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _write(leaf: trustme.LeafCert, cert: Path, key: Path) -> None:
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A server certificate for 127.0.0.1; a client CA and its client certificate (CN=build-agent); a client
    certificate from another CA."""
    server, clients, other = trustme.CA(), trustme.CA(), trustme.CA()
    p = Pki(*(tmp_path / n for n in ("server-ca.pem", "server.crt", "server.key", "client-ca.pem", "client.crt",
                                     "client.key", "stranger.crt", "stranger.key")))
    server.cert_pem.write_to_path(str(p.server_ca))
    _write(server.issue_cert("127.0.0.1", "localhost"), p.server_cert, p.server_key)
    clients.cert_pem.write_to_path(str(p.client_ca))
    _write(clients.issue_cert("build-agent@example.com", common_name="build-agent"), p.client_cert, p.client_key)
    _write(other.issue_cert("build-agent@example.com", common_name="build-agent"), p.stranger_cert, p.stranger_key)
    return p


def _tls_keys(p: Pki) -> str:
    return f'tls_cert_file = "{p.server_cert}"\ntls_key_file = "{p.server_key}"\nclient_ca_file = "{p.client_ca}"\n'


@pytest.fixture
def mtls_forward(moto: Moto, pki: Pki, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    return sigproxy_factory(moto_config(moto, proxy=_tls_keys(pki) + "header_timeout = 2"))


class TestForwardListener:
    def _get(self, moto: Moto, proxy: Proxy, pki: Pki, *cert: str) -> subprocess.CompletedProcess[str]:
        return _curl("--proxy", proxy.url, "--proxy-cacert", str(pki.server_ca), *cert,
                     "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/{moto.bucket}?list-type=2")

    def test_client_with_certificate_is_served(self, moto: Moto, mtls_forward: Proxy, pki: Pki) -> None:
        r = self._get(moto, mtls_forward, pki, "--proxy-cert", str(pki.client_cert),
                      "--proxy-key", str(pki.client_key))
        assert r.stdout.endswith("\n200"), r
        assert "<ListBucketResult" in r.stdout

    def test_client_without_certificate_is_refused(self, moto: Moto, mtls_forward: Proxy, pki: Pki) -> None:
        r = self._get(moto, mtls_forward, pki)
        assert r.returncode != 0, r
        assert "ListBucketResult" not in r.stdout
        out = mtls_forward.written("on the forward listener failed: the client sent no certificate, and this "
                                   "listener requires one (client_ca_file)")
        assert "Traceback" not in out

    def test_certificate_from_another_ca_is_refused(self, moto: Moto, mtls_forward: Proxy, pki: Pki) -> None:
        r = self._get(moto, mtls_forward, pki, "--proxy-cert", str(pki.stranger_cert),
                      "--proxy-key", str(pki.stranger_key))
        assert r.returncode != 0, r
        assert "ListBucketResult" not in r.stdout
        out = mtls_forward.written("the client's certificate is not from a CA in this listener's client_ca_file")
        assert "Traceback" not in out


def test_reverse_listener(moto: Moto, pki: Pki, sigproxy_factory: Callable[..., Proxy]) -> None:
    """client_ca_file on a [[reverse]] applies to that listener only: the forward listener stays plain HTTP."""
    reverse = f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{moto.endpoint}"\nconnection = "main"\n'
    proxy = sigproxy_factory(moto_config(moto, extra=reverse + _tls_keys(pki)))
    url = f"{proxy.reverse[0]}/{moto.bucket}?list-type=2"
    r = _curl("--cacert", str(pki.server_ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key),
              "-H", "X-Sigproxy-Service: s3", url)
    assert r.stdout.endswith("\n200"), r
    r = _curl("--cacert", str(pki.server_ca), "-H", "X-Sigproxy-Service: s3", url)
    assert r.returncode != 0, r
    proxy.written("the client sent no certificate")
    assert proxy.url.startswith("http://")
    r = _curl("--proxy", proxy.url, "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/{moto.bucket}?list-type=2")
    assert r.stdout.endswith("\n200"), r


@pytest.mark.parametrize(("keys", "named"), [
    ('tls = "self"\nclient_ca_file = "{ca}"', 'not tls = "self"'),
    ('client_ca_file = "{ca}"', "set tls_cert_file and tls_key_file"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nclient_ca_file = "{cert}.missing"', "cannot load"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nclient_ca_file = "{key}"', "NO_CERTIFICATE_OR_CRL_FOUND"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nclient_ca_file = "{cert}"', "holds no CA certificate"),
])
def test_misconfigured_client_ca_is_refused(moto: Moto, pki: Pki, tmp_path: Path, keys: str, named: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(moto_config(moto, proxy=keys.format(ca=pki.client_ca, cert=pki.server_cert,
                                                          key=pki.server_key)))
    r = sigproxy_cli("run", "-c", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "")
    assert r.returncode == 2, r
    assert "proxy.client_ca_file" in r.stderr, r.stderr
    assert named in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout


class TestSelectionByCertificate:
    """``client_cert_subjects`` on connection ``agent`` (moto's keys); the default connection ``main`` has a
    wrong secret, so moto's signature check tells which connection signed."""

    @pytest.fixture
    def proxy(self, moto: Moto, pki: Pki, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
        agent = f"""
[connections.agent]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
client_cert_subjects = ["CN=build-agent"]
[connections.agent.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"
"""
        other = trustme.CA()  # the client CA file holds two CAs: pki's and this one
        ca_file = tmp_path / "client-cas.pem"
        ca_file.write_bytes(pki.client_ca.read_bytes() + other.cert_pem.bytes())
        _write(other.issue_cert("other@example.com", common_name="other-agent"), tmp_path / "other.crt",
               tmp_path / "other.key")
        keys = _tls_keys(pki).replace(str(pki.client_ca), str(ca_file))
        return sigproxy_factory(moto_config(moto, secret="wrong-secret", extra=agent,
                                            proxy=keys + f'upstream_ca_file = "{moto.ca_file}"\n'
                                                  f"connect_ports = [443, {tls_port(moto)}]"))

    def _get(self, proxy: Proxy, pki: Pki, url: str, cert: Path, key: Path, *extra: str
             ) -> subprocess.CompletedProcess[str]:
        return _curl("--proxy", proxy.url, "--proxy-cacert", str(pki.server_ca), "--proxy-cert", str(cert),
                     "--proxy-key", str(key), "-H", "X-Sigproxy-Service: s3", *extra, url)

    def test_certificate_selects_its_connection(self, moto: Moto, proxy: Proxy, pki: Pki) -> None:
        r = self._get(proxy, pki, f"{moto.endpoint}/{moto.bucket}?list-type=2", pki.client_cert, pki.client_key)
        assert r.stdout.endswith("\n200"), r
        assert "<ListBucketResult" in r.stdout
        proxy.written('"connection":"agent","selected_by":"client-cert"')

    def test_inside_a_connect_tunnel(self, moto: Moto, proxy: Proxy, pki: Pki, tmp_path: Path) -> None:
        """CONNECT inside the TLS connection: the outer connection's certificate selects for the tunnel."""
        r = self._get(proxy, pki, f"{moto.tls_endpoint}/{moto.bucket}?list-type=2", pki.client_cert,
                      pki.client_key, "--cacert", str(tmp_path / "state" / "ca-cert.pem"))
        assert r.stdout.endswith("\n200"), r
        assert "<ListBucketResult" in r.stdout

    def test_unmatched_certificate_falls_back(self, moto: Moto, proxy: Proxy, pki: Pki, tmp_path: Path) -> None:
        """A certificate from the client CA that no connection names: the other rules select (here the default
        connection, whose wrong secret moto refuses)."""
        r = self._get(proxy, pki, f"{moto.endpoint}/{moto.bucket}?list-type=2", tmp_path / "other.crt",
                      tmp_path / "other.key")
        assert r.stdout.endswith("\n403"), r
        assert "SignatureDoesNotMatch" in r.stdout

    def test_request_naming_another_connection_is_refused(self, moto: Moto, proxy: Proxy, pki: Pki) -> None:
        r = self._get(proxy, pki, f"{moto.endpoint}/{moto.bucket}?list-type=2", pki.client_cert, pki.client_key,
                      "-H", "X-Sigproxy-Connection: main")
        assert r.stdout.endswith("\n407"), r
        assert "the client certificate selects connection 'agent', but the request names 'main'" in r.stdout
        r = self._get(proxy, pki, f"{moto.endpoint}/{moto.bucket}?list-type=2", pki.client_cert, pki.client_key,
                      "-H", "X-Sigproxy-Connection: agent")
        assert r.stdout.endswith("\n200"), r


def test_bad_client_cert_subject_is_refused(moto: Moto, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(moto_config(moto, connection='client_cert_subjects = ["build-agent"]'))
    r = sigproxy_cli("run", "-c", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "")
    assert r.returncode == 2, r
    assert "connections.main.client_cert_subjects[0]" in r.stderr, r.stderr
    assert 'like "CN=build-agent"' in r.stderr

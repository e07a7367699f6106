"""SIGHUP re-reads the TLS listeners' certificate files (a certificate renewed in place), with real processes and
curl: after the files are replaced and the signal sent, new connections get the new certificate on the forward,
reverse and admin listeners (in one process and under ``workers = 2``); a pair that no longer loads refuses the
reload and the previous certificate keeps serving."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import Proxy, moto_config
from tests.servers.moto_server import Moto


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def _issue(ca: trustme.CA, cert: Path, key: Path, ca_file: Path) -> None:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    ca.cert_pem.write_to_path(str(ca_file))


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_certificate_files(moto: Moto, tmp_path: Path, workers: int,
                                          sigproxy_factory: Callable[..., Proxy]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    old_ca, new_ca = tmp_path / "old-ca.pem", tmp_path / "new-ca.pem"
    _issue(trustme.CA(), cert, key, old_ca)
    pair = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
    reverse = f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{moto.endpoint}"\nconnection = "main"\n{pair}'
    proxy = sigproxy_factory(moto_config(moto, proxy=pair + f'admin_tls_cert_file = "{cert}"\n'
                                                             f'admin_tls_key_file = "{key}"', extra=reverse),
                             workers=workers, admin=True)
    assert proxy.admin is not None
    s3 = ("-H", "X-Sigproxy-Service: s3")

    def answers(ca: Path) -> list[str]:
        forward = _curl("--proxy", proxy.url, "--proxy-cacert", str(ca), *s3, f"{moto.endpoint}/{moto.bucket}")
        rev = _curl("--cacert", str(ca), *s3, f"{proxy.reverse[0]}/{moto.bucket}")
        admin = _curl("--cacert", str(ca), f"{proxy.admin}/healthz")
        return [r.stdout.rsplit("\n", 1)[-1] for r in (forward, rev, admin)]

    assert answers(old_ca) == ["200", "200", "200"]
    _issue(trustme.CA(), cert, key, new_ca)  # renewed in place, by another CA so the change shows
    assert answers(new_ca) == ["000", "000", "000"]  # not before the signal
    proxy.proc.send_signal(signal.SIGHUP)
    for listener in ("forward", f"reverse ({moto.endpoint})", "admin"):
        proxy.written(f"TLS certificate of the {listener} listener reloaded from {cert}")
    deadline = time.monotonic() + 10
    while "".join(proxy.output).count("TLS certificate of the forward listener reloaded") < workers:
        assert time.monotonic() < deadline, "not every worker reloaded its certificate"  # each its own
        time.sleep(0.1)
    assert answers(new_ca) == ["200", "200", "200"]
    assert answers(old_ca) == ["000", "000", "000"]


def test_pair_that_no_longer_loads_keeps_the_previous(moto: Moto, tmp_path: Path,
                                                      sigproxy_factory: Callable[..., Proxy]) -> None:
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    _issue(trustme.CA(), cert, key, ca)
    proxy = sigproxy_factory(moto_config(moto, proxy=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'))
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(key))  # not the certificate's key
    proxy.proc.send_signal(signal.SIGHUP)
    out = proxy.written("reload refused, still running on the old config: proxy.tls_cert_file")
    assert "PRIVATE KEY" not in out
    r = _curl("--proxy", proxy.url, "--proxy-cacert", str(ca), "-H", "X-Sigproxy-Service: s3",
              f"{moto.endpoint}/{moto.bucket}")
    assert r.stdout.endswith("\n200"), r

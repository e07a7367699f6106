"""SigV4A through the proxy: a local server checks every SigV4A signature it receives
(tests/servers/sigv4_verifier.py: botocore's canonical request, awscrt's signature of the same request verifying
over the same string to sign with the same key, then the proxy's signature verified with that key).

The server sits behind a ``[[reverse]]`` listener (a Multi-Region Access Point host name cannot be routed to
127.0.0.1 here), so these tests use the connection opt-in (``signature_version = "v4a"``) and a client's own
``X-Amz-Region-Set``; MRAP host detection is covered by the unit tests (test_sigv4a_routing.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sigproxy import sigv4a
from sigproxy.signing import Credentials
from tests.conftest import Proxy
from tests.servers.sigv4_verifier import Verifier, start_verifier

KEY_ID = "AKIDVERIFIER"
SECRET = "verifier-secret-not-a-real-one"


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    v, stop = start_verifier(KEY_ID, SECRET)
    try:
        yield v
    finally:
        stop()


def reverse_config(v: Verifier, service: str, extra: str = "", *, secret: str = SECRET, proxy: str = "") -> str:
    return f"""
{proxy}
[connections.svc]
region = "us-east-1"
service = "{service}"
hosts = ["127.0.0.1:*"]
{extra}
[connections.svc.credentials]
source = "static"
access_key_id = "{v.access_key}"
secret_access_key = "{secret}"

[[reverse]]
listen = "127.0.0.1:0"
upstream = "{v.url}"
connection = "svc"
"""


def curl_reverse(proxy: Proxy, *args: str) -> tuple[int, str]:
    """``(status, body)``: the verifier answers JSON; sigproxy's own errors for S3 are S3's XML."""
    (rev,) = proxy.reverse
    *options, path = args
    r = subprocess.run(["curl", "-sS", "--path-as-is", "-w", "\n%{http_code}", *options, f"{rev}{path}"],
                       capture_output=True, text=True, timeout=60, check=False)
    body, _, status = r.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.parametrize(("service", "method", "path", "data"), [
    ("s3", "PUT", "/bucket/caf%C3%A9%20key.txt?tagging=", "hello sigv4a"),
    ("s3", "GET", "/bucket?list-type=2&prefix=a%2Fb", None),
    ("execute-api", "POST", "/prod/items/../x?limit=2", '{"a": 1}'),
])
def test_opt_in_connection_signs_sigv4a(service: str, method: str, path: str, data: str | None,
                                        verifier: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """signature_version = "v4a": every request goes upstream with SigV4A for the region set, and verifies."""
    proxy = sigproxy_factory(reverse_config(verifier, service, 'signature_version = "v4a"\n'
                                            'sigv4a_signing_region_set = ["us-east-1", "eu-west-1"]'))
    args = ["-X", method] + (["--data-binary", data] if data is not None else [])
    status, body = curl_reverse(proxy, *args, path)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["algorithm"] == "AWS4-ECDSA-P256-SHA256"
    assert answer["region_set"] == "us-east-1,eu-west-1"


def test_client_region_set_header_is_honoured(verifier: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A client that asks for SigV4A (X-Amz-Region-Set) on a SigV4 connection is signed with SigV4A for its set."""
    proxy = sigproxy_factory(reverse_config(verifier, "s3"))
    status, body = curl_reverse(proxy, "-H", "X-Amz-Region-Set: *", "/bucket/key")
    assert status == 200, body
    assert json.loads(body)["region_set"] == "*"


def test_wrong_secret_does_not_verify(verifier: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The check can fail: a SigV4A signature made with another secret is refused by the verifier (403)."""
    proxy = sigproxy_factory(reverse_config(verifier, "s3", 'signature_version = "v4a"', secret="another-secret"))
    status, body = curl_reverse(proxy, "/bucket/key")
    assert status == 403
    assert json.loads(body)["error"] == "SignatureDoesNotMatch"


def test_sigv4a_chunk_signing_fails_closed(verifier: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A client's SigV4A chunk-signed upload is refused (400), never forwarded."""
    proxy = sigproxy_factory(reverse_config(verifier, "s3", 'signature_version = "v4a"'))
    before = len(verifier.seen)
    status, body = curl_reverse(proxy, "-X", "PUT", "-H",
                                  "x-amz-content-sha256: STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
                                  "--data-binary", "x", "/bucket/key")
    assert status == 400
    assert "SigV4A chunk signing" in body
    assert len(verifier.seen) == before


def test_large_body_is_hashed_whole(verifier: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A body over max_buffered_body, which SigV4 would send as signed aws-chunked chunks, goes with its SHA-256
    under SigV4A (as botocore's SigV4A signer sends it), and verifies."""
    data = "0123456789" * 1000
    proxy = sigproxy_factory(reverse_config(verifier, "s3", 'signature_version = "v4a"',
                                            proxy='[proxy]\nmax_buffered_body = "1KiB"'))
    status, body = curl_reverse(proxy, "-X", "PUT", "--data-binary", data, "/bucket/big")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["content_sha256"] == answer["body_sha256"]


CLI_CONFIG = """
[connections.ex]
region = "us-east-1"
hosts = ["*.amazonaws.com"]
[connections.ex.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${env:EX_SECRET}"
"""
ROOT = Path(__file__).resolve().parents[2]
CLI_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("form", ["headers", "presign", "json"])
def test_cli_sign_sigv4a(form: str, tmp_path: Path) -> None:
    """`sigproxy sign --sigv4a --region-set '*'`: header, presigned and JSON forms; the signature printed verifies
    over the string to sign printed by --verbose (or recomputed) with the key awscrt's signatures verify under
    (tests/unit/test_sigv4a.py), and the secret is never printed."""
    config = tmp_path / "sigproxy.toml"
    config.write_text(CLI_CONFIG)
    url = "https://mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com/my%20key"
    extra = {"headers": ["--verbose"], "presign": ["--presign", "--verbose"], "json": ["--json"]}[form]
    r = subprocess.run([sys.executable, "-m", "sigproxy", "sign", "-c", str(config), "--connection", "ex",
                        "--sigv4a", "--region-set", "*", "--date", "20260102T030405Z", *extra, url],
                       capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                       env={**os.environ, "EX_SECRET": CLI_SECRET})
    assert r.returncode == 0, r.stderr
    assert CLI_SECRET not in r.stdout + r.stderr
    key = sigv4a.public_key(Credentials("AKIDEXAMPLE", CLI_SECRET))
    if form == "json":
        headers = json.loads(r.stdout)["headers"]
        assert headers["X-Amz-Region-Set"] == "*"
        assert headers["Authorization"].startswith("AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20260102/s3/")
        return
    sts = r.stdout.split("# string to sign\n", 1)[1].strip()
    if form == "presign":
        signature = r.stdout.split("X-Amz-Signature=", 1)[1].split()[0]
        assert "X-Amz-Region-Set=%2A" in r.stdout
    else:
        signature = r.stdout.split("Signature=", 1)[1].split()[0]
    assert sts.startswith("AWS4-ECDSA-P256-SHA256\n20260102T030405Z\n20260102/s3/aws4_request\n")
    key.verify(bytes.fromhex(signature), sts.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.verify(bytes.fromhex(signature), sts.encode() + b"x", ec.ECDSA(hashes.SHA256()))


def test_cli_bad_region_set(tmp_path: Path) -> None:
    config = tmp_path / "sigproxy.toml"
    config.write_text(CLI_CONFIG)
    r = subprocess.run([sys.executable, "-m", "sigproxy", "sign", "-c", str(config), "--connection", "ex",
                        "--region-set", "us east", "https://s3.amazonaws.com/b/k"],
                       capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                       env={**os.environ, "EX_SECRET": CLI_SECRET})
    assert r.returncode != 0
    assert "region set" in r.stderr

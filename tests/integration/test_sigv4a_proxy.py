"""SigV4A through the proxy: a local server checks every SigV4A signature it receives
(tests/servers/sigv4_verifier.py: botocore's canonical request, awscrt's signature of the same request verifying
over the same string to sign with the same key, then the proxy's signature verified with that key).

The server sits behind a ``[[reverse]]`` listener (a Multi-Region Access Point host name cannot be routed to
127.0.0.1 here), so these tests use the connection opt-in (``signature_version = "v4a"``) and a client's own
``X-Amz-Region-Set``; MRAP host detection is covered by the unit tests (test_sigv4a_routing.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

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

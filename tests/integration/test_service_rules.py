"""Per-service signing rules (``sigproxy.signing.SIGNING_POLICIES``) through the real proxy process, judged by a
local server that recomputes every signature with botocore's own signer (``tests/servers/sigv4_verifier.py``).

The verifier sits behind a ``[[reverse]]`` listener whose connection names the signing service, the way
OpenSearch Dashboards or Grafana would use sigproxy in front of an OpenSearch Serverless collection
(``https://<id>.<region>.aoss.amazonaws.com``): moto and RGW cannot stand in for those services.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Proxy
from tests.integration.test_moto_clients import status_of
from tests.servers.sigv4_verifier import Verifier, start_verifier

KEY_ID = "AKIDVERIFIER"
SECRET = "verifier-secret-not-a-real-one"
SEARCH = b'{"query": {"match": {"title": "sigv4"}}}'


@pytest.fixture
def aoss() -> Iterator[Verifier]:
    """A stand-in that, like OpenSearch Serverless, refuses requests without a signed x-amz-content-sha256."""
    verifier, stop = start_verifier(KEY_ID, SECRET, require_content_sha256=True)
    try:
        yield verifier
    finally:
        stop()


@pytest.fixture
def plain() -> Iterator[Verifier]:
    """A stand-in that checks signatures only."""
    verifier, stop = start_verifier(KEY_ID, SECRET)
    try:
        yield verifier
    finally:
        stop()


def reverse_config(verifier: Verifier, service: str, *, secret: str = SECRET) -> str:
    return f"""
[connections.svc]
region = "us-east-1"
service = "{service}"
hosts = ["127.0.0.1:*"]
[connections.svc.credentials]
source = "static"
access_key_id = "{verifier.access_key}"
secret_access_key = "{secret}"

[[reverse]]
listen = "127.0.0.1:0"
upstream = "{verifier.url}"
connection = "svc"
"""


def curl_reverse(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[str]:
    (rev,) = proxy.reverse
    *options, path = args
    return subprocess.run(["curl", "-sS", "--path-as-is", "-w", "\n%{http_code}", *options, f"{rev}{path}"],
                          capture_output=True, text=True, timeout=60, check=False)


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(result.stdout.rsplit("\n", 1)[0])
    return parsed


@pytest.mark.parametrize("service", ["aoss", "glacier", "s3", "s3-outposts", "s3-object-lambda", "s3express"])
def test_payload_hash_header_where_required(service: str, aoss: Verifier,
                                            sigproxy_factory: Callable[..., Proxy]) -> None:
    """An unsigned POST with a JSON body (the issue's ``POST /index/_search``) goes out with
    ``x-amz-content-sha256`` = the body's SHA-256, signed, for every signing name that requires it; the
    verifier, recomputing the signature with botocore, accepts it (it refused it before: the header was
    added for ``s3`` only)."""
    proxy = sigproxy_factory(reverse_config(aoss, service))
    r = curl_reverse(proxy, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", SEARCH.decode(),
                     "/index/_search")
    assert status_of(r) == 200, r
    got = answer(r)
    assert got["service"] == service
    assert got["signed_headers"] == ["content-type", "host", "x-amz-content-sha256", "x-amz-date"]
    assert got["content_sha256"] == hashlib.sha256(SEARCH).hexdigest() == got["body_sha256"]


def test_aoss_get_without_body(aoss: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A GET without a body carries the empty string's hash."""
    proxy = sigproxy_factory(reverse_config(aoss, "aoss"))
    r = curl_reverse(proxy, "/_cat/indices")
    assert status_of(r) == 200, r
    assert answer(r)["content_sha256"] == hashlib.sha256(b"").hexdigest()


def test_other_services_unchanged(aoss: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A service outside the table (managed OpenSearch, ``es``) is signed as before: no hash header, so an
    aoss-like endpoint refuses it. This is what every aoss request got before the fix."""
    proxy = sigproxy_factory(reverse_config(aoss, "es"))
    r = curl_reverse(proxy, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", SEARCH.decode(),
                     "/index/_search")
    assert status_of(r) == 403, r
    assert answer(r)["error"] == "x-amz-content-sha256 is required and must be signed"


def test_verifier_refuses_a_wrong_secret(plain: Verifier, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The verifier is a real check: signed with another secret, a request is refused."""
    proxy = sigproxy_factory(reverse_config(plain, "es", secret="another-secret"))
    r = curl_reverse(proxy, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", SEARCH.decode(),
                     "/index/_search")
    assert status_of(r) == 403, r
    assert answer(r)["error"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize("service", ["s3", "s3-outposts", "s3-object-lambda"])
def test_s3_signing_names_keep_s3_paths(service: str, plain: Verifier,
                                        sigproxy_factory: Callable[..., Proxy]) -> None:
    """Every S3 signing name gets S3's path rules (not only ``s3``): the encoded slash is sent and signed as
    ``/``, dot segments and ``//`` are kept; botocore's S3SigV4Auth, which botocore uses for all of them,
    accepts the signature. Before, s3-outposts and s3-object-lambda were signed with a normalised path and
    refused."""
    proxy = sigproxy_factory(reverse_config(plain, service))
    r = curl_reverse(proxy, "-X", "PUT", "--data-binary", "x", "/bucket/a%2Fb/../c//d%21")
    assert status_of(r) == 200, r
    assert answer(r)["path"] == "/bucket/a/b/../c//d%21"

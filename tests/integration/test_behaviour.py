"""Selection paths, overrides, header hygiene and every error status, through the real proxy process.

A small recording upstream (not a verifier: it only shows what arrived) tells which headers were forwarded;
moto is the judge wherever a signature matters.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Proxy, moto_config
from tests.errorbody import error_body
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto


@dataclass
class Recorder:
    url: str
    requests: list[dict[str, object]] = field(default_factory=list)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length) if length else b""
            rec.requests.append({"method": self.command, "path": self.path,
                                 "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body})
            if self.path.startswith("/slow"):
                time.sleep(3)
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "http://example.com/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = b"recorded"
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            named = self.path.startswith("/named")  # the Connection header names X-Hop-Trace: hop-by-hop
            self.send_header("Connection", "keep-alive, X-Hop-Trace" if named else "keep-alive")
            self.send_header("X-Upstream", "yes")
            self.send_header("X-Hop-Trace", "hop-1")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def config(*, default: bool = True, token: str | None = None, extra: str = "", proxy: str = "") -> str:
    """Connections: ``main`` (s3, us-east-1) and ``other`` (sqs, eu-west-1), both allowed on 127.0.0.1."""
    return f"""
[proxy]
{'default_connection = "main"' if default else ''}
{proxy}
[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
{f'token = "{token}"' if token else ''}
[connections.main.credentials]
source = "static"
access_key_id = "AKIDMAIN"
secret_access_key = "main-secret-value-0123456789"

[connections.other]
region = "eu-west-1"
hosts = ["127.0.0.1:*", "*.amazonaws.com"]
[connections.other.credentials]
source = "static"
access_key_id = "AKIDOTHER"
secret_access_key = "other-secret-value-0123456789"
{extra}
"""


def last(rec: Recorder) -> dict[str, object]:
    return rec.requests[-1]


def header(req: dict[str, object], name: str) -> str | None:
    values = [v for k, v in req["headers"] if k == name]  # type: ignore[union-attr]
    return values[0] if values else None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def error_of(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The error in whatever format it came: sigproxy's JSON, or the AWS protocol's (service = "s3": S3's XML)."""
    return error_body(r.stdout.rsplit("\n", 1)[0])


class TestSelection:
    def test_header_selects(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """X-Sigproxy-Connection picks the connection (its key id and default region sign)."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "-H", "X-Sigproxy-Connection: other", "-H", "X-Sigproxy-Service: sqs", f"{recorder.url}/q")
        assert status_of(r) == 200, r
        auth = header(last(recorder), "authorization") or ""
        assert "Credential=AKIDOTHER/" in auth and "/eu-west-1/sqs/aws4_request" in auth

    def test_proxy_auth_selects(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Proxy-Authorization: Basic NAME:TOKEN picks the connection (curl -x http://NAME:TOKEN@...)."""
        proxy = sigproxy_factory(config(default=False))
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-x", f"http://other:x@{proxy.address}",
                            "-H", "X-Sigproxy-Service: sqs", f"{recorder.url}/pa"], capture_output=True, text=True,
                           check=False)
        assert status_of(r) == 200, r
        assert "Credential=AKIDOTHER/" in (header(last(recorder), "authorization") or "")

    def test_client_key_selects(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """The access key id of the client's own SigV4 Authorization names the connection; its scope gives
        service and region."""
        proxy = sigproxy_factory(config(default=False))
        client_auth = ("AWS4-HMAC-SHA256 Credential=other/20260101/ap-south-1/sns/aws4_request, "
                       "SignedHeaders=host, Signature=" + "0" * 64)
        r = curl(proxy, "-H", f"Authorization: {client_auth}", f"{recorder.url}/ck")
        assert status_of(r) == 200, r
        auth = header(last(recorder), "authorization") or ""
        assert "Credential=AKIDOTHER/" in auth and "/ap-south-1/sns/aws4_request" in auth
        assert "0" * 64 not in auth

    def test_route_selects(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A [[routes]] host glob picks the connection when the request names none."""
        proxy = sigproxy_factory(config(extra='[[routes]]\nhost = "127.0.0.1:*"\nconnection = "other"\n'))
        r = curl(proxy, "-H", "X-Sigproxy-Service: sqs", f"{recorder.url}/route")
        assert status_of(r) == 200, r
        assert "Credential=AKIDOTHER/" in (header(last(recorder), "authorization") or "")

    def test_default_selects(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """default_connection applies when nothing else does."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, f"{recorder.url}/default")
        assert status_of(r) == 200, r
        assert "Credential=AKIDMAIN/" in (header(last(recorder), "authorization") or "")

    def test_none_is_407(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """No way matches: 407 saying how to select one; nothing is forwarded."""
        proxy = sigproxy_factory(config(default=False))
        before = len(recorder.requests)
        r = curl(proxy, f"{recorder.url}/none")
        assert status_of(r) == 407
        err = error_of(r)
        assert err["code"] == "no_connection"
        assert "X-Sigproxy-Connection" in err["message"] and "default_connection" in err["message"]
        assert len(recorder.requests) == before

    @pytest.mark.parametrize("auth", [None, "wrong-token"])
    def test_token_required(self, auth: str | None, recorder: Recorder,
                            sigproxy_factory: Callable[..., Proxy]) -> None:
        """A connection with a token refuses a missing or wrong one with 407 and accepts the right one."""
        proxy = sigproxy_factory(config(token="s3cr3t-token"))
        before = len(recorder.requests)
        args = ["-H", f"Proxy-Authorization: {basic('main', auth)}"] if auth else []
        r = curl(proxy, *args, f"{recorder.url}/tok")
        assert status_of(r) == 407
        assert error_of(r)["code"] == "bad_proxy_token"
        assert "s3cr3t-token" not in r.stdout
        assert len(recorder.requests) == before
        ok = curl(proxy, "-H", f"Proxy-Authorization: {basic('main', 's3cr3t-token')}", f"{recorder.url}/tok")
        assert status_of(ok) == 200
        assert "s3cr3t-token" not in proxy.stop()


class TestOverridesAndHeaders:
    def test_service_and_region_override(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """X-Sigproxy-Service and X-Sigproxy-Region override everything."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "-H", "X-Sigproxy-Service: execute-api", "-H", "X-Sigproxy-Region: eu-north-1",
                 f"{recorder.url}/o")
        assert status_of(r) == 200, r
        assert "/eu-north-1/execute-api/aws4_request" in (header(last(recorder), "authorization") or "")

    def test_stripped_and_kept_headers(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """X-Sigproxy-*, Proxy-*, the client's Authorization / X-Amz-Date / X-Amz-Security-Token and
        Connection-named headers are removed; other headers pass; x-amz-* are signed, user-agent and
        x-forwarded-* are not; the query goes in its SigV4 encoding."""
        proxy = sigproxy_factory(config())
        r = curl(
            proxy,
            "-H", "X-Sigproxy-Connection: main",
            "-H", "Proxy-Authorization: Basic bWFpbjp4",
            "-H", "X-Amz-Date: 19990101T000000Z",
            "-H", "X-Amz-Security-Token: client-token-xyz",
            "-H", "X-Amz-Meta-Note:   two   spaces  ",
            "-H", "X-Forwarded-For: 10.0.0.1",
            "-H", "Connection: X-Drop-Me",
            "-H", "X-Drop-Me: 1",
            "-A", "my-agent/1.0",
            f"{recorder.url}/h?b=2&a=1&c=x+y",
        )
        assert status_of(r) == 200, r
        req = last(recorder)
        names = {k for k, _ in req["headers"]}  # type: ignore[union-attr]
        assert not any(n.startswith(("x-sigproxy-", "proxy-")) for n in names)
        assert "x-drop-me" not in names
        assert header(req, "x-amz-security-token") is None
        assert header(req, "x-amz-date") != "19990101T000000Z"
        assert header(req, "user-agent") == "my-agent/1.0"
        assert header(req, "x-forwarded-for") == "10.0.0.1"
        assert req["path"] == "/h?b=2&a=1&c=x%20y"
        signed = (header(req, "authorization") or "").split("SignedHeaders=")[1].split(",")[0].split(";")
        assert "x-amz-meta-note" in signed and "host" in signed and "x-amz-content-sha256" in signed
        assert "user-agent" not in signed and "x-forwarded-for" not in signed

    @pytest.mark.parametrize("path", ["/plain", "/named"])
    def test_response_hop_by_hop_headers_not_forwarded(self, path: str, recorder: Recorder,
                                                       sigproxy_factory: Callable[..., Proxy]) -> None:
        """RFC 9110 7.6.1: the upstream's Connection header, and every header it names, stay between sigproxy and
        the upstream; the other headers and the body reach the client."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "-D", "-", f"{recorder.url}{path}")
        assert status_of(r) == 200, r
        head, _, body = r.stdout.partition("\n\n")  # text mode: CRLF read as LF
        names = {line.split(":", 1)[0].lower() for line in head.splitlines()[1:]}
        assert "x-upstream" in names and body.startswith("recorded")
        assert ("x-hop-trace" in names) is (path == "/plain")
        assert not any(line.lower().startswith("connection:") and "x-hop-trace" in line.lower()
                       for line in head.splitlines())

    def test_redirects_not_followed(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """An upstream redirect goes back to the client as is."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, f"{recorder.url}/redirect")
        assert status_of(r) == 302


class TestErrors:
    def test_400_unresolvable(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A host that names no service and a connection that sets none: 400 naming what to add."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "-H", "X-Sigproxy-Connection: other", f"{recorder.url}/x")
        assert status_of(r) == 400
        err = error_of(r)
        assert err["code"] == "unresolvable_target"
        assert "X-Sigproxy-Service" in err["message"]

    def test_400_origin_form_on_forward_listener(self, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A plain origin-form request to the forward listener is explained, not forwarded."""
        proxy = sigproxy_factory(config())
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", f"{proxy.url}/x"], capture_output=True,
                           text=True, check=False)
        assert status_of(r) == 400
        assert "HTTP_PROXY" in error_of(r)["message"]

    def test_403_host_not_allowed(self, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A target outside the connection's hosts: 403, never forwarded (nothing listens there anyway)."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "http://169.254.169.254/latest/meta-data/")
        assert status_of(r) == 403
        assert r.stdout.count("host_not_allowed") == 1

    def test_413_body_too_large(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Over max_body: 413 before anything goes upstream, with Content-Length or chunked."""
        proxy = sigproxy_factory(config(proxy='max_body = "1KiB"'))
        before = len(recorder.requests)
        r = curl(proxy, "-X", "PUT", "--data-binary", "x" * 2048, f"{recorder.url}/big")
        assert status_of(r) == 413
        assert error_of(r)["code"] == "body_too_large"
        chunked = curl(proxy, "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "y" * 4096,
                       f"{recorder.url}/big")
        assert status_of(chunked) == 413
        assert len(recorder.requests) == before

    def test_502_upstream_unreachable(self, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Nothing listening upstream: 502 upstream_error."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proxy = sigproxy_factory(config())
        r = curl(proxy, f"http://127.0.0.1:{port}/")
        assert status_of(r) == 502
        assert error_of(r)["code"] == "upstream_error"

    def test_403_credentials_unavailable(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A chain connection with no credentials anywhere: 403 credentials_unavailable (a retry can't fix it:
        SDKs must not retry), as S3's XML error SigproxyCredentialsUnavailable."""
        text = config().replace('source = "static"\naccess_key_id = "AKIDMAIN"\n'
                                'secret_access_key = "main-secret-value-0123456789"', 'source = "chain"')
        proxy = sigproxy_factory(text)
        r = curl(proxy, f"{recorder.url}/nocreds")
        assert status_of(r) == 403
        err = error_of(r)
        assert (err["format"], err["code"], err["aws_code"]) == ("rest-xml", "credentials_unavailable",
                                                                 "SigproxyCredentialsUnavailable")
        assert "the AWS credential chain found none" in err["message"]

    def test_504_upstream_timeout(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """An upstream silent for longer than read_timeout: 504."""
        proxy = sigproxy_factory(config(proxy="read_timeout = 1"))
        r = curl(proxy, f"{recorder.url}/slow")
        assert status_of(r) == 504
        assert error_of(r)["code"] == "upstream_timeout"
        assert "x-sigproxy-error" not in r.stdout.lower()  # header, not body

    def test_error_header(self, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Proxy errors carry X-Sigproxy-Error so they can't be mistaken for AWS's."""
        proxy = sigproxy_factory(config(default=False))
        r = subprocess.run(["curl", "-sS", "-i", "-x", proxy.url, "http://127.0.0.1:9/"], capture_output=True,
                           text=True, check=False)
        assert "x-sigproxy-error: no_connection" in r.stdout.lower()


class TestExpectContinue:
    def test_refused_upload_gets_no_100_continue(self, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]
                                                 ) -> None:
        """Expect: 100-continue is answered only after the decision: a refused upload gets its 403 at once."""
        proxy = sigproxy_factory(config())
        (tmp_path / "body").write_bytes(b"z" * 2_000_000)
        r = subprocess.run(["curl", "-sS", "-v", "-x", proxy.url, "-X", "PUT", "-H", "Expect: 100-continue",
                            "--data-binary", f"@{tmp_path / 'body'}", "-w", "\n%{http_code}", "http://example.com/x"],
                           capture_output=True, text=True, check=False, timeout=30)
        assert status_of(r) == 403
        assert "100 Continue" not in r.stderr

    def test_accepted_upload_gets_100_continue(self, recorder: Recorder, tmp_path: Path,
                                               sigproxy_factory: Callable[..., Proxy]) -> None:
        """An accepted upload gets 100 Continue, then its body goes upstream."""
        proxy = sigproxy_factory(config())
        (tmp_path / "body").write_bytes(b"q" * 2_000_000)
        r = subprocess.run(["curl", "-sS", "-v", "-x", proxy.url, "-X", "PUT", "-H", "Expect: 100-continue",
                            "--data-binary", f"@{tmp_path / 'body'}", "-w", "\n%{http_code}", f"{recorder.url}/up"],
                           capture_output=True, text=True, check=False, timeout=30)
        assert status_of(r) == 200
        assert "100 Continue" in r.stderr
        assert last(recorder)["body"] == b"q" * 2_000_000
        assert header(last(recorder), "expect") is None


class TestConcurrencyAndSecrets:
    def test_many_concurrent_keepalive_clients(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """32 clients, each several requests on one keep-alive connection, all verified by moto."""
        from concurrent.futures import ThreadPoolExecutor

        proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"'))

        def client(i: int) -> list[int]:
            urls = [f"{moto.endpoint}/{moto.bucket}?prefix=c{i}-{j}" for j in range(4)]
            outputs = [a for u in urls for a in ("-o", "/dev/null", u)]
            r = subprocess.run(["curl", "-sS", "-x", proxy.url, "-w", "%{http_code} ", *outputs],
                               capture_output=True, text=True, check=False, timeout=60)
            return [int(c) for c in r.stdout.split()]

        with ThreadPoolExecutor(32) as pool:
            codes = [c for result in pool.map(client, range(32)) for c in result]
        assert codes == [200] * 128

    def test_debug_logs_hold_no_secret(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """With debug logging, successes and failures alike: no secret key or token in the output."""
        proxy = sigproxy_factory(moto_config(moto, connection='token = "tok-3141592653"'), log_level="debug")
        curl(proxy, "-H", f"Proxy-Authorization: {basic('main', 'tok-3141592653')}", "-H",
             "X-Sigproxy-Service: s3", f"{moto.endpoint}/")
        curl(proxy, "-H", f"Proxy-Authorization: {basic('main', 'wrong')}", f"{moto.endpoint}/")
        curl(proxy, "-H", f"Proxy-Authorization: {basic('main', 'tok-3141592653')}", "http://example.com/")
        output = proxy.stop()
        assert '"status":200' in output
        for secret in (moto.secret_key, "tok-3141592653"):
            assert secret not in output


class TestReverse:
    def test_reverse_listener_in_front_of_moto(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A [[reverse]] listener: plain requests to it are signed for moto; moto's checks accept them."""
        text = moto_config(moto, connection='service = "s3"') + f"""
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{moto.endpoint}"
connection = "main"
"""
        proxy = sigproxy_factory(text)
        (rev,) = proxy.reverse
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", f"{rev}/"], capture_output=True, text=True,
                           check=False)
        assert status_of(r) == 200, r
        assert f"<Name>{moto.bucket}</Name>" in r.stdout
        put = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-X", "PUT", "-H", "Content-Type: text/plain",
                              "--data-binary", "via reverse", f"{rev}/{moto.bucket}/rev.txt"],
                             capture_output=True, text=True, check=False)
        assert status_of(put) == 200, put
        get = subprocess.run(["curl", "-sS", f"{rev}/{moto.bucket}/rev.txt"], capture_output=True, text=True,
                             check=False)
        assert get.stdout == "via reverse"
        # RFC 9112 3.2.2: the absolute form naming the upstream is the same request; naming another host it
        # is a proxy request sent here by mistake, refused rather than answered by this listener's upstream.
        absolute = subprocess.run(["curl", "-sS", "--request-target", f"{moto.endpoint}/{moto.bucket}/rev.txt",
                                   f"{rev}/"], capture_output=True, text=True, check=False)
        assert absolute.stdout == "via reverse"
        other = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--request-target",
                                f"http://elsewhere.example/{moto.bucket}/rev.txt", f"{rev}/"],
                               capture_output=True, text=True, check=False)
        assert status_of(other) == 400 and f"this one serves {moto.endpoint}" in other.stdout, other


class TestPolicyAndShapes:
    @pytest.mark.parametrize(("rules", "args", "needle"), [
        ('allowed_services = ["sqs"]', [], "service 's3' is not in allowed_services"),
        ('allowed_regions = ["eu-west-1"]', [], "region 'us-east-1' is not in allowed_regions"),
        ("read_only = true", ["-X", "PUT", "--data", "x"], "method PUT is not allowed (read_only)"),
        ('allowed_methods = ["GET"]', ["-X", "DELETE"], "method DELETE is not allowed (allowed_methods)"),
        ('deny_amz_headers = ["x-amz-acl", "x-amz-grant-*"]', ["-H", "x-amz-grant-read: id=x"],
         "header 'x-amz-grant-read' is refused (deny_amz_headers)"),
    ])
    def test_policy_refusals(self, rules: str, args: list[str], needle: str, recorder: Recorder,
                             sigproxy_factory: Callable[..., Proxy]) -> None:
        """What a connection may sign: a refusal is 403 policy_refused naming the rule; nothing forwarded."""
        text = config().replace('service = "s3"\n', f'service = "s3"\n{rules}\n', 1)
        proxy = sigproxy_factory(text)
        before = len(recorder.requests)
        r = curl(proxy, *args, f"{recorder.url}/p")
        assert status_of(r) == 403, r
        err = error_of(r)
        assert err["code"] == "policy_refused"
        assert needle in err["message"]
        assert len(recorder.requests) == before

    def test_read_only_allows_get(self, recorder: Recorder, sigproxy_factory: Callable[..., Proxy]) -> None:
        """read_only = true still signs GET and HEAD."""
        proxy = sigproxy_factory(config().replace('service = "s3"\n', 'service = "s3"\nread_only = true\n', 1))
        assert status_of(curl(proxy, f"{recorder.url}/ok")) == 200

    @pytest.mark.parametrize(("args", "url_suffix", "needle"), [
        (["-H", "X-Amz-Region-Set: us east"], "/x", "X-Amz-Region-Set"),
        ([], "/x?X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256", "SigV4A presigned URL"),
        (["-X", "PUT", "--data", "x", "-H", "x-amz-content-sha256: STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"], "/x",
         "SigV4A chunk signing"),
        ([], "/bucket--use1-az4--x-s3/key", "S3 Express"),
        (["-H", "Connection: Upgrade", "-H", "Upgrade: h2c"], "/h2c", "upgrades"),  # WebSocket's are relayed
        (["-X", "POST", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket"], "/ws", "GET over HTTP/1.1"),
        ([], "/x?X-Amz-Credential=main%2Fb&X-Amz-Signature=00", "already presigned"),
    ])
    def test_fail_closed_shapes(self, args: list[str], url_suffix: str, needle: str, recorder: Recorder,
                                sigproxy_factory: Callable[..., Proxy]) -> None:
        """A bad region set, a SigV4A presigned URL or chunk-signed upload, S3 Express, upgrades other than a
        WebSocket's (and a WebSocket handshake RFC 6455 forbids) and someone else's presigned URL: a clear 400, never
        forwarded."""
        proxy = sigproxy_factory(config())
        before = len(recorder.requests)
        r = curl(proxy, *args, f"{recorder.url}{url_suffix}")
        assert status_of(r) == 400, r
        assert needle in error_of(r)["message"]
        assert len(recorder.requests) == before


class TestHostileInput:
    def test_host_header_disagreeing_with_uri(self, recorder: Recorder,
                                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """The absolute URI decides where a request goes and what is signed; a lying Host is replaced."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "-H", "Host: evil.example.com", f"{recorder.url}/h")
        assert status_of(r) == 200
        assert header(last(recorder), "host") == recorder.url.removeprefix("http://")

    @pytest.mark.parametrize(("args", "sent"), [
        ([], "/bucket/../../etc/passwd"),
        (["-H", "X-Sigproxy-Connection: other", "-H", "X-Sigproxy-Service: sqs"], "/bucket/..%2f..%2fetc/passwd"),
    ], ids=["s3", "sqs"])
    def test_dot_segments_and_encoded_slash(self, args: list[str], sent: str, recorder: Recorder,
                                            sigproxy_factory: Callable[..., Proxy]) -> None:
        """No path is normalised on its way upstream: no dot segment is resolved, so nothing climbs out of the
        path the client named. S3 gets the path S3 servers sign, the encoded slash decoded as RGW and s3rver
        decode it; there ``..`` is part of the key (RGW stores ``../../escape`` as a key of the bucket,
        test_rgw.py::test_key_spellings). Other services get the path exactly as the client sent it."""
        proxy = sigproxy_factory(config())
        r = curl(proxy, "--path-as-is", *args, f"{recorder.url}/bucket/..%2f..%2fetc/passwd")
        assert status_of(r) == 200
        assert last(recorder)["path"] == sent

    def test_encoded_crlf_cannot_inject_headers(self, recorder: Recorder,
                                                sigproxy_factory: Callable[..., Proxy]) -> None:
        """CR/LF smuggled percent-encoded into the path or query stays encoded: no header is injected into the
        signed request; CR/LF in an override header is refused by the HTTP parser before any signing."""
        import socket as socketlib

        proxy = sigproxy_factory(config())
        r = curl(proxy, "--path-as-is", f"{recorder.url}/a%0D%0AX-Evil:%201?q=%0D%0AX-Evil2:%202")
        assert status_of(r) == 200
        sent = last(recorder)
        assert "%0D%0A" in str(sent["path"])
        assert all(not k.startswith("x-evil") for k, _ in sent["headers"])  # type: ignore[attr-defined]
        before = len(recorder.requests)
        host, port = proxy.address.rsplit(":", 1)
        with socketlib.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET {recorder.url}/x HTTP/1.1\r\nHost: h\r\n"
                         "X-Sigproxy-Region: us-east-1\rX-Evil: 1\r\n\r\n".encode())
            reply = sock.recv(200)
        assert reply[9:12] == b"400" and b"X-Sigproxy-Error: bad_request" in reply, reply
        assert len(recorder.requests) == before

    @pytest.mark.parametrize(("header", "status", "code"), [
        (b"Proxy-Authorization: Basic \xc3\xa9\xc3\xa9", 407, b"bad_proxy_token"),  # not ASCII: b64decode's ValueError
        (b"X-Sigproxy-Region: \xff", 400, b"unresolvable_target"),  # hashed into the key: could not be encoded
        (b"X-Sigproxy-Service: s3 x", 400, b"unresolvable_target"),
        (b"Content-Type: \xff", 400, b"bad_request"),  # signed, then refused as not UTF-8 (hashing it failed)
    ])
    def test_client_bytes_never_make_a_500(self, header: bytes, status: int, code: bytes, recorder: Recorder,
                                           sigproxy_factory: Callable[..., Proxy]) -> None:
        """Found by a tester sending bytes that are not ASCII or not UTF-8 in each header sigproxy reads: these
        were answered 500 with an "unexpected error" traceback. Each is the client's error, with its code."""
        import socket as socketlib

        proxy = sigproxy_factory(config())
        before = len(recorder.requests)
        host, port = proxy.address.rsplit(":", 1)
        with socketlib.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET " + recorder.url.encode() + b"/x HTTP/1.1\r\nHost: h\r\n" + header
                         + b"\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 %d " % status) and b"X-Sigproxy-Error: " + code in reply, reply
        assert len(recorder.requests) == before
        assert "unexpected error" not in proxy.stop()

    def test_a_later_http1_minor_is_served_as_http11(self, recorder: Recorder,
                                                     sigproxy_factory: Callable[..., Proxy]) -> None:
        """RFC 9112 2.3: `HTTP/1.2` is processed as 1.1: forwarded (as 1.1) and answered in 1.1."""
        import socket as socketlib

        proxy = sigproxy_factory(config())
        before = len(recorder.requests)
        host, port = proxy.address.rsplit(":", 1)
        with socketlib.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET " + recorder.url.encode() + b"/v12 HTTP/1.2\r\nHost: h\r\nConnection: close\r\n\r\n")
            reply = sock.recv(300)
        assert reply[:13] == b"HTTP/1.1 200 ", reply
        assert len(recorder.requests) == before + 1

    @pytest.mark.parametrize("version", [b"2.0", b"0.9", b"3.1"])
    def test_other_http_versions_answered_as_http11(self, version: bytes, recorder: Recorder,
                                                    sigproxy_factory: Callable[..., Proxy]) -> None:
        """Found by fuzzing the intake: `GET / HTTP/2.0` was answered `HTTP/2.0 400` (aiohttp echoes the
        version). Any version but 1.x is refused with a 400 in HTTP/1.1, nothing forwarded."""
        import socket as socketlib

        proxy = sigproxy_factory(config())
        before = len(recorder.requests)
        host, port = proxy.address.rsplit(":", 1)
        for target in (b"/", recorder.url.encode() + b"/x"):
            with socketlib.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"GET " + target + b" HTTP/" + version + b"\r\nHost: h\r\n\r\n")
                reply = sock.recv(300)
            # llhttp is told to parse any version: h1server refuses it by version.
            assert reply[:13] == b"HTTP/1.1 400 ", reply
        assert len(recorder.requests) == before

    @pytest.mark.parametrize(("raw", "statuses"), [
        (b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", (400, 431)),
        (b"PUT {url}/x HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n", (400,)),
        (b"PUT {url}/x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", (400, 413)),
        (b"POST {url}/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\n", (400,)),
        (b"GET {url}/x HTTP/1.1\r\nHost: h\r\nX-Injected: a\rb\r\n\r\n", (400,)),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n", (403,)),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400,)),  # HTTP/2 prior knowledge
        (b"GET {url}/x HTTP/1.1\r\nHost: h\r\nX-A: \xff\xfe\xe9t\xe9\r\n\r\n", (400,)),  # not UTF-8: was 502
        (b"GET {url}/x HTTP/1.1\r\n\r\n", (400,)),  # no Host (RFC 9112 3.2)
        (b"GET {url}/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", (400,)),
        (b"POST {url}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", (400,)),  # was forwarded
        (b"POST {url}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", (501,)),
        (b"PUT {url}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", (400,)),  # was 499
    ])
    def test_hostile_requests(self, raw: bytes, statuses: tuple[int, ...], recorder: Recorder,
                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """Oversized headers, bad or huge Content-Length, Content-Length with Transfer-Encoding (smuggling), a
        bare CR in a header, a CONNECT to the metadata address, HTTP/2 prior knowledge: a 4xx and nothing
        forwarded; the proxy goes on serving."""
        import socket as socketlib

        proxy = sigproxy_factory(config())
        before = len(recorder.requests)
        host, port = proxy.address.rsplit(":", 1)
        with socketlib.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(raw.replace(b"{url}", recorder.url.encode()))
            reply = sock.recv(200)
        assert int(reply[9:12]) in statuses, reply
        assert len(recorder.requests) == before
        assert status_of(curl(proxy, f"{recorder.url}/after")) == 200

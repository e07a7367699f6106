"""Operations against the real process and real signals: admin endpoints, metrics, reload, drain, logs."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sigproxy.config import load
from tests.conftest import ROOT, Proxy, moto_config
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str]:
    try:
        with NO_PROXY.open(url, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """A metric family's samples by their sorted labels (histogram parts and _created excluded)."""
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples
            if s.name in (name, name + "_total")}


CLONE = """
[connections.{name}]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.{name}.credentials]
source = "static"
access_key_id = "{access_key}"
secret_access_key = "{secret}"
"""


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# A SigV4 Authorization naming a key id no connection has: refused (407) from the head, before the body.
UNKNOWN_KEY_AUTH = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host, Signature=" + "0" * 64)


@contextlib.contextmanager
def _slow_upstreams(tmp_path: Path) -> Iterator[tuple[str, str, Path, list[str]]]:
    """The slow origin over HTTP and HTTPS: ``(http url, https url, its CA file, paths as they arrive)``."""
    import trustme

    arrived: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/inflight":
                arrived.append(self.path)
                time.sleep(2)
            body = b"slow but complete"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ca = trustme.CA()
    ca_file = tmp_path / "origin-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    servers[1].socket = context.wrap_socket(servers[1].socket, server_side=True)
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield (f"http://127.0.0.1:{servers[0].server_address[1]}",
               f"https://127.0.0.1:{servers[1].server_address[1]}", ca_file, arrived)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=15)


def _tunnel(proxy_address: str, host: str, port: int, ca_file: Path) -> socket.socket:
    """A CONNECT tunnel through the proxy, TLS inside it verified against sigproxy's CA."""
    sock = _connect(proxy_address)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return ssl.create_default_context(cafile=str(ca_file)).wrap_socket(sock, server_hostname=host)


def _head(method: str, target: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", *headers, "", ""]).encode()


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length body, read off a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for n, _, v in (line.partition(":") for line in lines[1:])
                  if n.strip().lower() == "content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(lines[0].split(" ")[1]), body


class TestAdmin:
    def test_healthz_readyz_metrics(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """/healthz answers; /readyz says the process can serve; /health/connections checks every connection's
        credentials; /metrics parses as Prometheus text and counts requests, bytes, latency and credential
        cache use, and shows each connection's state."""
        proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"'), admin=True)
        assert proxy.admin is not None
        assert get(f"{proxy.admin}/healthz") == (200, '{"status": "ok"}')
        status, body = get(f"{proxy.admin}/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready", "listeners": True})
        status, body = get(f"{proxy.admin}/health/connections")
        assert (status, json.loads(body)) == (200, {"status": "ok", "connections": {"main": "ok"}, "failing": []})
        for _ in range(3):
            assert status_of(curl(proxy, f"{moto.endpoint}/")) == 200
        status, text = get(f"{proxy.admin}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        requests = {tuple(sorted(s.labels.items())): s.value for s in families["sigproxy_requests"].samples}
        assert requests[(("connection", "main"), ("service", "s3"), ("status", "200"))] == 3
        latency = families["sigproxy_request_duration_seconds"]
        count = next(s.value for s in latency.samples if s.name.endswith("_count"))
        assert count == 3
        down = families["sigproxy_response_bytes"].samples[0].value
        assert down > 0
        assert families["sigproxy_open_tunnels"].samples[0].value == 0
        assert families["sigproxy_client_connections"].samples[0].value == 0
        assert "sigproxy_credential_cache_hits" in families
        assert samples(families, "sigproxy_connection_up") == {(("connection", "main"),): 1}
        assert samples(families, "sigproxy_connections") == {
            (("state", "down"),): 0, (("state", "unknown"),): 0, (("state", "up"),): 1}
        host, port = proxy.address.rsplit(":", 1)
        with socket.create_connection((host, int(port))), socket.create_connection((host, int(port))):
            deadline = time.monotonic() + 5
            while True:  # accepted asynchronously: the gauge catches up within moments
                families = {f.name: f for f in text_string_to_metric_families(get(f"{proxy.admin}/metrics")[1])}
                if families["sigproxy_client_connections"].samples[0].value == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert families["sigproxy_client_connections"].samples[0].value == 2

    def test_one_failing_connection_keeps_the_process_ready(self, moto: Moto,
                                                            sigproxy_factory: Callable[..., Proxy]) -> None:
        """A connection whose credentials can't be had (a tenant deleted its role) leaves /readyz at 200 -- the
        process serves the others, and a readiness probe must not pull every replica -- while
        /health/connections answers 503 naming it (and why) and the gauges show it down."""
        proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"', extra="""
[connections.nocreds]
hosts = ["127.0.0.1:*"]
[connections.nocreds.credentials]
source = "chain"
"""), admin=True)
        assert proxy.admin is not None
        status, body = get(f"{proxy.admin}/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready")
        status, body = get(f"{proxy.admin}/health/connections")
        assert (status, json.loads(body)) == (503, {
            "status": "failing", "connections": {"main": "ok", "nocreds": "credentials_unavailable"},
            "failing": ["nocreds"]})
        assert status_of(curl(proxy, f"{moto.endpoint}/")) == 200  # main still serves
        families = {f.name: f for f in text_string_to_metric_families(get(f"{proxy.admin}/metrics")[1])}
        assert samples(families, "sigproxy_connection_up") == {
            (("connection", "main"),): 1, (("connection", "nocreds"),): 0}
        assert samples(families, "sigproxy_connections")[(("state", "down"),)] == 1

    @pytest.mark.parametrize("label", ["name", "none"])
    def test_metrics_connection_label(self, label: str, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """[proxy] metrics_connection_label: "name" keeps one series per connection, "none" aggregates them
        (no `connection` label anywhere, no per-connection gauge) -- both parse as Prometheus text."""
        text = moto_config(moto, connection='service = "s3"', proxy=f'metrics_connection_label = "{label}"',
                           extra=CLONE.format(name="second", access_key=moto.access_key, secret=moto.secret_key))
        proxy = sigproxy_factory(text, admin=True)
        assert proxy.admin is not None
        for name in ("main", "second", "second"):
            assert status_of(curl(proxy, "-H", f"X-Sigproxy-Connection: {name}", f"{moto.endpoint}/")) == 200
        get(f"{proxy.admin}/health/connections")
        families = {f.name: f for f in text_string_to_metric_families(get(f"{proxy.admin}/metrics")[1])}
        labelled = {f.name for f in families.values() for s in f.samples if "connection" in s.labels}
        requests = samples(families, "sigproxy_requests")
        if label == "name":
            assert labelled == {"sigproxy_requests", "sigproxy_request_duration_seconds", "sigproxy_response_bytes",
                                "sigproxy_connection_up"}
            assert requests == {(("connection", "main"), ("service", "s3"), ("status", "200")): 1,
                                (("connection", "second"), ("service", "s3"), ("status", "200")): 2}
        else:
            assert labelled == set()
            assert requests == {(("service", "s3"), ("status", "200")): 3}
            assert "sigproxy_connection_up" not in families
            counts = [s for s in families["sigproxy_request_duration_seconds"].samples if s.name.endswith("_count")]
            assert [(s.labels, s.value) for s in counts] == [({}, 3)]
        assert samples(families, "sigproxy_connections")[(("state", "up"),)] == 2


class TestReload:
    def test_valid_reload_swaps_config(self, moto: Moto, tmp_path: Path, slow_upstream: str,
                                       sigproxy_factory: Callable[..., Proxy]) -> None:
        """SIGHUP with a valid config: new connections and routes apply to new requests; a request in flight
        finishes on the old config."""
        text = moto_config(moto, connection='service = "s3"')
        proxy = sigproxy_factory(text)
        in_flight: list[subprocess.CompletedProcess[str]] = []
        worker = threading.Thread(target=lambda: in_flight.append(curl(proxy, f"{slow_upstream}/x")))
        worker.start()
        time.sleep(0.5)
        proxy.rewrite(text + """
[connections.newcomer]
region = "eu-west-1"
hosts = ["127.0.0.1:*"]
[connections.newcomer.credentials]
source = "static"
access_key_id = "AKIDNEW"
secret_access_key = "new-secret-value"
""")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reloaded" in "".join(proxy.output))
        worker.join()
        assert status_of(in_flight[0]) == 200
        r = curl(proxy, "-H", "X-Sigproxy-Connection: newcomer", "-H", "X-Sigproxy-Service: s3", f"{slow_upstream}/y")
        assert status_of(r) == 200

    def test_invalid_reload_keeps_old_config(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """SIGHUP with a broken config: the proxy keeps serving on the old one and logs why."""
        proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"'))
        proxy.config.write_text("[proxy]\nbogus_key = 1\n")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in "".join(proxy.output))
        assert "proxy.bogus_key: unknown key" in "".join(proxy.output)
        assert status_of(curl(proxy, f"{moto.endpoint}/")) == 200
        assert proxy.proc.poll() is None


def drain_config(seconds: float) -> str:
    """Connection ``x`` (static keys, S3, any port on 127.0.0.1), the default, with ``drain_seconds``."""
    return f"""
[proxy]
default_connection = "x"
drain_seconds = {seconds}
[connections.x]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.x.credentials]
source = "static"
access_key_id = "AKIDX"
secret_access_key = "x-secret"
"""


class TestDrain:
    def test_sigterm_drains_in_flight(self, slow_upstream: str, sigproxy_factory: Callable[..., Proxy]) -> None:
        """SIGTERM: no new connections; /readyz answers 503 while the request in flight completes; exit 0."""
        proxy = sigproxy_factory(drain_config(10), admin=True)
        results: list[subprocess.CompletedProcess[str]] = []
        worker = threading.Thread(target=lambda: results.append(curl(proxy, f"{slow_upstream}/inflight")))
        worker.start()
        time.sleep(0.5)
        proxy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = curl(proxy, f"{slow_upstream}/late")
        assert late.returncode == 7  # curl: couldn't connect: the listener is closed
        assert proxy.admin is not None
        status, body = get(f"{proxy.admin}/readyz")  # the admin listener is closed last: it says so
        assert status == 503, body
        worker.join()
        assert status_of(results[0]) == 200
        assert results[0].stdout.startswith("slow but complete")
        assert proxy.proc.wait(15) == 0

    def test_request_cut_at_the_drain_end_is_logged(self, slow_upstream: str,
                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
        """A request still running when drain_seconds are over is cut, and still gets its one access line
        (status ``aborted``, error ``shutdown``), written before the process exits."""
        proxy = sigproxy_factory(drain_config(1))
        results: list[subprocess.CompletedProcess[str]] = []
        worker = threading.Thread(target=lambda: results.append(curl(proxy, f"{slow_upstream}/cut?token=v")))
        worker.start()
        time.sleep(0.5)
        proxy.proc.send_signal(signal.SIGTERM)
        worker.join()
        assert proxy.proc.wait(15) == 0
        assert status_of(results[0]) != 200  # cut: no response, or not the upstream's
        lines = [json.loads(x) for x in proxy.stop().splitlines()
                 if x.startswith("{") and '"sigproxy.access"' in x]
        cut = [x for x in lines if x.get("path") == "/cut?token"]
        assert len(cut) == 1, lines
        assert cut[0]["status"] == "aborted" and cut[0]["error"] == "shutdown"
        assert cut[0]["connection"] == "x" and cut[0]["ms"] >= 900

    def test_idle_keepalive_connections_do_not_hold_the_drain(self, moto: Moto,
                                                             sigproxy_factory: Callable[..., Proxy]) -> None:
        """An idle keep-alive client connection (one request done, socket left open) is closed at SIGTERM at once:
        the drain waits for requests, not for idle clients (it used to wait out drain_seconds)."""
        proxy = sigproxy_factory(moto_config(moto, proxy="drain_seconds = 20"))
        host, port = proxy.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET {moto.endpoint}/ HTTP/1.1\r\nHost: x\r\nX-Sigproxy-Service: s3\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            proxy.proc.send_signal(signal.SIGTERM)
            assert proxy.proc.wait(15) == 0
            assert time.monotonic() - started < 5
            while sock.recv(65536):  # the rest of the response, then the proxy's close (no timeout)
                pass


    def test_idle_and_answered_connections_close_at_once_in_flight_complete(
            self, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
        """At SIGTERM, on the forward listener, a reverse listener and inside an intercepted CONNECT tunnel:
        a connection idle after a complete exchange and one whose request was refused before its body
        (``Expect: 100-continue``, the body never sent, as boto3 does) are closed at once, while a request in
        flight on each of them completes. Both used to hold the drain: the refused one for aiohttp's 10 s
        lingering wait for the unsent body, however short drain_seconds was made."""
        with _slow_upstreams(tmp_path) as (plain, tls, ca_file, arrived):
            tls_port = tls.rsplit(":", 1)[1]
            proxy = sigproxy_factory(f"""
[proxy]
default_connection = "x"
drain_seconds = 20
upstream_ca_file = "{ca_file}"
connect_ports = [{tls_port}]
[connections.x]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.x.credentials]
source = "static"
access_key_id = "AKIDX"
secret_access_key = "x-secret"
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{plain}"
connection = "x"
""")
            our_ca = tmp_path / "state" / "ca-cert.pem"
            ways: dict[str, Callable[[], socket.socket]] = {
                "forward": lambda: _connect(proxy.address),
                "reverse": lambda: _connect(proxy.reverse[0].removeprefix("http://")),
                "tunnel": lambda: _tunnel(proxy.address, "127.0.0.1", int(tls_port), our_ca),
            }
            origin = {"forward": plain, "reverse": "", "tunnel": ""}
            held: dict[str, socket.socket] = {}
            for way, connect in ways.items():
                idle = connect()
                idle.sendall(_head("GET", f"{origin[way]}/done", "Host: upstream"))
                assert _response(idle) == (200, b"slow but complete")
                refused = connect()
                refused.sendall(_head("PUT", f"{origin[way]}/bucket/key", "Host: upstream", "Expect: 100-continue",
                                      "Content-Length: 5", f"Authorization: {UNKNOWN_KEY_AUTH}"))
                assert _response(refused)[0] == 407
                held |= {f"{way} idle": idle, f"{way} refused before its body": refused}
            arrived.clear()
            results: dict[str, tuple[int, bytes]] = {}

            def in_flight(way: str) -> None:
                with ways[way]() as sock:
                    sock.sendall(_head("GET", f"{origin[way]}/inflight", "Host: upstream"))
                    results[way] = _response(sock)

            workers = [threading.Thread(target=in_flight, args=(way,)) for way in ways]
            for worker in workers:
                worker.start()
            wait_for(lambda: len(arrived) == 3)  # all three are at the origin now, answered in 2 s
            started = time.monotonic()
            proxy.proc.send_signal(signal.SIGTERM)
            still_open = []
            for name, sock in held.items():  # closed by the proxy, each at once (not when the process exits)
                sock.settimeout(max(0.1, started + 3 - time.monotonic()))
                try:
                    assert sock.recv(100) == b"", name
                except TimeoutError:
                    still_open.append(name)
                sock.close()
            assert still_open == []
            for worker in workers:
                worker.join(15)
            assert results == dict.fromkeys(ways, (200, b"slow but complete"))
            assert proxy.proc.wait(15) == 0
            assert time.monotonic() - started < 6  # the in-flight requests' 2 s, not 10 s or drain_seconds


def test_example_config_loads() -> None:
    """config.example.toml stays loadable."""
    config = load(ROOT / "config.example.toml", env={"HOME": "/tmp"})
    assert "main" in config.connections


def test_debug_logs_never_hold_secrets(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Debug logging through every path (signing, STS AssumeRole, the custom STS endpoint, errors, TLS
    tunnels): no secret key, session token, derived signing key, API key or proxy token in the output."""
    from datetime import UTC, datetime

    from moto.sts.utils import SESSION_TOKEN_PREFIX

    from sigproxy.signing import Signer
    from tests.integration.test_credentials import tenant
    from tests.integration.test_https import https_config
    from tests.servers.sts_endpoint import start_sts_endpoint

    endpoint, stop_endpoint = start_sts_endpoint(auth=("api_key", "X-Api-Key", "api-key-SECRET-123"))
    endpoint.credentials = ("ASIAFROMENDPOINT", "endpoint-secret-VALUE-456", "endpoint-token-VALUE-789")
    try:
        text = https_config(moto, tmp_path / "state", connection='token = "proxy-token-SECRET-321"') + f"""
[connections.platform]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
[connections.platform.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"

[connections.custom]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.custom.credentials]
source = "sts_endpoint"
url = "{endpoint.url}"
role_arn = "arn:aws:iam::123456789012:role/customer"
auth = "api_key"
api_key = "api-key-SECRET-123"
""" + tenant(moto)
        # The whole default setup (admin listener, store): every path that logs.
        proxy = sigproxy_factory(text, log_level="debug", admin=True, store=True)
        auth = "main:proxy-token-SECRET-321"
        bundle = tmp_path / "bundle.pem"
        subprocess.run([*_sigproxy_cmd(), "ca", "-c", str(proxy.config), "--bundle", str(bundle)], check=True,
                       capture_output=True, cwd=ROOT)
        s3 = ["-H", "X-Sigproxy-Service: s3"]
        assert status_of(curl(proxy, "-U", auth, *s3, f"{moto.endpoint}/")) == 200           # static, signed
        assert status_of(curl(proxy, "-U", "main:wrong", f"{moto.endpoint}/")) == 407          # bad token
        assert status_of(curl(proxy, "-U", auth, "http://example.com/")) == 403                 # host refused
        assert status_of(curl(proxy, "-H", "X-Sigproxy-Connection: tenant", *s3, f"{moto.endpoint}/")) == 200
        assert status_of(curl(proxy, "-H", "X-Sigproxy-Connection: custom", *s3, f"{moto.endpoint}/")) == 403
        tunnel = subprocess.run(["curl", "-sS", "--proxy", f"http://{auth}@{proxy.address}", "--cacert",
                                 str(bundle), *s3, "-o", "/dev/null", "-w", "%{http_code}",
                                 f"{moto.tls_endpoint}/"], capture_output=True, text=True, check=False)
        assert tunnel.stdout == "200"
        output = proxy.stop()
    finally:
        stop_endpoint()
    today = datetime.now(UTC).strftime("%Y%m%d")
    derived = Signer().signing_key(moto.secret_key, today, "us-east-1", "s3")
    assert output.count('"logger":"sigproxy.access"') >= 6  # every request above was logged
    for secret in (moto.secret_key, "proxy-token-SECRET-321", "api-key-SECRET-123", "endpoint-secret-VALUE-456",
                   "endpoint-token-VALUE-789", derived.hex(), SESSION_TOKEN_PREFIX):
        assert secret not in output, f"a secret leaked into the log: {secret[:6]}..."


def _sigproxy_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "sigproxy"]

"""The access log of the real ``sigproxy run`` process: no line lost at SIGTERM, in JSON and in text."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import _start_proxy

REQUESTS = 300


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real servers set it: with Nagle, the body (written after the head) waits for the ACK of
    # the head, which the proxy's kernel delays by up to 40 ms: 300 requests took 12-15 s, now 3.5.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 answering every GET with 200 "ok"."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_request_has_its_line_after_sigterm(upstream: str, tmp_path: Path, fmt: str) -> None:
    """N requests answered, SIGTERM at once after the last: exactly N access lines, each complete."""
    config = tmp_path / "sigproxy.toml"
    config.write_text("""
[proxy]
default_connection = "main"
[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
""")
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    proxy = _start_proxy(config, env, ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", fmt])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    for i in range(REQUESTS):
        with opener.open(f"http://{upstream}/bucket/k{i}", timeout=10) as r:
            assert r.status == 200
    output = proxy.stop()
    assert proxy.proc.returncode == 0
    if fmt == "json":
        lines = [json.loads(x) for x in output.splitlines() if '"logger":"sigproxy.access"' in x]
        assert sorted(x["path"] for x in lines) == sorted(f"/bucket/k{i}" for i in range(REQUESTS))
        assert all(x["status"] == 200 and x["service"] == "s3" and x["connection"] == "main" for x in lines)
    else:
        lines = [x for x in output.splitlines() if " INFO sigproxy.access GET " in x]
        assert sorted(x.split(" path=", 1)[1].split()[0] for x in lines) == sorted(
            f"/bucket/k{i}" for i in range(REQUESTS))
        assert all(" status=200 " in x and " service=s3 " in x for x in lines)

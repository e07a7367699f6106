"""A stand-in for the custom STS endpoint contract (DESIGN.md, "Credentials"), in-process, for tests.

Owns: one ``ThreadingHTTPServer`` on 127.0.0.1 port 0 (optionally TLS) in a daemon thread, answering
``POST /credentials``.  It is ready as soon as ``start_sts_endpoint`` returns (the socket is bound
and listening before the thread starts).  Every request is recorded in ``calls``; the knobs on
:class:`StsEndpoint` are plain attributes a test may change between requests.

The contract: sigproxy POSTs JSON ``{"role_arn", "external_id", "region", "service"}`` (all four keys
present, values may be null; a body without them is a 400), plus ``"user": ID`` -- the end user's
``X-Sigproxy-User`` -- on a ``user_header = true`` connection (recorded, not checked), authenticated
by an API-key header or HTTP basic auth (wrong or missing: 401 JSON); the answer is ``{"accessKeyId", "secretAccessKey",
"sessionToken", "expiresAt"}``, flat or under ``"credentials"``; the expiry may be named
``expiresAt``, ``expires_at`` or ``expiration``, be Unix seconds (a number) or ISO-8601, or be
missing.  A ``None`` session token is left out of the answer.

Order of handling: record the call, sleep ``delay``, check auth (401), check the path (404) and
method (405), answer ``status`` if it is not 200, check the body (400), then answer (``malformed``
spoils it on purpose).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/credentials"
FAKE_CREDENTIALS = ("ASIASTSENDPOINTFAKE01", "sts-endpoint-fake-secret", "sts-endpoint-fake-token")
REQUIRED_KEYS = ("role_arn", "external_id", "region", "service")
MALFORMATIONS = (
    "missing_access_key",  # no accessKeyId
    "missing_secret",  # no secretAccessKey
    "not_json",  # a garbage body, still labelled application/json
    "not_object",  # a JSON list
    "empty",  # an empty body
    "bad_expiry",  # the expiry field (expiresAt if expiry_field is None) holds "not-a-date"
    "wrapped_not_object",  # {"credentials": "..."}
)


@dataclass
class StsEndpoint:
    url: str  # http(s)://127.0.0.1:PORT/credentials
    calls: list[dict[str, Any]] = field(default_factory=list)
    # every request: {"method", "path", "body": parsed JSON or raw bytes, "headers": {lower-name: value}}
    shape: str = "flat"  # "flat" | "wrapped"
    expiry_field: str | None = "expiresAt"  # "expiresAt" | "expires_at" | "expiration" | None (omitted)
    expiry_format: str = "iso"  # "iso" (...Z) | "iso_offset" (...+00:00) | "unix" (int seconds)
    lifetime: float = 3600  # seconds from now; negative: already expired
    status: int = 200  # non-200: answers {"error": "..."} with that status (STS down)
    delay: float = 0.0  # seconds to sleep before answering (single-flight tests)
    credentials: tuple[str, str, str | None] = FAKE_CREDENTIALS  # (access_key, secret, token) returned
    auth: tuple[str, ...] = ("api_key", "X-Api-Key", "test-api-key")  # or ("basic", user, password)
    malformed: str | None = None  # one of MALFORMATIONS
    max_in_flight: int = 0  # the most requests ever handled at once
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _in_flight: int = field(default=0, repr=False)

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    def reset(self) -> None:
        """Forget the calls (the knobs stay)."""
        with self._lock:
            self.calls.clear()
            self.max_in_flight = self._in_flight

    # -- used by the handler --

    def _enter(self, call: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(call)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _authorized(self, headers: dict[str, str]) -> bool:
        kind, *rest = self.auth
        if kind == "api_key":
            name, key = rest
            return hmac.compare_digest(headers.get(name.lower(), "").encode(), key.encode())
        if kind == "basic":
            user, password = rest
            want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            return hmac.compare_digest(headers.get("authorization", "").encode(), want.encode())
        raise ValueError(f"unknown auth kind {kind!r}")

    def _expiry(self) -> str | int:
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        if self.expiry_format == "unix":
            return int(expires.timestamp())
        if self.expiry_format == "iso_offset":
            return expires.isoformat(timespec="seconds")
        if self.expiry_format == "iso":
            return expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ValueError(f"unknown expiry_format {self.expiry_format!r}")

    def _answer(self) -> bytes:
        access_key, secret, token = self.credentials
        creds: dict[str, Any] = {"accessKeyId": access_key, "secretAccessKey": secret}
        if token is not None:
            creds["sessionToken"] = token
        if self.malformed == "bad_expiry":
            creds[self.expiry_field or "expiresAt"] = "not-a-date"
        elif self.expiry_field is not None:
            creds[self.expiry_field] = self._expiry()
        if self.malformed == "missing_access_key":
            del creds["accessKeyId"]
        elif self.malformed == "missing_secret":
            del creds["secretAccessKey"]
        elif self.malformed == "not_json":
            return b"<html>this is not JSON"
        elif self.malformed == "not_object":
            return json.dumps([creds]).encode()
        elif self.malformed == "empty":
            return b""
        elif self.malformed == "wrapped_not_object":
            return json.dumps({"credentials": "nope"}).encode()
        elif self.malformed not in (None, "bad_expiry"):
            raise ValueError(f"unknown malformed {self.malformed!r}")
        if self.shape == "wrapped":
            return json.dumps({"credentials": creds}).encode()
        if self.shape == "flat":
            return json.dumps(creds).encode()
        raise ValueError(f"unknown shape {self.shape!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs of a burst: 1 s client retransmits
    endpoint: StsEndpoint

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.open_sockets: set[socket.socket] = set()  # keep-alive connections, cut on stop()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.sockets_lock:
            for sock in self.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection's thread ends after this

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": message}).encode(), extra)

    def _handle(self) -> None:
        ep = self.server.endpoint
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        headers = {name.lower(): value for name, value in self.headers.items()}
        ep._enter({"method": self.command, "path": self.path, "body": body, "headers": headers})
        try:
            if ep.delay:
                time.sleep(ep.delay)
            missing = [k for k in REQUIRED_KEYS if k not in body] if isinstance(body, dict) else []
            if not ep._authorized(headers):
                challenge = {"WWW-Authenticate": 'Basic realm="sts"'} if ep.auth[0] == "basic" else {}
                self._error(401, "unauthorized", challenge)
            elif self.path.split("?", 1)[0] != PATH:
                self._error(404, f"no such path {self.path!r}")
            elif self.command != "POST":
                self._error(405, "POST only", {"Allow": "POST"})
            elif ep.status != 200:
                self._error(ep.status, f"the STS endpoint is down (HTTP {ep.status})")
            elif not isinstance(body, dict):
                self._error(400, "the request body is not a JSON object")
            elif missing:
                self._error(400, f"the request body lacks {', '.join(missing)}")
            else:
                self._send(200, ep._answer())
        finally:
            ep._leave()

    do_POST = do_GET = do_PUT = _handle


def start_sts_endpoint(
    *, auth: tuple[str, ...] = ("api_key", "X-Api-Key", "test-api-key"), ssl_context: ssl.SSLContext | None = None
) -> tuple[StsEndpoint, Callable[[], None]]:
    """Start the endpoint; return it and an idempotent stop().  Pass a server ``ssl_context`` for HTTPS."""
    server = _Server()
    if ssl_context is not None:  # the handshake then runs in each request's thread, not the accept loop
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    scheme = "https" if ssl_context is not None else "http"
    endpoint = StsEndpoint(url=f"{scheme}://127.0.0.1:{server.server_port}{PATH}", auth=auth)
    server.endpoint = endpoint
    # poll_interval bounds how long stop() waits for the accept loop to notice
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="sts-endpoint", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()
            server.cut_connections()
            thread.join()

    return endpoint, stop


if __name__ == "__main__":
    import urllib.error
    import urllib.request

    def post(ep: StsEndpoint, body: object, headers: dict[str, str]) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(ep.url, data=data, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def parse_expiry(value: object) -> datetime:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        assert isinstance(value, str)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    good = {"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "e", "region": "eu-west-1",
            "service": "s3"}  # fmt: skip
    key = {"X-Api-Key": "test-api-key"}
    ep, stop = start_sts_endpoint()
    try:
        for shape in ("flat", "wrapped"):
            for name in ("expiresAt", "expires_at", "expiration", None):
                for fmt in ("iso", "iso_offset", "unix"):
                    ep.shape, ep.expiry_field, ep.expiry_format = shape, name, fmt
                    status, raw = post(ep, good, key)
                    assert status == 200, (status, raw)
                    answer = json.loads(raw)
                    creds = answer["credentials"] if shape == "wrapped" else answer
                    assert (creds["accessKeyId"], creds["secretAccessKey"], creds["sessionToken"]) == FAKE_CREDENTIALS
                    if name is None:
                        assert not {"expiresAt", "expires_at", "expiration"} & set(creds), creds
                    else:
                        left = (parse_expiry(creds[name]) - datetime.now(UTC)).total_seconds()
                        assert 3590 < left <= 3601, (creds, left)
                        assert isinstance(creds[name], int) == (fmt == "unix")
        ep.shape, ep.expiry_field, ep.expiry_format = "flat", "expiresAt", "iso"
        assert ep.calls[0]["body"] == good and ep.calls[0]["headers"]["x-api-key"] == "test-api-key"
        ep.credentials = ("AKIAREALMOTOKEY00000", "secret", None)
        creds = json.loads(post(ep, good, key)[1])
        assert creds["accessKeyId"] == "AKIAREALMOTOKEY00000" and "sessionToken" not in creds
        assert post(ep, good, {})[0] == 401
        assert post(ep, good, {"X-Api-Key": "wrong"})[0] == 401
        assert post(ep, b"{not json", key)[0] == 400 and ep.calls[-1]["body"] == b"{not json"
        assert post(ep, {"role_arn": "x"}, key)[0] == 400
        ep.status = 503
        status, raw = post(ep, good, key)
        assert status == 503 and "error" in json.loads(raw)
        ep.status = 200
        for bad in MALFORMATIONS:
            ep.malformed = bad
            status, raw = post(ep, good, key)
            assert status == 200, bad
            try:
                data = json.loads(raw)
            except ValueError:
                assert bad in ("not_json", "empty")
                continue
            if bad == "missing_secret":
                assert "secretAccessKey" not in data and "accessKeyId" in data
            if bad == "bad_expiry":
                assert data["expiresAt"] == "not-a-date"
        ep.malformed = None
        ep.reset()
        ep.delay = 0.3
        started = time.monotonic()
        threads = [threading.Thread(target=post, args=(ep, good, key)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ep.call_count == 4 and ep.max_in_flight == 4 and time.monotonic() - started < 1.0
        ep.delay = 0
    finally:
        stop()
        stop()

    basic, stop = start_sts_endpoint(auth=("basic", "alice", "s3cret"))
    try:
        pair = base64.b64encode(b"alice:s3cret").decode()
        assert post(basic, good, {"Authorization": f"Basic {pair}"})[0] == 200
        wrong = base64.b64encode(b"alice:nope").decode()
        status, _ = post(basic, good, {"Authorization": f"Basic {wrong}"})
        assert status == 401 and basic.call_count == 2
    finally:
        stop()

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    tls, stop = start_sts_endpoint(ssl_context=server_ctx)
    try:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        req = urllib.request.Request(tls.url, data=json.dumps(good).encode(), headers=key)
        with urllib.request.urlopen(req, timeout=5, context=client_ctx) as resp:
            assert resp.status == 200 and tls.url.startswith("https://")
    finally:
        stop()
    assert threading.active_count() == 1, threading.enumerate()
    print("OK")

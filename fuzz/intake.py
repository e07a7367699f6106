"""The forward listener's intake over a real socket: a real ``sigproxy run`` process, raw request heads.

Inputs: request lines (methods, absolute URIs with odd hosts/ports/IPv6/userinfo/percent-encoding, origin
and asterisk forms, CONNECT targets, versions), header names and values with odd bytes (CR, LF, NUL, obs-fold,
non-ASCII, 9 KB lines), duplicate Content-Length, Content-Length with Transfer-Encoding, bare-LF line ends,
and bodies. Nothing valid is reachable: the only connection may sign for 127.0.0.1:1 and [::1]:1 (closed
ports), so no request ever leaves the machine.

Properties: every connection gets a well-formed HTTP response (its status line parses; sigproxy's own errors
are 4xx/5xx with a JSON body whose ``code`` matches ``X-Sigproxy-Error``, or, for a request that speaks an AWS
protocol, that protocol's error: JSON, or XML with a ``Code`` (S3, query); a 5xx always comes from sigproxy)
or a clean close, within a deadline; the process never dies and never logs a traceback; afterwards its admin
``/healthz`` still answers 200.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Check, Target
from fuzz.routing_parsers import absolute_targets
from tests.errorbody import error_body

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 10.0
"""Seconds a connection may take to be answered or closed."""
QUIET = 1.5
"""Without an answer after this long, the client half-closes (a head or body it never finished)."""

CONFIG = """
[proxy]
default_connection = "main"
connect_ports = [443, 1]
drain_seconds = 1

[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:1", "localhost:1", "[::1]:1"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
"""


@dataclass
class Proxy:
    proc: subprocess.Popen[str]
    forward: tuple[str, int]
    admin: str
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def healthz(self) -> int:
        with urllib.request.urlopen(f"{self.admin}/healthz", timeout=5) as resp:  # noqa: S310
            return int(resp.status)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.text()


def start_proxy(workdir: Path, config: str = CONFIG) -> Proxy:
    cfg = workdir / "sigproxy.toml"
    cfg.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AWS_") and not k.upper().endswith("_PROXY")}
    env.update(STATE_DIRECTORY=str(workdir / "state"), AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg), "--listen", "127.0.0.1:0",
         "--admin-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    forward = admin = None
    while forward is None or admin is None:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            proc.kill()
            raise RuntimeError("sigproxy did not start:\n" + "".join(output)) from None
        if line is None:
            raise RuntimeError("sigproxy exited:\n" + "".join(output))
        if "forward proxy listening on " in line:
            forward = line.split("listening on ", 1)[1].split()[0]
        elif "admin listening on " in line:
            admin = line.split("listening on ", 1)[1].split()[0]
    host, _, port = forward.removeprefix("http://").rpartition(":")
    return Proxy(proc, (host.strip("[]"), int(port)), admin, output)


# ----------------------------------------------------------------------------- inputs

_odd_bytes = st.sampled_from(["\r", "\n", "\r\n", "\x00", "\t", " ", "\x7f", "\x80", "é", "\ud800", ":", ";", ",",
                              "\x0b", "\x0c"])
_methods = st.one_of(st.sampled_from(["GET", "PUT", "POST", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT",
                                      "get", "connect", "PRI", "TRACE", "G ET", "", "GET\x00", "M" * 300]),
                     st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~", min_size=1, max_size=10))
_connect_targets = st.builds(
    lambda h, p: h + p,
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "::1", "[::1", "s3.amazonaws.com", "", "a b", "[]",
                     "127.0.0.1:1@evil", "%31%32%37.0.0.1", "LOCALHOST"]),
    st.sampled_from([":1", ":443", ":80", ":0", ":65536", "", ":", ":1:1", ":+1", ":\u0661",
                     ":" + "9" * 4400]),
)
_targets = st.one_of(absolute_targets(), _connect_targets,
                     st.sampled_from(["/", "*", "/a?b", "//x", "http://127.0.0.1:1/", "https://127.0.0.1:1/",
                                      "http://[::1]:1/x", "http://localhost:1/" + "a" * 9000, ""]))
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1",
                             "HTTP/1.1 ", "HTTP/11", "", "HTTP/1.1\x00"])
_header_names = st.one_of(
    st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Expect",
                     "Proxy-Authorization", "Authorization", "X-Sigproxy-Connection", "X-Sigproxy-User",
                     "X-Amz-Content-Sha256", "X-Amz-Date", "Content-Encoding", "Proxy-Connection", "Keep-Alive",
                     "Host ", " Host", "Content-Length\t", "", "X\x00Y", "é", "Te"]),
    st.text(max_size=12),
)
_header_values = st.one_of(
    st.sampled_from(["127.0.0.1:1", "0", "5", "-1", "+5", "1,1", "5, 5", "chunked", "chunked, gzip", "gzip, chunked",
                     "Chunked", "identity", "100-continue", "websocket", "upgrade", "close", "keep-alive",
                     "Basic bWFpbjp4", "Basic !!!", "Basic " + "A" * 6000, "main", "nope",
                     "AWS4-HMAC-SHA256 Credential=main/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, "
                     "Signature=" + "a" * 64, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "UNSIGNED-PAYLOAD",
                     "9" * 4400, "a" * 9000, "x\r\n y", "x\r\n\tfolded", ""]),
    st.lists(st.one_of(_odd_bytes, st.text(max_size=5)), max_size=5).map("".join),
)


@dataclass(frozen=True)
class Request:
    raw: bytes


@st.composite
def requests(draw: Any) -> Request:
    if draw(st.integers(0, 12)) == 0:
        return Request(draw(st.binary(max_size=300)))
    method = draw(_methods)
    target = draw(_connect_targets) if method.upper() == "CONNECT" and draw(st.booleans()) else draw(_targets)
    sp = draw(st.sampled_from([" ", " ", " ", "  ", "\t", ""]))
    eol = draw(st.sampled_from(["\r\n"] * 6 + ["\n", "\r"]))
    lines = [f"{method}{sp}{target}{sp}{draw(_versions)}"]
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=6))
    special = draw(st.sampled_from(["none"] * 4 + ["dup-cl", "cl-te", "te", "cl-big", "many", "host"]))
    body = draw(st.binary(max_size=40))
    if special == "dup-cl":
        headers += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
    elif special == "cl-te":
        headers += [("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")]
    elif special == "te":
        headers += [("Transfer-Encoding", "chunked")]
        body = draw(st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n",
                                     b"5;x=y\r\nhello\r\n0\r\n\r\n",
                                     b"fffffffffffffffff\r\n", b""]))
    elif special == "cl-big":
        headers += [("Content-Length", draw(st.sampled_from(["999999999999", "18446744073709551616", "6000000000"])))]
    elif special == "many":
        headers += [("X-A", "b")] * draw(st.integers(90, 120))
    elif special == "host":
        headers += [("Host", draw(st.sampled_from(["127.0.0.1:1", "[::1]:1", "evil", "", "a@b", "127.0.0.1:1, x"])))]
    lines += [f"{k}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{v}" for k, v in headers]
    head = eol.join(lines) + eol + eol
    raw = head.encode("utf-8", "surrogatepass") + body
    if draw(st.integers(0, 9)) == 0:  # a second request pipelined behind the first
        raw += b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"
    return Request(raw)


# ----------------------------------------------------------------------------- the property

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: [^\r\n]*)?")


def exchange(addr: tuple[str, int], raw: bytes) -> tuple[bytes, float, str]:
    """Send ``raw``; read until a whole response has arrived or the connection closed. Returns what was read,
    the seconds it took and how it ended (``response``, ``closed``, ``reset`` or ``timeout``)."""
    start = time.monotonic()
    sock = socket.create_connection(addr, timeout=5)
    half_closed = False
    data = b""
    how = "timeout"
    try:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        if b"\r\n\r\n" not in raw and b"\n\n" not in raw:
            sock.shutdown(socket.SHUT_WR)
            half_closed = True
        while time.monotonic() - start < DEADLINE:
            sock.settimeout(0.2)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if not half_closed and time.monotonic() - start > QUIET and not data:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    half_closed = True
                continue
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                how = "closed"
                break
            data += chunk
            if _complete(data, head_only=_is_head(raw)):
                how = "response"
                break
    finally:
        sock.close()
    return data, time.monotonic() - start, how


def _split_head(data: bytes) -> tuple[bytes, dict[str, list[str]], bytes] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        assert sep, f"response header line without a colon: {line!r}"
        headers.setdefault(name.decode("latin-1").strip().lower(), []).append(value.decode("latin-1").strip())
    return lines[0], headers, data[end + 4 :]


def _is_head(raw: bytes) -> bool:
    """Whether the first request is a HEAD, whose answer has no body whatever its Content-Length (RFC 9110 9.3.2)."""
    return raw.lstrip(b"\r\n").startswith(b"HEAD ")


def _complete(data: bytes, *, head_only: bool) -> bool:
    parts = _split_head(data)
    if parts is None:
        return False
    status_line, headers, body = parts
    if status_line.startswith(b"HTTP/1.1 200 Connection established") or head_only:
        return True
    length = headers.get("content-length")
    return length is not None and len(body) >= int(length[0])


def check_response(raw: bytes, data: bytes, how: str) -> str:
    if not data:
        assert how in ("closed", "reset"), f"no answer and no close within {DEADLINE} s"
        return f"no response ({how})"
    parts = _split_head(data)
    assert parts is not None, f"incomplete response head ({how}): {data[:200]!r}"
    status_line, headers, body = parts
    m = _STATUS.fullmatch(status_line)
    assert m is not None, f"bad status line {status_line!r}"
    status = int(m[1])
    codes = headers.get("x-sigproxy-error")
    if codes is not None:
        assert 400 <= status < 600, f"X-Sigproxy-Error on a {status}"
        content_type = ",".join(headers.get("content-type", []))
        assert "json" in content_type or "xml" in content_type, f"error body is neither JSON nor XML: {content_type}"
        length = headers.get("content-length")
        assert length is not None, "sigproxy error without Content-Length"
        if _is_head(raw):
            return f"{status} {codes[0]} (HEAD)"  # no body: what follows the head is the next response's
        # sigproxy's JSON, or the AWS dialect of a request that speaks one (handler.aws_dialect: S3's XML, ...)
        error = error_body(body[: int(length[0])])
        assert error["code"] == codes[0], (error, codes)
        return f"{status} {codes[0]}" + ("" if error["format"] == "sigproxy-json" else f" ({error['format']})")
    if status == 200 and status_line.startswith(b"HTTP/1.1 200 Connection established"):
        assert raw[:8].upper() == b"CONNECT ", "a tunnel opened for a request that was not CONNECT"
        return "200 tunnel"
    # Without X-Sigproxy-Error: a refusal by something before sigproxy's own answers; never a 5xx, never success.
    assert 400 <= status < 500, f"{status} without X-Sigproxy-Error: {data[:300]!r}"
    return f"{status} (no X-Sigproxy-Error)"


@contextlib.contextmanager
def session() -> Iterator[Check]:
    with tempfile.TemporaryDirectory(prefix="sigproxy-fuzz-intake-") as tmp:
        proxy = start_proxy(Path(tmp))
        try:
            seen = 0

            def check(request: Request) -> str:
                nonlocal seen
                data, _, how = exchange(proxy.forward, request.raw)
                outcome = check_response(request.raw, data, how)
                assert proxy.proc.poll() is None, "sigproxy died:\n" + proxy.text()[-3000:]
                new = proxy.text()[seen:]
                seen += len(new)
                assert "Traceback" not in new, "sigproxy logged a traceback:\n" + new[-4000:]
                return outcome

            yield check
            assert proxy.healthz() == 200, "sigproxy no longer answers /healthz"
        finally:
            output = proxy.stop()
            assert "Traceback" not in output, "sigproxy logged a traceback:\n" + output[-4000:]


TARGETS = [Target("intake", requests(), session=session, describe=lambda r: r.raw)]

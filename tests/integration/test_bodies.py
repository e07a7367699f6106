"""Every body shape, streamed in constant memory, proven against real verifiers: Ceph RGW checks each chunk
signature and the body hash; moto decodes aws-chunked and accepts the trailer forms RGW 16 refuses."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from sigproxy.prepare import sign_request
from sigproxy.routing import parse_absolute_target
from sigproxy.signing import Credentials, Signer
from sigproxy.streaming import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, ChunkSigner
from tests.conftest import Proxy
from tests.errorbody import error_body
from tests.integration.test_https import sigproxy_cli
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto
from tests.servers.rgw import RGW

BUCKET = "sigproxy-bodies"
PLACEHOLDER = "placeholder-client-secret"


def rgw_config(rgw: RGW, *, extra_conn: str = "", extra_proxy: str = "", chunk_size: str | None = "64KiB",
               max_buffered_body: str = "1MiB") -> str:
    chunk = f'chunk_size = "{chunk_size}"' if chunk_size else "# chunk_size: sigproxy's default"
    return f"""
[proxy]
max_buffered_body = "{max_buffered_body}"
{chunk}
{extra_proxy}
[connections.ceph]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
{extra_conn}
[connections.ceph.credentials]
source = "static"
access_key_id = "{rgw.access_key}"
secret_access_key = "{rgw.secret_key}"
"""


@pytest.fixture(scope="module")
def bucket(rgw: RGW) -> str:
    s3(rgw).create_bucket(Bucket=BUCKET)
    return BUCKET


def s3(rgw: RGW):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                        aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)


def stored(rgw: RGW, key: str) -> bytes | None:
    try:
        return s3(rgw).get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[no-any-return]
    except s3(rgw).exceptions.NoSuchKey:
        return None


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def chunk_signed_request(proxy: Proxy, url: str, data: bytes, *, connection: str, chunk: int = 10_000,
                         trailer: bool = False, corrupt: Callable[[bytes], bytes] | None = None,
                         secret: str = PLACEHOLDER, content_encoding: str = "aws-chunked",
                         decoded_length: int | None = None) -> tuple[int, bytes]:
    """What an SDK talking plain HTTP sends: a STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] upload signed
    with its (placeholder) key, whose key id names the connection (``decoded_length``: another
    x-amz-decoded-content-length than the data's). Sent to the proxy, absolute-form."""
    mode = STREAMING_SIGNED_TRAILER if trailer else STREAMING_SIGNED
    decoded = len(data) if decoded_length is None else decoded_length
    headers = [("Content-Encoding", content_encoding), ("X-Amz-Decoded-Content-Length", str(decoded)),
               ("X-Amz-Content-SHA256", mode), ("Content-Type", "application/octet-stream")]
    if trailer:
        headers.append(("X-Amz-Trailer", "x-amz-checksum-crc32"))
    signer = Signer()
    now = datetime.now(UTC)
    out = sign_request(signer, Credentials(connection, secret), method="PUT", target=parse_absolute_target(url),
                       headers=headers, payload_hash=mode, body_length=None, service="s3", region="us-east-1",
                       now=now)
    sig = out.signature
    key = signer.signing_key(secret, sig.amz_date[:8], "us-east-1", "s3")
    chain = ChunkSigner(key, sig.amz_date, sig.credential_scope, sig.signature)
    body = b"".join(chain.frame(data[i : i + chunk]) for i in range(0, len(data), chunk))
    if trailer:
        body += chain.final_with_trailer([("x-amz-checksum-crc32", crc32_b64(data))])
    else:
        body += chain.frame(b"")
    if corrupt is not None:
        body = corrupt(body)
    host, port = proxy.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("PUT", url, skip_host=True, skip_accept_encoding=True)
        for name, value in out.headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class TestSignedChunksToRgw:
    @pytest.mark.parametrize("chunk_size", ["64KiB", None])
    def test_large_body_goes_as_signed_chunks(self, chunk_size: str | None, rgw: RGW, bucket: str, tmp_path: Path,
                                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """A 20 MiB body over max_buffered_body goes aws-chunked with signed chunks (64 KiB ones, and the
        default size); RGW checks every chunk."""
        proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"', chunk_size=chunk_size))
        data = os.urandom(20 * 2**20 + 12345)
        (tmp_path / "big").write_bytes(data)
        key = f"signed-chunks-{chunk_size or 'default'}.bin"
        r = curl(proxy, "-T", str(tmp_path / "big"), f"{rgw.endpoint}/{bucket}/{key}")
        assert status_of(r) == 200, r
        assert stored(rgw, key) == data
        assert '"body":"signed-chunks"' in proxy.stop()

    @pytest.mark.parametrize(("size", "what"), [
        (100 * 1024 + 1, "one short chunk"),
        (128 * 1024, "exactly one chunk"),
        (128 * 1024 + 1, "one byte over: a second chunk of one byte"),
        (256 * 1024, "exactly two chunks"),
    ])
    def test_chunk_boundaries(self, size: int, what: str, rgw: RGW, bucket: str, tmp_path: Path,
                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """Bodies at and around the chunk size (128 KiB; bodies over 100 KiB go as chunks): RGW checks each
        chunk's signature and stores the bytes."""
        proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"', chunk_size="128KiB",
                                            max_buffered_body="100KiB"))
        data = os.urandom(size)
        (tmp_path / "body").write_bytes(data)
        r = curl(proxy, "-T", str(tmp_path / "body"), f"{rgw.endpoint}/{bucket}/boundary-{size}.bin")
        assert status_of(r) == 200, (what, r)
        assert stored(rgw, f"boundary-{size}.bin") == data, what
        assert '"body":"signed-chunks"' in proxy.stop()

    def test_signed_chunks_over_tls(self, rgw: RGW, bucket: str, tmp_path: Path,
                                    sigproxy_factory: Callable[..., Proxy]) -> None:
        """Inside a CONNECT tunnel to RGW's TLS port, a 3 MiB body goes as signed chunks over TLS upstream (the
        chunk data written as views of the client's pieces); RGW checks every chunk."""
        port = rgw.tls_endpoint.rsplit(":", 1)[1]
        proxy = sigproxy_factory(rgw_config(rgw, chunk_size="256KiB", extra_proxy=(
            f'default_connection = "ceph"\nconnect_ports = [{port}]\nupstream_ca_file = "{rgw.ca_file}"\n'
            f'state_dir = "{tmp_path / "state"}"')))
        bundle = tmp_path / "bundle.pem"
        assert sigproxy_cli("ca", "-c", str(proxy.config), "--bundle", str(bundle)).returncode == 0
        data = os.urandom(3 * 2**20 + 777)
        (tmp_path / "b").write_bytes(data)
        r = subprocess.run(["curl", "-sS", "-x", proxy.url, "--cacert", str(bundle), "-o", "/dev/null",
                            "-w", "%{http_code}", "-T", str(tmp_path / "b"), f"{rgw.tls_endpoint}/{bucket}/tls.bin"],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.stdout == "200", (r.stderr, proxy.output[-3:])
        assert stored(rgw, "tls.bin") == data
        assert '"body":"signed-chunks"' in proxy.stop()

    def test_slow_client_trickling_bytes(self, rgw: RGW, bucket: str,
                                         sigproxy_factory: Callable[..., Proxy]) -> None:
        """A client sending its body in small uneven pieces with pauses: the pieces are gathered into whole
        chunks (boundaries fall inside pieces), each signed; RGW accepts them all."""
        proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"', chunk_size="16KiB",
                                            max_buffered_body="16KiB"))
        data = os.urandom(100_003)
        host, port = proxy.address.rsplit(":", 1)
        url = f"{rgw.endpoint}/{bucket}/trickled.bin"
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: {url.split('/')[2]}\r\nContent-Length: {len(data)}\r\n"
                         "Connection: close\r\n\r\n".encode())
            sizes = itertools.cycle([1, 7, 1000, 3, 4093, 17, 9000, 250])
            at = 0
            while at < len(data):
                n = next(sizes)
                sock.sendall(data[at : at + n])
                at += n
                time.sleep(0.002)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:500]
        assert stored(rgw, "trickled.bin") == data
        assert '"body":"signed-chunks"' in proxy.stop()

    def test_client_chunk_signed_upload_is_resigned(self, rgw: RGW, bucket: str,
                                                    sigproxy_factory: Callable[..., Proxy]) -> None:
        """STREAMING-AWS4-HMAC-SHA256-PAYLOAD signed with a placeholder key: each chunk re-signed with the
        real key, chained from the new seed; RGW accepts every chunk."""
        proxy = sigproxy_factory(rgw_config(rgw))
        data = os.urandom(300_007)
        status, body = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/resigned.bin", data,
                                            connection="ceph")
        assert status == 200, body
        assert stored(rgw, "resigned.bin") == data

    def test_verified_client_chunks_and_corrupted_middle_chunk(self, rgw: RGW, bucket: str,
                                                                sigproxy_factory: Callable[..., Proxy]) -> None:
        """With client_secret the client's chunk signatures are checked: a good stream passes; one byte
        changed in a middle chunk's data fails the upload with 400 and nothing is stored."""
        proxy = sigproxy_factory(rgw_config(rgw, extra_conn=f'client_secret = "{PLACEHOLDER}"'))
        data = os.urandom(100_000)
        status, _ = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/verified.bin", data, connection="ceph")
        assert status == 200
        assert stored(rgw, "verified.bin") == data

        def flip_middle(body: bytes) -> bytes:
            # 10 000-byte chunks: each frame is "2710;chunk-signature=<64>\r\n" (87 bytes), data, CRLF.
            at = 5 * (87 + 10_000 + 2) + 87 + 500  # inside the sixth chunk's data
            return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]

        status, answer = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/corrupt.bin", data,
                                              connection="ceph", corrupt=flip_middle)
        assert status == 400, answer
        assert b"bad chunk signature" in answer
        assert stored(rgw, "corrupt.bin") is None
        status, answer = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/wrongkey.bin", data,
                                              connection="ceph", secret="another-secret")
        assert status == 403, answer  # the seed signature is checked before a byte of the body is read
        assert error_body(answer)["code"] == "client_signature_invalid", answer

    @pytest.mark.parametrize(("name", "corrupt", "needle"), [
        ("bad-size", lambda b: b.replace(b"2710;", b"zz10;", 1), b"chunk size"),
        ("short", lambda b: b[: len(b) // 2], b""),
        ("long", lambda b: b.replace(b"\r\n2710;", b"XX\r\n2710;", 1), b""),
    ])
    def test_malformed_stream_is_refused(self, name: str, corrupt: Callable[[bytes], bytes], needle: bytes,
                                         rgw: RGW, bucket: str, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Malformed aws-chunked input: a 400 saying what was wrong (or, for a body cut short, the request
        fails); nothing is stored by accident."""
        proxy = sigproxy_factory(rgw_config(rgw))
        data = os.urandom(50_000)
        try:
            status, answer = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/bad-{name}.bin", data,
                                                  connection="ceph", corrupt=corrupt)
        except (ConnectionError, http.client.HTTPException, TimeoutError):
            status, answer = 0, b""
        assert status in (0, 400), answer
        assert needle in answer
        assert stored(rgw, f"bad-{name}.bin") is None

    @pytest.mark.parametrize("trailer", [False, True])
    @pytest.mark.parametrize("declared", [40_000, 60_000])
    def test_chunks_that_do_not_hold_the_decoded_length_are_a_400(self, declared: int, trailer: bool, rgw: RGW,
                                                                  bucket: str,
                                                                  sigproxy_factory: Callable[..., Proxy]) -> None:
        """The tester's repro 04: chunks holding more than x-amz-decoded-content-length were sent upstream until
        the upstream client's length check failed them, a 502 upstream_error (which SDKs retry, and dashboards
        blame on the upstream); fewer were a 400 already. Both are the client's: 400 naming the header, refused
        before a byte past it goes upstream, nothing stored."""
        proxy = sigproxy_factory(rgw_config(rgw))
        key = f"decoded-{declared}-{trailer}.bin"
        status, answer = chunk_signed_request(proxy, f"{rgw.endpoint}/{bucket}/{key}", os.urandom(50_000),
                                              connection="ceph", trailer=trailer, decoded_length=declared)
        assert status == 400, answer
        assert error_body(answer)["code"] == "bad_request" and b"x-amz-decoded-content-length" in answer
        assert stored(rgw, key) is None

    def test_unknown_length_is_spooled(self, rgw: RGW, bucket: str, tmp_path: Path,
                                       sigproxy_factory: Callable[..., Proxy]) -> None:
        """Transfer-Encoding: chunked with no hash given: spooled while hashed, sent with its real SHA-256
        and length (RGW checks the hash); the spool leaves no file behind."""
        proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
        data = os.urandom(3 * 2**20 + 1)
        r = subprocess.run(["curl", "-sS", "-x", proxy.url, "-T", "-", "-w", "\n%{http_code}",
                            f"{rgw.endpoint}/{bucket}/spooled.bin"], input=data, capture_output=True, timeout=60,
                           check=False)
        assert r.stdout.endswith(b"\n200"), r
        assert stored(rgw, "spooled.bin") == data
        assert (tmp_path / "state" / "spool").is_dir()
        assert not list((tmp_path / "state" / "spool").iterdir())


class TestTrailersOnMoto:
    def test_signed_trailer_form(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER from the client: re-signed, trailer signature included;
        moto decodes it (RGW 16 refuses trailer forms)."""
        from tests.conftest import moto_config

        proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"'))
        data = os.urandom(150_001)
        status, body = chunk_signed_request(proxy, f"{moto.endpoint}/{moto.bucket}/trailer.bin", data,
                                            connection="main", trailer=True)
        assert status == 200, body
        got = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key
                           ).get_object(Bucket=moto.bucket, Key="trailer.bin")["Body"].read()
        assert got == data


def test_non_s3_large_body_is_spooled(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A JSON-protocol body over max_buffered_body is spooled and signed with its hash; moto checks it."""
    from tests.conftest import moto_config

    proxy = sigproxy_factory(moto_config(moto, proxy='max_buffered_body = "64KiB"'))
    item = {"id": {"S": "big-item"}, "blob": {"S": "x" * 300_000}}
    (tmp_path / "item.json").write_text(json.dumps({"TableName": moto.table, "Item": item}))
    r = curl(proxy, "-H", "X-Sigproxy-Service: dynamodb", "-H", "X-Amz-Target: DynamoDB_20120810.PutItem",
             "-H", "Content-Type: application/x-amz-json-1.0", "--data-binary", f"@{tmp_path / 'item.json'}",
             f"{moto.endpoint}/")
    assert status_of(r) == 200, r
    got = curl(proxy, "-H", "X-Sigproxy-Service: dynamodb", "-H", "X-Amz-Target: DynamoDB_20120810.GetItem",
               "-H", "Content-Type: application/x-amz-json-1.0", "--data",
               json.dumps({"TableName": moto.table, "Key": {"id": {"S": "big-item"}}}), f"{moto.endpoint}/")
    assert status_of(got) == 200, got
    assert len(json.loads(got.stdout.rsplit("\n", 1)[0])["Item"]["blob"]["S"]) == 300_000


def test_client_abort_mid_upload(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A client that goes away mid-upload: the upstream request is abandoned, nothing is stored, and the
    proxy goes on serving."""
    from tests.conftest import moto_config

    proxy = sigproxy_factory(moto_config(moto, connection='service = "s3"', proxy='max_buffered_body = "64KiB"'))
    host, port = proxy.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"PUT {moto.endpoint}/{moto.bucket}/aborted.bin HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {10 * 2**20}\r\n\r\n".encode() + os.urandom(2 * 2**20))
    ok = curl(proxy, f"{moto.endpoint}/{moto.bucket}?prefix=aborted")
    assert status_of(ok) == 200
    assert "aborted.bin" not in ok.stdout


@pytest.fixture
def broken_upstream() -> Iterator[str]:
    """An upstream that breaks off mid-body: ``/length`` promises 1 MB by Content-Length and dies after 10
    bytes; ``/chunked`` sends one 10-byte chunk and dies without the last chunk; ``/close-rst`` sends a body
    delimited by the connection's close and then resets the connection; ``/slow`` sends 1 MB a little at a
    time (for a client that goes away)."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            if self.path == "/slow":
                self.send_header("Content-Length", str(2**20))
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(64):
                        self.wfile.write(b"x" * 2**14)
                        self.wfile.flush()
                        time.sleep(0.05)
                return
            if self.path == "/close-rst":  # delimited by the connection's close, which comes as a reset
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"x" * 700_000)
                self.wfile.flush()
                time.sleep(0.2)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"a\r\n0123456789\r\n")
            else:
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


BROKEN_CONFIG = """
[proxy]
default_connection = "x"
[connections.x]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.x.credentials]
source = "static"
access_key_id = "AKIDX"
secret_access_key = "x-secret"
"""


@pytest.mark.parametrize(("path", "expected"), [("/length", " of 1000000 bytes"), ("/chunked", " bytes")])
def test_upstream_failure_mid_response_aborts_client(broken_upstream: str, path: str, expected: str,
                                                     sigproxy_factory: Callable[..., Proxy]) -> None:
    """An upstream that breaks mid-response (short of its Content-Length, or chunked without the last chunk):
    the client's response is cut off so the client can tell (curl: partial file), never completed or
    followed by a second response; the proxy logs one line with the byte counts, no traceback."""
    proxy = sigproxy_factory(BROKEN_CONFIG)
    r = subprocess.run(["curl", "-sS", "-x", proxy.url, "-o", "/dev/null", "-w", "%{http_code}",
                        f"{broken_upstream}{path}"], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 18, r  # curl: partial file
    assert r.stdout == "200"
    out = proxy.stop()
    assert "Traceback" not in out
    [line] = [json.loads(x) for x in out.splitlines() if "aborted after" in x]
    assert line["level"] == "warning"
    assert f"aborted after 10{expected}" in line["msg"]
    [access] = [json.loads(x) for x in out.splitlines() if '"logger":"sigproxy.access"' in x]
    assert access["status"] == "aborted"
    assert access["bytes_down"] == 10


def test_reset_ends_no_close_delimited_body(broken_upstream: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A body delimited by the connection's close (no Content-Length, not chunked) that ends in a reset is
    cut off for the client too, not completed with a final chunk; one warning line, access line aborted."""
    proxy = sigproxy_factory(BROKEN_CONFIG)
    r = subprocess.run(["curl", "-sS", "-x", proxy.url, "-o", "/dev/null", f"{broken_upstream}/close-rst"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode in (18, 56), r  # curl: partial file, or connection reset
    out = proxy.stop()
    assert "Traceback" not in out
    [line] = [json.loads(x) for x in out.splitlines() if "aborted after" in x]
    assert "closed the connection before the end of the body: [Errno 104]" in line["msg"]
    [access] = [json.loads(x) for x in out.splitlines() if '"logger":"sigproxy.access"' in x]
    assert access["status"] == "aborted"


def test_client_gone_mid_response_is_one_line(broken_upstream: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """A client that hangs up mid-download: one info line with the byte count, no traceback."""
    proxy = sigproxy_factory(BROKEN_CONFIG)
    host, port = proxy.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {broken_upstream}/slow HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    deadline = time.monotonic() + 10
    while not any("went away after" in x for x in proxy.output) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = proxy.stop()
    assert "Traceback" not in out
    [line] = [json.loads(x) for x in out.splitlines() if "went away after" in x]
    assert " of 1048576 bytes" in line["msg"]
    [access] = [json.loads(x) for x in out.splitlines() if '"logger":"sigproxy.access"' in x]
    assert access["status"] == "aborted"
    assert access["error"] == "client_disconnected"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def test_client_unsigned_payload_streams_untouched(rgw: RGW, bucket: str, tmp_path: Path,
                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
    """x-amz-content-sha256: UNSIGNED-PAYLOAD from the client: the large body streams byte for byte, the value
    kept and signed (RGW checks the header signature)."""
    proxy = sigproxy_factory(rgw_config(rgw, extra_proxy='default_connection = "ceph"'))
    data = os.urandom(5 * 2**20 + 3)
    (tmp_path / "u").write_bytes(data)
    r = curl(proxy, "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T", str(tmp_path / "u"),
             f"{rgw.endpoint}/{bucket}/client-unsigned.bin")
    assert status_of(r) == 200, r
    assert stored(rgw, "client-unsigned.bin") == data


def test_s3_payload_unsigned_only_over_tls(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """s3_payload = "unsigned": a large body goes UNSIGNED-PAYLOAD when the upstream is TLS (moto over TLS
    accepts it); the same connection to a plain-HTTP upstream still sends signed chunks."""
    from tests.integration.test_https import https_config

    text = https_config(moto, tmp_path / "state", extra_proxy='max_buffered_body = "1MiB"',
                        connection='s3_payload = "unsigned"\nupstream_scheme = "https"\nservice = "s3"')
    data = os.urandom(3 * 2**20)
    (tmp_path / "d").write_bytes(data)
    tls_proxy = sigproxy_factory(text)
    # Plain HTTP from the client, TLS to moto (upstream_scheme): the request line names moto's TLS port.
    port = str(moto.tls_endpoint).rsplit(":", 1)[1]
    r = curl(tls_proxy, "-T", str(tmp_path / "d"), f"http://127.0.0.1:{port}/{moto.bucket}/unsigned-tls.bin")
    assert status_of(r) == 200, r
    plain = sigproxy_factory(text.replace('upstream_scheme = "https"\n', ""))
    r2 = curl(plain, "-T", str(tmp_path / "d"), f"{moto.endpoint}/{moto.bucket}/signed-http.bin")
    assert status_of(r2) == 200, r2
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    for key in ("unsigned-tls.bin", "signed-http.bin"):
        assert client.get_object(Bucket=moto.bucket, Key=key)["Body"].read() == data
    assert '"body":"unsigned"' in tls_proxy.stop()
    assert '"body":"signed-chunks"' in plain.stop()


def test_stale_spool_files_removed_at_start(rgw: RGW, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """Spool files left by a crashed run are removed when the proxy starts (and the start says so)."""
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    (spool / "left-behind").write_bytes(b"x" * 1000)
    proxy = sigproxy_factory(rgw_config(rgw))
    assert not list(spool.iterdir())
    assert "removed 1 spool file(s)" in proxy.stop()

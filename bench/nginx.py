"""nginx as the benchmarks' upstream: a generated minimal config in a temporary directory, one worker process.

Every request to ``/`` answers 200 with :data:`BODY` (a small S3-style ListBucketResult, 400-odd bytes) over
plain HTTP and, when given a certificate, over TLS on a second port. Access logging is off; the error log and the
pid file live in the directory. nginx is the Debian package, installed with apt-get when missing and running as
root. It verifies nothing: correctness is the test suite's job.

    with Nginx(Path(tmp), core=1, tls=(chain_pem, key_pem)) as up:
        up.url, up.tls_url   # http://127.0.0.1:PORT, https://127.0.0.1:PORT2
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from common import pinned

__all__ = ["BODY", "Nginx", "free_port", "need"]

BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name><Prefix>key</Prefix>'
    "<KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents><Key>key</Key>"
    "<LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;"
    "</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>\n"
)

# keepalive_requests: nginx 1.22 closes a keep-alive connection after 1000 requests by default; the proxy's
# pooled upstream connections would then be re-opened during the run and measured as the proxy's cost.
_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client-body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type application/xml;
    server {{
        listen 127.0.0.1:{port};
        {tls}
        location / {{ return 200 '{body}'; }}
    }}
}}
"""
_TLS = "listen 127.0.0.1:{port} ssl; ssl_certificate {chain}; ssl_certificate_key {key};"


def need(binary: str, package: str) -> str:
    """The path of ``binary`` (also looked for in /usr/sbin), apt-get installing ``package`` when missing and
    running as root; exits with a message otherwise."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
        return found or sys.exit(f"{binary} did not install")
    sys.exit(f"{binary} is needed: apt-get install {package}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (nginx can't listen on port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx in ``tmp`` pinned to ``core`` (or a taskset cpu list); ``tls`` = (certificate chain PEM, key PEM)
    adds an HTTPS port.

    A context manager: entering starts it and waits until it answers (exits after 10 s); leaving stops it by
    its PID (SIGQUIT, then SIGKILL after 5 s)."""

    def __init__(self, tmp: Path, core: int | str, tls: tuple[Path, Path] | None = None) -> None:
        self.tmp, self.core, self.tls = tmp, core, tls
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}" if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        binary = need("nginx", "nginx")
        tls = _TLS.format(port=self.tls_port, chain=self.tls[0], key=self.tls[1]) if self.tls else ""
        conf = self.tmp / "nginx.conf"
        conf.write_text(_CONF.format(tmp=self.tmp, port=self.port, tls=tls, body=BODY))
        # -e: the error log before the config is read, so nothing goes to /var/log/nginx.
        self.proc = subprocess.Popen(
            pinned(self.core, [binary, "-c", str(conf), "-p", str(self.tmp), "-e", str(self.tmp / "nginx-error.log")]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as r:
                    if r.read().decode() == BODY:
                        return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.tmp / "nginx-error.log")
                    sys.exit("nginx did not start:\n" + (log.read_text() if log.exists() else ""))
                time.sleep(0.05)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown of master and worker
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

"""Shared fixtures: a clean environment, real verifiers started once per session (moto with its signature
checks on, Ceph RGW), a throwaway PostgreSQL, and a factory that runs the real ``sigproxy run`` process on port 0."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# The test extra installs awscrt (the SigV4A proofs call it directly); with it importable, botocore would sign
# with its CRT signers, which production sigproxy (no awscrt) never does. Off, before botocore is imported,
# for this process and every sigproxy, moto and boto3 it starts: the tests run the signers users run.
os.environ["BOTO_DISABLE_CRT"] = "true"

from sigproxy.compiled import SOURCES, pure_python
from tests.servers.moto_server import Moto, start_moto
from tests.servers.postgres import Postgres, postgres_bin, start_postgres
from tests.servers.recording_sts import start_recording_sts
from tests.servers.rgw import RGW, rgw_available, start_rgw

# PYTHONDONTWRITEBYTECODE (set in some environments) also stops pytest from caching the test modules it rewrites
# for its assertions: every run parsed, rewrote and compiled all of them again, 5-6 s of CPU at collection. As
# the Makefile writes sigproxy's bytecode whatever that variable says (compileall), the test modules imported
# after this file get theirs (pytest checks each cached file against its source's mtime and size).
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when a compiled module (sigproxy/compiled.py) is older than a source: the suite
    would test code built from an older source than the one read."""
    if pure_python():
        return
    newest = max(path.stat().st_mtime for path in (ROOT / "sigproxy").rglob("*.py"))
    stale = [so.name for source in map(ROOT.joinpath, SOURCES) for so in source.parent.glob(f"{source.stem}.*.so")
             if so.stat().st_mtime < newest]
    if stale:
        pytest.exit(f"compiled modules older than the source ({', '.join(sorted(stale))}): build them again with "
                    "`make setup` (or `pip install -e .`), or run the source with SIGPROXY_PURE_PYTHON=1", returncode=2)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's AWS or proxy settings."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("AWS_", "SIGPROXY_CONFIG")) or upper.endswith("_PROXY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server, stop = start_moto(tmp_path_factory.mktemp("moto"), tls=True)
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RGW]:
    if not rgw_available():
        if os.environ.get("SIGPROXY_REQUIRE_RGW"):
            pytest.fail("Ceph RGW is required (SIGPROXY_REQUIRE_RGW) but radosgw is not installed")
        pytest.skip("Ceph RGW not installed (run `make test`, which installs it)")
    server, stop = start_rgw(tmp_path_factory.mktemp("rgw"))
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (``tests/servers/postgres.py``); ``postgres.new_database()`` per test."""
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is required: install it with scripts/sysdeps.sh (Debian's postgresql package)")
    server, stop = start_postgres()
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    """Answers a GET after 2 seconds: a request in flight while the proxy (or its group) is told to stop or
    reload."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(2)
            body = b"slow but complete"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Polling every 0.05 s, not 0.5 s: shutdown() waits for the next poll (here and in the other test servers).
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recording_sts() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in STS recording every call's parameters (``tests/servers/recording_sts.py``): ``(url, calls)``."""
    url, calls, stop = start_recording_sts()
    try:
        yield url, calls
    finally:
        stop()


@pytest.fixture(scope="session")
def aws_cli() -> str:
    """The AWS CLI binary (its own venv: it pins a botocore that clashes with aiobotocore's)."""
    path = os.environ.get("SIGPROXY_AWS_CLI") or str(ROOT / ".venv-tools/bin/aws")
    if not Path(path).exists():
        found = shutil.which("aws")
        if found is None:
            pytest.fail("the AWS CLI is required: run `make test` (it installs it into .venv-tools)")
        path = found
    return path


@dataclass
class Proxy:
    """A running ``sigproxy run`` process."""

    proc: subprocess.Popen[str]
    url: str
    reverse: list[str]
    config: Path
    output: list[str] = field(default_factory=list)
    admin_url: str | None = None
    store_off: str = ""  # what sigproxy_factory appended to the config text to turn the store off

    def rewrite(self, text: str) -> None:
        """Write a new config text (for a reload) as the factory wrote the first: the store stays off if it
        was (a reload that turned it on would be refused: the store changes only with a restart)."""
        self.config.write_text(text + self.store_off if self.store_off and not _STORE_TABLE.search(text) else text)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def admin(self) -> str:
        """The admin listener's URL. AssertionError if the process was started without one: a test that uses
        it asks for it (``sigproxy_factory(..., admin=True)``)."""
        if self.admin_url is None:
            raise AssertionError("this sigproxy was started without its admin listener: "
                                 "start it with sigproxy_factory(..., admin=True)")
        return self.admin_url

    @admin.setter
    def admin(self, url: str) -> None:
        self.admin_url = url

    def written(self, text: str, timeout: float = 10.0) -> str:
        """Everything the process wrote so far, once ``text`` is in it. A request's log lines go out in the
        event-loop iteration after its response (and a thread reads them from the pipe), so a client can have
        its answer before they are here: wait for them rather than read at once. AssertionError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            out = "".join(self.output)
            if text in out:
                return out
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not written within {timeout:g} s; the last lines:\n{out[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> str:
        """Stop with SIGTERM and return everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return "".join(self.output)


def _start_proxy(config_path: Path, env: dict[str, str], extra_args: list[str], *, admin: bool = True) -> Proxy:
    """Start ``sigproxy run`` and wait for its listener lines; ``admin``: wait for the admin listener's too (the
    arguments or the file turn it on; ``False`` when ``--admin-listen ""`` turns it off)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigproxy", "run", "-c", str(config_path), "--log-format", "json",
         *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
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
    forward: str | None = None
    admin_url: str | None = None
    reverse: list[str] = []
    text = config_path.read_text()
    expected_reverse = text.count("[[reverse]]")
    # Listener lines come together once all are bound: forward, reverse ones, then admin (when on).
    while forward is None or len(reverse) < expected_reverse or (admin and admin_url is None):
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            proc.kill()
            raise RuntimeError("sigproxy did not start:\n" + "".join(output)) from None
        if line is None:
            raise RuntimeError("sigproxy exited:\n" + "".join(output))
        if "forward proxy listening on " in line:
            forward = line.split("listening on ", 1)[1].split()[0]
        elif "reverse proxy listening on " in line:
            reverse.append(line.split("listening on ", 1)[1].split()[0])
        elif "admin listening on " in line:
            admin_url = line.split("listening on ", 1)[1].split()[0]
    return Proxy(proc, forward, reverse, config_path, output, admin_url)


# A [store] table in a config text (``[store]`` itself, not ``[store.x]`` or a key named store).
_STORE_TABLE = re.compile(r"^[ \t]*\[[ \t]*store[ \t]*\]", re.MULTILINE)


@pytest.fixture
def sigproxy_factory(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """Start ``sigproxy run`` with a config text; listens on 127.0.0.1:0 unless the text says otherwise; one
    process unless ``workers`` says more (``None``: as the config text says).

    The admin listener and the connection store are off unless asked for (each costs a start about half a
    second, a fresh store more; most tests use neither):

    - ``admin=True``: the admin listener on 127.0.0.1:0 (``proxy.admin``; without it, reading ``proxy.admin``
      fails the test).
    - ``store=True``: the store as the config text says, by default SQLite in the state directory (created on
      this first start). Without it a text with no ``[store]`` table gets ``[store] url = ""`` appended (the
      store off: a write through the admin API is refused; a reload writes its text with ``proxy.rewrite``,
      which appends it too, as a text without it would change the store and be refused); a text with its
      own ``[store]`` table is left as it is.
    """
    started: list[Proxy] = []

    def factory(config_text: str, *, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
                log_level: str = "info", workers: int | None = 1, admin: bool = False,
                store: bool = False) -> Proxy:
        path = tmp_path / f"sigproxy-{len(started)}.toml"
        store_off = "" if store or _STORE_TABLE.search(config_text) else '\n[store]\nurl = ""\n'
        path.write_text(config_text + store_off)
        # The CA and spool live in a per-test state directory unless the config names one.
        full_env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state"), **(env or {})}
        # One process unless a test is about `workers = N` (the default is a worker per CPU); None: as the file says.
        proxy = _start_proxy(path, full_env, ["--listen", listen, "--log-level", log_level,
                                              "--admin-listen", "127.0.0.1:0" if admin else "",
                                              *(["--workers", str(workers)] if workers else [])],
                             admin=admin)
        proxy.store_off = store_off
        started.append(proxy)
        return proxy

    yield factory
    for p in started:
        p.stop()


def moto_config(moto: Moto, *, secret: str | None = None, extra: str = "", connection: str = "",
                proxy: str = "") -> str:
    """A config whose connection ``main`` signs for moto with the keys of moto's IAM user."""
    return f"""
[proxy]
default_connection = "main"
{proxy}

[connections.main]
region = "us-east-1"
hosts = ["127.0.0.1:*", "localhost:*"]
sts_endpoint_url = "{moto.endpoint}"
{connection}
[connections.main.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{secret or moto.secret_key}"
{extra}
"""


@pytest.fixture
def moto_proxy(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    """A proxy whose default connection signs for moto."""
    return sigproxy_factory(moto_config(moto))


__all__ = ["Proxy", "moto_config"]

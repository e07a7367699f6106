"""``workers = 2``: the real ``sigproxy run`` supervisor and its two worker processes.

Requests go to a ``[[reverse]]`` listener in front of a server that checks every signature with botocore's signer
(``tests/servers/sigv4_verifier.py``); the ``assume_role`` connection's credentials come from the recording STS
(``tests/servers/recording_sts.py``), which counts AssumeRole calls. Each request opens its own TCP connection,
so the kernel spreads them over both workers (``SO_REUSEPORT``); the access log's ``worker`` field says who
served each.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Proxy
from tests.servers.sigv4_verifier import Verifier, start_verifier

SESSION = "sigproxy-acme"  # the recording STS hands out key ASIA<session name>, secret "tempsecret"
TOKEN = "workers-admin-token-0123456789abcdef"


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    server, stop = start_verifier(f"ASIA{SESSION}", "tempsecret")
    try:
        yield server
    finally:
        stop()


def config(sts: str, verifier: Verifier, extra: str = "") -> str:
    return f"""
[proxy]
workers = 2
drain_seconds = 10
[admin]
token = "{TOKEN}"

[connections.base]
region = "us-east-1"
hosts = ["*.amazonaws.com"]
[connections.base.credentials]
source = "static"
access_key_id = "AKIDBASE"
secret_access_key = "base-secret"

[connections.acme]
region = "us-east-1"
service = "execute-api"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{sts}"
[connections.acme.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/acme"
base = "base"
{extra}
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{verifier.url}"
connection = "acme"
"""


SECOND = f"""
[connections.second]
region = "us-east-1"
service = "execute-api"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{{sts}}"
[connections.second.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/second"
session_name = "{SESSION}"
base = "base"
"""


def burst(url: str, count: int, headers: dict[str, str] | None = None, *, timeout: float = 300) -> list[int]:
    """``count`` concurrent GETs, each on its own connection, within ``timeout`` seconds; their statuses."""

    async def run() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async def one(i: int) -> int:
                async with session.get(f"{url}/item/{i}", headers=headers) as resp:
                    await resp.read()
                    return resp.status

            return await asyncio.gather(*(one(i) for i in range(count)))

    return asyncio.run(run())


def access(proxy: Proxy, connection: str) -> list[dict[str, Any]]:
    lines = []
    for line in list(proxy.output):
        if line.startswith("{") and '"sigproxy.access"' in line:
            entry = json.loads(line)
            if entry.get("connection") == connection:
                lines.append(entry)
    return lines


def until(check: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, f"{what}: not within {limit} s"
        time.sleep(0.05)


def requests_total(proxy: Proxy) -> float:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^sigproxy_requests_total\{[^}]*\} (\S+)$", text, re.M))


def worker_pids(proxy: Proxy) -> list[int]:
    line = next(line for line in proxy.output if "workers serving (pids" in line)
    return [int(p) for p in re.search(r"pids ([\d, ]+)", line).group(1).split(", ")]  # type: ignore[union-attr]


def test_one_sts_call_for_the_group(recording_sts: tuple[str, list[dict[str, Any]]], verifier: Verifier,
                                    sigproxy_factory: Callable[..., Proxy]) -> None:
    """200 concurrent cold requests over both workers: one AssumeRole, every request signed right (200 from the
    verifier), both workers served, ``/metrics`` counts all 200. A SIGHUP that adds a connection reaches every
    worker (one more AssumeRole, for it); a second group can't share the address; a refused reload changes
    nothing anywhere."""
    sts, calls = recording_sts
    proxy = sigproxy_factory(config(sts, verifier), workers=None, admin=True)  # `workers = 2` from the file
    (rev,) = proxy.reverse
    statuses = burst(rev, 200)
    assert statuses == [200] * 200
    assert [c["Action"] for c in calls] == [["AssumeRole"]]
    until(lambda: len(access(proxy, "acme")) == 200, "an access line per request")
    assert {e["worker"] for e in access(proxy, "acme")} == {0, 1}
    assert requests_total(proxy) == 200

    proxy.rewrite(config(sts, verifier, extra=SECOND.format(sts=sts)))
    proxy.proc.send_signal(signal.SIGHUP)
    until(lambda: sum('"config reloaded' in line for line in proxy.output) == 3, "supervisor and workers reload")
    assert burst(rev, 40, {"X-Sigproxy-Connection": "second"}) == [200] * 40
    until(lambda: len(access(proxy, "second")) == 40, "an access line per request")
    assert {e["worker"] for e in access(proxy, "second")} == {0, 1}
    assert [c["Action"] for c in calls] == [["AssumeRole"]] * 2

    # A second group on the same address must not share it through SO_REUSEPORT: it exits 2 naming the key.
    second = subprocess.run([sys.executable, "-m", "sigproxy", "run", "-c", str(proxy.config), "--listen",
                             proxy.address, "--admin-listen", ""], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, "STATE_DIRECTORY": str(proxy.config.parent / "other")})
    assert second.returncode == 2 and "Address already in use" in second.stderr, second.stderr
    assert "[proxy] listen (or --listen)" in second.stderr

    proxy.rewrite(config(sts, verifier).replace("workers = 2", "workers = 3"))
    proxy.proc.send_signal(signal.SIGHUP)
    until(lambda: any("reload refused" in line for line in proxy.output), "the reload is refused")
    assert any("proxy.workers change only with a restart" in line for line in proxy.output)
    assert burst(rev, 10, {"X-Sigproxy-Connection": "second"}) == [200] * 10, "".join(
        line for line in proxy.output if "access" not in line)
    logs = proxy.stop()
    assert proxy.proc.returncode == 0
    assert "tempsecret" not in logs and "base-secret" not in logs


def test_a_killed_worker_is_restarted(recording_sts: tuple[str, list[dict[str, Any]]], verifier: Verifier,
                                      slow_upstream: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """kill -9 of a worker: logged with its pid and signal, started again; the proxy answers meanwhile and after,
    and the dead worker's counts stay in ``/metrics``: every request is counted, though none was scraped before
    the kill (the worker's heartbeat carried its counts). SIGTERM then drains a request in flight and exits 0."""
    sts, _ = recording_sts
    proxy = sigproxy_factory(config(sts, verifier), workers=2, admin=True)
    (rev,) = proxy.reverse
    assert burst(rev, 20) == [200] * 20
    victim = worker_pids(proxy)[0]
    until(lambda: any(e["worker"] == 0 for e in access(proxy, "acme")), "worker 0 served some")
    time.sleep(1.5)  # a heartbeat (every second) carries the counts of what it answered
    os.kill(victim, signal.SIGKILL)
    assert burst(rev, 20) == [200] * 20  # the survivor, and the restarted worker once it is up
    until(lambda: any("serving again" in line for line in proxy.output), "the worker is restarted")
    died = next(line for line in proxy.output if "exited unexpectedly" in line)
    assert f"(pid {victim})" in died and "SIGKILL" in died
    assert burst(rev, 40) == [200] * 40
    assert requests_total(proxy) == 80  # the tester's repro 01: 34 of 60, the victim's since the last scrape lost

    # SIGTERM while a request is in flight (its upstream answers after 2 s): it completes, then the group exits 0.
    results: list[subprocess.CompletedProcess[str]] = []
    client = threading.Thread(target=lambda: results.append(subprocess.run(
        ["curl", "-sS", "-x", proxy.url, "-H", "X-Sigproxy-Connection: acme", "-w", "\n%{http_code}",
         f"{slow_upstream}/inflight"], capture_output=True, text=True, timeout=60, check=False)))
    client.start()
    time.sleep(0.7)
    proxy.proc.send_signal(signal.SIGTERM)
    client.join()
    assert results[0].stdout.endswith("slow but complete\n200"), results[0].stdout + results[0].stderr
    assert proxy.proc.wait(30) == 0


def test_notify_and_store_feed(recording_sts: tuple[str, list[dict[str, Any]]], verifier: Verifier,
                               sigproxy_factory: Callable[..., Proxy], tmp_path: Path) -> None:
    """sd_notify from the supervisor only: READY=1 once both workers serve, WATCHDOG=1, RELOADING=1 then READY=1
    on SIGHUP, STOPPING=1 on SIGTERM. A connection created through the admin API is served by both workers as soon
    as the API has answered."""
    sts, _ = recording_sts
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    seen: list[str] = []

    def receive(limit: float = 10.0) -> str:
        sock.settimeout(limit)
        message = sock.recv(4096).decode()
        seen.append(message)
        return message

    try:
        proxy = sigproxy_factory(config(sts, verifier), workers=2, admin=True, store=True,
                                 env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        assert receive().startswith("READY=1")
        assert receive() == "WATCHDOG=1"
        body = json.dumps({"name": "added", "region": "us-east-1", "service": "execute-api",
                           "hosts": ["127.0.0.1:*"], "credentials": {"source": "static",
                           "access_key_id": f"ASIA{SESSION}", "secret_access_key": "tempsecret"}}).encode()
        request = urllib.request.Request(f"{proxy.admin}/v1/connections", data=body, method="POST", headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 201
        (rev,) = proxy.reverse
        # The API answered once every worker serves the new connection: usable at once, on both.
        assert burst(rev, 40, {"X-Sigproxy-Connection": "added"}) == [200] * 40
        until(lambda: {e["worker"] for e in access(proxy, "added")} == {0, 1}, "both workers served it")
        proxy.proc.send_signal(signal.SIGHUP)
        while not receive().startswith("RELOADING=1"):
            pass
        while not receive().startswith("READY=1"):
            pass
        proxy.proc.send_signal(signal.SIGTERM)
        while not receive().startswith("STOPPING=1"):
            pass
        assert proxy.proc.wait(30) == 0
        assert "tempsecret" not in proxy.stop()
    finally:
        sock.close()


def static(upstream: str, secret: str, *, key: str, proxy: str = "") -> str:
    """``workers = 2``, a reverse listener to ``upstream`` for a static connection signing with ``key`` and
    ``secret`` (as written in the config: a ``${file:...}`` reference too)."""
    return f"""
[proxy]
workers = 2
{proxy}
[connections.main]
region = "us-east-1"
service = "execute-api"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "{key}"
secret_access_key = "{secret}"
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{upstream}"
connection = "main"
"""


def test_a_worker_that_cannot_start_gives_its_sockets_up(sigproxy_factory: Callable[..., Proxy],
                                                         tmp_path: Path) -> None:
    """The tester's repro 09: the secret's file went away, then a worker died. Its replacements exit at once (the
    config can't be read), restarted after a back-off, while its SO_REUSEPORT sockets stayed open: a share of new
    connections queued where nobody would accept them (15 of 30 hung), with a worker idle. Now the slot gives its
    sockets up while it can't serve, every new connection is answered, and it serves again once it can."""
    secret = tmp_path / "secret"
    secret.write_text("file-secret")
    server, stop = start_verifier("AKIDFILE", "file-secret")
    try:
        proxy = sigproxy_factory(static(server.url, f"${{file:{secret}}}", key="AKIDFILE"), workers=2)
        (rev,) = proxy.reverse
        assert burst(rev, 20) == [200] * 20
        secret.unlink()
        os.kill(worker_pids(proxy)[0], signal.SIGKILL)
        until(lambda: any("exited unexpectedly with exit status" in line for line in proxy.output),
              "a replacement failed", limit=60)
        assert burst(rev, 30, timeout=10) == [200] * 30  # all answered by worker 1
        secret.write_text("file-secret")
        until(lambda: any("serving again" in line for line in proxy.output), "worker 0 serves again", limit=60)
        until(lambda: len(burst(rev, 20)) == 20 and any(e["worker"] == 0 for e in access(proxy, "main")[-20:]),
              "worker 0 takes new connections again", limit=30)
    finally:
        stop()


def test_draining_refuses_new_connections(slow_upstream: str, sigproxy_factory: Callable[..., Proxy]) -> None:
    """The tester's repro 10: with workers, SIGTERM left the supervisor's copies of the listening sockets open, so
    new connections were accepted by the kernel, their requests sent, and reset when the group exited (up to
    drain_seconds later). Now they are refused at once, as in one process, while the request in flight ends."""
    proxy = sigproxy_factory(static(slow_upstream, "drain-secret", key="AKIDDRAIN", proxy="drain_seconds = 10"),
                             workers=2)
    results: list[subprocess.CompletedProcess[str]] = []
    client = threading.Thread(target=lambda: results.append(subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", f"{proxy.reverse[0]}/inflight"], capture_output=True, text=True,
        timeout=60, check=False)))
    client.start()
    time.sleep(0.7)
    proxy.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    for url in (proxy.url, proxy.reverse[0]):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for _ in range(6):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, int(port)), timeout=2).close()
    client.join()
    assert results[0].stdout.endswith("slow but complete\n200"), results[0].stdout + results[0].stderr
    assert proxy.proc.wait(30) == 0

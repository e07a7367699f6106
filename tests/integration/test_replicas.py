"""Two `sigproxy run` processes sharing one PostgreSQL: a connection added through A's admin API signs
through B within 2 s; deleted through B, A refuses it within 2 s. Requests are judged by moto (signatures
checked), the API is driven over HTTP with the admin token."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from sigproxy.store import generate_key
from tests.conftest import Proxy
from tests.servers.moto_server import Moto

TOKEN = "replica-admin-token-0123456789abcdef"


def api(proxy: Proxy, method: str, path: str, body: object = None) -> tuple[int, Any]:
    assert proxy.admin is not None
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{proxy.admin}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def through(proxy: Proxy, moto: Moto, name: str) -> tuple[int, str]:
    """GET the bucket's listing through ``proxy`` with connection ``name``: (status, X-Sigproxy-Error or "")."""
    out = subprocess.run(["curl", "-sS", "-x", proxy.url, "-o", "/dev/null", "-D", "-", "-w", "%{http_code}",
                          "-H", f"X-Sigproxy-Connection: {name}", f"{moto.endpoint}/{moto.bucket}"],
                         capture_output=True, text=True, timeout=30, check=False)
    error = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                  if line.lower().startswith("x-sigproxy-error:")), "")
    return int(out.stdout[-3:]), error


def until(check: Callable[[], bool], what: str, limit: float = 2.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, f"{what}: not within {limit} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_two_replicas_share_postgresql(postgres: Any, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    url = postgres.new_database()
    config = f"""
[store]
url = "{url}"
encryption_keys = ["{generate_key()}"]
[admin]
token = "{TOKEN}"
"""
    a = sigproxy_factory(config, admin=True)
    b = sigproxy_factory(config, admin=True)
    assert through(b, moto, "acme") == (407, "no_connection")
    status, created = api(a, "POST", "/v1/connections", {
        "name": "acme", "region": "us-east-1", "service": "s3", "hosts": ["127.0.0.1:*"],
        "sts_endpoint_url": moto.endpoint,
        "credentials": {"source": "static", "access_key_id": moto.access_key,
                        "secret_access_key": moto.secret_key}})
    assert status == 201, created
    assert created["credentials"]["secret_access_key"] == "***"
    assert through(a, moto, "acme")[0] == 200  # the writer applies its own write at once
    seen_b = until(lambda: through(b, moto, "acme")[0] == 200, "B signs with A's new connection")
    status, listed = api(b, "GET", "/v1/connections?prefix=ac")
    assert status == 200 and [c["name"] for c in listed["connections"]] == ["acme"]
    # Changed through B (a wrong secret): A signs with it within 2 s -- and moto refuses the signature.
    status, _ = api(b, "PATCH", "/v1/connections/acme", {"credentials": {"secret_access_key": "wrong-secret"}})
    assert status == 200
    until(lambda: through(a, moto, "acme")[0] == 403, "A uses B's change")
    status, _ = api(b, "DELETE", "/v1/connections/acme")
    assert status == 204
    gone_a = until(lambda: through(a, moto, "acme") == (407, "no_connection"), "A refuses the deleted connection")
    assert api(a, "GET", "/v1/connections/acme")[0] == 404
    for proxy in (a, b):
        logs = proxy.stop()
        assert moto.secret_key not in logs and "wrong-secret" not in logs
    print(f"B saw A's create after {seen_b:.2f} s; A saw B's delete after {gone_a:.2f} s")

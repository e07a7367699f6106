"""The per-request CPU of a small forward-proxy GET, step by step, without any I/O (issue 15).

    .venv/bin/python bench/hot_path.py [--iterations 20000] [--repeats 3]

Replays, in a loop, the pure work :meth:`sigproxy.handler.Handler._handle` and ``_forward`` do for wrk's
``GET http://127.0.0.1:PORT/bucket/key`` (one ``Host`` header) through bench/small_get.py's connection
``bench`` (static credentials, ``hosts = ["127.0.0.1:*"]``, service ``s3``), with the same arguments in the same
order: parse the target, the client's scope and key id, select the connection, check the host, service and
region, shape, policy, presigned, then sign (the handler's ``client_headers`` filter and ``_clock()``
included). The handler's own glue (``_once``, ``headers.get``), the credentials lookup, the auth-failure check,
the audit path and the metrics of ``_finish`` are timed too, under "around".

Each step runs ``--iterations`` times in its own loop, and the whole sequence once per iteration in a loop of
its own ("total", which also sees each step's caches as the proxy does). Times are CPU time of this process
(``time.process_time``) in microseconds per call: the lowest of ``--repeats`` runs, then every run's. Time spent
descheduled does not count, but a busy machine still slows every call: compare checkouts with runs made one
after the other, several times, and read the lowest. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

# This checkout's sigproxy, not whatever the venv's editable install points at (to compare two worktrees).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import BENCH_CONNECTION  # bench/, this script's directory

from sigproxy.authlimit import AuthFailures
from sigproxy.config import loads
from sigproxy.credentials import Providers
from sigproxy.jsonlines import audit_path
from sigproxy.metrics import Metrics
from sigproxy.prepare import sign_request
from sigproxy.routing import (
    Selection,
    check_host,
    check_policy,
    check_shape,
    parse_absolute_target,
    parse_client_key_id,
    parse_client_scope,
    presigned_by_client,
    resolve_service_region,
    select_connection,
)
from sigproxy.signing import EMPTY_SHA256, Signer

PORT = 18080
RAW_TARGET = f"http://127.0.0.1:{PORT}/bucket/key"
CONFIG = """
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
default_connection = "bench"
state_dir = "{tmp}/state"

""" + BENCH_CONNECTION


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """A coroutine that never suspends (static credentials), run without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def steps(tmp: str) -> tuple[dict[str, Callable[[], object]], Callable[[], object]]:
    """(name -> one call of that step, the whole sequence once)."""
    config = loads(CONFIG.format(tmp=tmp))
    providers = Providers(config.connections)
    signer = Signer()
    metrics = Metrics()
    failures = AuthFailures(config.proxy.auth_failures, config.proxy.auth_failure_window)
    headers = CIMultiDictProxy(CIMultiDict([("Host", f"127.0.0.1:{PORT}")]))
    method, remote = "GET", "127.0.0.1"

    target = parse_absolute_target(RAW_TARGET)
    scope = parse_client_scope(None, target.query)
    key_id = parse_client_key_id(None, target.query)

    def select() -> Selection:
        return select_connection(config, target, connection_header=None, proxy_authorization=None,
                                 client_scope=scope, listener=None, client_key_id=key_id)

    conn = select().connection
    service, region = resolve_service_region(conn, target, service_header=None, region_header=None,
                                             client_scope=scope)
    creds, _ = _run(providers.get(conn.name, user=None))
    replaced: set[str] = set()  # _forward: {name.lower() for name, _ in plan.headers}, an empty GET's none

    def once(name: str) -> str | None:  # handler._once
        values = headers.getall(name, [])
        return values[0] if values else None

    def glue() -> object:
        # What _handle and _forward do around the calls below (handler code, timed to show what remains).
        once("Authorization"), once("X-Sigproxy-Connection"), once("Proxy-Authorization")
        headers.get("X-Sigproxy-Service"), headers.get("X-Sigproxy-Region")
        return headers.get("Expect", "").lower() == "100-continue"

    def sign() -> object:
        client_headers = [(k, v) for k, v in headers.items() if k.lower() not in replaced]
        return sign_request(signer, creds, method=method, target=target, headers=client_headers,
                            payload_hash=EMPTY_SHA256, body_length=None, service=service, region=region,
                            now=datetime.now(UTC), upstream_scheme=conn.upstream_scheme)

    def credentials() -> object:
        got = _run(providers.get(conn.name, user=None))
        return got, providers.identity(conn.name, user=None)

    def record() -> None:
        metrics.record(conn.name, service, "200", 0.0003, bytes_up=0, bytes_down=420)

    table: dict[str, Callable[[], object]] = {
        "parse_absolute_target": lambda: parse_absolute_target(RAW_TARGET),
        "parse_client_scope+key_id": lambda: (parse_client_scope(None, target.query),
                                              parse_client_key_id(None, target.query)),
        "select_connection": select,
        "check_host": lambda: check_host(conn, target),
        "resolve_service_region": lambda: resolve_service_region(conn, target, service_header=None,
                                                                 region_header=None, client_scope=scope),
        "check_shape": lambda: check_shape(target, headers, service),
        "check_policy": lambda: check_policy(conn, method, service, region, headers.items()),
        "presigned_by_client": lambda: presigned_by_client(target.query),
        "sign_request (+clock, filter)": sign,
        "around: handler glue": glue,
        "around: failures.check": lambda: failures.check(remote),
        "around: audit_path": lambda: audit_path(target),
        "around: credentials get+identity": credentials,
        "around: metrics.record": record,
    }

    def whole() -> object:
        failures.check(remote)
        audit_path(target)
        glue()
        t = parse_absolute_target(RAW_TARGET)
        sc = parse_client_scope(None, t.query)
        sel = select_connection(config, t, connection_header=None, proxy_authorization=None, client_scope=sc,
                                listener=None, client_key_id=parse_client_key_id(None, t.query))
        c = sel.connection
        check_host(c, t)
        svc, reg = resolve_service_region(c, t, service_header=None, region_header=None, client_scope=sc)
        check_shape(t, headers, svc)
        check_policy(c, method, svc, reg, headers.items())
        presigned_by_client(t.query)
        cr, _ = _run(providers.get(c.name, user=None))
        providers.identity(c.name, user=None)
        client_headers = [(k, v) for k, v in headers.items() if k.lower() not in replaced]
        out = sign_request(signer, cr, method=method, target=t, headers=client_headers, payload_hash=EMPTY_SHA256,
                           body_length=None, service=svc, region=reg, now=datetime.now(UTC),
                           upstream_scheme=c.upstream_scheme)
        metrics.record(c.name, svc, "200", 0.0003, bytes_up=0, bytes_down=420)
        return out

    return table, whole


def per_call(fn: Callable[[], object], iterations: int) -> float:
    """CPU microseconds per call of ``fn`` over ``iterations`` calls."""
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table, whole = steps(tmp)
        rows = {**table, "total (one sequence)": whole}
        for fn in rows.values():  # warm caches and the interpreter's specialisation
            per_call(fn, 2000)
        runs: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeats):
            for name, fn in rows.items():
                runs[name].append(per_call(fn, args.iterations))
    width = max(len(name) for name in rows)
    print(f"{'step':<{width}}  {'us/call':>8}  runs ({args.iterations} calls each)")
    sums = {"routing + sign": 0.0, "around": 0.0}
    for name, times in runs.items():
        if name == "total (one sequence)":
            for what, value in sums.items():
                print(f"{'sum, ' + what:<{width}}  {value:8.2f}")
        else:
            sums["around" if name.startswith("around:") else "routing + sign"] += min(times)
        print(f"{name:<{width}}  {min(times):8.2f}  " + " ".join(f"{t:.2f}" for t in times))

if __name__ == "__main__":
    main()

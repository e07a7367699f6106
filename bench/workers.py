"""``workers = N`` scaling: small GETs through the forward proxy with one worker, then with N, same upstream.

64 keep-alive connections for 10 s per row, driven by wrk against nginx (both Debian packages; wrk is
installed when missing and running as root), at the default log level (``--log-level``). sigproxy gets cores
0..N-1 (`taskset`), nginx and wrk the cores after them; on a machine without N + 1 cores they share the last
core with sigproxy, and the ratio understates the scaling (the issue's target, >= 0.8 * N, is for N free cores).

So each row also gives the CPU time sigproxy's process group (supervisor and workers) spent per request answered,
and the scaling that CPU time supports: N workers' requests per CPU-second over one worker's, times N. That is
what N free cores would give if nothing but CPU time limits the group (each worker accepts, signs and answers
on its own, from its own copy of cached credentials; the supervisor is on a request's path only for a credential
fetch), and it is measured where the req/s ratio is not.

    .venv/bin/python bench/workers.py [--workers N] [--duration 10] [--connections 64] [--log-level info]

Never run by the test suite; numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_CONNECTION, ROOT, group_cpu_seconds, pinned, wrk
from nginx import Nginx, need

# wrk sends `path` verbatim on the request line, so an absolute URL makes it a forward-proxy client.
PROXY_LUA = 'wrk.path = "{target}"\n'
CONFIG = """
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
default_connection = "bench"
""" + BENCH_CONNECTION


def cores(first: int, count: int) -> str:
    return ",".join(str(c) for c in range(first, first + count))


def proxy(cfg: Path, cpus: str, workers: int, level: str) -> tuple[subprocess.Popen[str], str]:
    """``sigproxy run`` on ``cpus`` with ``workers``, in a session of its own (its process group is the group's),
    stderr (the access log at ``info``) appended to a file beside ``cfg``; (process, forward proxy URL)."""
    cmd = pinned(cpus, [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level", level,
                         "--workers", str(workers)])
    env = {**os.environ, "STATE_DIRECTORY": str(cfg.parent / "state")}
    with (cfg.parent / f"sigproxy-{workers}.log").open("a") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env,
                                start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "forward proxy listening on" in line:
            return proc, line.strip().split()[-1]
    sys.exit("sigproxy did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=max(2, len(os.sched_getaffinity(0)) - 1))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log-level", default="info", choices=("info", "warning"),
                        help="sigproxy's log level (default info: an access line per request)")
    args = parser.parse_args()
    total = os.cpu_count() or 1
    n = args.workers
    load_cpus = cores(n, total - n) if total > n else str(total - 1)
    wrk_bin = need("wrk", "wrk")
    with tempfile.TemporaryDirectory() as tmp, Nginx(Path(tmp), core=load_cpus) as upstream:
        up_url = upstream.url
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(CONFIG)
        script = Path(tmp) / "proxy.lua"
        script.write_text(PROXY_LUA.format(target=f"{up_url}/bucket/key"))
        rows: dict[str, dict[str, float]] = {}
        rows["direct"] = wrk(wrk_bin, f"{up_url}/bucket/key", args.duration, args.connections, None,
                             core=load_cpus)
        for label, count, cpus in (("1 worker", 1, "0"), (f"{n} workers", n, cores(0, n))):
            proc, url = proxy(cfg, cpus, count, args.log_level)
            try:
                time.sleep(1)
                wrk(wrk_bin, url, 1, args.connections, str(script), core=load_cpus)  # warm-up
                before = sum(group_cpu_seconds(proc.pid))
                rows[label] = wrk(wrk_bin, url, args.duration, args.connections, str(script), core=load_cpus)
                spent = sum(group_cpu_seconds(proc.pid)) - before
                rows[label]["cpu_us"] = spent / max(rows[label]["requests"], 1) * 1e6
                rows[label]["cores"] = spent / args.duration
            finally:
                proc.terminate()
                proc.wait()
    print(f"sigproxy on cores 0..{n - 1}, nginx and wrk on cpus {load_cpus} ({total} cpus in all); "
          f"log level {args.log_level}")
    print(f"{'':12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11} {'cores used':>11}")
    for name, r in rows.items():
        cpu = f"{r['cpu_us']:>11.1f} {r['cores']:>11.2f}" if "cpu_us" in r else f"{'-':>11} {'-':>11}"
        print(f"{name:12} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8.0f} {cpu}")
    one, many = rows["1 worker"], rows[f"{n} workers"]
    print(f"scaling: {many['rps'] / one['rps']:.2f}x with {n} workers (target >= {0.8 * n:.1f}x on {n} free cores)")
    print(f"scaling the CPU time supports: {n * one['cpu_us'] / many['cpu_us']:.2f}x on {n} free cores "
          f"({n} x one worker's CPU per request over {n} workers')")
    if total <= n:
        print("note: fewer than workers + 1 cpus: the load generator shares a core with sigproxy")


if __name__ == "__main__":
    main()

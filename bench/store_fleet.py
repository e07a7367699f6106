"""A fleet of store connections: start time and memory with N of them, and proxy overhead of a store
connection against a TOML connection with the same settings, in the same process and the same run.

    .venv/bin/python bench/store_fleet.py [--connections 10000] [--duration 8] [--rounds 3]

1. Fills a SQLite store with N static connections through sigproxy's own Store (as the admin API would).
2. Starts `sigproxy run` with an empty store, then with the N: time to "listening", RSS after start; the
   difference over N is the memory of one idle connection.
3. wrk (64 keep-alive connections, small GETs, forward proxy, `X-Sigproxy-Connection` chooses) alternates
   between the file connection and one of the store's, `--rounds` times each; reports req/s and the ratio.

Never run by the test suite; numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, pinned, start
from small_get import need_wrk, wrk

sys.path.insert(0, str(ROOT))

from sigproxy.connection import SECRET_PATHS
from sigproxy.store import Keyring, Store, generate_key

CONFIG = """
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
state_dir = "{state}"
[store]
url = "sqlite:///{db}"
encryption_keys = ["{key}"]
[connections.filebench]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.filebench.credentials]
source = "static"
access_key_id = "AKIDBENCH"
secret_access_key = "bench-secret-not-real"
"""
LUA = 'wrk.path = "{target}"\nwrk.headers["X-Sigproxy-Connection"] = "{name}"\n'


def table(i: int) -> dict[str, object]:
    return {"region": "us-east-1", "service": "s3", "hosts": ["127.0.0.1:*"],
            "credentials": {"source": "static", "access_key_id": f"AKIDT{i:07d}",
                            "secret_access_key": f"tenant-secret-{i:07d}-not-real"}}


async def fill(db: Path, key: str, count: int) -> float:
    store = await Store.open(f"sqlite:///{db}", Keyring.from_strings([key]), secret_paths=SECRET_PATHS)
    started = time.monotonic()
    try:
        for i in range(count):
            await store.create(f"tenant-{i:05d}", "active", table(i), actor="bench")
    finally:
        await store.close()
    return time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_proxy(cfg: Path) -> tuple[subprocess.Popen[str], str, float, int]:
    started = time.monotonic()
    proc, url = start(pinned(0, [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level",
                                 "warning"]), "listening on")
    ready = time.monotonic() - started
    time.sleep(1.0)
    return proc, url, ready, rss_kib(proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = need_wrk()
    key = generate_key()
    upstream, up_url = start(pinned(1, [sys.executable, "bench/upstream.py"]), "http://")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        empty_cfg, full_cfg = base / "empty.toml", base / "full.toml"
        empty_cfg.write_text(CONFIG.format(state=base / "s0", db=base / "empty.db", key=key))
        full_cfg.write_text(CONFIG.format(state=base / "s1", db=base / "full.db", key=key))
        asyncio.run(fill(base / "empty.db", key, 0))
        filled = asyncio.run(fill(base / "full.db", key, args.connections))
        print(f"store filled with {args.connections} connections in {filled:.1f} s "
              f"({filled / max(args.connections, 1) * 1000:.2f} ms each)")
        proc, _, ready0, rss0 = run_proxy(empty_cfg)
        proc.terminate()
        proc.wait()
        proc, url, ready1, rss1 = run_proxy(full_cfg)
        print(f"start to listening: {ready0:.2f} s with 0 store connections, {ready1:.2f} s with "
              f"{args.connections}")
        per = (rss1 - rss0) * 1024 / max(args.connections, 1)
        print(f"RSS after start: {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB: {per / 1024:.2f} KiB per idle "
              "connection")
        results: dict[str, list[float]] = {"filebench": [], "store": []}
        p99: dict[str, list[float]] = {"filebench": [], "store": []}
        store_name = f"tenant-{args.connections // 2:05d}" if args.connections else "filebench"
        try:
            for _ in range(args.rounds):
                for label, name in (("filebench", "filebench"), ("store", store_name)):
                    script = base / f"{label}.lua"
                    script.write_text(LUA.format(target=f"{up_url}/bucket/key", name=name))
                    r = wrk(binary, url, args.duration, 64, str(script))
                    if r["non2xx"]:
                        sys.exit(f"{label}: {r['non2xx']:.0f} non-2xx answers")
                    results[label].append(r["rps"])
                    p99[label].append(r["p99"])
        finally:
            proc.terminate()
            proc.wait()
            upstream.terminate()
            upstream.wait()
    file_rps, store_rps = statistics.median(results["filebench"]), statistics.median(results["store"])
    print(f"{'':10} {'req/s (median)':>15} {'p99 ms':>8}  runs")
    for label, runs in results.items():
        print(f"{label:10} {statistics.median(runs):>15.0f} {statistics.median(p99[label]):>8.2f}  "
              + ", ".join(f"{v:.0f}" for v in runs))
    print(f"store / file throughput: {store_rps / file_rps:.3f}")


if __name__ == "__main__":
    main()

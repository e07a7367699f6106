"""Small-GET throughput and latency: through sigproxy vs straight to the same upstream.

64 concurrent keep-alive connections for 10 s each, driven by wrk (Debian package `wrk`; installed when
missing and running as root). Upstream, proxy and wrk each get one core where the machine has them
(`taskset`): sigproxy on core 0, the upstream and wrk on the other.

    make bench          # or: .venv/bin/python bench/small_get.py [--duration 10] [--connections 64]

Never run by the test suite; numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import pinned, start

# wrk sends `path` verbatim on the request line, so an absolute URL makes it a forward-proxy client.
PROXY_LUA = 'wrk.path = "{target}"\n'


def need_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        return shutil.which("wrk") or sys.exit("wrk did not install")
    sys.exit("wrk is needed: apt-get install wrk")


def wrk(binary: str, url: str, duration: int, conns: int, script: str | None) -> dict[str, float]:
    cmd = [binary, "-t", "1", "-c", str(conns), "-d", f"{duration}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(pinned(1, [*cmd, url]), capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "non2xx": float(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    binary = need_wrk()
    py = sys.executable
    upstream, up_url = start(pinned(1, [py, "bench/upstream.py"]), "http://")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            '[proxy]\nlisten = "127.0.0.1:0"\ndefault_connection = "bench"\n'
            '[connections.bench]\nregion = "us-east-1"\nservice = "s3"\nhosts = ["127.0.0.1:*"]\n'
            '[connections.bench.credentials]\nsource = "static"\naccess_key_id = "AKIDBENCH"\n'
            'secret_access_key = "bench-secret-not-real"\n'
        )
        proxy, proxy_url = start(
            pinned(0, [py, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level", "warning"]), "listening on"
        )
        script = Path(tmp) / "proxy.lua"
        script.write_text(PROXY_LUA.format(target=f"{up_url}/bucket/key"))
        try:
            direct = wrk(binary, f"{up_url}/bucket/key", args.duration, args.connections, None)
            through = wrk(binary, proxy_url, args.duration, args.connections, str(script))
        finally:
            proxy.terminate()
            upstream.terminate()
            proxy.wait()
            upstream.wait()
    print(f"{'':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in (("direct", direct), ("sigproxy", through)):
        print(f"{name:10} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8.0f}")


if __name__ == "__main__":
    main()

"""Small GETs: requests/s, latency and peak RSS through every way into sigproxy, next to nginx served directly.

One command prints one table (``--runs 3`` repeats everything and prints min-max ranges):

    make bench          # or: .venv/bin/python bench/small_get.py [--runs 3] [--duration 10] [--rows forward,warning]

Set-up, as in issue 15: sigproxy pinned to core 0, the upstream and the load generator on core 1 (``taskset``),
64 keep-alive connections, 10 s per row after a 1 s warm-up. The upstream is nginx (Debian package, one worker
process, access log off, a generated config in a temporary directory; bench/nginx.py) answering every GET with
200 and a 400-odd-byte S3-style XML body, over HTTP and over TLS (a trustme certificate). wrk (Debian package)
is the client where it can be; nginx and wrk are installed with apt-get when missing and running as root.

Rows (each a fresh sigproxy process, stderr appended to a log file in the temporary directory as a daemon's
would be, JSON lines since it is not a terminal; never /dev/null):

- ``direct``: wrk straight to nginx: the yardstick every ratio is taken against, in the same run.
- ``floor``: wrk through bench/floor.py, pinned like sigproxy: the least a Python signing proxy on this
  interpreter, uvloop and httptools costs (protocol callbacks, SigV4 header signing, none of sigproxy's
  features). Not a product: what sigproxy's rows are read against to see how far from Python's limit they are.
- ``skeleton``: wrk through bench/skeleton.py, pinned like sigproxy, log level ``info``: sigproxy's own
  per-request functions (routing, policy, signing, egress check, metrics, access line) called from the floor's
  protocol callbacks. Not a product: read against ``floor`` and ``forward``, it splits sigproxy's cost into its
  functions' and its skeleton's.
- ``forward``: wrk through the forward listener (absolute-form request lines), default log level ``info``:
  one access line per request is written.
- ``warning``: the same at ``--log-level warning`` (no access lines): ``forward``/``warning`` is what access
  logging costs. The two swap places every other run (whichever runs first may pay for what ran before it), so
  an even ``--runs`` balances the order; the mean over the runs is printed under the table.
- ``reverse``: wrk to a ``[[reverse]]`` listener bound to nginx, log level ``info``.
- ``direct-py``, ``forward-py``, ``tunnel``: wrk can't speak CONNECT, so these three use bench/pyload.py, a lean
  asyncio + uvloop client on core 1 (same 64 connections). ``tunnel`` is HTTPS through ``CONNECT`` with
  sigproxy's CA (TLS from the client to sigproxy and from sigproxy to nginx), log level ``info``.
  ``direct-py`` is that client's own ceiling straight to nginx and ``forward-py`` the plain forward proxy with
  the same client: read ``tunnel`` against those two, not against wrk's rows.
- ``workers``: ``workers = 2`` in ``[proxy]``, sigproxy not pinned (its processes share core 1 with wrk and
  nginx on a 2-core machine), log level ``info``; "n/a" and the reason when the config refuses the key.

Columns: requests/s, the ratio to ``direct`` in the same run, p50 and p99 latency (ms, as the client measures
them), responses outside 2xx, socket errors (wrk's connect/read/write/timeout counts), sigproxy's CPU time
(user + system, over its process group) per request answered in the measured window, in microseconds (steadier
than req/s when other work shares the machine), the kernel's share of that CPU time (system calls: the socket
reads and writes, epoll, the log's writes), and sigproxy's peak RSS (VmHWM from /proc/PID/status, summed
over its process group for ``workers``), in MB (10^6 bytes). Under the table: access lines written for
``forward`` against requests answered (wrk counts only the completed ones, the proxy also logs the warm-up and
what was in flight at the end), and per run forward/warning in req/s and in CPU per request: what the access
log costs.

Timings on a shared machine are noisy: compare ratios within a run, and repeat. Never run by the test suite;
numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvloop
from common import BENCH_CONNECTION, ROOT, built, group_cpu_seconds, pinned, wrk
from nginx import Nginx, need
from pyload import load

__all__ = ["need_wrk", "wrk"]

# wrk sends `path` verbatim on the request line, so an absolute URL makes it a forward-proxy client.
PROXY_LUA = 'wrk.path = "{target}"\n'
PATH = "/bucket/key"
CONFIG = """
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
default_connection = "bench"
state_dir = "{tmp}/state"
upstream_ca_file = "{ca}"
connect_ports = [{tls_port}]
{extra}
""" + BENCH_CONNECTION
REVERSE = '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "{url}"\nconnection = "bench"\n'
LABELS = {
    "direct": "direct (nginx)",
    "floor": "floor (bench/floor.py)",
    "skeleton": "skeleton (bench/skeleton.py)",
    "forward": "forward, info",
    "warning": "forward, warning",
    "reverse": "reverse, info",
    "direct-py": "direct (py client)",
    "forward-py": "forward (py client)",
    "tunnel": "tunnel (py client)",
    "workers": "workers = 2",
}
Result = dict[str, float]


def need_wrk() -> str:
    return need("wrk", "wrk")


def py_load(address: tuple[str, int], request: bytes, connect: bytes | None, ctx: ssl.SSLContext | None,
            duration: float, conns: int) -> Result:
    """bench/pyload.py's client, run in this process pinned to core 1 for the duration."""
    before = os.sched_getaffinity(0)
    if len(before) > 1:
        os.sched_setaffinity(0, {1})
    try:
        return uvloop.run(load(address, request, connect, ctx, conns, duration))
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Sigproxy:
    """A running ``sigproxy run``: its process (a session leader), listener URLs and its log file."""

    proc: subprocess.Popen[str]
    forward: str
    reverse: str | None
    log: Path

    def peak_rss_mb(self) -> float:
        """VmHWM summed over the process group (the supervisor and any workers), MB."""
        total_kb = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != self.proc.pid:
                    continue
                status = (entry / "status").read_text()
            except (OSError, IndexError, ValueError):
                continue
            m = re.search(r"VmHWM:\s+(\d+) kB", status)
            total_kb += int(m.group(1)) if m else 0
        return total_kb * 1024 / 1e6

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU time used so far by the process group (the supervisor and any workers), s."""
        return group_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: drains; a supervisor passes it to its workers
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_sigproxy(tmp: Path, name: str, config: str, level: str, core: int | None,
                   checkout: Path = ROOT, *, yardstick: str | None = None) -> Sigproxy | str:
    """``sigproxy run`` from ``checkout`` with ``config`` (``yardstick``: ``floor`` or ``skeleton``, that script of
    bench/ instead, which takes no config); the Sigproxy once its listeners are up, or why it did not start."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(config)
    log = tmp / f"{name}.log"
    cmd = ([sys.executable, str(ROOT / "bench" / f"{yardstick}.py"), *(["--log-level", level]
                                                                        if yardstick == "skeleton" else [])]
           if yardstick else [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level", level])
    with log.open("a") as err:
        proc = subprocess.Popen(cmd if core is None else pinned(core, cmd), stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=checkout, start_new_session=True)
    assert proc.stdout is not None
    forward, reverse = None, None
    want_reverse = "[[reverse]]" in config
    for line in proc.stdout:
        if "forward proxy listening on " in line:
            forward = line.split("listening on ", 1)[1].split()[0]
        elif "reverse proxy listening on " in line:
            reverse = line.split("listening on ", 1)[1].split()[0]
        if forward and (reverse or not want_reverse):
            return Sigproxy(proc, forward, reverse, log)
    proc.wait()
    lines = [x for x in log.read_text().splitlines() if x.strip()]
    return (lines[-1] if lines else f"exit {proc.returncode}")[:100]


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _client(row: str, proxy: Sigproxy | None, up: Nginx, tmp: Path, conns: int, wrk_bin: str,
            script: str) -> Callable[[int], Result]:
    """The load of ``row`` against ``proxy`` (None for the direct rows), as a function of its duration (s)."""
    if row == "direct":
        return lambda d: wrk(wrk_bin, f"{up.url}{PATH}", d, conns, None)
    origin = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode()
    if row == "direct-py":
        return lambda d: py_load(address(up.url), origin, None, None, d, conns)
    assert proxy is not None
    if row in ("forward", "warning", "workers", "floor", "skeleton"):
        return lambda d: wrk(wrk_bin, proxy.forward, d, conns, script)
    if row == "reverse":
        return lambda d: wrk(wrk_bin, f"{proxy.reverse}{PATH}", d, conns, None)
    if row == "forward-py":
        plain = f"GET {up.url}{PATH} HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode()
        return lambda d: py_load(address(proxy.forward), plain, None, None, d, conns)
    # tunnel: sigproxy's CA was created in its state directory on first start.
    ctx = ssl.create_default_context(cafile=str(tmp / "state" / "ca-cert.pem"))
    connect = f"CONNECT 127.0.0.1:{up.tls_port} HTTP/1.1\r\nHost: 127.0.0.1:{up.tls_port}\r\n\r\n".encode()
    inner = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{up.tls_port}\r\n\r\n".encode()
    return lambda d: py_load(address(proxy.forward), inner, connect, ctx, d, conns)


def run_once(args: argparse.Namespace, tmp: Path, up: Nginx, ca: Path, rows: list[str], run: int,
             notes: list[str]) -> dict[str, Result | str]:
    """Every row of one run, in order: row -> result, or the reason it could not run."""
    assert up.tls_port is not None
    base = {"tmp": tmp, "ca": ca, "tls_port": up.tls_port}
    wrk_bin = need_wrk()
    script = tmp / "proxy.lua"
    script.write_text(PROXY_LUA.format(target=f"{up.url}{PATH}"))
    out: dict[str, Result | str] = {}

    def measure(fn: Callable[[int], Result], proxy: Sigproxy | None = None) -> Result:
        fn(args.warmup)
        user, system = proxy.cpu_seconds() if proxy else (0.0, 0.0)
        result = fn(args.duration)
        if proxy:
            user_after, system_after = proxy.cpu_seconds()
            spent = (user_after - user) + (system_after - system)
            result["cpu_us"] = spent / max(result["requests"], 1) * 1e6
            result["sys_pct"] = 100 * (system_after - system) / max(spent, 1e-9)
        return result

    order = list(rows)
    if run % 2 and "forward" in order and "warning" in order:  # every other run, warning first
        i, j = order.index("forward"), order.index("warning")
        order[i], order[j] = order[j], order[i]
    for row in order:
        if row in ("direct", "direct-py"):
            out[row] = measure(_client(row, None, up, tmp, args.connections, wrk_bin, str(script)))
            continue
        extra = REVERSE.format(url=up.url) if row == "reverse" else ""
        proxy_extra = "workers = 2" if row == "workers" else ""
        config = CONFIG.format(**base, extra=proxy_extra) + extra
        level = "warning" if row == "warning" else "info"
        started = start_sigproxy(tmp, f"{row}-{run}", config, level, None if row == "workers" else 0,
                                 args.checkout, yardstick=row if row in ("floor", "skeleton") else None)
        if isinstance(started, str):
            out[row] = f"n/a: {started}"
            continue
        proxy = started
        try:
            result = measure(_client(row, proxy, up, tmp, args.connections, wrk_bin, str(script)), proxy)
            result["rss"] = proxy.peak_rss_mb()
        finally:
            proxy.stop()
        if row == "forward":
            lines = sum(1 for x in proxy.log.read_text().splitlines() if '"logger":"sigproxy.access"' in x)
            notes.append(f"run {run + 1}: forward wrote {lines} access lines to {proxy.log.name} for "
                         f"{result['requests']:.0f} requests answered in the measured {args.duration:g} s "
                         f"(plus the warm-up and those in flight)")
        out[row] = result
    forward, warning = out.get("forward"), out.get("warning")
    if isinstance(forward, dict) and isinstance(warning, dict):
        first = "info" if order.index("forward") < order.index("warning") else "warning"
        notes.append(f"run {run + 1}: forward at info / at warning = {forward['rps'] / warning['rps']:.3f} "
                     f"req/s, {forward['cpu_us'] / warning['cpu_us']:.3f} sigproxy CPU per request ({first} first)")
    return out


def access_log_cost(runs: list[dict[str, Result | str]]) -> str | None:
    """forward (info) against warning, the mean of each run's ratio (req/s, CPU per request), or None."""
    pairs: list[tuple[Result, Result]] = []
    for r in runs:
        forward, warning = r.get("forward"), r.get("warning")
        if isinstance(forward, dict) and isinstance(warning, dict):
            pairs.append((forward, warning))
    if not pairs:
        return None
    rps = sum(f["rps"] / w["rps"] for f, w in pairs) / len(pairs)
    cpu = sum(f["cpu_us"] / w["cpu_us"] for f, w in pairs) / len(pairs)
    return (f"access log (forward at info / at warning, mean of {len(pairs)} run(s), order alternated): "
            f"{rps:.3f} req/s, {cpu:.3f} CPU per request")


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


def print_table(rows: list[str], runs: list[dict[str, Result | str]]) -> None:
    cols = (("req/s", "rps", ".0f"), ("x direct", "ratio", ".3f"), ("p50 ms", "p50", ".2f"),
            ("p99 ms", "p99", ".2f"), ("non-2xx", "non2xx", ".0f"), ("errors", "errors", ".0f"),
            ("CPU us/req", "cpu_us", ".0f"), ("kernel %", "sys_pct", ".0f"), ("RSS MB", "rss", ".1f"))
    print(f"{'':22}" + "".join(f"{title:>15}" for title, _, _ in cols))
    for row in rows:
        pairs = [(r[row], r["direct"]) for r in runs if isinstance(r.get(row), dict)]
        done = [(result, direct) for result, direct in pairs if isinstance(result, dict) and isinstance(direct, dict)]
        if not done:
            reason = next((r[row] for r in runs if isinstance(r.get(row), str)), "n/a")
            print(f"{LABELS[row]:22}{reason}")
            continue
        cells = []
        for _, key, fmt in cols:
            if key == "ratio":
                values = [result["rps"] / direct["rps"] for result, direct in done]
            else:
                values = [result[key] for result, _ in done if key in result]
            cells.append(_span(values, fmt) if values else "-")
        print(f"{LABELS[row]:22}" + "".join(f"{c:>15}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per row (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before each row (default 1)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1, help="repeat every row; ranges are printed")
    parser.add_argument("--rows", default=",".join(LABELS),
                        help=f"comma-separated subset of {','.join(LABELS)} (direct is always run)")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="run sigproxy from this checkout (e.g. `git worktree add DIR REV`) to compare revisions")
    args = parser.parse_args()
    rows = ["direct", *[r for r in args.rows.split(",") if r and r != "direct"]]
    unknown = [r for r in rows if r not in LABELS]
    if unknown:
        parser.error(f"unknown rows: {', '.join(unknown)}")
    need_wrk()
    with tempfile.TemporaryDirectory(prefix="sigproxy-bench-") as name:
        tmp = Path(name)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca_pem, chain, key = tmp / "upstream-ca.pem", tmp / "upstream-chain.pem", tmp / "upstream-key.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        with chain.open("wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(key))
        runs: list[dict[str, Result | str]] = []
        notes: list[str] = []
        with Nginx(tmp, core=1, tls=(chain, key)) as up:
            for run in range(args.runs):
                t0 = time.monotonic()
                runs.append(run_once(args, tmp, up, ca_pem, rows, run, notes))
                print(f"run {run + 1}/{args.runs} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print(f"{args.runs} run(s), {args.connections} connections, {args.duration:g} s per row; "
          f"sigproxy on core 0, nginx and the client on core 1; sigproxy {built(args.checkout)}")
    print_table(rows, runs)
    for note in notes:
        print(note)
    cost = access_log_cost(runs)
    if cost is not None:
        print(cost)


if __name__ == "__main__":
    main()

"""Instructions per proxied small GET: a cost figure that does not move with the machine's load.

    .venv/bin/python bench/instructions.py [--requests 1000] [--rows warning,info,reverse] [--connections 8]
                                           [--checkout DIR] [--keep DIR] [--cache]

Wall-clock requests/s on a shared 2-core machine swing by 30 % between runs; the number of instructions
sigproxy executes per request barely does: two runs on a quiet machine agree within 0.2 %, within about 1 % when
other work shares it (how many requests share an event-loop iteration moves with timing). Compare checkouts with
runs made one after the other. sigproxy runs under valgrind's
callgrind (Debian package, installed when missing and running as root) with instrumentation off while it starts;
a plain-socket client then sends 200 warm-up GETs, instrumentation goes on (``callgrind_control -i on``), the
measured GETs go through 8 keep-alive connections in lock step (``--connections``), and instrumentation goes
off. The more connections, the more requests share an event-loop iteration and its once-per-iteration work
(the access log's write, the system calls' wake-ups): 64 is bench/small_get.py's wrk, which keeps that many
requests waiting on a saturated proxy. The upstream is
nginx (bench/nginx.py), the config bench/small_get.py's. Rows: ``warning`` (forward proxy, no access log),
``info`` (forward, an access line per request written to a file), ``reverse`` (a reverse listener, info),
``floor`` (bench/floor.py, the least a Python signing proxy on this interpreter, uvloop and httptools costs:
callbacks only, no feature sigproxy adds; not run unless asked), ``skeleton`` and ``skeleton-warning``
(bench/skeleton.py at info and at warning: sigproxy's per-request functions called from the floor's callbacks;
not run unless asked).

Counts are user-space instructions of the whole process (every thread); system calls' kernel time is not in
them, so compare them with each other (rows, or a checkout given with ``--checkout``), not with wall-clock time.
Never run by the test suite; the numbers go into issue notes.

``--cache`` adds callgrind's cache simulation (32 KB first-level instruction and data caches, as this CPU's) and
prints its misses per request beside the instructions: instruction-cache misses (I1), data read and write misses
(D1r, D1w). A request's code is far larger than the instruction cache (about 9 k misses a request: over half a
megabyte fetched again each time), so a change can cost more in misses than in instructions -- or save more:
making access lines one after another at the iteration's end instead of one per request saved 1 k instructions
but about 300 I1 and 240 D1r misses a line (``info`` over ``warning``: 311 -> 12 and 283 -> 40), and halved what the
access log costs by the wall clock (issue 15).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, built
from nginx import Nginx, need
from small_get import CONFIG, PATH, REVERSE


def _lockstep(address: tuple[str, int], request: bytes, count: int, conns: int = 8) -> int:
    """Send ``request`` on ``conns`` connections at a time until ``count`` are answered 200; the number sent."""
    socks = [socket.create_connection(address) for _ in range(conns)]
    done = 0
    try:
        while done < count:
            for s in socks:
                s.sendall(request)
            for s in socks:
                buf = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        sys.exit("sigproxy closed a connection")
                    buf += chunk
                    head, sep, body = buf.partition(b"\r\n\r\n")
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head) if sep else None
                    if length and len(body) >= int(length.group(1)):
                        break
                if not buf.startswith(b"HTTP/1.1 200"):
                    sys.exit(f"not a 200: {buf[:200]!r}")
            done += conns
    finally:
        for s in socks:
            s.close()
    return done


def measure(row: str, requests: int, up: Nginx, tmp: Path, checkout: Path, conns: int = 8,
            keep: Path | None = None, misses: dict[str, float] | None = None) -> float:
    """Thousands of instructions per request for ``row``; its callgrind output copied into ``keep`` if given.
    With ``misses`` (a dict, filled in), the cache is simulated: I1, D1r and D1w misses per request."""
    level = "warning" if row in ("warning", "skeleton-warning") else "info"
    config = CONFIG.format(tmp=tmp, ca="/dev/null", tls_port=up.port, extra="").replace(
        'upstream_ca_file = "/dev/null"\n', "")
    if row == "reverse":
        config += REVERSE.format(url=up.url)
    (tmp / f"{row}.toml").write_text(config)
    out = tmp / f"{row}.callgrind"
    server = ([str(ROOT / "bench" / "floor.py")] if row == "floor" else
              [str(ROOT / "bench" / "skeleton.py"), "--log-level", level] if row.startswith("skeleton") else
              ["-m", "sigproxy", "run", "-c", str(tmp / f"{row}.toml"), "--log-level", level, "--workers", "1"])
    with (tmp / f"{row}.log").open("w") as log:
        proc = subprocess.Popen(
            [need("valgrind", "valgrind"), "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             *(["--cache-sim=yes"] if misses is not None else []), sys.executable, *server],
            cwd=checkout, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    url = None
    for line in proc.stdout:
        marker = "reverse proxy listening on " if row == "reverse" else "forward proxy listening on "
        if marker in line:
            url = line.split("listening on ", 1)[1].split()[0]
            break
    if url is None:
        sys.exit(f"sigproxy did not start: {(tmp / f'{row}.log').read_text()[-2000:]}")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    target = PATH if row == "reverse" else f"{up.url}{PATH}"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode()
    control = need("callgrind_control", "valgrind")
    try:
        _lockstep((host, int(port)), request, 200, conns)
        subprocess.run([control, "-i", "on", str(proc.pid)], check=True, capture_output=True)
        sent = _lockstep((host, int(port)), request, requests, conns)
        subprocess.run([control, "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run([control, "-d", str(proc.pid)], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(120)
    total = 0
    for dump in tmp.glob(f"{row}.callgrind*"):
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, keep / dump.name)
        text = dump.read_text(errors="replace")
        for m in re.finditer(r"^(?:summary|totals): (\d+)(.*)$", text, re.M):
            if int(m.group(1)) <= total:
                continue
            total = int(m.group(1))
            events = re.search(r"^events: (.*)$", text, re.M)
            if misses is not None and events is not None:
                counts = dict(zip(events.group(1).split(), [total, *map(int, m.group(2).split())], strict=False))
                misses.update({"I1": counts.get("I1mr", 0) / sent, "D1r": counts.get("D1mr", 0) / sent,
                               "D1w": counts.get("D1mw", 0) / sent})
    return total / sent / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="measured GETs per row (default 1000)")
    parser.add_argument("--rows", default="warning,info,reverse",
                        help="comma-separated: warning, info, reverse, floor, skeleton, skeleton-warning")
    parser.add_argument("--connections", type=int, default=8,
                        help="keep-alive connections, each with one request in flight (default 8; 64: as "
                             "bench/small_get.py's wrk, whose 64 connections keep a saturated proxy's "
                             "event loop iterations full)")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="run sigproxy from this checkout (e.g. `git worktree add DIR REV`)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy each row's callgrind output here (read it with callgrind_annotate)")
    parser.add_argument("--cache", action="store_true",
                        help="simulate the caches too: instruction and data cache misses per request (slower)")
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        with Nginx(tmp, 1) as up:
            print(f"{args.requests} GETs per row on {args.connections} connections through {args.checkout} "
                  f"({built(args.checkout)}); k instructions per request"
                  + (", then cache misses per request (I1, D1r, D1w):" if args.cache else ":"))
            for row in rows:
                misses: dict[str, float] | None = {} if args.cache else None
                cost = measure(row, args.requests, up, tmp, args.checkout, args.connections, args.keep, misses)
                extra = "".join(f"  {k} {v:7.0f}" for k, v in misses.items()) if misses else ""
                print(f"  {row:<8} {cost:8.1f}{extra}", flush=True)


if __name__ == "__main__":
    main()

"""What every benchmark here shares: pinning processes to cores and starting a server that prints its URL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["BENCH_CONNECTION", "ROOT", "built", "group_cpu_seconds", "pinned", "start", "wrk"]

ROOT = Path(__file__).resolve().parent.parent
BENCH_CONNECTION = """
[connections.bench]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.bench.credentials]
source = "static"
access_key_id = "AKIDBENCH"
secret_access_key = "bench-secret-not-real"
"""
"""The connection every benchmark signs with: static made-up keys, any port on 127.0.0.1, S3 in us-east-1."""


def pinned(core: int | str, cmd: list[str]) -> list[str]:
    """``cmd`` run on one core (or a taskset cpu list such as ``"0,1"``), where the machine has more than one."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def group_cpu_seconds(leader: int) -> tuple[float, float]:
    """(user, system) CPU time used so far by the processes of ``leader``'s process group (a ``sigproxy run``
    started in a session of its own: the supervisor and any workers), s."""
    user = system = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == leader:
            user += int(fields[11])  # utime, stime: fields 14 and 15 of proc(5)
            system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def start(cmd: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd`` and return it with the last word of its first stdout line containing ``marker``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return proc, line.strip().split()[-1]
    sys.exit(f"{cmd[0]} did not start")


def wrk(binary: str, url: str, duration: float, conns: int, script: str | None, *,
        core: int | str = 1) -> dict[str, float]:
    """wrk (one thread, pinned to ``core``) against ``url``: rps, p50/p99 ms, non2xx, errors, requests."""
    cmd = [binary, "-t", "1", "-c", str(conns), "-d", f"{max(1, round(duration))}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(pinned(core, [*cmd, url]), capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "non2xx": float(non2xx.group(1)) if non2xx else 0,
            "errors": float(sum(int(g) for g in sock.groups())) if sock else 0, "requests": requests}


def built(checkout: Path) -> str:
    """How ``python -m sigproxy`` runs from ``checkout``: ``compiled (mypyc, N modules)``, ``pure Python`` or
    ``partly compiled (...)`` (sigproxy/compiled.py). A checkout made for a comparison (``git worktree add``)
    runs pure until its modules are built in place there: ``.venv/bin/python setup.py build_ext --inplace``."""
    done = subprocess.run([sys.executable, "-c", "from sigproxy.compiled import describe; print(describe())"],
                          cwd=checkout, capture_output=True, text=True, check=False)
    return done.stdout.strip() or f"unknown ({done.stderr.strip()[-200:]})"

"""Big bodies: 1 GiB PUT and GET through sigproxy vs straight to the same upstream, MB/s and sigproxy's peak RSS.

The upstream is bench/sink.py (swallows uploads and answers their byte count and SHA-256; streams GET /big
from a repeated 1 MiB pseudo-random block). The load comes from a lean asyncio client here (raw HTTP/1.1 on
one connection per transfer; the upload body is generated on the fly from the same block, the download is
read, discarded and checked against the block's SHA-256). sigproxy runs on core 0, the upstream and this
client on core 1 (`taskset`; `--unpinned` lets sigproxy use any core). Uploads run once per client
X-Amz-Content-SHA256 (default: UNSIGNED-PAYLOAD, which sigproxy can pass through, and none -- the row
"PUT none: chunks" -- which it turns into signed aws-chunked upstream, `--chunk-size` for its chunk_size).
Each row gives MB/s, the ratio to the direct transfer of the same turn (median over turns), peak RSS and
sigproxy's CPU seconds per GB moved: the cost of the proxy itself, far less disturbed by other load on
the machine than MB/s.

`--baseline CHECKOUT` runs a second sigproxy from another checkout (`git worktree add /tmp/base main`) as one
more route in the same run, the two taking turns to go first: before/after in one table.

sigproxy's RSS is sampled from /proc every 50 ms during each transfer through it; VmHWM (the kernel's peak)
is reset before each transfer where the kernel lets us (clear_refs); its CPU time gives the share of core 0
it used (near 100 % = sigproxy is the bottleneck, well under = the client/upstream core or the hand-offs).
MB = 10^6 bytes. An upload the proxy refuses (413 while bodies are buffered) is reported, not fatal. The machine
should be otherwise idle: CPU used by other processes before and during the transfers is measured and flagged.

    .venv/bin/python bench/big_body.py [--size 1GiB] [--repeat 1] [--content-sha256 VALUE ...] [--no-verify]
        [--no-get] [--chunk-size SIZE] [--baseline CHECKOUT] [--unpinned]

Never run by the test suite; numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvloop
from sink import BLOCK_SIZE, pattern, pattern_sha256  # bench/sink.py: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent
READ = 2**20
MB = 1e6
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}


def size_arg(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 64MiB, 1000000)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def pinned(core: int, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def start(cmd: list[str], marker: str, stderr: Path | None = None,
          cwd: Path = ROOT) -> tuple[subprocess.Popen[str], str] | None:
    """Start ``cmd`` in ``cwd`` and wait for ``marker`` on its stdout (the line's last word is returned); None if
    it exits first (its stderr is then in ``stderr``, when given)."""
    err = stderr.open("w") if stderr else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd)
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return proc, line.strip().split()[-1]
    proc.wait()
    return None


# -- sigproxy's memory ---------------------------------------------------------------------------------------


def status_kb(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def busy_cores(seconds: float = 1.0) -> dict[str, float]:
    """Per-core busy % over ``seconds`` (from /proc/stat), to flag other load on the machine."""

    def sample() -> dict[str, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *rest = line.split()
            if re.fullmatch(r"cpu\d+", name):
                ticks = [int(x) for x in rest]
                out[name] = (sum(ticks), ticks[3] + ticks[4])  # total, idle + iowait
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    return {name: 100 * (1 - (after[name][1] - idle) / max(1, after[name][0] - total))
            for name, (total, idle) in before.items() if name in after}


def others_cpu_seconds(ours: tuple[int, ...]) -> float:
    """CPU time (user + nice + system, all cores) of everything but ``ours`` and the kernel's own threads
    (ksoftirqd carries loopback traffic under load): other load on the machine, short-lived processes too."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    total = (int(fields[1]) + int(fields[2]) + int(fields[3])) / os.sysconf("SC_CLK_TCK")
    kernel = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[6]) & 0x00200000:  # PF_KTHREAD
                kernel += cpu_seconds(int(entry.name))
    return total - kernel - sum(map(cpu_seconds, ours))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Max VmRSS of ``pid`` sampled every 50 ms in a thread, plus VmHWM at the end (reset at the start when
    the kernel allows writing 5 to clear_refs), and the share of one core it used meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.hwm_kb: int | None = None
        self.hwm_reset = False
        self.cpu_pct = 0.0
        self.cpu_s = 0.0
        self._cpu0 = self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS") or 0)
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> RssSampler:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            pass
        self._thread.start()
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.cpu_s = cpu_seconds(self.pid) - self._cpu0
        self.cpu_pct = 100 * self.cpu_s / (time.perf_counter() - self._t0)
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS") or 0)
        self.hwm_kb = status_kb(self.pid, "VmHWM")


# -- the client ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    status: int | None  # None: no response at all
    seconds: float
    moved: int  # body bytes sent (upload) or received (download)
    ok: bool
    note: str = ""
    peak_mb: float | None = None
    hwm_mb: float | None = None
    cpu_pct: float | None = None
    cpu_s: float | None = None  # sigproxy's CPU seconds (all threads) during the transfer
    wire: str = ""  # how an upload reached the upstream
    other_pct: float | None = None  # CPU used by processes other than ours meanwhile, % of one core


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The response body: Content-Length, chunked, or up to EOF."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            while size:
                chunk = await reader.read(min(size, READ))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", size)
                size -= len(chunk)
                yield chunk
            await reader.readexactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            chunk = await reader.read(min(left, READ))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
    else:
        while chunk := await reader.read(READ):
            yield chunk


async def upload(addr: tuple[str, int], target: str, host: str, size: int, block: bytes,
                 content_sha256: str, expected_sha: str) -> Result:
    reader, writer = await asyncio.open_connection(*addr, limit=READ)
    head = (f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n"
            "Content-Type: application/octet-stream\r\n")
    if content_sha256:
        head += f"X-Amz-Content-SHA256: {content_sha256}\r\n"
    view = memoryview(block)
    sent = 0
    status: int | None = None
    body = bytearray()
    error = ""

    async def send() -> None:
        nonlocal sent
        try:
            while sent < size:
                n = min(BLOCK_SIZE, size - sent)
                writer.write(view[:n])
                sent += n
                await writer.drain()
        except ConnectionError:
            pass  # the server answered early and closed; receive() has (or will have) the story

    async def receive(sender: asyncio.Task[None]) -> None:
        nonlocal status, error
        try:
            status, headers = await read_head(reader)
            if sent < size:
                sender.cancel()  # an early answer (413): stop feeding a server that stopped reading
            async for chunk in body_chunks(reader, headers):
                body.extend(chunk[: 4096 - len(body)])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            sender.cancel()
            error = f"{type(exc).__name__}: {exc}"

    started = time.perf_counter()
    writer.write(head.encode() + b"\r\n")
    async with asyncio.TaskGroup() as tg:
        sender = tg.create_task(send())
        tg.create_task(receive(sender))
    seconds = time.perf_counter() - started
    writer.close()
    if status is None:
        return Result(None, seconds, sent, False, f"no response after sending {sent / MB:.0f} MB ({error})")
    text = body.decode("utf-8", "replace")
    if status != 200:
        early = f" after sending {sent / MB:.1f} of {size / MB:.0f} MB" if sent < size else ""
        return Result(status, seconds, sent, False, f"HTTP {status}{early}: {_error_text(text)}")
    try:
        got = json.loads(text)
    except ValueError:
        return Result(status, seconds, sent, False, f"HTTP 200 but not the sink's JSON: {text[:200]!r}")
    chunked = bool(got.get("aws_chunked"))
    payload = got["decoded_bytes"] if chunked else got["bytes"]
    wire = (f"x-amz-content-sha256 {got.get('content_sha256') or '(none)'}"
            + (f", aws-chunked: {got['bytes']} bytes on the wire for {payload}" if chunked else ""))
    problems = []
    if payload != size or got["sha256"] != expected_sha:
        problems.append(f"upstream got {payload} bytes with sha256 {got['sha256']} (sent {size}, {expected_sha})")
    if chunked and got.get("aws_chunked_error"):
        problems.append(f"aws-chunked framing: {got['aws_chunked_error']}")
    if chunked and got.get("decoded_length") != size:
        problems.append(f"x-amz-decoded-content-length {got.get('decoded_length')} (sent {size})")
    return Result(status, seconds, sent, not problems, "; ".join(problems), wire=wire)


async def download(addr: tuple[str, int], target: str, host: str, size: int, expected_sha: str | None) -> Result:
    reader, writer = await asyncio.open_connection(*addr, limit=4 * READ)
    started = time.perf_counter()
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    digest = hashlib.sha256()
    got = 0
    status: int | None = None
    try:
        status, headers = await read_head(reader)
        small = bytearray()
        async for chunk in body_chunks(reader, headers):
            got += len(chunk)
            if expected_sha:
                digest.update(chunk)
            if status != 200:
                small.extend(chunk[: 4096 - len(small)])
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        seconds = time.perf_counter() - started
        writer.close()
        return Result(status, seconds, got, False, f"cut off after {got / MB:.0f} MB ({type(exc).__name__})")
    seconds = time.perf_counter() - started
    writer.close()
    if status != 200:
        return Result(status, seconds, got, False, f"HTTP {status}: {_error_text(small.decode('utf-8', 'replace'))}")
    if got != size:
        return Result(status, seconds, got, False, f"got {got} bytes, wanted {size}")
    if expected_sha and digest.hexdigest() != expected_sha:
        return Result(status, seconds, got, False, "body SHA-256 does not match the pattern")
    return Result(status, seconds, got, True)


def _error_text(text: str) -> str:
    """sigproxy's error body is JSON or XML with a message; keep it to one line."""
    for pattern_ in (r'"message"\s*:\s*"([^"]*)"', r"<Message>([^<]*)</Message>"):
        m = re.search(pattern_, text)
        if m:
            code = re.search(r'"(?:code|error)"\s*:\s*"([^"]*)"|<Code>([^<]*)</Code>', text)
            prefix = f"{next(g for g in code.groups() if g)}: " if code else ""
            return prefix + m.group(1)
    return " ".join(text.split())[:200] or "(empty body)"


# -- the run -------------------------------------------------------------------------------------------------


def config_text(tmp: str, max_body: bool, chunk_size: int | None) -> str:
    return (
        f'[proxy]\nlisten = "127.0.0.1:0"\ndefault_connection = "bench"\nstate_dir = "{tmp}/state"\n'
        'admin_listen = ""\n'
        + ('max_body = "2GiB"\n' if max_body else "")
        + (f"chunk_size = {chunk_size}\n" if chunk_size else "")
        + '[connections.bench]\nregion = "us-east-1"\nservice = "s3"\nhosts = ["127.0.0.1:*"]\n'
        '[connections.bench.credentials]\nsource = "static"\naccess_key_id = "AKIDBENCH"\n'
        'secret_access_key = "bench-secret-not-real"\n'
    )


def start_proxy(tmp: str, name: str, root: Path, chunk_size: int | None, notes: list[str],
                unpinned: bool = False) -> tuple[subprocess.Popen[str], str]:
    """sigproxy from the checkout ``root`` (``python -m sigproxy`` run there imports that tree's package)."""
    cfg, err = Path(tmp) / f"{name}.toml", Path(tmp) / f"{name}.err"
    cmd = [sys.executable, "-m", "sigproxy", "run", "-c", str(cfg), "--log-level", "warning"]
    if not unpinned:
        cmd = pinned(0, cmd)
    cfg.write_text(config_text(tmp, True, chunk_size))
    started = start(cmd, "listening on", err, cwd=root)
    if started is None and "max_body" in err.read_text():
        notes.append(f"{name} rejected `max_body` in [proxy] (" + err.read_text().strip().splitlines()[-1]
                     + "); ran without it")
        cfg.write_text(config_text(tmp, False, chunk_size))
        started = start(cmd, "listening on", err, cwd=root)
    if started is None:
        sys.exit(f"{name} did not start:\n{err.read_text()}")
    return started


def mbps(results: list[Result], size: int) -> float | None:
    good = [size / r.seconds / MB for r in results if r.ok]
    return statistics.median(good) if good else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=size_arg, default=2**30, help="body size (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=1, help="transfers per case and route (median MB/s)")
    parser.add_argument("--content-sha256", action="append", metavar="VALUE",
                        help="X-Amz-Content-SHA256 the client sends on an upload, one upload row each ('' sends "
                             "none); default: UNSIGNED-PAYLOAD and none")
    parser.add_argument("--no-get", action="store_true", help="uploads only")
    parser.add_argument("--chunk-size", type=size_arg, help="[proxy] chunk_size for the signed chunks "
                        "(default: sigproxy's own default)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run sigproxy from this other checkout (e.g. `git worktree add /tmp/base main`), "
                             "as a third route in the same run, taking turns with this tree's")
    parser.add_argument("--unpinned", action="store_true",
                        help="let sigproxy run on any core (default: core 0, the client and upstream on core 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip the client's SHA-256 of the download")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per transfer")
    args = parser.parse_args()
    size = args.size
    cases = [(f"PUT {h}" if h else "PUT none: chunks", "upload", h)
             for h in dict.fromkeys(args.content_sha256 or ["UNSIGNED-PAYLOAD", ""])]
    if not args.no_get:
        cases.append(("GET", "download", ""))
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the client shares core 1 with the upstream
    notes: list[str] = []
    busy = {name: pct for name, pct in busy_cores().items() if pct > 15}
    if busy:
        notes.append("other load before the start (" + ", ".join(f"{n} {p:.0f}% busy" for n, p in busy.items())
                     + "): numbers are noisy")
    block = pattern()
    expected = pattern_sha256(size)
    py = sys.executable
    results: dict[tuple[str, str], list[Result]] = {}
    procs: list[subprocess.Popen[str]] = []
    proxies: dict[str, tuple[subprocess.Popen[str], tuple[str, int]]] = {}
    idle_kb: dict[str, int] = {}
    trees = {"sigproxy": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    routes = ["direct", *trees]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sink_started = start(pinned(1, [py, "bench/sink.py"]), "http://")
            if sink_started is None:
                sys.exit("bench/sink.py did not start")
            sink, up_url = sink_started
            procs.append(sink)
            for name, root in trees.items():
                proxy, proxy_url = start_proxy(tmp, name, root, args.chunk_size, notes, args.unpinned)
                procs.append(proxy)
                p_host, p_port = proxy_url.removeprefix("http://").rsplit(":", 1)
                proxies[name] = (proxy, (p_host, int(p_port)))
                idle_kb[name] = status_kb(proxy.pid, "VmRSS") or 0
            up_host = up_url.removeprefix("http://")
            up_addr = (up_host.rsplit(":", 1)[0], int(up_host.rsplit(":", 1)[1]))

            def run(case: str, content_sha256: str, route: str) -> Result:
                path = "/bucket/key" if case == "upload" else f"/bucket/big?size={size}"
                addr, target = (up_addr, path) if route == "direct" else (proxies[route][1], up_url + path)
                if case == "upload":
                    coro = upload(addr, target, up_host, size, block, content_sha256, expected)
                else:
                    coro = download(addr, target, up_host, size, None if args.no_verify else expected)

                async def timed() -> Result:
                    async with asyncio.timeout(args.timeout):
                        return await coro

                ours = (*(p.pid for p, _ in proxies.values()), sink.pid, os.getpid())
                cpu0, t0 = others_cpu_seconds(ours), time.perf_counter()
                if route == "direct":
                    result = uvloop.run(timed())
                else:
                    with RssSampler(proxies[route][0].pid) as rss:
                        result = uvloop.run(timed())
                other = others_cpu_seconds(ours) - cpu0
                result.other_pct = 100 * other / (time.perf_counter() - t0)
                if route == "direct":
                    return result
                result.peak_mb = rss.peak_kb * 1024 / MB
                result.cpu_pct = rss.cpu_pct if result.ok else None
                result.cpu_s = rss.cpu_s if result.ok else None
                result.hwm_mb = rss.hwm_kb * 1024 / MB if rss.hwm_kb is not None and rss.hwm_reset else None
                return result

            for turn in range(args.repeat):
                order = routes[1:] if turn % 2 == 0 else routes[:0:-1]  # proxies take turns going first
                for label, case, content_sha256 in cases:
                    for route in ["direct", *order]:
                        try:
                            result = run(case, content_sha256, route)
                        except TimeoutError:
                            result = Result(None, args.timeout, 0, False, f"timed out after {args.timeout:.0f} s")
                        results.setdefault((label, route), []).append(result)
                        for name, (proc, _) in proxies.items():
                            if proc.poll() is not None:
                                sys.exit(f"{name} exited ({proc.returncode}) during {label} via {route}")
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait()

    idle = ", ".join(f"{name} {kb * 1024 / MB:.1f} MB" for name, kb in idle_kb.items())
    print(f"body {size / 2**20:.0f} MiB, {args.repeat} run(s) per cell (median MB/s), MB = 10^6 bytes; "
          f"chunk_size {args.chunk_size or 'default'}; sigproxy {'on any core' if args.unpinned else 'on core 0'}; "
          f"idle RSS {idle}")
    print(f"{'case':18} {'route':9} {'MB/s':>6} {'% of direct':>12} {'peak RSS MB':>12} {'VmHWM MB':>9} "
          f"{'proxy CPU %':>12} {'CPU s/GB':>9}")
    for label, _, _ in cases:
        direct = results[(label, "direct")]
        d = mbps(direct, size)
        print(f"{label:18} {'direct':9} {f'{d:.0f}' if d is not None else 'failed':>6}")
        for route in routes[1:]:
            through = results[(label, route)]
            t = mbps(through, size)
            # The ratio is per turn (each proxy run against the direct run just before it), then the median.
            ratios = [100 * (d_r.seconds / t_r.seconds) for d_r, t_r in zip(direct, through, strict=True)
                      if d_r.ok and t_r.ok]
            peak = max(r.peak_mb or 0 for r in through)
            hwms = [r.hwm_mb for r in through if r.hwm_mb is not None]
            cpus = [r.cpu_pct for r in through if r.cpu_pct is not None]
            # CPU time per byte moved: what the proxy costs, much less disturbed by other load than MB/s.
            per_gb = [r.cpu_s / (size / 1e9) for r in through if r.cpu_s is not None]
            failed = next((r for r in through if not r.ok), None)
            t_cell = f"{t:.0f}" if t is not None else (f"HTTP {failed.status}" if failed and failed.status
                                                        else "failed")
            print(f"{'':18} {route:9} {t_cell:>6} "
                  f"{f'{statistics.median(ratios):.0f}' if ratios else '-':>12} {peak:>12.1f} "
                  f"{f'{max(hwms):.1f}' if hwms else '-':>9} "
                  f"{f'{statistics.median(cpus):.0f}' if cpus else '-':>12} "
                  f"{f'{statistics.median(per_gb):.2f}' if per_gb else '-':>9}")
            wires = {r.wire for r in through if r.ok and r.wire}
            notes.extend(f"{label} via {route} reached the upstream with {wire}" for wire in sorted(wires))
        for route in routes:
            runs = results[(label, route)]
            bad = [r for r in runs if not r.ok]
            if bad:
                times = f" ({len(bad)} of {len(runs)} runs; first shown)" if len(runs) > 1 else ""
                notes.append(f"{label} via {route}{times}: {bad[0].note}")
    if args.repeat > 1:
        print("each run, MB/s (" + " | ".join(routes) + "):")
        for label, _, _ in cases:
            row = [" ".join(f"{size / r.seconds / MB:.0f}" if r.ok else "-" for r in results[(label, route)])
                   for route in routes]
            print(f"  {label:18} " + " | ".join(row))
    noisy = [r.other_pct for rs in results.values() for r in rs if r.ok and r.other_pct and r.other_pct > 10]
    if noisy:
        notes.append(f"{len(noisy)} transfer(s) shared the machine with other load (up to {max(noisy):.0f}% of a "
                     "core): numbers are noisy")
    if not any(r.hwm_mb is not None for rs in results.values() for r in rs):
        notes.append("VmHWM could not be reset per transfer (clear_refs not writable); only the sampled peak")
    for note in dict.fromkeys(notes):
        print(f"note: {note}")


if __name__ == "__main__":
    main()

"""Log lines reach a slow consumer whole and exactly once: a full ``O_NONBLOCK`` pipe (partial writes, ``EAGAIN``),
and real processes sharing one pipe, terminal or ``O_APPEND`` file as a ``workers = N`` group shares stderr."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sigproxy import logsink
from sigproxy.observability import _BufferedStreamHandler, encode_line, setup_logging

ROOT = Path(__file__).resolve().parents[2]
SIZES = (0, 100, 3000, 9000)  # an access line's path: lines below and above PIPE_BUF (4096), batches of both


class SlowReader:
    """Reads ``fd`` 1024 bytes at a time with a pause between reads (journald or ``kubectl logs`` behind), until
    end of file (a terminal's master: EIO once every slave is closed)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data = fd, bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(0.001)
            try:
                chunk = os.read(self.fd, 1024)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not chunk:
                return
            self.data.extend(chunk)

    def lines(self, timeout: float = 60) -> list[bytes]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the writers never closed the stream"
        return bytes(self.data).replace(b"\r\n", b"\n").split(b"\n")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # a test closed it
            os.close(fd)


def test_a_full_nonblocking_pipe_gets_every_line_once(pipe: tuple[int, int]) -> None:
    """One process, its stderr an ``O_NONBLOCK`` pipe that a slow reader keeps full: writes fail with EAGAIN or
    take part of a batch; every line still arrives once, whole and in order, and no write error is reported."""
    read_fd, write_fd = pipe
    os.set_blocking(write_fd, False)
    stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below, which is the reader's EOF
    handler = _BufferedStreamHandler(stream)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    reader = SlowReader(read_fd)
    expected = [encode_line(json.dumps({"i": i, "path": "/" + "x" * SIZES[i % 4]})) for i in range(400)]
    loop = asyncio.new_event_loop()

    def burst(start: int) -> None:  # a loop iteration's lines: one batch, a write per 128 lines
        for line in expected[start:start + 100]:
            handler.add(line)

    for start in range(0, 400, 100):
        loop.call_soon(burst, start)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    handler.flush()
    stream.close()
    assert not errors
    assert reader.lines() == [*expected, b""]


CHILD = """
import asyncio, logging, sys
from sigproxy.observability import log_access, setup_logging
index, count, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
setup_logging("info", "json", fields={"worker": index}, shared=True)
access = logging.getLogger("sigproxy.access")

async def main():
    for i in range(count):
        log_access(access, {"method": "GET", "host": "h", "status": 200, "id": f"{index}-{i}",
                            "path": "/" + "x" * SIZES[i % 4]})
        if i % batch == batch - 1:
            await asyncio.sleep(0)  # the loop iteration's end: its lines are one batch

asyncio.run(main())
""".replace("SIZES", repr(SIZES))


def _group(stderr: int, processes: int = 3, count: int = 80, batch: int = 5) -> list[subprocess.Popen[bytes]]:
    """``processes`` real processes logging ``count`` access lines each, in batches of ``batch`` (five: over
    PIPE_BUF in all, some lines over it alone), all to ``stderr``."""
    return [subprocess.Popen([sys.executable, "-c", CHILD, str(i), str(count), str(batch)], stderr=stderr, cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for i in range(processes)]


def _check_whole(lines: list[bytes], processes: int = 3, count: int = 80) -> None:
    """Every line one JSON object; every process's every line there exactly once, in its order."""
    assert lines[-1] == b""
    entries = [json.loads(line) for line in lines[:-1]]  # a torn line fails here
    for p in range(processes):
        assert [e["id"] for e in entries if e["worker"] == p] == [f"{p}-{i}" for i in range(count)]
        assert all(len(e["path"]) == 1 + SIZES[int(e["id"].split("-")[1]) % 4] for e in entries if e["worker"] == p)
    assert len(entries) == processes * count


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_group_processes_sharing_a_slow_pipe_write_whole_lines(pipe: tuple[int, int], blocking: bool) -> None:
    """Three processes share one pipe (one open file description, as a group's inherited stderr) that a slow
    reader keeps full; with ``O_NONBLOCK`` set on it too (partial writes): no line torn, none lost or doubled."""
    read_fd, write_fd = pipe
    os.set_blocking(write_fd, blocking)
    reader = SlowReader(read_fd)
    procs = _group(write_fd)
    os.close(write_fd)
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    _check_whole(reader.lines())


def test_group_processes_sharing_a_stream_socket_write_whole_lines() -> None:
    """A stream socket read slowly (journald's, under systemd's ``StandardError=journal``), batches of 40 lines
    (about 120 kB: past what Linux appends to a Unix stream socket in one piece): whole lines, once."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = SlowReader(ours.fileno())
        procs = _group(theirs.fileno(), count=120, batch=40)
        theirs.close()
        assert [p.wait(60) for p in procs] == [0, 0, 0]
        _check_whole(reader.lines(), count=120)


def test_group_processes_sharing_a_terminal_write_whole_lines() -> None:
    """A terminal (POSIX promises no atomic write there) read slowly: every line whole and once."""
    master, slave = pty.openpty()
    try:
        reader = SlowReader(master)
        procs = _group(slave)
        os.close(slave)
        assert [p.wait(60) for p in procs] == [0, 0, 0]
        _check_whole(reader.lines())
    finally:
        os.close(master)


def test_group_processes_appending_to_a_file_write_whole_lines(tmp_path: Path) -> None:
    """``sigproxy run 2>>log``: an ``O_APPEND`` regular file (whole by POSIX's write(), not locked)."""
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        with open(fd, "w", encoding="utf-8", closefd=False) as stream:
            assert not logsink.LineSink(stream, shared=True)._locked  # no lock needed (module docstring)
        procs = _group(fd)
    finally:
        os.close(fd)
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    _check_whole(path.read_bytes().split(b"\n"))


def test_a_stream_that_cannot_be_locked_is_still_written_and_said_once(pipe: tuple[int, int],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where stderr can't be locked (ENOLCK), a group's process says so once and writes as one process does."""
    read_fd, write_fd = pipe

    def no_locks(fd: int, cmd: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = open(write_fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        setup_logging("info", "json", shared=True)
        logging.getLogger("sigproxy.test").info("after")
        root.handlers[0].flush()
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        stream.close()
    os.close(write_fd)
    lines = [json.loads(line) for line in os.read(read_fd, 65536).splitlines()]
    assert [e["level"] for e in lines] == ["warning", "info"]
    assert "stderr can't be locked" in lines[0]["msg"] and lines[1]["msg"] == "after"


@pytest.mark.parametrize("regular", [True, False], ids=["regular-file", "pipe"])
def test_one_process_writes_a_batch_to_a_file_at_once_and_to_a_pipe_by_pipe_buf(
        tmp_path: Path, pipe: tuple[int, int], sink_writes: list[bytes], regular: bool) -> None:
    """One process, a batch past PIPE_BUF: a regular file takes it in one write() (its writes are whole at any
    size); a pipe in writes of whole lines of at most PIPE_BUF bytes each (atomic there). Every line once."""
    writes = sink_writes
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 400) for i in range(40)]  # 40 lines, about 17 KB
    read_fd, write_fd = pipe
    reader = SlowReader(read_fd) if not regular else None
    path = tmp_path / "log"
    with (open(path, "a", encoding="utf-8") if regular else open(write_fd, "w", encoding="utf-8")) as stream:
        logsink.LineSink(stream).write(list(lines))
    if regular:
        assert len(writes) == 1
        assert path.read_bytes() == b"\n".join(lines) + b"\n"
    else:
        assert reader is not None
        assert len(writes) > 1 and all(len(w) <= select.PIPE_BUF and w.endswith(b"\n") for w in writes)
        assert reader.lines()[:-1] == lines

"""Log lines out of the process whole and exactly once, also when the processes of a ``workers = N`` group share
one stderr: :class:`LineSink`, what :mod:`sigproxy.observability`'s handler writes a batch of lines with.

Owns: the write of a batch of lines (one event-loop iteration's) to a stream's file descriptor.
Must not: log (logging writes through it), or let another process's bytes come between a line's.

What the system promises. A group's processes inherit one stderr (one open file description) and each writes
its own lines to it. Whether one write's bytes can be split by another's depends on what stderr is:

- a pipe or FIFO (Docker, containerd and so ``kubectl logs``, ``| tee``): a write of at most ``PIPE_BUF`` bytes
  (4096 on Linux) is atomic, a longer one "may be split" and interleaved with other writers' data (pipe(7);
  POSIX write(): "Write requests of {PIPE_BUF} bytes or less shall not be interleaved with data from other
  processes doing writes on the same pipe. Writes of greater than {PIPE_BUF} bytes may have data interleaved, on
  arbitrary boundaries"). With ``O_NONBLOCK`` (set on the shared description by any process that holds it), a
  full pipe fails a write with ``EAGAIN`` and a longer write may be partial.
- a stream socket (systemd's ``StandardError=journal``): no atomicity at any size (neither POSIX nor unix(7)
  promises any; a sender waiting for buffer space resumes after other senders' data).
- a terminal: POSIX promises nothing.
- a regular file: write() is atomic with respect to the file's other writes (POSIX 2.9.7, "Thread Interactions
  with Regular File Operations"), and with ``O_APPEND`` (``2>>log``) "the file offset shall be set to the end of
  the file prior to each write and no intervening file modification operation shall occur between changing the
  file offset and the write operation" (POSIX write()): each write lands whole, after the others.

An access line can pass ``PIPE_BUF`` (a long path: ``max_request_line`` is 8190 by default), and so can a
batch of short ones.

The design. In a group (``shared``: the supervisor and each worker), a batch is written under a POSIX record
lock on stderr's own file (``fcntl(F_SETLKW)`` through :func:`fcntl.lockf`), in one write() when the stream takes
it, else in as many as it takes (a short count, or ``EAGAIN``: wait with poll() for room, then go on), and the
lock is let go. Why this way:

- Record locks belong to the process (fcntl(2)): the group's processes share stderr's open file description, to
  which flock(2) locks and open file description locks (``F_OFD_SETLK``) belong, so those would not keep them
  apart. A process that exits or is killed loses its locks (fcntl(2)), so a dead worker can't stall the rest.
  Record locks don't keep a process's own threads apart: the logging handler's lock, taken first, does.
  fcntl(2)'s trap -- closing any descriptor of the file drops the process's locks on it -- can't strike: nothing
  closes one between lock and unlock.
- On stderr itself, not a lock file: nothing to name, create, hand to the workers or remove; it needs nothing of
  the supervisor's worker start; and two groups sharing one stderr keep apart too. Linux locks any file,
  pipes, sockets and terminals included; should locking fail (``EINVAL``, ``ENOLCK``), the process writes as a
  single process does, and :func:`~sigproxy.observability.setup_logging` warns once.
- Not the supervisor as the one writer: that costs every line a second trip through a pipe and another
  process's event loop, on a 2-core box the workers' CPU; a lock costs two system calls per batch.
- Once per batch, not per line: the access log is on every request's path (issue 15: at most 5 % of
  throughput). A full pipe blocks the lock's holder in write() and the others at the lock: the same
  back-pressure as before, and the consumer gets each batch in one piece.
- Regular files are not locked: their writes are whole already (above), and on NFS a lock is a network round
  trip per batch.

One process (``workers = 1``) takes no lock, as before: whole lines in writes of at most ``PIPE_BUF`` bytes (one
write() when the batch fits, as in most loop iterations), so another program sharing the pipe can't come
between them either; a partial write is finished the same way. A regular file (``2>>sigproxy.log``) gets each
batch in one write() whatever its size, since its writes are whole already (above): a busy loop iteration's
lines pass ``PIPE_BUF`` (ten access lines of about 400 bytes do), and splitting them cost a loop over the lines and
more system calls (issue 15: the access log's budget). Lines are written once: only what a write did
not take is written again.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import select
import stat
from typing import TextIO

__all__ = ["LineSink", "write_all"]

_UTF8 = "utf-8"
_PIPE_BUF = select.PIPE_BUF


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: after a short count the rest, after ``EAGAIN`` (an ``O_NONBLOCK``
    descriptor that is full) once poll() says there is room (as a blocking write would wait). Raises
    ``OSError`` for anything else (``EPIPE``: the reader is gone)."""
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    if written != len(data):
        _finish(fd, memoryview(data)[written:])


def _finish(fd: int, rest: memoryview) -> None:
    poller: select.poll | None = None
    while rest:
        try:
            written = os.write(fd, rest)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            poller.poll()  # POLLERR or POLLHUP too: the next write says what went wrong
            continue
        if written == 0:
            raise OSError(f"log stream took none of {len(rest)} bytes")
        rest = rest[written:]


def _target(stream: TextIO) -> tuple[int | None, tuple[str, str] | None]:
    """(``stream``'s file descriptor, or None for a stream without one: a ``StringIO``, pytest's capture; the
    (encoding, errors) its bytes are written in when that is not UTF-8, else None)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation
        return None, None
    encoding = getattr(stream, "encoding", None) or _UTF8
    if codecs.lookup(encoding).name == _UTF8:
        return fd, None
    return fd, (encoding, getattr(stream, "errors", None) or "strict")


class LineSink:
    """Writes batches of log lines to ``stream`` (module docstring); ``shared``: its file is written by other
    processes of the group too, so each batch is written under a lock unless it is a regular file."""

    __slots__ = ("_fd", "_locked", "_recode", "_regular", "lock_error", "stream")

    def __init__(self, stream: TextIO, *, shared: bool = False) -> None:
        self.stream = stream
        self.lock_error: OSError | None = None
        """Why the batches of a shared stream go unlocked (the stream can't be locked), or None."""
        self._fd, self._recode = _target(stream)
        self._locked = False
        self._regular = False  # a regular file: each batch in one write(), any size (module docstring)
        if self._fd is not None:
            try:
                self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
                if shared and not self._regular:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX)  # can it be locked? (waits while another writes)
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
                    self._locked = True
            except OSError as exc:
                if shared:
                    self.lock_error = exc

    def write(self, lines: list[bytes]) -> None:
        """Write ``lines`` (UTF-8, no newline), each followed by a newline; out of the process when it returns.
        What was written to the stream itself before goes out first; a stream with a file descriptor (stderr) is
        given bytes, in its own encoding, without its text and buffer layers; one without, text (it is the
        process's own: nothing else writes between). Takes ``lines`` over (it appends to it)."""
        lines.append(b"")  # the last line's newline
        fd = self._fd
        if fd is None:
            self.stream.write(b"\n".join(lines).decode(_UTF8))
            self.stream.flush()
            return
        if self._recode is not None:  # stderr in another encoding (a Latin-1 locale): as its text layer would
            lines = [line.decode(_UTF8).encode(*self._recode) for line in lines]
        data = b"\n".join(lines)
        if self._locked:
            self._write_locked(fd, data, lines)
        elif len(data) <= _PIPE_BUF or self._regular:  # one write, no loop, no further call
            self.stream.flush()
            write_all(fd, data)
        else:
            self._write_unlocked(fd, data, lines)

    def _write_locked(self, fd: int, data: bytes, lines: list[bytes]) -> None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError:  # locking stopped working: lines as one process writes them rather than none
            self._write_unlocked(fd, data, lines)
            return
        try:
            self.stream.flush()
            write_all(fd, data)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _write_unlocked(self, fd: int, data: bytes, lines: list[bytes]) -> None:
        """Whole lines in writes of at most ``PIPE_BUF`` bytes when the lines allow (a longer line alone)."""
        self.stream.flush()
        if len(data) <= _PIPE_BUF:  # most loop iterations: one write, no loop
            write_all(fd, data)
            return
        chunk: list[bytes] = []
        size = 0
        for line in lines[:-1]:
            if chunk and size + len(line) + 1 > _PIPE_BUF:
                chunk.append(b"")
                write_all(fd, b"\n".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        chunk.append(b"")
        write_all(fd, b"\n".join(chunk))

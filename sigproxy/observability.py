"""Logging set-up: JSON lines when stderr is not a terminal, readable text on one; the access log's fast path.

Owns: :func:`setup_logging`, the only code that configures logging; the access-log format; :func:`log_access`.
Must not: run at import time; log a secret (callers pass names, never values).

Cost. One access line per request used to go through the whole :mod:`logging` machinery (a ``LogRecord`` with
its caller lookup, the handler lock, the formatter, then a ``write`` and a ``flush`` system call per line): about
a fifth of the small-request throughput on one core (issue 15). Now:

- the root handler (:class:`_BufferedStreamHandler`) appends formatted lines to a list and writes them once per
  event-loop iteration (``loop.call_soon``), whole lines in ``write`` calls of at most ``PIPE_BUF`` bytes
  (atomic on a pipe, so processes sharing stderr never interleave mid-line); at once for WARNING and above,
  from a thread without an event loop, past 64 KiB, at ``flush()`` and at exit (``logging.shutdown``,
  registered by :mod:`logging` with ``atexit``, runs after a SIGTERM drain and after an unhandled exception).
  A process killed outright (SIGKILL, a fatal signal) loses at most the lines of its last loop iteration.
- :func:`log_access` formats the line straight from the request's fields, without a ``LogRecord``, whenever the
  ``sigproxy.access`` logger is enabled for INFO and its records would reach only that handler (no handler or
  filter of its own or on an ancestor, propagation on). When an operator adds one, it takes the ordinary
  ``logger.info(...)`` path, so ``sigproxy.access`` stays a normal logger to configure or silence
  (``--log-level warning`` turns it off); the line's text is the same either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import select
import sys
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

import orjson

__all__ = ["log_access", "setup_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Past this much text pending, write even inside one loop iteration: bounds memory under a burst.
_FLUSH_CHARS = 64 * 1024
# One write() of whole lines at most this long: a pipe writes up to PIPE_BUF bytes atomically, so lines of
# processes sharing one stderr (workers) never interleave mid-line. Counted in characters: JSON lines are ASCII.
_ATOMIC_WRITE = select.PIPE_BUF


# The standard library's encoder, compact like orjson's output and ASCII only: for what orjson can't encode (an
# integer past 64 bits) and for lines with non-ASCII text.
_std_dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS  # both to default=str, as json
# A line's milliseconds and UTC offset after its second, by millisecond.
_MILLIS = [f".{ms:03d}+00:00" for ms in range(1000)]


class _JsonFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self._fields = dict(fields or {})
        self._second: tuple[int, str] = (-1, "")  # (Unix second, its ISO prefix); one attribute: swapped atomically
        self._heads: dict[str, str] = {}  # access_line's start after "ts", by logger name
        self._reserved = frozenset({"ts", "level", "logger", "msg", *self._fields})
        # What follows the message in an access line: the process's fields, then the access fields' opening comma.
        own = orjson.dumps(self._fields, default=str, option=_ORJSON_OPTIONS).decode()[1:-1] if self._fields else ""
        self._tail = f",{own}," if own else ","

    def _stamp(self, second: int) -> tuple[int, str]:
        """(``second``, its ISO 8601 UTC form to the second), kept for the lines of that second."""
        cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        self._second = cached
        return cached

    def _line(self, created: float, level: str, name: str, message: str, *, access: dict[str, object] | None,
              exc: str | None = None) -> str:
        """One compact JSON line (``{"ts":"2026-01-01T00:00:00.123+00:00","level":...}``), ASCII only, objects
        JSON has no type for as ``str()``.

        orjson writes it (a fifth of the standard encoder's cost: issue 15's access-log budget). A line with a
        non-ASCII character is written again by the standard encoder, which escapes it as ``\\uXXXX``: then
        U+2028, U+2029 and the like can't break a line for readers that split on them, and a line's length in
        characters is its length in bytes (whole lines up to ``PIPE_BUF`` per write). Kept in one function: this
        runs once per request."""
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._stamp(second)
        entry: dict[str, object] = {"ts": f"{cached[1]}.{int((created - second) * 1000):03d}+00:00",
                                    "level": level, "logger": name, "msg": message}
        if self._fields:
            entry.update(self._fields)
        if access is not None:
            entry.update(access)
        if exc is not None:
            entry["exc"] = exc
        try:
            line = orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int past 64 bits
            return _std_dumps(entry)
        return line if line.isascii() else _std_dumps(entry)

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        return self._line(record.created, record.levelname.lower(), record.name, record.getMessage(),
                          access=access if isinstance(access, dict) else None,
                          exc=self.formatException(record.exc_info) if record.exc_info else None)

    def access_line(self, created: float, name: str, message: str, access: dict[str, object]) -> str | None:
        """The line :meth:`format` makes of an INFO record of logger ``name`` with ``access`` as its fields.

        The same text, spliced from the encoded ``access`` instead of encoding a merged copy of it: this runs once
        per request (issue 15: the access log's budget). When ``access`` reuses a key of the line's own (``ts``,
        ``level``, ``logger``, ``msg``) or of the process's fields, or holds non-ASCII text, the line is made
        as :meth:`format` makes it (its value replaces the other, in place)."""
        if not access.keys().isdisjoint(self._reserved):  # iterates the shorter: the few reserved names
            return self._line(created, "info", name, message, access=access)
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._stamp(second)
        try:
            fields = orjson.dumps(access, default=str, option=_ORJSON_OPTIONS)
            text = orjson.dumps(message)
        except (TypeError, orjson.JSONEncodeError):
            return self._line(created, "info", name, message, access=access)
        if not (fields.isascii() and text.isascii()):
            return self._line(created, "info", name, message, access=access)
        head = self._heads.get(name)
        if head is None:
            head = self._heads[name] = self._head(name)
        millis = _MILLIS[int((created - second) * 1000)]
        rest = fields.decode()[1:]
        tail = self._tail if len(rest) > 1 else self._tail[:-1]  # no access fields: no comma before "}"
        return f"{{\"ts\":\"{cached[1]}{millis}\",{head}{text.decode()}{tail}{rest}"

    def _head(self, name: str) -> str:
        """``"level":"info","logger":NAME,"msg":`` as orjson writes it."""
        return f"\"level\":\"info\",\"logger\":{orjson.dumps(name).decode()},\"msg\":"


_PLAIN = re.compile(r"[!#-<>-\[\]-~]*")  # printable ASCII but space, '"', '=' and '\\'


def _text_value(value: object) -> str:
    """An access-line value as ``key=value`` text: JSON-quoted unless plain, so a client-chosen value (an end
    user's id, a host) can't add fields (``alice status=200``) or lines (U+2028, escaped as ``\\u2028``)."""
    text = str(value)
    return text if text and _PLAIN.fullmatch(text) else json.dumps(text)


def _text_fields(access: dict[str, object]) -> str:
    """``key=value`` for each field but those in the message; a field with no value (``None``: a body of unknown
    length) is left out, as a reader would expect of a text line (the JSON line keeps it as ``null``)."""
    return " ".join(f"{k}={_text_value(v)}" for k, v in access.items()
                    if v is not None and k not in ("method", "host"))


class _TextFormatter(logging.Formatter):
    def __init__(self, fmt: str, fields: Mapping[str, object] | None = None) -> None:
        super().__init__(fmt)
        self._fields = " ".join(f"{k}={_text_value(v)}" for k, v in (fields or {}).items())

    def _tail(self, access: dict[str, object] | None) -> str:
        """What follows the message: the access fields, then the process's own (``worker``)."""
        tail = f" {_text_fields(access)}" if access is not None else ""
        return f"{tail} {self._fields}" if self._fields else tail

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        return super().format(record) + self._tail(access if isinstance(access, dict) else None)

    def access_line(self, created: float, name: str, message: str, access: dict[str, object]) -> str | None:
        """As :meth:`_JsonFormatter.access_line`; None unless this formatter uses the default text format."""
        if self._fmt != _TEXT_FORMAT or self.datefmt is not None or self.default_msec_format is None:
            return None
        asctime = self.default_msec_format % (time.strftime(self.default_time_format, self.converter(created)),
                                              int((created - int(created)) * 1000))
        return f"{asctime} INFO {name} {message}{self._tail(access)}"


class _BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes once per event-loop iteration instead of once per line (module docstring).

    Lines keep their order: every line, whatever its level or thread, goes through the one pending queue. Adding
    a line takes no lock (appending to a deque is atomic; a lock's acquire and release cost an access line an
    eighth of its instructions, issue 15); writing does: :meth:`_write` takes the handler's lock, then pops and
    writes the lines queued so far, so two threads writing at once can't reorder them."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: deque[str] = deque()
        self._chars = 0  # characters queued, about (counted without the lock): when to write early
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a flush is queued on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's contract: a bad record is reported on stderr, never raised
            self.handleError(record)
            return
        self.add(line, urgent=record.levelno >= logging.WARNING)

    def add(self, line: str, *, urgent: bool = False) -> None:
        """Queue ``line`` (no newline); written now when ``urgent``, off the event loop or past the size bound,
        otherwise at the end of this loop iteration."""
        self._pending.append(line)
        self._chars += len(line) + 1
        if urgent or self._chars >= _FLUSH_CHARS:
            self._write()
            return
        loop = asyncio._get_running_loop()
        if loop is None:
            self._write()
        elif self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self.flush)

    def _write(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            pending = self._pending
            self._chars = 0
            lines = [pending.popleft() for _ in range(len(pending))]  # a line queued meanwhile waits its turn
            try:
                if lines:
                    self._write_atomic(lines)
                self.stream.flush()
            except Exception:  # as StreamHandler.emit: reported on stderr; the proxy keeps serving
                self.handleError(logging.makeLogRecord({"msg": "%d log lines could not be written",
                                                        "args": (len(lines),)}))

    def _write_atomic(self, lines: list[str]) -> None:
        """``lines`` in writes of whole lines, each at most ``_ATOMIC_WRITE`` characters when the lines allow."""
        if sum(map(len, lines)) + len(lines) <= _ATOMIC_WRITE:  # most loop iterations: one write, no loop
            self.stream.write("\n".join(lines) + "\n")
            return
        chunk: list[str] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) + 1 > _ATOMIC_WRITE:
                self.stream.write("\n".join(chunk) + "\n")
                self.stream.flush()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        if chunk:
            self.stream.write("\n".join(chunk) + "\n")

    def flush(self) -> None:
        """Write everything pending and flush the stream."""
        self._scheduled = None
        self._write()


def _only_handler(logger: logging.Logger) -> _BufferedStreamHandler | None:
    """Our root handler, when an INFO record of ``logger`` would reach it and nothing else would act on it."""
    if logger.filters or logger.disabled:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            handlers = current.handlers
            if current.parent is None and len(handlers) == 1:  # the root
                handler = handlers[0]
                if isinstance(handler, _BufferedStreamHandler) and not handler.filters \
                        and handler.level <= logging.INFO:
                    return handler
            return None
        if not current.propagate:
            return None
        current = current.parent
    return None


def log_access(logger: logging.Logger, access: dict[str, object]) -> None:
    """One access line on ``logger`` at INFO: message ``METHOD HOST STATUS`` (from ``access``), the fields of
    ``access`` after it (values are converted with ``str`` where JSON has no type for them).

    Same output as ``logger.info("%s %s %s", method, host, status, extra={"access": access})``, cheaper when
    nothing but :func:`setup_logging`'s handler would see the record. Never raises for a write error (reported
    on stderr as logging does)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    method, host, status = access.get("method"), access.get("host"), access.get("status")
    handler = _only_handler(logger)
    formatter = handler.formatter if handler is not None else None
    if handler is not None and isinstance(formatter, (_JsonFormatter, _TextFormatter)):
        line = formatter.access_line(time.time(), logger.name, f"{method} {host} {status}", access)
        if line is not None:
            handler.add(line)
            return
    logger.info("%s %s %s", method, host, status, extra={"access": access})


def setup_logging(level: str = "info", fmt: Literal["json", "text", "auto"] = "auto",
                  fields: Mapping[str, object] | None = None) -> None:
    """Configure the root logger once, writing to stderr (buffered per event-loop iteration, see above).
    ``fields`` go into every line (a worker of ``workers = N`` adds ``worker``: its number, 0 to N-1)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = _BufferedStreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(fields) if fmt == "json" else _TextFormatter(_TEXT_FORMAT, fields))
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that could echo request details stays at WARNING.
    # alembic's migration steps ("Context impl SQLiteImpl.", "Running upgrade ...") are routine at each start.
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

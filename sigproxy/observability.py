"""Logging set-up: JSON lines when stderr is not a terminal, readable text on one; the access log's fast path.

Owns: :func:`setup_logging`, the only code that configures logging; the checks behind the access log's fast
path (:func:`~sigproxy.accesslog.log_access`, compiled, re-exported here). The lines' text is
:mod:`sigproxy.jsonlines`' (compiled) and this module's text formatter's.
Must not: run at import time; log a secret (callers pass names, never values).

Cost. One access line per request used to go through the whole :mod:`logging` machinery (a ``LogRecord`` with
its caller lookup, the handler lock, the formatter, then a ``write`` and a ``flush`` system call per line): about
a fifth of the small-request throughput on one core (issue 15). Now:

- the root handler (:class:`_BufferedStreamHandler`) queues lines (UTF-8 bytes, or a JSON access line's
  fields to be made into one when written) and writes them once per
  event-loop iteration (``loop.call_soon``) through :class:`~sigproxy.logsink.LineSink`: whole lines, each
  exactly once, also when the processes of a ``workers = N`` group share stderr (a lock per batch: why is that
  module's docstring) and when the pipe is full or ``O_NONBLOCK``; at once for WARNING and above, from a
  thread without an event loop, past 128 lines pending, at ``flush()`` and at exit (``logging.shutdown``,
  registered by :mod:`logging` with ``atexit``, runs after a SIGTERM drain and after an unhandled exception).
  A process killed outright (SIGKILL, a fatal signal) loses at most the lines of its last loop iteration.
- :func:`log_access` queues the line straight from the request's fields, without a ``LogRecord``, whenever the
  ``sigproxy.access`` logger is enabled for INFO and its records would reach only that handler (no handler or
  filter of its own or on an ancestor, propagation on). When an operator adds one, it takes the ordinary
  ``logger.info(...)`` path, so ``sigproxy.access`` stays a normal logger to configure or silence
  (``--log-level warning`` turns it off); the line's text is the same either way. Those checks run once per
  loop iteration (:data:`sigproxy.accesslog.ROUTING`): a change to logging's configuration applies from the
  next iteration on.
- An access line is made as bytes (:meth:`~sigproxy.jsonlines.JsonLines.access_line`, compiled), its
  message's JSON kept per (method, host, status), and the lines of an iteration go to stderr's file descriptor
  in one ``os.write`` when they fit: no decoding, no text or buffer layer. A JSON line is queued as the
  request's fields (:class:`~sigproxy.accesslog.DeferredLine`) and made when the iteration's lines are written,
  one after another, while orjson's code is in the CPU's instruction cache (:mod:`sigproxy.accesslog` says why).

Measured with bench/instructions.py (issue 15): 28-30k instructions a line before, 21-22k with the above, 15.8k
with the line made in compiled code (:mod:`sigproxy.jsonlines`), 15.2k with the fast path compiled too
(:mod:`sigproxy.accesslog`), 10-11k later (``info`` over ``warning`` at 64 connections; orjson, run by valgrind
without its SIMD paths, is 6k of it). By the wall clock the line's instruction- and data-cache misses cost as
much again, until lines were made one after another when written: ``info`` over ``warning`` then went from
+8-10 % to +2.5-4.6 % CPU per request (``bench/small_get.py`` and alternated series; ``--cache`` in
bench/instructions.py counts the misses).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import select
import sys
import time

# The running loop or None, as asyncio's own code asks (get_running_loop raises without one).
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import Mapping
from typing import Literal, TextIO

from .accesslog import FLUSH_LINES, ROUTING, AccessRoute, DeferredLine, log_access, log_record, made
from .jsonlines import JsonLines
from .logsink import LineSink

__all__ = ["log_access", "setup_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


# Where access lines are kept and written as bytes: UTF-8 (the encoding of a stream without one, and the one a
# stream's buffer takes lines in as they are).
_UTF8 = "utf-8"


class _JsonFormatter(logging.Formatter):
    """JSON lines (:class:`~sigproxy.jsonlines.JsonLines`: the process's ``fields`` in each)."""

    def __init__(self, fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.lines = JsonLines(fields)
        self.access_line = self.lines.access_line

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        return self.lines.line(record.created, record.levelname.lower(), record.name, record.getMessage(),
                               access=access if isinstance(access, dict) else None,
                               exc=self.formatException(record.exc_info) if record.exc_info else None)


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


# What would break a text line or drive the terminal it is read on: C0 and C1 controls but tab, DEL, and the
# line and paragraph separators str.splitlines() also splits at.
_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    """``text`` with each control character written as its Python escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _UNSAFE_TEXT.sub(lambda m: ascii(m.group())[1:-1], text)


def _text_access_message(access: dict[str, object]) -> str:
    """:func:`access_message` for a text line: the host quoted as a field value is (``_text_value``), so a
    client-chosen ``Host`` can't add fields or lines there either."""
    return f"{access.get('method')} {_text_value(access.get('host'))} {access.get('status')}"


class _TextFormatter(logging.Formatter):
    """``asctime LEVEL logger message`` and then ``key=value`` fields. A message can carry what a client sent
    (a host, the start of a refused request): its control characters are escaped, so it stays one line and
    can't move the reader's terminal (a traceback, added after it, keeps its lines)."""

    def __init__(self, fmt: str, fields: Mapping[str, object] | None = None) -> None:
        super().__init__(fmt)
        self._fields = " ".join(f"{k}={_text_value(v)}" for k, v in (fields or {}).items())

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escape_controls(record.message)
        return super().formatMessage(record)

    def _tail(self, access: dict[str, object] | None) -> str:
        """What follows the message: the access fields, then the process's own (``worker``)."""
        tail = f" {_text_fields(access)}" if access is not None else ""
        return f"{tail} {self._fields}" if self._fields else tail

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if not isinstance(access, dict):
            return super().format(record) + self._tail(None)
        # An access record: its message from the fields, quoted (another handler may see the record: a copy).
        record = copy.copy(record)
        record.msg, record.args = _text_access_message(access), None
        return super().format(record) + self._tail(access)

    def access_line(self, created: float, name: str, access: dict[str, object]) -> bytes | None:
        """As :meth:`sigproxy.jsonlines.JsonLines.access_line` (encoded by :func:`encode_line`); None unless this
        formatter uses the default text format."""
        if self._fmt != _TEXT_FORMAT or self.datefmt is not None or self.default_msec_format is None:
            return None
        asctime = self.default_msec_format % (time.strftime(self.default_time_format, self.converter(created)),
                                              int((created - int(created)) * 1000))
        return encode_line(f"{asctime} INFO {name} {_text_access_message(access)}{self._tail(access)}")


class _BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes once per event-loop iteration instead of once per line (module docstring).

    Lines are kept as UTF-8 bytes (a JSON access line as its fields, :class:`~sigproxy.accesslog.DeferredLine`,
    made into bytes when written; others are encoded as the standard streams do it, ``backslashreplace``) and go
    to the stream's file descriptor as they are (in the stream's encoding when it is another); a stream without
    one (a ``StringIO``, pytest's capture) is given their text.

    Lines keep their order: every line, whatever its level or thread, goes through the one pending queue. Adding
    a line takes no lock (appending to a deque is atomic; a lock's acquire and release cost an access line an
    eighth of its instructions, issue 15); writing does: :meth:`_write` takes the handler's lock, then pops and
    writes the lines queued so far, so two threads writing at once can't reorder them.

    ``shared``: other processes write to the same stream (a ``workers = N`` group's supervisor and workers);
    each batch is then written under a lock (:mod:`sigproxy.logsink`)."""

    def __init__(self, stream: TextIO, *, shared: bool = False) -> None:
        super().__init__(stream)
        self._pending: deque[bytes | DeferredLine] = deque()
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a flush is queued on
        self._shared = shared
        self.sink = LineSink(stream, shared=shared)  # made again when setStream() changes the stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's contract: a bad record is reported on stderr, never raised
            self.handleError(record)
            return
        self.add(encode_line(line), urgent=record.levelno >= logging.WARNING)

    def add(self, line: bytes | DeferredLine, *, urgent: bool = False) -> None:
        """Queue ``line`` (UTF-8, no newline; or an access line to be made when written); written now when
        ``urgent``, off the event loop or past ``FLUSH_LINES`` pending, otherwise at the end of this loop
        iteration."""
        pending = self._pending
        pending.append(line)
        if urgent or len(pending) >= FLUSH_LINES:
            self._write()
            return
        loop = _get_running_loop()
        if loop is None:
            self._write()
        elif self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self.flush)

    def _write(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            lines = made(self._pending, self._unmade)  # a line queued meanwhile waits its turn
            count = len(lines)  # before the sink appends the last newline's entry
            try:
                if lines:
                    sink = self.sink
                    if sink.stream is not self.stream:
                        sink = self.sink = LineSink(self.stream, shared=self._shared)
                    sink.write(lines)
                else:
                    self.stream.flush()
            except Exception:  # as StreamHandler.emit: reported on stderr; the proxy keeps serving
                self.handleError(logging.makeLogRecord({"msg": "%d log lines could not be written",
                                                        "args": (count,)}))

    def _unmade(self) -> None:
        """An access line could not be made as it was (called in the ``except`` block): reported as a record
        that can't be formatted is (its line is written with the fields JSON has no type for replaced)."""
        with contextlib.suppress(Exception):  # stderr itself unusable (closed): the batch is still to be written
            self.handleError(logging.makeLogRecord({"msg": "an access line could not be made as logged"}))

    def flush(self) -> None:
        """Write everything pending and flush the stream; from now on, :func:`log_access` checks logging's
        configuration again."""
        ROUTING.route = None
        self._scheduled = None
        self._write()


def encode_line(text: str) -> bytes:
    """A log line's text as the handler keeps it: UTF-8, a character UTF-8 can't hold (a lone surrogate, as a
    header decoded with ``surrogateescape`` has) as ``\\udcXX``, as Python's stderr writes it."""
    return text.encode(_UTF8, "backslashreplace")


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


def _log_access_checked(logger: logging.Logger, access: dict[str, object]) -> None:
    """:func:`~sigproxy.accesslog.log_access` when no route is trusted: logging's configuration checked. When
    only our root handler would see the line, it is queued straight (a JSON line as its fields, made when
    written), and that route trusted until the
    handler's flush, queued for the end of this loop iteration, clears it (or a loop other than the one that
    flush is queued on logs): logging's configuration is read once per iteration instead of once per line
    (issue 15: a tenth of a line's cost); a handler, filter or level an operator sets applies from the next
    iteration on. Otherwise the line is an ordinary record."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _only_handler(logger)
    formatter = handler.formatter if handler is not None else None
    if handler is not None and isinstance(formatter, (_JsonFormatter, _TextFormatter)):
        # A JSON line is made when written, with the iteration's others (sigproxy.accesslog says why).
        line = DeferredLine(formatter.lines, time.time(), logger.name, access) \
            if isinstance(formatter, _JsonFormatter) else formatter.access_line(time.time(), logger.name, access)
        if line is not None:
            handler.add(line)
            loop = handler._scheduled
            if loop is not None:  # in a loop iteration, whose end clears it
                ROUTING.route = AccessRoute(logger, handler, formatter.access_line, pending=handler._pending,
                                            loop=loop,
                                            lines=formatter.lines if isinstance(formatter, _JsonFormatter) else None)
            return
    log_record(logger, access)


ROUTING.slow = _log_access_checked


def setup_logging(level: str = "info", fmt: Literal["json", "text", "auto"] = "auto",
                  fields: Mapping[str, object] | None = None, *, shared: bool = False) -> None:
    """Configure the root logger once, writing to stderr (buffered per event-loop iteration, see above).
    ``fields`` go into every line (a worker of ``workers = N`` adds ``worker``: its number, 0 to N-1).
    ``shared``: this process is one of a ``workers = N`` group, whose processes all write to this stderr."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = _BufferedStreamHandler(sys.stderr, shared=shared)
    handler.setFormatter(_JsonFormatter(fields) if fmt == "json" else _TextFormatter(_TEXT_FORMAT, fields))
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
    ROUTING.route = None
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that could echo request details stays at WARNING.
    # alembic's migration steps ("Context impl SQLiteImpl.", "Running upgrade ...") are routine at each start.
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if handler.sink.lock_error is not None:
        logging.getLogger(__name__).warning(
            "stderr can't be locked (%s): log lines longer than %d bytes from the processes of this group may "
            "interleave", handler.sink.lock_error.strerror or handler.sink.lock_error, select.PIPE_BUF)

"""The text of a JSON log line, and an access line's parts: the per-request half of :mod:`sigproxy.observability`.

Owns: :class:`JsonLines` (a JSON line's text, and an access line's bytes made without a ``LogRecord``), the
access-log format's parts (:func:`audit_path`: what of a request's path it shows; :func:`access_message`;
:func:`access_millis`: its durations),
request ids (:class:`RequestIds`).
Must not: configure logging or write anything (:mod:`sigproxy.observability` does); log a secret.

Split from :mod:`sigproxy.observability` to be compiled with mypyc (:mod:`sigproxy.compiled`): an access line
runs here once per request, and was the largest part of a request still run by the interpreter (about 240
bytecodes); that module's ``logging.StreamHandler`` subclass can't be compiled (the compiled class crashed in
``logging``'s weak-reference callback when a handler is dropped), so the line's making moved out of it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import orjson

if TYPE_CHECKING:
    from .routing import Target

__all__ = ["JsonLines", "RequestIds", "access_message", "access_millis", "audit_path"]

# The standard library's encoder, compact like orjson's output and ASCII only: for what orjson can't encode (an
# integer past 64 bits) and for lines with non-ASCII text.
_std_dumps: Final = json.JSONEncoder(default=str, separators=(",", ":")).encode
# Both to default=str, as json does.
_ORJSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson's encoder, looked up once: compiled, ``orjson.dumps`` is a module attribute look-up at every call.
_dumps: Final = orjson.dumps
# A line's milliseconds and UTC offset after its second, by millisecond, with the quote and comma after them.
_MILLIS: Final = [f".{ms:03d}+00:00\",".encode() for ms in range(1000)]
# Access-line messages kept encoded, at most (a few hundred bytes each).
_MESSAGES_KEPT: Final = 1024


class JsonLines:
    """Compact JSON lines (``{"ts":"2026-01-01T00:00:00.123+00:00","level":...,"logger":...,"msg":...}``, then
    the process's ``fields`` and a record's own), ASCII only, objects JSON has no type for as ``str()``."""

    def __init__(self, fields: Mapping[str, object] | None = None) -> None:
        self.fields = dict(fields or {})
        # (Unix second, its ISO form, an access line's start to it: b'{"ts":"2026-01-01T00:00:00'); one attribute:
        # swapped atomically.
        self._second: tuple[int, str, bytes] = (-1, "", b"")
        self._heads: dict[str, bytes] = {}  # access_line's part after "ts", by logger name
        # An access line's message as JSON, by (method, host, status): at most _MESSAGES_KEPT (the host is the
        # client's to choose), then started again.
        self._messages: dict[tuple[object, object, object], bytes] = {}
        self._own = frozenset(self.fields)  # the process's field names: an access field of one is set aside
        # What follows the message in an access line: the process's fields, then the access fields' opening comma.
        own = orjson.dumps(self.fields, default=str, option=_ORJSON_OPTIONS)[1:-1] if self.fields else b""
        self._tail = b"," + own + b"," if own else b","

    def _stamp(self, second: int) -> tuple[int, str, bytes]:
        """(``second``, its ISO 8601 UTC form to the second, an access line's start: ``{"ts":"`` and that form),
        kept for the lines of that second."""
        iso = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = (second, iso, f'{{"ts":"{iso}'.encode())
        self._second = cached
        return cached

    def line(self, created: float, level: str, name: str, message: str, *, access: dict[str, object] | None,
             exc: str | None = None) -> str:
        """One line: at ``created`` (Unix time, seconds), ``level`` (lower case), logger ``name``, ``message``,
        then the process's fields, ``access``'s (a field of the same name replaces an earlier one, in place) and
        ``exc`` (a formatted traceback).

        orjson writes it (a fifth of the standard encoder's cost: issue 15's access-log budget). A line with a
        non-ASCII character is written again by the standard encoder, which escapes it as ``\\uXXXX``: then
        U+2028, U+2029 and the like can't break a line for readers that split on them, and a line's length in
        characters is its length in bytes (whole lines up to ``PIPE_BUF`` per write)."""
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._stamp(second)
        entry: dict[str, object] = {"ts": f"{cached[1]}.{int((created - second) * 1000):03d}+00:00",
                                    "level": level, "logger": name, "msg": message}
        if self.fields:
            entry.update(self.fields)
        if access is not None:
            entry.update(access)
        if exc is not None:
            entry["exc"] = exc
        try:
            line: str = _dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int past 64 bits
            return str(_std_dumps(entry))
        return line if line.isascii() else str(_std_dumps(entry))

    def access_line(self, created: float, name: str, access: dict[str, object]) -> bytes:
        """The line :meth:`line` makes of an INFO record of logger ``name`` with ``access`` as its fields and
        :func:`access_message` as its message, encoded (ASCII).

        The same text, spliced as bytes from the encoded ``access`` and the message's kept encoding instead of
        encoding a merged copy of them and decoding it: this runs once per request (issue 15: the access log's
        budget). When ``access`` reuses a key of the line's own (``ts``, ``level``, ``logger``, ``msg``) or of
        the process's fields, or holds non-ASCII text, the line is made by :meth:`line`."""
        if "ts" in access or "level" in access or "logger" in access or "msg" in access \
                or (self._own and not access.keys().isdisjoint(self._own)):  # iterates the few own names
            return self._whole(created, name, access)
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._stamp(second)
        try:
            fields: bytes = _dumps(access, default=str, option=_ORJSON_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return self._whole(created, name, access)
        head = self._heads.get(name)
        if head is None:
            head = self._heads[name] = self._head(name)
        # No access fields: no comma before "}".
        tail = self._tail if len(fields) > 2 else self._tail[:-1]
        key = (access.get("method"), access.get("host"), access.get("status"))
        try:
            text = self._messages.get(key)
        except TypeError:  # a part that can't be a key: encoded for this line alone
            text = _dumps(access_message(access))
        if text is None:
            text = self._message(key)
        line = b"".join((cached[2], _MILLIS[int((created - second) * 1000)], head, text, tail, fields[1:]))
        return line if line.isascii() else self._whole(created, name, access)

    def _whole(self, created: float, name: str, access: dict[str, object]) -> bytes:
        return self.line(created, "info", name, access_message(access), access=access).encode()

    def _message(self, key: tuple[object, object, object]) -> bytes:
        """The message of ``key`` (method, host, status) as JSON, kept."""
        if len(self._messages) >= _MESSAGES_KEPT:
            self._messages = {}
        text: bytes = _dumps("{} {} {}".format(*key))
        self._messages[key] = text
        return text

    @staticmethod
    def _head(name: str) -> bytes:
        """``"level":"info","logger":NAME,"msg":`` as orjson writes it."""
        return b'"level":"info","logger":' + orjson.dumps(name) + b',"msg":'


def audit_path(target: Target) -> str:
    """The path with the query's keys but not its values (they may carry tokens or personal data)."""
    if not target.query:
        return target.path
    keys = [part.partition("=")[0] for part in target.query.split("&") if part]
    return f"{target.path}?{'&'.join(keys)}"


class RequestIds:
    """Request ids: a random per-process prefix and a counter in hex (a uuid4 per request costs a syscall).
    Used from the event loop's thread only."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4) + "-"
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return self._prefix + hex(self._count)[2:]  # hex(): half of a format spec's cost


def access_message(access: dict[str, object]) -> str:
    """An access line's message: ``METHOD HOST STATUS``, from ``access``."""
    return f"{access.get('method')} {access.get('host')} {access.get('status')}"


def access_millis(seconds: float) -> float:
    """``seconds`` (not negative) in milliseconds to two decimals (an access line's ``ms``), the nearest float to
    them: what ``round(seconds * 1000, 2)`` gives but at an exact tie (none in a million random durations), at a
    third of its cost (it goes through a decimal string; issue 15: runs per request)."""
    return int(seconds * 100_000 + 0.5) / 100

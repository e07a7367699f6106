"""The access log's fast path: a request's access line queued straight for the root handler.

Owns: :func:`log_access`, the one way a request's access line is logged, :data:`ROUTING` (where lines may go
straight for the rest of the event-loop iteration) and :func:`made` (the lines a handler writes, JSON access lines
made then, in one batch). The checks that decide it -- nothing but
:func:`~sigproxy.observability.setup_logging`'s handler would see the line -- are
:mod:`sigproxy.observability`'s, which registers them here as the slow path (:attr:`Routing.slow`); the line's
text is :mod:`sigproxy.jsonlines`'.
Must not: configure logging, or write anything itself.

Compiled (:mod:`sigproxy.compiled`): it runs once per request, and as interpreted code it was a fifth of what an
access line costs (issue 15).

Why a JSON access line is made when written, not when logged (issue 15, the access log's budget): making one
runs about 20 KB of machine code (orjson's serializer and the line's splicing), and between two requests' lines
the rest of a request's path (over half a megabyte of code) has pushed it out of the CPU's 32 KB instruction
cache, so each line fetched it again: ``info`` over ``warning`` was 311 instruction-cache and 283 data-cache
read misses a request (``bench/instructions.py --cache``), costing as much as the line's 11 k instructions. Made
one after another when the loop iteration's lines are written, the code stays in the cache from the second line
on: 12 and 40 misses a line, and the access log's cost by the wall clock about halved.
"""

from __future__ import annotations

import logging
import time
from asyncio import AbstractEventLoop
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from .jsonlines import JsonLines

__all__ = ["FLUSH_LINES", "ROUTING", "AccessRoute", "DeferredLine", "Routing", "log_access", "log_record", "made"]

FLUSH_LINES: Final = 128
"""Past this many lines pending, a handler writes even inside one loop iteration: bounds memory under a burst."""

# The running loop or None, as asyncio's own code asks (get_running_loop raises without one).
_running_loop: Final = _get_running_loop
# Looked up once: compiled, ``time.time`` is a module attribute look-up at every call.
_now: Final = time.time

class DeferredLine:
    """An access line queued to be made when it is written (module docstring): ``lines``'
    :meth:`~sigproxy.jsonlines.JsonLines.access_line` of ``created`` (Unix time, s), logger ``name`` and
    ``access``, which is the line's from then on (not changed after :func:`log_access`)."""

    def __init__(self, lines: JsonLines, created: float, name: str, access: dict[str, object]) -> None:
        self.lines: Final = lines
        self.created: Final = created
        self.name: Final = name
        self.access: Final = access


class AccessRoute:
    """Access lines of ``logger`` go straight to ``handler`` (sigproxy.observability's buffered root handler:
    its ``pending`` lines, written by its ``_write``), made by ``make`` (its formatter's ``access_line``) or, when
    that is ``lines``' (a :class:`~sigproxy.jsonlines.JsonLines`), queued as a :class:`DeferredLine` for ``lines``
    to make when written, while ``loop`` runs the handler's
    flush queued on it (the handler's ``_scheduled``): what the route needs (the logger's ``name`` too) is kept
    here, in C fields, not looked up on the handler's or the logger's instance dictionary per line (issue 15)."""

    def __init__(self, logger: logging.Logger, handler: Any,
                 make: Callable[[float, str, dict[str, object]], bytes | None], *,
                 pending: deque[bytes | DeferredLine],
                 loop: AbstractEventLoop, lines: JsonLines | None = None) -> None:
        self.logger: Final = logger
        self.name: Final = logger.name  # a Logger's attribute, looked up per line otherwise
        self.handler: Final = handler
        self.make: Final = make
        self.pending: Final = pending
        self.loop: Final = loop
        self.lines: Final = lines


def log_record(logger: logging.Logger, access: dict[str, object]) -> None:
    """The access line as an ordinary record of ``logger`` at INFO: message ``METHOD HOST STATUS``, the fields in
    ``extra["access"]`` (what the formatters write after the message)."""
    logger.info("%s %s %s", access.get("method"), access.get("host"), access.get("status"), extra={"access": access})


class Routing:
    """Where access lines go now: ``route``, trusted until the handler's flush (the end of the loop iteration)
    clears it; otherwise ``slow`` (sigproxy.observability's checks, which set ``route`` again)."""

    def __init__(self) -> None:
        self.route: AccessRoute | None = None
        self.slow: Callable[[logging.Logger, dict[str, object]], None] = log_record


ROUTING: Final = Routing()


def log_access(logger: logging.Logger, access: dict[str, object]) -> None:
    """One access line on ``logger`` at INFO: message ``METHOD HOST STATUS`` (from ``access``), the fields of
    ``access`` after it (values are converted with ``str`` where JSON has no type for them). ``access`` is the
    line's from then on: a JSON line may be made later in the loop iteration, from the dict as it is then.

    Same output as :func:`log_record`, cheaper when nothing but
    :func:`~sigproxy.observability.setup_logging`'s handler would see the record. Never raises for a write
    error (reported on stderr as logging does)."""
    route = ROUTING.route
    if route is not None and route.logger is logger and route.loop is _running_loop():
        lines = route.lines
        pending = route.pending
        if lines is not None:
            pending.append(DeferredLine(lines, _now(), route.name, access))
        else:
            line = route.make(_now(), route.name, access)
            if line is None:
                ROUTING.slow(logger, access)
                return
            pending.append(line)
        if len(pending) >= FLUSH_LINES:
            route.handler._write()
        return
    ROUTING.slow(logger, access)


def made(pending: deque[bytes | DeferredLine], failed: Callable[[], None]) -> list[bytes]:
    """Everything ``pending`` holds now, taken from it in order, each :class:`DeferredLine` made into its line
    (the module docstring says why here). When making one raises (a field JSON has no type for, whose ``str()``
    raises), ``failed`` is called in the ``except`` block (the handler reports it as
    :meth:`logging.Handler.handleError` does: on stderr, with the traceback) and the line is made with such
    fields as ``<TYPE>``: every request keeps its one line. A line queued meanwhile -- by another thread, or by a
    field's ``str()`` that logs, whose line may then be written first -- stays for the next write."""
    out: list[bytes] = []
    for item in [pending.popleft() for _ in range(len(pending))]:  # all taken before any is made
        if isinstance(item, bytes):
            out.append(item)
            continue
        try:
            out.append(item.lines.access_line(item.created, item.name, item.access))
        except Exception:  # reported by ``failed``, as logging reports a record it can't format
            failed()
            out.append(item.lines.access_line(item.created, item.name, _plain(item.access)))
    return out


def _plain(access: dict[str, object]) -> dict[str, object]:
    """``access`` with each value JSON has no type for (and whose ``str()`` may raise) as ``<TYPE>``."""
    return {k: v if v is None or isinstance(v, (str, int, float)) else f"<{type(v).__name__}>"
            for k, v in access.items()}

"""The access log's fast path: a request's access line queued straight for the root handler.

Owns: :func:`log_access`, the one way a request's access line is logged, and :data:`ROUTING` (where lines may go
straight for the rest of the event-loop iteration). The checks that decide it -- nothing but
:func:`~sigproxy.observability.setup_logging`'s handler would see the line -- are
:mod:`sigproxy.observability`'s, which registers them here as the slow path (:attr:`Routing.slow`); the line's
text is :mod:`sigproxy.jsonlines`'.
Must not: configure logging, or write anything itself.

Compiled (:mod:`sigproxy.compiled`): it runs once per request, and as interpreted code it was a fifth of what an
access line costs (issue 15).
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

__all__ = ["FLUSH_LINES", "ROUTING", "AccessRoute", "Routing", "log_access", "log_record"]

FLUSH_LINES: Final = 128
"""Past this many lines pending, a handler writes even inside one loop iteration: bounds memory under a burst."""

# The running loop or None, as asyncio's own code asks (get_running_loop raises without one).
_running_loop: Final = _get_running_loop
# Looked up once: compiled, ``time.time`` is a module attribute look-up at every call.
_now: Final = time.time

class AccessRoute:
    """Access lines of ``logger`` go straight to ``handler`` (sigproxy.observability's buffered root handler:
    its ``pending`` lines, written by its ``_write``), made by ``make`` (its formatter's ``access_line``; ``lines``
    when that is a :class:`~sigproxy.jsonlines.JsonLines`', called directly), while ``loop`` runs the handler's
    flush queued on it (the handler's ``_scheduled``): what the route needs (the logger's ``name`` too) is kept
    here, in C fields, not looked up on the handler's or the logger's instance dictionary per line (issue 15)."""

    def __init__(self, logger: logging.Logger, handler: Any,
                 make: Callable[[float, str, dict[str, object]], bytes | None], *, pending: deque[bytes],
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
    ``access`` after it (values are converted with ``str`` where JSON has no type for them).

    Same output as :func:`log_record`, cheaper when nothing but
    :func:`~sigproxy.observability.setup_logging`'s handler would see the record. Never raises for a write
    error (reported on stderr as logging does)."""
    route = ROUTING.route
    if route is not None and route.logger is logger and route.loop is _running_loop():
        lines = route.lines
        line = lines.access_line(_now(), route.name, access) if lines is not None \
            else route.make(_now(), route.name, access)
        if line is not None:
            pending = route.pending
            pending.append(line)
            if len(pending) >= FLUSH_LINES:
                route.handler._write()
            return
    ROUTING.slow(logger, access)

"""Which event loop sigproxy runs on, decided here and nowhere else.

Where uvloop imports, :class:`sigproxy.uvtls.Loop`: uvloop for sockets, timers and signals, TLS by CPython's
asyncio protocol (that module says why). Where it does not -- uvloop ships no Windows wheels and is
CPython-only (its PyPI classifiers: POSIX, macOS; ``pyproject.toml`` installs it only there), or an
installation is broken -- asyncio's default loop, which already builds TLS streams with CPython's protocol.
:func:`run` logs which one at INFO (``event loop: ...``), so an operator can tell from the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOP_NAME", "new_event_loop", "run"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_factory: Callable[[], asyncio.AbstractEventLoop]
try:
    from sigproxy.uvtls import Loop as _UvLoop
except ImportError as exc:  # no uvloop here (its own ImportError, or a broken build's)
    if exc.name is not None and exc.name.partition(".")[0] != "uvloop":
        raise  # something else is missing: not this module's to hide
    _factory = asyncio.new_event_loop
    LOOP_NAME = f"asyncio's default loop (uvloop not importable: {exc})"
else:
    _factory = _UvLoop
    LOOP_NAME = "uvloop (TLS by CPython's asyncio protocol)"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind this process runs on (:data:`LOOP_NAME` says which)."""
    return _factory()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run the coroutine ``main`` to completion on a new loop from :func:`new_event_loop` (as
    :func:`asyncio.run`); logs ``event loop: <LOOP_NAME>`` at INFO first."""
    logger.info("event loop: %s", LOOP_NAME)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)

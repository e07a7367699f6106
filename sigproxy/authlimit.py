"""Failed authentication per client address: counted in a fixed window, refused (429) past a limit.

What counts: a wrong or missing proxy token of a connection that has one, and a client signature that does
not verify. A client address that fails ``limit`` times within ``window`` seconds is refused every request
until that window has passed, whatever it sends (so a token can't be guessed at line rate).

Memory is bounded: at most ``max_addresses`` addresses are remembered (the least recently failing forgotten
first), each entry a count and a window start.
Must not: do I/O, import aiohttp.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from cachetools import LRUCache

from .errors import TooManyAuthFailures

__all__ = ["AuthFailures"]


class AuthFailures:
    """Per-address failure counter; shared by every listener and kept across config reloads."""

    __slots__ = ("_clock", "_entries", "_recorded", "limit", "on_record", "window")

    def __init__(self, limit: int, window: float, *, max_addresses: int = 65536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._entries: LRUCache[str, tuple[int, float]] = LRUCache(maxsize=max_addresses)
        self._recorded = False  # whether any failure was ever recorded: until then, check() has nothing to look up
        self.on_record: Callable[[str], None] | None = None
        """Told of each failure recorded here (a worker of ``workers = N`` tells its siblings, so the limit
        counts the group's failures, not one process's)."""

    def configure(self, limit: int, window: float) -> None:
        """New limits (a config reload); counts so far are kept."""
        self.limit, self.window = limit, window

    def _current(self, address: str) -> tuple[int, float] | None:
        entry = self._entries.get(address)
        if entry is not None and self._clock() - entry[1] >= self.window:
            del self._entries[address]
            return None
        return entry

    def check(self, address: str | None) -> None:
        """Raise :class:`TooManyAuthFailures` when ``address`` is over the limit."""
        if address is None or not self._recorded:
            return
        entry = self._current(address)
        if entry is not None and entry[0] >= self.limit:
            retry = max(1, math.ceil(entry[1] + self.window - self._clock()))
            raise TooManyAuthFailures(
                f"too many failed authentication attempts from {address}; retry in {retry} s",
                retry_after=retry,
            )

    def record(self, address: str | None, *, elsewhere: bool = False) -> None:
        """Count a failure from ``address``; ``elsewhere``: one another process of the group saw (not passed on
        to :attr:`on_record` again)."""
        if address is None:
            return
        entry = self._current(address)
        self._entries[address] = (1, self._clock()) if entry is None else (entry[0] + 1, entry[1])
        self._recorded = True
        if self.on_record is not None and not elsewhere:
            self.on_record(address)

"""The sd_notify protocol, spoken directly: datagrams to ``$NOTIFY_SOCKET`` telling systemd how the service is.

Owns: reading ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``; one non-blocking ``AF_UNIX`` datagram
socket per :class:`Notifier`; the messages ``READY=1``, ``RELOADING=1`` (with ``MONOTONIC_USEC``),
``STOPPING=1``, ``STATUS=`` and ``WATCHDOG=1``; and the watchdog loop, which pings from the event loop so a
blocked loop stops the pings and systemd restarts the service.
Must not: link libsystemd, raise (a lost notification is logged at debug, never fatal), decide *when* the
service is ready (the caller knows), change the environment, or hold module-level state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one notify socket; every method is a no-op when not under systemd."""

    __slots__ = ("_address", "_sock", "watchdog_interval")

    watchdog_interval: float | None
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or ``None`` when no watchdog is asked for."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """``address``: a filesystem path, or an abstract name starting with ``"\\0"``; ``None`` disables."""
        self._address = address
        self._sock: socket.socket | None = None
        self.watchdog_interval = watchdog_usec / 2 / 1e6 if address and watchdog_usec else None
        if address:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as exc:
                logger.debug("sd_notify: cannot create a socket: %s", exc)
                self.watchdog_interval = None
                return
            sock.setblocking(False)
            self._sock = sock

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).

        The watchdog is honoured when ``WATCHDOG_USEC`` is a positive integer and ``WATCHDOG_PID`` is absent
        or names this process (a child that inherited the environment must not ping for its parent).
        """
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | None = None
        if raw.startswith("@"):
            address = "\0" + raw[1:]
        elif raw.startswith("/"):
            address = raw
        elif raw:
            logger.debug("sd_notify: unsupported NOTIFY_SOCKET %r (only paths and @abstract names)", raw)
        return cls(address, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self._sock is not None

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"NAME=value"``) as one datagram. Never raises; a failure is logged at debug."""
        sock, address = self._sock, self._address
        if sock is None or address is None or not fields:
            return
        # One assignment per line: a newline inside a value would smuggle in another assignment.
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            sock.sendto(message, address)
        except OSError as exc:
            logger.debug("sd_notify: cannot send %r: %s", fields[0], exc)

    def ready(self, status: str) -> None:
        """The service is up (first start, or the end of a reload, successful or not)."""
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self, status: str | None = None) -> None:
        """A reload has begun; follow with :meth:`ready` when it ends, whether the new config was taken or not.

        ``MONOTONIC_USEC`` is what systemd >= 253 requires with ``RELOADING=1`` for ``Type=notify-reload``;
        older versions ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> None:
        """The service has begun to shut down."""
        self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> None:
        """One watchdog keep-alive."""
        self.notify("WATCHDOG=1")

    async def run_watchdog(self, healthy: Callable[[], bool] = lambda: True) -> None:
        """Ping every :attr:`watchdog_interval` seconds until cancelled; return at once when there is no watchdog.

        The pings come from the event loop itself, so a loop that blocks stops them, which is the point; a ping
        is also skipped while ``healthy()`` is false (a supervisor whose workers stopped answering).
        """
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            if healthy():
                self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket; the notifier is disabled afterwards."""
        sock, self._sock = self._sock, None
        self.watchdog_interval = None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={self._address!r}, enabled={self.enabled}, watchdog={self.watchdog_interval})"


def _status(status: str | None) -> tuple[str, ...]:
    return () if status is None else (f"STATUS={status}",)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    raw = env.get("WATCHDOG_USEC")
    if raw is None:
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.debug("sd_notify: ignoring WATCHDOG_USEC=%r (not an integer)", raw)
        return None
    return usec if usec > 0 else None

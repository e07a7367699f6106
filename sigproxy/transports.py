"""Transport helpers shared by the client side (:mod:`sigproxy.intake.h1flow`) and the upstream side
(:mod:`sigproxy.h1conn`). Must not: know HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

__all__ = ["close", "reset"]


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection at once, whatever is still queued to send, with a TCP reset (``SO_LINGER`` 0): nothing
    is left for the kernel to keep sending to a peer that reads nothing (an orphaned socket), and the peer learns
    at once. Idempotent."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def close(transport: asyncio.Transport, *, grace: float, lost: Callable[[], bool]) -> None:
    """Close ``transport`` once what is queued for the peer has gone out; when some is still queued, give the
    peer ``grace`` seconds to take it, then :func:`reset`. ``lost``: whether the connection is already gone by
    then (its protocol's ``connection_lost`` came): never reset then, since its descriptor may belong to
    another connection by now."""
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(grace, _reset_unless, transport, lost)


def _reset_unless(transport: asyncio.Transport, lost: Callable[[], bool]) -> None:
    if not lost():
        reset(transport)

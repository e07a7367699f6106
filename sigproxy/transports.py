"""Transport helpers shared by the client side (:mod:`sigproxy.intake.h1server`) and the upstream side
(:mod:`sigproxy.h1conn`). Must not: know HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["reset"]


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection at once, whatever is still queued to send, with a TCP reset (``SO_LINGER`` 0): nothing
    is left for the kernel to keep sending to a peer that reads nothing (an orphaned socket), and the peer learns
    at once. Idempotent."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()

"""The response to one request on an upstream connection (:class:`~sigproxy.h1conn.H1Connection`), as the
handler sees it: status, reason, headers, the body read as it arrives, and the raw bytes after a ``101``.

Owns: nothing of the wire; every call goes to the connection. Must not: parse, pool or retry.

Compiled (:mod:`sigproxy.compiled`): every answer goes through it. The body as an async iterator is an async
generator, which mypyc does not compile: it is :func:`sigproxy.h1chunks.iter_chunks`, looked up at each call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from .h1chunks import iter_chunks

if TYPE_CHECKING:
    from .h1conn import H1Connection

__all__ = ["UpstreamResponse"]


class UpstreamResponse:
    """The response to one request: ``status``, ``reason``, ``headers`` (as received, in order),
    ``content_length`` (``None`` when absent or chunked) and ``connection_options`` (the header names its
    ``Connection`` header lists, hop-by-hop ones aside: :func:`~sigproxy.headerrules.connection_options`).
    Read the body with :meth:`read` or :meth:`iter_any`; leaving ``async with`` hands the connection back (or
    closes it when it can't carry another request)."""

    def __init__(self, conn: H1Connection, status: int, reason: str, headers: list[tuple[str, str]],
                 content_length: int | None, *, connection_options: frozenset[str] = frozenset()) -> None:
        self._conn: Final = conn
        self.status: Final = status
        self.reason: Final = reason
        self.headers: Final = headers
        self.content_length: Final = content_length
        self.connection_options: Final = connection_options

    async def read(self) -> bytes:
        """The whole body. Raises :class:`~sigproxy.errors.UpstreamError` or
        :class:`~sigproxy.errors.UpstreamTimeout`."""
        conn = self._conn
        parts = []
        while True:
            chunk = conn.take_body()
            if chunk:
                parts.append(chunk)
            elif conn.body_done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            else:
                await conn.wait_body()

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives: all that is buffered, at each step (:func:`sigproxy.h1chunks.iter_chunks`).
        Raises as :meth:`read`."""
        return iter_chunks(self._conn)

    async def read_some(self) -> bytes:
        """What has arrived since the last call, waiting for something; ``b""`` at the end. Raises as
        :meth:`read`."""
        conn = self._conn
        while True:
            chunk = conn.take_body()
            if chunk or conn.body_done:
                return chunk
            await conn.wait_body()

    def send(self, data: bytes) -> None:
        """After a ``101``: send raw bytes of the new protocol (then :meth:`drain`)."""
        self._conn.write(data)

    async def drain(self) -> None:
        """Wait while the upstream's socket buffer is full. Raises :class:`~sigproxy.errors.UpstreamError` once
        the connection is closed."""
        await self._conn.drain()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn.finish()

"""An upstream response's body as it arrives, for
:meth:`UpstreamResponse.iter_any <sigproxy.h1response.UpstreamResponse.iter_any>`.

Plain Python, not compiled: it is an async generator, which mypyc does not compile (:mod:`sigproxy.compiled`).
Only a streamed answer (a body over the handler's one-write size, or of unknown length) runs it, so small
answers never pay an interpreted call for it; it is the one interpreted step of a streamed answer, where
``tests/integration/test_internal_errors.py`` puts its bug.

Owns: nothing of the wire; every call goes to the connection. Must not: parse, pool or retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .h1conn import H1Connection

__all__ = ["iter_chunks"]


async def iter_chunks(conn: H1Connection) -> AsyncIterator[bytes]:
    """The body of the response ``conn`` is reading, as it arrives: all that is buffered, at each step. Raises
    :class:`~sigproxy.errors.UpstreamError` or :class:`~sigproxy.errors.UpstreamTimeout`."""
    while True:
        chunk = conn.take_body()
        if chunk:
            yield chunk
        elif conn.body_done:
            return
        else:
            await conn.wait_body()

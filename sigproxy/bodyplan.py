"""How one request body goes upstream (:class:`BodyPlan`), and the plan of a request without one
(:func:`bodiless_plan`).

:mod:`sigproxy.bodies` decides the plan before a byte of the body is read; the handler signs with its
``payload_hash`` and sends :meth:`BodyPlan.body`. Compiled (:mod:`sigproxy.compiled`): every request makes a
plan, and most have no body (issue 15). The streams a plan sends are async generators, which mypyc does not
compile: :mod:`sigproxy.bodies` makes them and hands each plan its own (:attr:`BodyPlan.stream`).

Owns: the plan's shape and the bodiless plan. Must not: read a body, sign, or talk to the upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

from .fieldnames import X_AMZ_CONTENT_SHA256
from .prepare import payload_mode
from .signing import EMPTY_SHA256

if TYPE_CHECKING:
    from .errors import SigproxyError
    from .http1 import ClientRequest
    from .streaming import ChunkSigner

__all__ = ["BodyPlan", "Stream", "bodiless_plan"]

Stream = Callable[["ChunkSigner | None"], AsyncIterator[bytes | memoryview]]
"""A body's buffers as they come, given the chunk signer of the request's signature (when it needs one)."""


class BodyPlan:
    """How one request body goes upstream.

    ``payload_hash`` is signed (``x-amz-content-sha256``); ``length`` is the Content-Length to send (``None``:
    chunked); ``mode`` how the body goes: empty, buffered, passthrough, presigned, resigned, signed-chunks,
    unsigned, spooled or websocket. ``headers`` replace the client's of the same name. The body is ``data``
    (whole) or ``stream`` (as it comes; ``needs_chunk_signer``: it signs chunks with the request's signature).
    ``error``: why the stream failed (malformed input, client gone), set by the stream, for the handler to
    answer after the upstream send breaks. ``cleanup``: what :meth:`close` runs (a spool file's close)."""

    def __init__(self, payload_hash: str, length: int | None, mode: str, *,
                 headers: list[tuple[str, str]] | None = None, data: bytes | None = None,
                 stream: Stream | None = None, needs_chunk_signer: bool = False) -> None:
        self.payload_hash = payload_hash
        self.length = length
        self.mode: Final = mode
        self.headers: list[tuple[str, str]] = [] if headers is None else headers
        self.data = data
        self.stream = stream
        self.needs_chunk_signer: Final = needs_chunk_signer
        self.error: SigproxyError | None = None
        self.cleanup: list[Callable[[], None]] = []

    def body(self, chunk_signer: ChunkSigner | None) -> bytes | AsyncIterator[bytes | memoryview] | None:
        """What to send: ``bytes``, ``None``, or the body's buffers as they come (signed chunks are sent as
        their size line, views of the client's own pieces, and CRLF: no copy of the data)."""
        if self.stream is not None:
            return self.stream(chunk_signer)
        return self.data

    def close(self) -> None:
        """Run :attr:`cleanup` once."""
        for fn in self.cleanup:
            fn()
        self.cleanup.clear()


def bodiless_plan(request: ClientRequest) -> BodyPlan | None:
    """:func:`~sigproxy.bodies.plan_body`'s plan for a request without a body, or ``None`` when it has one:
    nothing to read, so no coroutine to make (most requests: issue 15). The client's ``x-amz-content-sha256``
    is kept when it is a payload hash or mode sigproxy passes on (:func:`~sigproxy.prepare.payload_mode`
    ``"keep"``); otherwise the empty body's hash. A Content-Length of 0 goes with PUT, POST and PATCH (RFC 9110
    8.6: a user agent should send one for them when there is no body). Raises
    :class:`~sigproxy.errors.UnsupportedRequest` (SigV4A chunk signing claimed)."""
    if request.body_exists or request.chunked:
        return None
    claimed = request.headers.get(X_AMZ_CONTENT_SHA256, "").strip()
    return BodyPlan(claimed if payload_mode(claimed) == "keep" else EMPTY_SHA256,
                    0 if request.method in ("PUT", "POST", "PATCH") else None, "empty")

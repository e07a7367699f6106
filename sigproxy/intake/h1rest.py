"""The rest of a request answered early, on a client connection of sigproxy's HTTP/1.1 server: a base of
:class:`~sigproxy.intake.h1server.ClientProtocol`.

An answer may go before the whole request came: a refusal before its body was read, an upstream that answered
once it had the body whole while the client's chunked framing was still to come (a re-signed aws-chunked
upload: its content ends with its final aws-chunked chunk, the HTTP body with the last chunk and the trailer
section after it). RFC 9112 9.6: a server that closes then risks a reset that loses its answer, so it reads the
rest; one that reads the rest may keep the connection (9.3). Here: when what is left is small (the rest of a
Content-Length within the head limits, or only a chunked body's framing once its reader said the content ended),
the answer keeps the connection, and the rest is read and dropped after it, for up to ``body_timeout`` (after the
content's end, framing only); then the next request is served (pipelined ones in order). A rest that is large,
of unknown length, held back for ``100 Continue``, or that does not come, closes the connection, as before.

Must not: parse (:class:`~sigproxy.intake.h1server.ClientProtocol` does and calls this) or write; set its own
attributes up: ``ClientProtocol.__init__`` sets every one declared here.
"""

from __future__ import annotations

import asyncio

from sigproxy.fieldnames import EXPECT
from sigproxy.http1 import ClientRequest

from .h1flow import ClientFlow, logger

__all__ = ["ClientRest"]


class ClientRest(ClientFlow):
    """The rest of a request answered early (see the module's docstring)."""

    _parsing: ClientRequest | None
    _max_head: int
    _body_got: int
    """Body bytes of the request being parsed, so far."""
    _content_ended: ClientRequest | None
    """The request being parsed, once its reader has its content whole (its framing may still come)."""
    _dropping: ClientRequest | None
    """After an early answer: the request whose rest is being read and dropped."""
    _drop_limit: int
    """The ``_body_got`` past which the rest is not read: the Content-Length, or none past the content's end."""
    _rest: asyncio.Future[None] | None
    """Done when the request being dropped has ended, or broke off."""

    def content_ended(self, request: ClientRequest) -> None:
        """``request``'s reader has its content whole though the request's framing has not all come (an
        aws-chunked body whose final chunk was decoded, inside a chunked one): what the client still sends of it
        is the last chunk and the trailer section (RFC 9112 7.1), which an early answer may read and drop."""
        if request is self._parsing:
            self._content_ended = request

    def _rest_is_small(self, request: ClientRequest) -> bool:
        """Whether what is left of a request still arriving may be read and dropped after its answer, keeping the
        connection (RFC 9112 9.6: a server that closes without reading the rest risks a reset that loses the
        answer; one that reads it may reuse the connection). Within the head limits: the rest of a Content-Length;
        a chunked body's framing once its reader has the content (:meth:`content_ended`). Not a body the client
        holds back until ``100 Continue`` (RFC 9110 10.1.1), nor one of unknown length."""
        if request is not self._parsing or (self._body_got == 0 and "100-continue" in request.headers.get(
                EXPECT, "").lower()):
            return False
        length = request.content_length
        if length is not None:
            return length - self._body_got <= self._max_head
        return request is self._content_ended

    async def _read_rest(self, request: ClientRequest) -> bool:
        """After an early answer: read and drop the rest of ``request`` (:meth:`_rest_is_small`) for up to
        ``body_timeout``: the rest of its Content-Length, or, once a chunked body's content ended, its framing
        alone (a body byte more closes the connection; the framing is bounded by the head limits, as ever).
        Whether it all came: then the connection serves the next request. Its reader is gone: what comes is
        dropped as it is parsed, never buffered."""
        if request.complete or request is not self._parsing:
            return request.complete
        length = request.content_length
        self._dropping, self._drop_limit = request, self._body_got if length is None else length
        rest = self._rest = self._loop.create_future()
        self._resume("body")  # the unread part of the body may have paused reading
        try:
            async with asyncio.timeout(self._proxy.body_timeout):
                await rest
        except TimeoutError:
            logger.info("client %s did not send the rest of its request within body_timeout (%g s) after the "
                        "answer; connection closed", self._remote, self._proxy.body_timeout)
        finally:
            self._dropping = self._rest = None
        return request.complete

    def _fail_parsing(self, exc: BaseException) -> None:
        """The request being parsed broke off (the client went, its framing is malformed): its body fails."""
        if self._parsing is not None:
            self._parsing.body.fail(exc)
            self._parsing = None
        self._end_rest()

    def _end_rest(self) -> None:
        """The request being dropped ended (or broke off, or the server drains): no byte parsed from now on is
        its, so nothing more is dropped (a pipelined request's body may follow in the same read)."""
        self._dropping = None
        if self._rest is not None and not self._rest.done():
            self._rest.set_result(None)

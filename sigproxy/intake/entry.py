"""A listener's entry point: each parsed request to the handler current when it arrived, as an :class:`Exchange`
made by the listener's intake (:mod:`~sigproxy.intake.forward` or :mod:`~sigproxy.intake.reverse`).

Owns: the choice of intake per listener, the client certificate's place in the exchange, and the answer to a
request intake refused (the handler's :meth:`~sigproxy.handler.Handler.reject`).
Must not: route, sign or forward; keep a handler (a reload swaps the runtime's, and each request takes the one
current when it arrived).

Compiled (:mod:`sigproxy.compiled`): it runs once per request, and as an interpreted closure it was one of the
last interpreted frames of a proxied request (issue 15).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from sigproxy.clientcert import peer_subject
from sigproxy.config import ReverseListener
from sigproxy.handler import Exchange, Handler
from sigproxy.http1 import ClientRequest, Response, StreamResponse

from .forward import forward_exchange
from .h1server import answered
from .reverse import reverse_exchange

__all__ = ["HandlerSource", "ListenerEntry"]


class HandlerSource(Protocol):
    """What holds the current handler (:class:`sigproxy.intake.server.Runtime`)."""

    @property
    def handler(self) -> Handler: ...


class ListenerEntry:
    """The entry point of one listener: the forward proxy's (``reverse_index`` ``None``) or the
    ``[[reverse]]`` listener at ``reverse_index``; ``mtls``: its clients present certificates, which may select
    the connection (:mod:`sigproxy.clientcert`). Called with each request, returns the answer to await
    (:data:`~sigproxy.intake.h1server.Entry`). ``forward`` and ``reverse``: the intakes (parameters, so that a
    test can put a bug there)."""

    def __init__(self, source: HandlerSource, reverse_index: int | None, *, mtls: bool,
                 forward: Callable[[ClientRequest], Exchange] = forward_exchange,
                 reverse: Callable[[ClientRequest, ReverseListener], Exchange] = reverse_exchange) -> None:
        self._source: Final = source
        self._reverse_index: Final = reverse_index
        self._mtls: Final = mtls
        self._forward: Final = forward
        self._reverse: Final = reverse

    def __call__(self, request: ClientRequest) -> Awaitable[Response | StreamResponse]:
        # Not a coroutine of its own: the handler's is awaited directly (one frame less on every resume).
        handler = self._source.handler  # the handler current when the request arrived serves all of it
        index = self._reverse_index
        try:
            exchange = (self._forward(request) if index is None
                        else self._reverse(request, handler.config.reverse[index]))
            if self._mtls:
                protocol = request.protocol
                cert = peer_subject(protocol.transport if protocol is not None else None)
                exchange = Exchange(exchange.target, exchange.listener, exchange.tunnel_authorization, cert)
        except Exception as exc:  # a refusal, or a bug: answered with its access line all the same
            return answered(handler.reject(request, exc))
        return handler(request, exchange)

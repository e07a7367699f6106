"""Reverse-proxy intake: origin-form requests on a ``[[reverse]]`` listener -> :class:`Exchange`.

The target is the listener's upstream plus the request's raw path and query.
Must not: sign or forward.
"""

from __future__ import annotations

from sigproxy.config import ReverseListener
from sigproxy.errors import BadRequest
from sigproxy.handler import Exchange
from sigproxy.http1 import ClientRequest
from sigproxy.routing import Target, parse_absolute_target

__all__ = ["reverse_exchange"]


def reverse_exchange(request: ClientRequest, listener: ReverseListener) -> Exchange:
    raw = request.raw_path
    if not raw.startswith("/"):
        raise BadRequest("a reverse listener takes origin-form requests (GET /path), not proxy requests")
    base = parse_absolute_target(listener.upstream)
    path, _, query = raw.partition("?")
    prefix = base.path.rstrip("/")
    target = Target(base.scheme, base.host, base.port, prefix + path, query)
    return Exchange(target=target, listener=listener)

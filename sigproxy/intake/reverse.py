"""Reverse-proxy intake: requests on a ``[[reverse]]`` listener -> :class:`Exchange`.

The target is the listener's upstream plus the request's raw path and query. The origin form
(``GET /path``) is what clients send; the absolute form naming the upstream itself is the same request (RFC
9112 3.2.2: a server MUST accept it); one naming another host is a proxy request sent here by mistake, and
refused rather than signed for this listener's upstream (RFC 9110 7.4: a server may refuse a target it does
not serve).
Must not: sign or forward.
"""

from __future__ import annotations

import functools
from typing import Final

from sigproxy.config import ReverseListener
from sigproxy.errors import BadRequest
from sigproxy.handler import Exchange
from sigproxy.http1 import ClientRequest
from sigproxy.routing import Target, parse_absolute_target

__all__ = ["reverse_exchange"]

# Each listener's upstream parsed once (a reload may change them: a few listeners, a few reloads' worth kept).
_upstream_target: Final = functools.lru_cache(maxsize=64)(parse_absolute_target)


def reverse_exchange(request: ClientRequest, listener: ReverseListener) -> Exchange:
    raw = request.raw_path
    base = _upstream_target(listener.upstream)
    if raw.startswith("/"):
        path, _, query = raw.partition("?")
    else:
        asked = parse_absolute_target(raw) if "://" in raw else None
        if asked is None or (asked.scheme, asked.host, asked.port) != (base.scheme, base.host, base.port):
            raise BadRequest("a reverse listener takes origin-form requests (GET /path), not proxy requests "
                             f"for other hosts: this one serves {base.scheme}://{base.authority}")
        path, query = asked.path or "/", asked.query
    prefix = base.path.rstrip("/")
    target = Target(base.scheme, base.host, base.port, prefix + path, query)
    return Exchange(target=target, listener=listener)

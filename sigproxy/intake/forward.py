"""Forward-proxy intake: absolute-form requests (what clients send with ``HTTP_PROXY``) -> :class:`Exchange`.

Must not: sign or forward; it only says where the request is meant to go.
"""

from __future__ import annotations

from sigproxy.errors import UnsupportedRequest
from sigproxy.handler import Exchange
from sigproxy.http1 import ClientRequest
from sigproxy.routing import parse_absolute_target

__all__ = ["forward_exchange"]


def forward_exchange(request: ClientRequest) -> Exchange:
    if request.method == "CONNECT":
        raise UnsupportedRequest(
            "CONNECT (HTTPS_PROXY) is not supported by this listener: use HTTP_PROXY with http:// "
            "endpoints, or a connection with upstream_scheme = \"https\""
        )
    return Exchange(target=parse_absolute_target(request.raw_path))

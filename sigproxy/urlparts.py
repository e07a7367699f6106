"""Splitting URLs that come from outside (config values, API input, request headers) without surprises.

:func:`urllib.parse.urlsplit` raises :class:`ValueError` on an unclosed IPv6 bracket (``http://[::1``), and
its ``port`` on a port out of range; input like that must get the caller's own clear error, not escape as an
unexpected exception (found by the config fuzzer, issue 15).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import SplitResult, urlsplit

__all__ = ["http_scheme", "split_url"]

_WS_SCHEMES: Final = {"ws": "http", "wss": "https"}


def split_url(value: str) -> SplitResult | None:
    """``urlsplit(value)``, or ``None`` when it can't be split or its port is not 0-65535 (RFC 3986 3.2)."""
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return None
    return parts


def http_scheme(scheme: str) -> str:
    """``scheme`` lower-cased, a WebSocket one as the HTTP one it stands for (RFC 6455 3: ``ws`` is ``http``'s,
    ``wss`` is ``https``'s); a WebSocket handshake is an HTTP request to the same host and port."""
    scheme = scheme.lower()
    return _WS_SCHEMES.get(scheme, scheme)

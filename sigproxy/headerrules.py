"""Pure: which of a client's headers go upstream and which of those are signed; which of a response's go back.

Owns: the hop-by-hop set and the ``Connection`` header's options (RFC 9110 7.6.1), what sigproxy removes and sets
again itself, :func:`upstream_headers`, :func:`end_to_end` and :func:`is_signed_header`; a field name's lower
case (:func:`lower_name`), kept for the names seen last. Must not: do I/O, route, sign.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["HOP_BY_HOP", "NAMES_KEPT", "connection_options", "end_to_end", "has_header", "is_signed_header",
           "lower_name", "upstream_headers", "upstream_headers_lower"]

HOP_BY_HOP: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authorization", "proxy-authenticate",
    }
)
# Removed before forwarding: the client's own auth, what we recompute, and what only the proxy reads.
_DROP: Final = frozenset(
    {"authorization", "x-amz-date", "x-amz-security-token", "expect", "host", "content-length"}
)
_NOT_FORWARDED: Final = HOP_BY_HOP | _DROP
_SIGNED_EXTRA: Final = frozenset({"host", "content-type", "content-md5"})


_NAME: Final = operator.itemgetter(0)

NAMES_KEPT: Final = 256
"""Field names kept lower-cased (:func:`lower_name`), at most; then those kept are dropped and kept again as
they come (a peer chooses the names: bounded memory whatever it sends)."""
# A name's text -> its lower case. The same few names come in every message: a kept one is a dict look-up (the
# name's hash computed once, kept by the str), against a lower-cased copy whose hash is computed again at each set
# look-up (issue 15: 3 % of a small GET with the response head's other costs).
_lowers: Final[dict[str, str]] = {}


def lower_name(name: str) -> str:
    """``name`` in lower case (field names are case-insensitive, RFC 9110 5.1), kept while ``name`` is."""
    low = _lowers.get(name)
    if low is None:
        if len(_lowers) >= NAMES_KEPT:
            _lowers.clear()
        low = _lowers[name] = name.lower()
    return low


def has_header(headers: Sequence[tuple[str, str]], low: str, usual: str) -> bool:
    """Whether a header named ``low`` (lower case) is among ``headers``, in any case. Its ``usual`` spelling
    (``Content-Length``) and ``low`` are compared first, no name lower-cased: a response from an upstream has
    it so (lower-casing every name before it was 2 % of a small GET, issue 15). Otherwise the names are lowered
    and compared by ``map`` and ``in``, in C, stopping at the first match."""
    for name, _ in headers:
        if name in (usual, low):  # mypyc: two comparisons, no tuple
            return True
    return low in map(str.lower, map(_NAME, headers))


_NO_OPTIONS: Final[frozenset[str]] = frozenset()
_PERSISTENCE: Final = ("keep-alive", "close")
_PERSISTENCE_AS_SENT: Final = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})  # looked up before any strip()
# Options that name no header to remove: the hop-by-hop ones (removed anyway), "close" (RFC 9112 9.6: the
# connection ends after this message; the reserved "Close" field is never sent) and empty list items.
_NOT_NAMES: Final = HOP_BY_HOP | {"close", ""}


def connection_options(values: list[str]) -> frozenset[str]:
    """The header names a message's ``Connection`` header lists (``values``: each ``Connection`` line's value),
    lower case, the hop-by-hop ones aside: what a proxy must remove besides those (RFC 9110 7.6.1). Most
    messages' ``Connection`` is ``keep-alive`` or ``close`` alone, answered without building a set."""
    if not values or (len(values) == 1 and (values[0] in _PERSISTENCE_AS_SENT
                                            or values[0].strip().lower() in _PERSISTENCE)):
        return _NO_OPTIONS
    return frozenset({tok.strip().lower() for value in values for tok in value.split(",")} - _NOT_NAMES)


def end_to_end(headers: Iterable[tuple[str, str]], named: frozenset[str] = _NO_OPTIONS) -> list[tuple[str, str]]:
    """What a proxy forwards of a response's headers: without the hop-by-hop ones and those the ``Connection``
    header names, ``named`` (:func:`connection_options`; RFC 9110 7.6.1: a proxy MUST remove both)."""
    kept = [(name, value) for name, value in headers if lower_name(name) not in HOP_BY_HOP]
    return [(name, value) for name, value in kept if lower_name(name) not in named] if named else kept


def upstream_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers that go upstream: hop-by-hop, ``Connection``-named, ``Proxy-*``,
    ``X-Sigproxy-*`` and the client's own auth removed. ``Host``/``Content-Length`` are set again later."""
    return [(name, value) for name, value, _ in upstream_headers_lower(headers)[0]]


def upstream_headers_lower(
    headers: Iterable[tuple[str, str]],
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """:func:`upstream_headers` with each name's lower case, ``(name, value, lower-case name)``, and the lower-case
    names of every header given, those removed too (each name is lower-cased once)."""
    # (list, tuple), not list | tuple: compiled, a union is a new object at every call
    pairs = headers if isinstance(headers, (list, tuple)) else list(headers)
    lows = [lower_name(name) for name, _ in pairs]
    named = _NO_OPTIONS
    if "connection" in lows:
        named = connection_options([value for (_, value), low in zip(pairs, lows, strict=True)
                                    if low == "connection"])
    kept = [
        (name, value, low)
        for (name, value), low in zip(pairs, lows, strict=True)
        if not (low in _NOT_FORWARDED or low in named or low.startswith(("proxy-", "x-sigproxy-")))
    ]
    return kept, lows


def is_signed_header(name: str) -> bool:
    low = lower_name(name)
    return low in _SIGNED_EXTRA or low.startswith("x-amz-")

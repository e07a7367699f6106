"""Pure: an HTTP/1.1 request's wire form as sigproxy sends it upstream (:mod:`sigproxy.h1conn` writes it), and
how the response's body is delimited.

Owns: the request line and header section (RFC 9112 3, 5), the body's framing headers (RFC 9112 6, 7.1), and
the response body's length rules (RFC 9112 6.3: :func:`response_framing`).
Must not: do I/O, or change a header it was given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

__all__ = ["request_head", "response_framing"]

# Methods whose request without a body carries no Content-Length; aiohttp's rule (client_reqrep GET_METHODS),
# kept so that what upstreams see does not change.
_NO_LENGTH_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})


def request_head(method: str, target: str, authority: str, headers: Sequence[tuple[str, str]],
                 body: bytes | AsyncIterator[bytes | memoryview] | None) -> tuple[bytes, bool]:
    """The request line and header section (RFC 9112 3, 5), and whether the body goes chunked (RFC 9112 7.1).

    ``target`` is the origin-form path and query, sent as is; ``headers`` go in order and as given. Added only
    when missing: ``Host`` (``authority``), and the body's framing -- ``Content-Length`` for ``bytes``
    (``0`` for no body, except on GET, HEAD, OPTIONS, CONNECT and TRACE), ``Transfer-Encoding: chunked``
    for a stream without a ``Content-Length``. Header text is encoded as UTF-8.

    Raises :class:`ValueError` when a name or value holds CR or LF (RFC 9110 5.5: they would split the header
    section).
    """
    has_host = has_length = chunked = False
    lines = [f"{method} {target or '/'} HTTP/1.1"]
    for name, value in headers:
        low = name.lower()
        if low == "host":
            has_host = True
        elif low == "content-length":
            has_length = True
        elif low == "transfer-encoding":
            chunked = True
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"Host: {authority}")
    if not has_length and not chunked:
        if body is None or isinstance(body, bytes):
            if body or method not in _NO_LENGTH_METHODS:
                lines.append(f"Content-Length: {len(body or b'')}")
        else:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # Exactly one CR and one LF per line end: none inside a name or value.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("a request header name or value contains CR or LF")
    return text.encode("utf-8"), chunked


def response_framing(fields: Iterable[tuple[bytes, str]], bodiless: bool) -> tuple[str, int | None]:
    """How a final response's body is delimited (RFC 9112 6.3), from its header fields (after llhttp's checks:
    ``Content-Length`` digits whose repeats agree, not with ``Transfer-Encoding``), and its ``Content-Length``
    (``None`` when absent or with ``Transfer-Encoding``). ``fields``: ``(lower-case name, value)``, at least every
    ``Content-Length`` and ``Transfer-Encoding`` field (others are passed over). ``bodiless``: a response to HEAD,
    a 204 or a 304 (item 1). Framing: ``"none"``, ``"chunked"`` (item 4), ``"length"`` (item 6) or ``"close"``
    (item 8).

    Raises :class:`ValueError` naming the coding for a body in a transfer coding other than chunked alone
    (item 4 would read it until the close). RFC 9112 6.1: a recipient that does not understand a coding
    answers 501 (a gateway, 502). None was asked for -- sigproxy sends no ``TE``, and without it chunked is the
    only coding a server may use (RFC 9112 7.4) -- and relaying one would pass the encoded bytes on as the body
    (``Transfer-Encoding`` is hop-by-hop, removed on the way). Refused, not decoded: no upstream sigproxy signs
    for sends one.
    """
    length: int | None = None
    coding: str | None = None  # the Transfer-Encoding lines, as one list (RFC 9110 5.3)
    for name, value in fields:
        if name == b"transfer-encoding":
            coding = value if coding is None else f"{coding}, {value}"
        elif name == b"content-length" and length is None:
            length = int(value)
    if coding is not None:
        if not bodiless and coding.strip().lower() != "chunked":
            raise ValueError(f"sent its body in a transfer coding sigproxy does not decode: Transfer-Encoding: "
                             f"{coding[:100]} (only chunked is read; sigproxy asks for no other)")
        return ("none" if bodiless else "chunked"), None
    if bodiless:
        return "none", length
    return ("length" if length is not None else "close"), length

"""Pure: an HTTP/1.1 request's wire form as sigproxy sends it upstream (:mod:`sigproxy.h1conn` writes it), and
how the response's body is delimited.

Owns: the request line and header section (RFC 9112 3, 5), the body's framing headers (RFC 9112 6, 7.1), the
response body's length rules (RFC 9112 6.3: :func:`response_framing`), and any header section's bytes with the
CR/LF check on them (:func:`head_bytes`: also the answers :mod:`sigproxy.http1` writes to clients).
Must not: do I/O, or change a header it was given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Final

from .headerrules import lower_name

__all__ = ["MAX_RESPONSE_HEAD", "MAX_RESPONSE_LINE", "ResponseBudget", "head_bytes", "line_too_long", "request_head",
           "response_framing", "wire_text"]

# Methods whose request without a body carries no Content-Length; aiohttp's rule (client_reqrep GET_METHODS),
# kept so that what upstreams see does not change.
_NO_LENGTH_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})


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
        low = lower_name(name)
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
    return head_bytes(lines, "request", "strict"), chunked


def wire_text(raw: bytes) -> str:
    """Bytes of a message head as received (a request target, a field name or value, a reason phrase) as text:
    UTF-8, a byte that is not part of one as a lone surrogate (surrogateescape), so that :func:`head_bytes` sends
    the bytes received (RFC 9110 5.5: obs-text, any byte from 0x80, is allowed in a value).

    The strict decoder first: compiled, ``raw.decode()`` is a direct call to CPython's UTF-8 decoder, the
    two-argument form a look-up of the codec by name at each call (about 450 instructions, some 18 times a small
    GET: issue 15). The same text either way: valid UTF-8 decodes alike under both."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def head_bytes(lines: list[str], what: str, errors: str) -> bytes:
    """A header section as sent (RFC 9112 2.1): ``lines`` (the start line, then the fields, without their ends)
    each ended by CRLF, then the empty line; encoded as UTF-8 with ``errors`` (:meth:`str.encode`'s).

    Raises :class:`ValueError` naming ``what`` (``request``, ``response``) when a line holds CR or LF (RFC 9110
    5.5: it would split the section). They are looked for (memchr) in the lines without their ends: half the cost
    of counting them in the whole (0.37 against 0.85 us for a signed GET's head, timed as plain Python)."""
    inside = "".join(lines)
    if "\r" in inside or "\n" in inside:
        raise ValueError(f"a {what} header name or value contains CR or LF")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode()  # compiled: CPython's UTF-8 encoder called directly (see :func:`wire_text`)
    except UnicodeEncodeError:  # a lone surrogate: wire_text's for a byte received that is not UTF-8
        return text.encode("utf-8", errors)


def response_framing(headers: list[tuple[str, str]], bodiless: bool) -> tuple[str, int | None]:
    """How a final response's body is delimited (RFC 9112 6.3), from its header fields (after llhttp's checks:
    ``Content-Length`` digits whose repeats agree, not with ``Transfer-Encoding``), and its ``Content-Length``
    (``None`` when absent or with ``Transfer-Encoding``). ``bodiless``: a response to HEAD, a 204 or a 304
    (item 1). Framing: ``"none"``, ``"chunked"`` (item 4), ``"length"`` (item 6) or ``"close"`` (item 8).

    Raises :class:`ValueError` naming the coding for a body in a transfer coding other than chunked alone
    (item 4 would read it until the close). RFC 9112 6.1: a recipient that does not understand a coding
    answers 501 (a gateway, 502). None was asked for -- sigproxy sends no ``TE``, and without it chunked is the
    only coding a server may use (RFC 9112 7.4) -- and relaying one would pass the encoded bytes on as the body
    (``Transfer-Encoding`` is hop-by-hop, removed on the way). Refused, not decoded: no upstream sigproxy signs
    for sends one.
    """
    length: int | None = None
    coding: str | None = None  # the Transfer-Encoding lines, as one list (RFC 9110 5.3)
    for name, value in headers:
        low = lower_name(name)
        if low == "transfer-encoding":
            coding = value if coding is None else f"{coding}, {value}"
        elif low == "content-length" and length is None:
            length = int(value)
    if coding is not None:
        if not bodiless and coding.strip().lower() != "chunked":
            raise ValueError(f"sent its body in a transfer coding sigproxy does not decode: Transfer-Encoding: "
                             f"{coding[:100]} (only chunked is read; sigproxy asks for no other)")
        return ("none" if bodiless else "chunked"), None
    if bodiless:
        return "none", length
    return ("length" if length is not None else "close"), length


MAX_RESPONSE_LINE: Final = 64 * 1024
"""The longest status line, or header or trailer field (name and value), an upstream may send: http.client's
``_MAXLINE``, which botocore's transport (urllib3) applies to AWS's responses."""
MAX_RESPONSE_HEAD: Final = 256 * 1024
"""The most bytes of a response that are not body, counted since its last body byte: its head (interim heads
included), or a chunked body's chunk-size lines, extensions and trailer section (RFC 9112 7.1). Four times Envoy's
default for a header section (60 KiB); an AWS response head is a few KiB."""
# A line still unfinished after a read may hold this much besides its field: the status line's version and code,
# the separators, and whitespace llhttp trims around values.
_LINE_SLACK: Final = 64


class ResponseBudget:
    """What of a response is not body, bounded to within a read (:data:`MAX_RESPONSE_HEAD`): a parser such as
    httptools gathers a line whole before it hands it over, joining an unfinished one piece by piece, so an endless
    head or trailer section would grow without bound while a read timeout never fires, and a trickled one cost
    time quadratic in its length. A line still unfinished after a read is cut once it can no longer fit
    :data:`MAX_RESPONSE_LINE` (it would be refused when whole), not at the end of the whole budget.

    The parser's callbacks add to :attr:`fed` (body bytes, and 1 when the final head ends: both start the count
    again) and :attr:`lines` (a trailer field's bytes), and hand over each interim head (:meth:`interim`); after
    each read, :meth:`read` says whether the response is still within bounds."""

    __slots__ = ("fed", "lines", "unframed")

    def __init__(self) -> None:
        self.unframed = 0
        """Bytes that were not body since the last body byte."""
        self.lines = 0
        self.fed = 0

    def reset(self) -> None:
        """A new response is awaited."""
        self.unframed = self.lines = self.fed = 0

    def interim(self, reason: bytes, headers: list[tuple[str, str]]) -> None:
        """An interim (1xx) head has ended: its bytes stay counted with the next head's."""
        self.lines += _head_lines(reason, headers) + 17  # its version, code and line end, and the empty line

    def read(self, size: int, head: tuple[bytes, list[tuple[str, str]]] | None) -> str | None:
        """After a read of ``size`` bytes: ``None``, or what went over a bound. ``head``: while a head is being
        read, its reason phrase and fields so far (counted only when it spans reads)."""
        fed, self.fed = self.fed, 0
        if fed:  # body came in this read, or the final head ended: counting starts again from the next
            self.unframed = self.lines = 0
            return None
        self.unframed += size
        if self.unframed > MAX_RESPONSE_HEAD:
            return f"over {MAX_RESPONSE_HEAD} bytes of response head, chunk framing or trailer section"
        lines = self.lines if head is None else self.lines + _head_lines(*head)
        if self.unframed - lines > MAX_RESPONSE_LINE + _LINE_SLACK:
            return line_too_long()
        return None


def _head_lines(reason: bytes, headers: list[tuple[str, str]]) -> int:
    """The bytes of a head's whole lines, but their line ends: its reason phrase, and each field's name and value
    (decoded as UTF-8 with surrogateescape) with their separators."""
    lines = len(reason)
    for name, value in headers:
        lines += len(name.encode("utf-8", "surrogateescape")) + len(value.encode("utf-8", "surrogateescape")) + 4
    return lines


def line_too_long() -> str:
    """What an upstream sent that no line may hold (:data:`MAX_RESPONSE_LINE`)."""
    return (f"a line over {MAX_RESPONSE_LINE} bytes (the status line, a header or trailer field, or a chunk-size "
            "line)")

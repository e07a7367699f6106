"""What a proxy forwards of a response's headers (RFC 9110 7.6.1)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, istr

from sigproxy import fieldnames, headerrules
from sigproxy.headerrules import NAMES_KEPT, connection_options, end_to_end, has_header, lower_name

END_TO_END = [("Server", "nginx"), ("Content-Type", "application/xml"), ("Content-Length", "12"), ("ETag", '"a"')]


@pytest.mark.parametrize(("hop", "dropped"), [
    ([], set()),
    ([("Connection", "keep-alive")], set()),
    ([("connection", "close")], set()),
    ([("Keep-Alive", "timeout=5"), ("Connection", "keep-alive")], set()),
    ([("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum"), ("Upgrade", "h2c"), ("TE", "trailers")], set()),
    ([("Proxy-Authenticate", "Basic"), ("Proxy-Connection", "keep-alive")], set()),
    ([("Connection", "close, X-Trace")], {"x-trace"}),
    ([("CONNECTION", " keep-alive ,  x-trace,ETag ")], {"x-trace", "etag"}),
    ([("Connection", "keep-alive"), ("Connection", "X-Trace")], {"x-trace"}),
])
def test_hop_by_hop_and_connection_named_headers_are_not_forwarded(hop: list[tuple[str, str]],
                                                                     dropped: set[str]) -> None:
    """The hop-by-hop headers go, and so does every header a Connection header names (any case, any spacing,
    over several Connection lines); the rest keep their order and case."""
    given = [*END_TO_END[:2], *hop, ("X-Trace", "1"), *END_TO_END[2:]]
    named = connection_options([v for k, v in given if k.lower() == "connection"])
    assert named == dropped
    kept = end_to_end(iter(given), named)  # any iterable
    assert kept == [(k, v) for k, v in [*END_TO_END[:2], ("X-Trace", "1"), *END_TO_END[2:]]
                    if k.lower() not in dropped]


@pytest.mark.parametrize(("headers", "found"), [
    ([("Content-Length", "1")], True), ([("content-LENGTH", "1")], True), ([("X-Content-Length", "1")], False),
    ([], False), ([("Server", "s"), ("CONTENT-LENGTH", "0")], True), ([("content-length", "2")], True),
    ([("Server", "s"), ("Content-Type", "t")], False)])
def test_has_header_ignores_case(headers: list[tuple[str, str]], found: bool) -> None:
    assert has_header(headers, "content-length", "Content-Length") is found


@pytest.mark.parametrize(("values", "named"), [
    ([], set()), (["keep-alive"], set()), ([" Close "], set()), (["close, x-a"], {"x-a"}),
    (["keep-alive", "close"], set()), (["X-A,, ,x-b"], {"x-a", "x-b"}), (["upgrade, te"], set())])
def test_connection_options(values: list[str], named: set[str]) -> None:
    """The names a Connection header lists, lower case, without the hop-by-hop ones and empty list items."""
    assert connection_options(values) == named


def test_lower_names_are_as_before_and_kept_within_bounds() -> None:
    """lower_name lower-cases as str.lower does; a peer sending endless new names can't grow what is kept past
    NAMES_KEPT."""
    for name in ("Content-Length", "X-Amz-Request-Id", "ETag", "etag", "Caf\u00c9", "bad\udcff", ""):
        assert lower_name(name) == name.lower()
        assert lower_name(name) is lower_name(name)  # kept: the same str again
    for i in range(NAMES_KEPT * 3):
        assert lower_name(f"X-Name-{i}") == f"x-name-{i}"
        assert len(headerrules._lowers) <= NAMES_KEPT
    assert lower_name("Server") == "server"  # after the drop, as before


def test_field_name_constants_are_istr_and_find_any_spelling() -> None:
    """Each name in sigproxy.fieldnames is an istr (its case-folded form ready for a CIMultiDict look-up; compiled,
    it stays one), written as its constant's name says, and finds a header however the client spelled it."""
    for constant in fieldnames.__all__:
        name = getattr(fieldnames, constant)
        assert isinstance(name, istr)
        assert constant == name.upper().replace("-", "_")
        headers = CIMultiDict([(name.lower(), "a"), (name.upper(), "b")])
        assert headers.getall(name) == ["a", "b"] and name in headers and headers.get(name) == "a"

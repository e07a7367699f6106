"""The header sections sigproxy writes (``request_head`` upstream, ``response_head`` to the client): a CR or LF
anywhere inside a line is refused (RFC 9110 5.5: it would split the section), and nothing else is."""

from __future__ import annotations

import pytest

from sigproxy.h1wire import head_bytes, request_head, wire_text
from sigproxy.http1 import response_head

_BREAKS = ["\r", "\n", "\r\n", "\n\r", "\r\n\r\n"]


def _request(method: str = "GET", target: str = "/k", authority: str = "h:80",
             headers: tuple[tuple[str, str], ...] = (("X-A", "1"),)) -> bytes:
    return request_head(method, target, authority, headers, None)[0]


@pytest.mark.parametrize("brk", _BREAKS)
@pytest.mark.parametrize("where", ["method", "target", "authority", "name", "value", "value end", "value start"])
def test_a_request_line_break_inside_any_part_is_refused(where: str, brk: str) -> None:
    parts: dict[str, object] = {
        "method": {"method": f"GET{brk}"},
        "target": {"target": f"/k{brk}X-Injected: 1"},
        "authority": {"authority": f"h:80{brk}X-Injected: 1", "headers": ()},
        "name": {"headers": ((f"X-A{brk}X-B", "1"),)},
        "value": {"headers": (("X-A", f"1{brk}X-Injected: 1"),)},
        "value end": {"headers": (("X-A", f"1{brk}"),)},
        "value start": {"headers": (("X-A", f"{brk}1"),)},
    }
    with pytest.raises(ValueError, match="contains CR or LF"):
        _request(**parts[where])  # type: ignore[arg-type]


@pytest.mark.parametrize("brk", _BREAKS)
@pytest.mark.parametrize("where", ["reason", "name", "value", "extra"])
def test_a_response_line_break_inside_any_part_is_refused(where: str, brk: str) -> None:
    reason, headers, extra = "OK", [("X-A", "1")], ["Content-Length: 0"]
    if where == "reason":
        reason = f"OK{brk}X-Injected: 1"
    elif where == "name":
        headers = [(f"X-A{brk}", "1")]
    elif where == "value":
        headers = [("X-A", f"1{brk}X-Injected: 1")]
    else:
        extra = [f"Content-Length: 0{brk}"]
    with pytest.raises(ValueError, match="contains CR or LF"):
        response_head(200, reason, headers, extra)


def test_clean_heads_are_written_line_by_line() -> None:
    assert _request(headers=(("X-A", "1\t2 \x7f\u00e9"),)) == (
        b"GET /k HTTP/1.1\r\nX-A: 1\t2 \x7f\xc3\xa9\r\nHost: h:80\r\n\r\n")
    assert response_head(200, None, [("X-A", "v\udce9")], ["Content-Length: 0"]) == (
        b"HTTP/1.1 200 OK\r\nX-A: v\xe9\r\nContent-Length: 0\r\n\r\n")
    assert response_head(204, "No Content", [], []) == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize("raw", [b"text/plain", b"caf\xc3\xa9", b"caf\xe9", b"\xff\xfe", b"\xed\xa0\x80", b"",
                                 b"\xf0\x9f\x98\x80 ok"])
def test_head_bytes_received_go_out_unchanged(raw: bytes) -> None:
    """A value as received -- UTF-8, obs-text that is not UTF-8 (a lone 0xE9), an encoded surrogate -- becomes
    text as the surrogateescape decoder makes it, and goes out as the same bytes; a request's head (strict)
    refuses what it can't encode."""
    text = wire_text(raw)
    assert text == raw.decode("utf-8", "surrogateescape")
    assert head_bytes([f"X-V: {text}"], "response", "surrogateescape") == b"X-V: " + raw + b"\r\n\r\n"
    if text == raw.decode("utf-8", "replace"):  # valid UTF-8
        assert head_bytes([f"X-V: {text}"], "request", "strict") == b"X-V: " + raw + b"\r\n\r\n"
    else:
        with pytest.raises(UnicodeEncodeError):
            head_bytes([f"X-V: {text}"], "request", "strict")

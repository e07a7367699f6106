"""The connect page's pure defences (sigproxy/connectpage/security.py): the CSRF comparison, the Origin and
Sec-Fetch-Site rules, and the redaction of tokens from logged text. The browser test
(tests/integration/test_connect_page.py) covers them end to end."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from sigproxy.connectpage.security import HEADERS, csrf_matches, foreign_origin, new_csrf, redact, set_csrf

PAGE = "/connect/" + "t" * 43


def request(headers: dict[str, str] | None = None, method: str = "POST") -> web.Request:
    return make_mocked_request(method, PAGE, headers=CIMultiDict({"Host": "127.0.0.1:9000", **(headers or {})}))


def test_csrf_needs_cookie_and_field_equal() -> None:
    value = new_csrf()
    assert len(value) >= 40
    assert new_csrf() != value
    assert csrf_matches(request({"Cookie": f"sigproxy-connect-csrf={value}"}), value)
    assert csrf_matches(request({"Cookie": f"__Host-sigproxy-connect-csrf={value}"}), value)
    assert not csrf_matches(request({"Cookie": f"sigproxy-connect-csrf={value}"}), value[:-1] + "x")
    assert not csrf_matches(request({"Cookie": f"sigproxy-connect-csrf={value}"}), None)
    assert not csrf_matches(request({"Cookie": f"sigproxy-connect-csrf={value}"}), "")
    assert not csrf_matches(request(), value)
    assert not csrf_matches(request({"Cookie": "sigproxy-connect-csrf="}), "")
    assert not csrf_matches(request({"Cookie": f"other={value}"}), value)


def test_cookie_is_host_prefixed_and_secure_over_https() -> None:
    plain = web.Response()
    set_csrf(request(method="GET"), plain, "v", None)
    cookie = plain.cookies["sigproxy-connect-csrf"]
    assert (cookie["path"], cookie["httponly"], cookie["samesite"], cookie["secure"]) == ("/connect/", True,
                                                                                           "Strict", "")
    tls = web.Response()
    set_csrf(request(method="GET"), tls, "v", "https://connect.example.com")
    cookie = tls.cookies["__Host-sigproxy-connect-csrf"]
    assert (cookie["path"], cookie["httponly"], cookie["samesite"], cookie["secure"]) == ("/", True, "Strict", True)


@pytest.mark.parametrize(("headers", "public_url", "foreign"), [
    ({}, None, False),  # no Origin (old browsers, curl): the CSRF token decides
    ({"Origin": "http://127.0.0.1:9000"}, None, False),
    ({"Origin": "HTTP://127.0.0.1:9000"}, None, False),
    ({"Origin": "null"}, None, False),  # the page's own form under Referrer-Policy: no-referrer
    ({"Origin": "https://connect.example.com"}, "https://connect.example.com/base", False),
    ({"Origin": "https://evil.example"}, None, True),
    ({"Origin": "http://127.0.0.1:9001"}, None, True),
    ({"Origin": "https://connect.example.com.evil.example"}, "https://connect.example.com", True),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, None, False),
    ({"Sec-Fetch-Site": "none"}, None, False),
    ({"Sec-Fetch-Site": "cross-site", "Origin": "null"}, None, True),
    ({"Sec-Fetch-Site": "same-site"}, None, True),
])
def test_foreign_origin(headers: dict[str, str], public_url: str | None, foreign: bool) -> None:
    assert foreign_origin(request(headers), public_url) is foreign


def test_redact_keeps_tokens_out_of_logs() -> None:
    token = "abcDEF123_-" * 4
    text = f'GET /connect/{token} failed; see "/connect/{token}/cloudformation.json" and /connect/static/copy.js'
    out = redact(text)
    assert token not in out
    assert "/connect/static/copy.js" in out
    assert redact("nothing here") == "nothing here"


def test_headers() -> None:
    assert HEADERS["Content-Security-Policy"].startswith("default-src 'none';")
    assert "frame-ancestors 'none'" in HEADERS["Content-Security-Policy"]
    assert (HEADERS["X-Frame-Options"], HEADERS["Referrer-Policy"], HEADERS["Cache-Control"],
            HEADERS["X-Content-Type-Options"]) == ("DENY", "no-referrer", "no-store", "nosniff")

"""The connect page's defences: response headers, the CSRF double-submit cookie, the Origin check, and
keeping session tokens out of logs.

- Every ``/connect`` response carries :data:`HEADERS` (a strict Content-Security-Policy: only this origin's
  CSS, script and images; no framing; ``Referrer-Policy: no-referrer`` because the token is in the URL;
  ``Cache-Control: no-store``).
- CSRF: the page sets a random value in a cookie (``HttpOnly; SameSite=Strict``; ``__Host-`` prefixed with
  ``Secure; Path=/`` when served over HTTPS, else ``Path=/connect/``) and puts the same value in a hidden form
  field; a POST must carry both, equal (:func:`hmac.compare_digest`).
- A POST whose ``Origin`` is present and is neither this page's origin nor ``null`` is refused, as is one
  whose ``Sec-Fetch-Site`` says it came from another site. ``Origin: null`` is what Chromium sends for the
  page's own form under ``Referrer-Policy: no-referrer`` (Fetch: a POST's origin is serialized as null when
  the referrer policy is no-referrer), so it cannot be refused; the double-submit token still is checked.

Must not: log or echo a session token (:func:`redact`).
"""

from __future__ import annotations

import re
import secrets
from hmac import compare_digest

from aiohttp import web

from sigproxy.urlparts import split_url

__all__ = ["CSRF_FIELD", "HEADERS", "csrf_cookie", "csrf_matches", "foreign_origin", "new_csrf", "redact", "set_csrf"]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CSRF_FIELD = "csrf"
_COOKIE_SECURE = "__Host-sigproxy-connect-csrf"
_COOKIE_PLAIN = "sigproxy-connect-csrf"
_CONNECT_PATH = re.compile(r"/connect/(?!static/)[^/\s?#\"'<>]+")


def _https(request: web.BaseRequest, public_url: str | None) -> bool:
    return request.secure or (public_url or "").lower().startswith("https://")


def new_csrf() -> str:
    """A fresh random CSRF value, for the form's hidden field and :func:`set_csrf`."""
    return secrets.token_urlsafe(32)


def set_csrf(request: web.BaseRequest, response: web.StreamResponse, value: str, public_url: str | None) -> None:
    """Set ``value`` as the CSRF cookie on ``response``."""
    if _https(request, public_url):
        response.set_cookie(_COOKIE_SECURE, value, path="/", secure=True, httponly=True, samesite="Strict")
    else:
        response.set_cookie(_COOKIE_PLAIN, value, path="/connect/", httponly=True, samesite="Strict")


def csrf_cookie(request: web.BaseRequest) -> str | None:
    return request.cookies.get(_COOKIE_SECURE) or request.cookies.get(_COOKIE_PLAIN)


def csrf_matches(request: web.BaseRequest, field: str | None) -> bool:
    """The form's hidden field equals the cookie (both present, non-empty), in constant time."""
    cookie = csrf_cookie(request)
    if not cookie or not field:
        return False
    return compare_digest(cookie.encode("utf-8", "surrogateescape"), field.encode("utf-8", "surrogateescape"))


def _origin_of(url: str) -> str:
    parts = split_url(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts is not None else "null"


def foreign_origin(request: web.BaseRequest, public_url: str | None) -> bool:
    """The POST says it comes from another origin (``Origin``) or site (``Sec-Fetch-Site``)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    allowed = {f"{request.scheme}://{request.host}".lower()}
    if public_url:
        allowed.add(_origin_of(public_url))
    return origin.lower() not in allowed


def redact(text: str) -> str:
    """``text`` with any ``/connect/TOKEN`` path reduced to ``/connect/…`` (for logs)."""
    return _CONNECT_PATH.sub("/connect/…", text) if "/connect/" in text else text

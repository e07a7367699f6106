"""Who may use the admin API (``/v1``): ``Authorization: Bearer TOKEN`` against ``[admin] token``.

- The token is read from the current config at each request, so a reload (SIGHUP) rotates it.
- It is compared with :func:`hmac.compare_digest` on bytes (constant time in the secret's content).
- Failures are counted per client address in the same :class:`~sigproxy.authlimit.AuthFailures` as proxy-token
  failures (past the limit: 429 with ``Retry-After``, whatever the request carries) and in the counter
  ``sigproxy_admin_auth_failures_total``.
- With no token on a non-loopback admin listener the API is off: every ``/v1`` route answers 403 ``api_off``
  saying why (``[admin] token`` explains). With no token on loopback it is served, with a warning at start.

``/healthz``, ``/readyz``, ``/health/connections`` and ``/metrics`` are not under ``/v1``: never authenticated.

Owns: the audit actor of a request (:func:`actor`).
Must not: log or echo a token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from hmac import compare_digest
from typing import ClassVar, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from sigproxy.authlimit import AuthFailures
from sigproxy.control import Control
from sigproxy.errors import ApiForbidden, Unauthorized
from sigproxy.metrics import Metrics

from .http import Handler, is_api

__all__ = ["ACTOR_HEADER", "actor", "auth_middleware", "bearer_matches", "compare_digest"]

logger = logging.getLogger(__name__)

ACTOR_HEADER = "X-Sigproxy-Actor"
_MAX_ACTOR = 128


class _Runtime(Protocol):
    metrics: Metrics
    failures: AuthFailures
    control: Control | None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """``authorization`` is ``Bearer TOKEN`` (scheme case-insensitive) with exactly ``token``, compared in
    constant time."""
    if authorization is None:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def actor(request: web.BaseRequest) -> str:
    """The audit log's *who*: ``api ADDRESS``, plus what ``X-Sigproxy-Actor`` says (a platform's own user), kept
    printable and at most 128 characters."""
    who = f"api {request.remote}"
    said = request.headers.get(ACTOR_HEADER)
    if said:
        clean = "".join(ch for ch in said if ch.isprintable()).strip()[:_MAX_ACTOR]
        if clean:
            who += f" {clean}"
    return who


def auth_middleware(runtime: _Runtime, listen_host: str) -> Middleware:
    """The ``/v1`` gate for an admin listener bound to ``listen_host``; logs once whether the API is on."""
    admin = runtime.control.config.admin if runtime.control is not None else None
    if admin is not None:
        off = admin.api_off_reason(listen_host)
        if off is not None:
            logger.warning("%s; set [admin] token to serve it", off)
        elif admin.token is None:
            logger.warning("admin API (/v1) on %s without a token: anyone who can reach this loopback address may "
                           "manage connections; set [admin] token", listen_host)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        control = runtime.control
        if control is None:  # pragma: no cover - serve() sets it before binding the admin listener
            raise ApiForbidden("the admin API is not ready yet")
        settings = control.config.admin
        off = settings.api_off_reason(listen_host)
        if off is not None:
            raise ApiForbidden(f"{off}; set [admin] token to turn it on")
        runtime.failures.check(request.remote)
        if settings.token is not None and not bearer_matches(request.headers.get("Authorization"),
                                                             settings.token.reveal()):
            runtime.failures.record(request.remote)
            runtime.metrics.admin_auth_failures.inc()
            missing = "Authorization" not in request.headers
            raise _Unauthorized("send Authorization: Bearer TOKEN ([admin] token)" if missing
                                else "the bearer token is wrong")
        return await handler(request)

    return middleware


class _Unauthorized(Unauthorized):
    """401 with ``WWW-Authenticate: Bearer`` (set by the errors middleware from :attr:`headers`)."""

    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="sigproxy"'}

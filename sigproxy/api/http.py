"""The admin API's HTTP conventions: every ``/v1`` answer is JSON with ``Cache-Control: no-store``, and every
error -- ours (:class:`~sigproxy.errors.ApiError`), the proxy's (:class:`~sigproxy.errors.SigproxyError`, e.g.
a host the connection may not sign for) or aiohttp's own (404, 405, 413) -- becomes
``{"error": {"code", "message", "field"}}`` in one place, :func:`errors_middleware`.

Owns: reading a request body as one JSON object (size cap, media type, syntax), and reading query parameters.
Must not: know connections or the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from sigproxy.errors import (
    ApiError,
    BadJson,
    InvalidField,
    MethodNotAllowed,
    PayloadTooLarge,
    SigproxyError,
    TooManyAuthFailures,
    UnsupportedMediaType,
)

__all__ = ["API_PREFIX", "MAX_BODY", "errors_middleware", "is_api", "json_object", "int_param", "reply",
           "known_params"]

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"
MAX_BODY = 1024 * 1024
"""A connection's JSON is a few KiB; 1 MiB leaves room for big session policies and still bounds memory."""
_JSON_TYPES = ("application/json", "application/merge-patch+json")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_api(request: web.BaseRequest) -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


def reply(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def _error(exc: ApiError | SigproxyError, *, field: str | None = None) -> web.Response:
    if isinstance(exc, ApiError):
        body: dict[str, Any] = exc.body()
    else:
        body = {"error": {"code": exc.code, "message": exc.message, "field": field}}
    headers: dict[str, str] = dict(getattr(exc, "headers", {}))
    if isinstance(exc, TooManyAuthFailures):
        headers["Retry-After"] = str(exc.retry_after)
    return reply(body, exc.status, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors of ``/v1`` routes as JSON; ``Cache-Control: no-store`` on every ``/v1`` answer."""
    if not is_api(request):
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error(exc)
    except SigproxyError as exc:
        response = _error(exc)
    except web.HTTPRequestEntityTooLarge:
        response = _error(PayloadTooLarge(f"the request body is over {MAX_BODY} bytes"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = _error(MethodNotAllowed(f"{request.method} is not allowed on {request.path}; use {allowed}"))
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = _error(ApiError(f"no API route {request.path}: see /v1/openapi.json", code="not_found"))
        response.set_status(404)
    response.headers["Cache-Control"] = "no-store"
    return response


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object. A body over :data:`MAX_BODY` is a 413, a media type other than JSON a
    415 (none given is taken as JSON), anything but a JSON object a 400 (:class:`BadJson`)."""
    if request.headers.get("Content-Type") and request.content_type not in _JSON_TYPES:
        raise UnsupportedMediaType(f"send Content-Type: application/json (got {request.content_type})",
                                   field="Content-Type")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"the request body is over {MAX_BODY} bytes")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadJson(f"the request body is not JSON: {exc}" if raw else "the request body is empty: send a JSON "
                      "object") from None
    if not isinstance(data, dict):
        raise BadJson(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def known_params(request: web.Request, allowed: Iterable[str]) -> None:
    """Refuse a query parameter the route does not take (a typo would otherwise be ignored silently)."""
    names = set(allowed)
    for key in request.query:
        if key not in names:
            expected = ", ".join(sorted(names)) or "none"
            raise InvalidField(f"unknown query parameter {key!r}; this route takes {expected}", field=key)


def int_param(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidField(f"expected an integer, got {value!r}", field=name) from None

"""The admin API (issue 13): JSON under ``/v1`` on the admin listener, for platforms that onboard customers and
manage connections at runtime.

::

    admin listener ─► errors middleware (JSON errors, no-store) ─► auth middleware (bearer token, /v1 only)
                   ─► routes (routes.py) ─► Control (sigproxy/control.py) ─► store, change feed

Modules: :mod:`.http` (errors, bodies, query parameters), :mod:`.auth` (the bearer token, failure counting,
the audit actor), :mod:`.routes` (the handlers) and ``openapi.json`` (the OpenAPI 3.1 document served at
``/v1/openapi.json``, checked in tests against real answers).
"""

from __future__ import annotations

from .auth import auth_middleware
from .http import MAX_BODY, errors_middleware
from .routes import add_routes, openapi_document

__all__ = ["MAX_BODY", "add_routes", "auth_middleware", "errors_middleware", "openapi_document"]

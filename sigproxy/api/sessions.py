"""The admin API's connect-session routes (issue 14's fixed interface), on the runtime's
:class:`~sigproxy.sessions.ConnectSessions`::

    POST   /v1/connect-sessions        201 {"id", "url", "expires_at"} + Location
    GET    /v1/connect-sessions/{id}   the session (state open | completed | expired | revoked, attempts, ...)
    DELETE /v1/connect-sessions/{id}   200 with the revoked session (409 session_completed once completed)
    GET    /v1/connect-template        the generic CloudFormation template to host at [connect] template_url

Must not: hold state, or put a session's token in anything but the ``url`` of the 201.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from sigproxy.control import Control
from sigproxy.errors import Conflict, InvalidField
from sigproxy.onboarding import hosted_template, normalize_principal
from sigproxy.sessions import ConnectSessions

from .auth import actor
from .http import json_object, known_params, reply

__all__ = ["add_session_routes"]


class _Runtime(Protocol):
    control: Control | None
    sessions: ConnectSessions | None


def _base_url(request: web.Request) -> str:
    """The admin listener's own ``http://HOST:PORT``: the address this request came in on."""
    sockname: Any = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sockname:  # pragma: no cover - a TCP site always has one
        return f"http://{request.host}"
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def add_session_routes(app: web.Application, runtime: _Runtime) -> None:
    def sessions() -> ConnectSessions:
        if runtime.sessions is None:
            raise Conflict("the connection store is off ([store] url = \"\"): connect sessions live in the store",
                           code="store_off")
        return runtime.sessions

    async def create(request: web.Request) -> web.Response:
        known_params(request, ())
        body = await json_object(request)
        session, url = await sessions().create(body, actor=actor(request), base_url=_base_url(request))
        out = session.to_json()
        return reply({"id": session.id, "url": url, "expires_at": out["expires_at"]}, 201,
                     {"Location": f"/v1/connect-sessions/{session.id}"})

    async def show(request: web.Request) -> web.Response:
        known_params(request, ())
        return reply((await sessions().get(request.match_info["id"])).to_json())

    async def revoke(request: web.Request) -> web.Response:
        known_params(request, ())
        return reply((await sessions().revoke(request.match_info["id"], actor=actor(request))).to_json())

    async def template(request: web.Request) -> web.Response:
        known_params(request, ())
        if runtime.control is None:  # pragma: no cover - serve() sets it before binding the admin listener
            raise Conflict("not ready")
        onboarding = runtime.control.config.onboarding
        if not onboarding.principal:
            raise InvalidField("no principal: set [onboarding] principal in the config (the platform's AWS account "
                               "id or IAM ARN that customers' roles trust)", field="principal")
        return reply(hosted_template(normalize_principal(onboarding.principal),
                                     role_path=onboarding.require_role_path))

    app.router.add_post("/v1/connect-sessions", create)
    app.router.add_get("/v1/connect-sessions/{id}", show, allow_head=False)
    app.router.add_delete("/v1/connect-sessions/{id}", revoke)
    app.router.add_get("/v1/connect-template", template, allow_head=False)

"""The admin API's routes, all under ``/v1`` (the fixed interface of issue 13; ``/v1/openapi.json`` describes
each one with its schemas)::

    GET    /v1/connections                        ?prefix= &state= &limit= &cursor=  -> a page
    POST   /v1/connections                        201 + Location (assume_role without role_arn: pending)
    GET    /v1/connections/{name}
    PATCH  /v1/connections/{name}                 JSON merge patch; a role_arn is validated at AWS first
    DELETE /v1/connections/{name}                 204
    GET    /v1/connections/{name}/trust-policy    ?principal= &external_id=...
    GET    /v1/connections/{name}/cloudformation  ?principal= &external_id=... &role_name=
    POST   /v1/connections/{name}/check           resolve credentials (the proxy's cache), GetCallerIdentity
    POST   /v1/sign                               {url, headers} for programs that send their own requests
    /v1/connect-sessions..., /v1/connect-template  connect sessions (sessions.py)
    GET    /v1/openapi.json

A connection is shown only through :func:`~sigproxy.connection.connection_json` (secrets as ``"***"``).

Must not: hold state of its own (everything is the runtime's :class:`~sigproxy.control.Control`), or put a
secret in an answer other than ``/v1/sign``'s (which must carry a session token to be usable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from sigproxy.connection import ConnectionConfig, connection_json
from sigproxy.control import DEFAULT_PAGE, Control
from sigproxy.errors import Conflict, InvalidField
from sigproxy.handler import Handler
from sigproxy.onboarding import (
    DEFAULT_ROLE_NAME,
    cloudformation_template,
    create_role_commands,
    normalize_principal,
    trust_policy,
)
from sigproxy.sessions import ConnectSessions
from sigproxy.signapi import parse_sign_input, sign
from sigproxy.verify import check_connection

from .auth import actor
from .http import int_param, json_object, known_params, reply
from .sessions import add_session_routes

__all__ = ["add_routes", "openapi_document"]


class _Runtime(Protocol):
    control: Control | None
    sessions: ConnectSessions | None

    @property
    def handler(self) -> Handler: ...


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes (``sigproxy/api/openapi.json``)."""
    text = resources.files("sigproxy.api").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _active(conn: ConnectionConfig) -> ConnectionConfig:
    if conn.state != "active":
        raise Conflict(f"connection {conn.name!r} is pending: its role is not validated yet (PATCH "
                       "credentials.role_arn)", code="pending", field="name")
    return conn


def _role_inputs(request: web.Request, control: Control, conn: ConnectionConfig
                 ) -> tuple[str, list[str], str | None]:
    """The principal, ExternalIds and role path of a connection's trust policy, from the query and config."""
    principal = request.query.get("principal") or control.config.onboarding.principal
    if not principal:
        raise InvalidField("no principal: set [onboarding] principal in the config (the platform's AWS account "
                           "id or IAM ARN that customers' roles trust), or pass ?principal=", field="principal")
    try:
        principal = normalize_principal(principal)
    except ValueError:
        raise InvalidField(f"expected a 12-digit account id or an IAM ARN, got {principal!r}",
                           field="principal") from None
    creds = conn.credentials
    if creds.source not in ("assume_role", "sts_endpoint"):
        raise Conflict(f"connection {conn.name!r} has credentials.source = {creds.source!r}: a trust policy is "
                       "for an assume_role connection", code="not_assume_role", field="credentials.source")
    ids = [creds.external_id] if creds.external_id else []
    ids += [e for e in request.query.getall("external_id", []) if e not in ids]
    if not ids:
        raise InvalidField(f"connection {conn.name!r} has no credentials.external_id: set one (PATCH) or pass "
                           "?external_id=", field="external_id")
    try:
        trust_policy(principal, ids)
    except ValueError as exc:
        raise InvalidField(str(exc), field="external_id") from None
    role_path = conn.require_role_path or control.config.onboarding.require_role_path
    return principal, ids, role_path


def add_routes(app: web.Application, runtime: _Runtime) -> None:
    """Add every ``/v1`` route to ``app`` (the admin listener's)."""

    def control() -> Control:
        assert runtime.control is not None  # serve() sets it before the admin listener is bound
        return runtime.control

    async def list_connections(request: web.Request) -> web.Response:
        known_params(request, ("prefix", "state", "limit", "cursor"))
        q = request.query
        page = control().page(prefix=q.get("prefix") or None, state=q.get("state") or None,
                              limit=int_param(request, "limit", DEFAULT_PAGE), cursor=q.get("cursor") or None)
        return reply({"connections": [connection_json(c) for c in page.connections],
                      "next_cursor": page.next_cursor})

    async def create(request: web.Request) -> web.Response:
        known_params(request, ())
        conn = await control().create(await json_object(request), actor=actor(request))
        return reply(connection_json(conn), 201, {"Location": f"/v1/connections/{quote(conn.name, safe='')}"})

    async def show(request: web.Request) -> web.Response:
        known_params(request, ())
        return reply(connection_json(control().get(request.match_info["name"])))

    async def patch(request: web.Request) -> web.Response:
        known_params(request, ())
        body = await json_object(request)
        conn, result = await control().patch(request.match_info["name"], body, actor=actor(request))
        out = connection_json(conn)
        if result is not None and result.ok:
            out["identity"] = {"arn": result.arn}
        return reply(out)

    async def delete(request: web.Request) -> web.Response:
        known_params(request, ())
        await control().delete(request.match_info["name"], actor=actor(request))
        return web.Response(status=204)

    async def trust(request: web.Request) -> web.Response:
        known_params(request, ("principal", "external_id"))
        c = control()
        conn = c.get(request.match_info["name"])
        principal, ids, role_path = _role_inputs(request, c, conn)
        return reply({"trust_policy": trust_policy(principal, ids), "external_ids": ids, "principal": principal,
                      "role_path": role_path,
                      "aws_cli": create_role_commands(principal, ids, role_path=role_path,
                                                      role_name=_role_name(conn))})

    async def cloudformation(request: web.Request) -> web.Response:
        known_params(request, ("principal", "external_id", "role_name"))
        c = control()
        conn = c.get(request.match_info["name"])
        principal, ids, role_path = _role_inputs(request, c, conn)
        role_name = request.query.get("role_name") or _role_name(conn)
        try:
            template = cloudformation_template(principal, ids, role_path=role_path, role_name=role_name)
        except ValueError as exc:
            raise InvalidField(str(exc), field="role_name") from None
        return reply({"template": template, "role_path": role_path, "role_name": role_name,
                      "principal": principal, "external_ids": ids,
                      "parameters": [{"ParameterKey": "RoleName", "ParameterValue": role_name}]})

    async def check(request: web.Request) -> web.Response:
        known_params(request, ())
        conn = _active(control().get(request.match_info["name"]))
        result = await check_connection(runtime.handler.providers, conn)
        return reply(result.to_json())

    async def openapi(request: web.Request) -> web.Response:
        known_params(request, ())
        return reply(openapi_document())

    app.router.add_get("/v1/connections", list_connections, allow_head=False)
    app.router.add_post("/v1/connections", create)
    app.router.add_get("/v1/connections/{name}", show, allow_head=False)
    app.router.add_patch("/v1/connections/{name}", patch)
    app.router.add_delete("/v1/connections/{name}", delete)
    app.router.add_get("/v1/connections/{name}/trust-policy", trust, allow_head=False)
    app.router.add_get("/v1/connections/{name}/cloudformation", cloudformation, allow_head=False)
    app.router.add_post("/v1/connections/{name}/check", check)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    _add_sign(app, runtime, control)
    add_session_routes(app, runtime)


def _role_name(conn: ConnectionConfig) -> str:
    """The suggested name of a customer's role: ``sigproxy-NAME`` (IAM's 64-character limit)."""
    name = f"sigproxy-{conn.name}"[:64]
    return name if name else DEFAULT_ROLE_NAME


def _add_sign(app: web.Application, runtime: _Runtime, control: Callable[[], Control]) -> None:
    """``POST /v1/sign``: :func:`sigproxy.signapi.sign` with the proxy's credentials (its cache: no STS call per
    request) for an active connection, at the current time. Its answer holds a session token: never logged."""

    async def sign_route(request: web.Request) -> web.Response:
        known_params(request, ())
        data = await json_object(request)
        name = data.get("connection")
        if not isinstance(name, str) or not name:
            raise InvalidField("connection is required: the name of the connection to sign with",
                               field="connection")
        signing = parse_sign_input(data)
        conn = _active(control().get(name))
        creds, _ = await runtime.handler.providers.get(conn.name)
        return reply(sign(conn, creds, signing, now=datetime.now(UTC)).to_json())

    app.router.add_post("/v1/sign", sign_route)

"""The connect page's routes (mounted at ``/connect`` on the admin listener by :func:`add_connect_page`).

- ``GET /connect/{token}``: the page (ExternalId, trust policy, role path, CloudFormation, AWS CLI, the form).
- ``POST /connect/{token}``: the form (``application/x-www-form-urlencoded``, at most :data:`MAX_FORM` bytes).
  The answer is the page again with the outcome in ``#result``, not a redirect: after success the session
  is completed and its token no longer opens anything, so a Post/Redirect/Get would land on the "link
  used" page instead of the success. 200 with ``data-state="success"`` (the form gone), or 422 with
  ``data-state="error"`` (STS's code, the customer-actionable message, the field at fault marked).
- ``GET /connect/{token}/cloudformation.json``: the CloudFormation template as a download.
- ``GET /connect/static/{file}``: ``connect.css``, ``copy.js`` and ``logo`` (``[connect] logo_file``).

A token that opens nothing is a 404 (unknown) or 410 (expired, completed, revoked) page saying so and to ask
the platform for a new link; too many attempts a 429 page. The token's shape is checked before the store is
asked, and nothing here logs it.
"""

from __future__ import annotations

import importlib.resources
import logging
import mimetypes
import re
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import aiohttp_jinja2
import jinja2
from aiohttp import web

from sigproxy.config import Config
from sigproxy.sessions import ConnectSessions, PageContext, SessionGone, SubmitOutcome, TooManyAttempts

from .security import CSRF_FIELD, HEADERS, csrf_matches, foreign_origin, new_csrf, redact, set_csrf

__all__ = ["MAX_FORM", "add_connect_page"]

logger = logging.getLogger(__name__)

PREFIX = "/connect"
MAX_FORM = 16 * 1024
"""The form is a role ARN, a region and a CSRF value: a few hundred bytes. Anything bigger is refused."""
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")  # as sigproxy.sessions issues them
_JINJA: web.AppKey[jinja2.Environment] = web.AppKey("sigproxy_connect_jinja", jinja2.Environment)
_STATIC = {"connect.css": "text/css; charset=utf-8", "copy.js": "text/javascript; charset=utf-8"}
_LOGO_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".gif": "image/gif"}
_MAX_LOGO = 1024 * 1024
_HEADINGS = {
    "expired": "This link has expired",
    "completed": "This link has been used",
    "revoked": "This link was cancelled",
    "unknown": "This link is not valid",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Runtime(Protocol):
    sessions: ConnectSessions | None

    @property
    def config(self) -> Config: ...


def _settings(runtime: _Runtime) -> tuple[str, Path | None, str | None]:
    """``[connect]``'s product name, logo file and public URL (read at each request: a reload applies)."""
    connect = runtime.config.connect
    return connect.product_name, connect.logo_file, connect.public_url


def _read_static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


def add_connect_page(app: web.Application, runtime: _Runtime) -> None:
    """Serve the connect page under ``/connect`` on ``app`` (the admin listener) and give every ``/connect``
    response the security headers. No admin token: the session token in the URL is the credential."""
    static = {name: _read_static(name) for name in _STATIC}
    page = web.Application()
    aiohttp_jinja2.setup(page, app_key=_JINJA, autoescape=True, undefined=jinja2.StrictUndefined,
                         loader=jinja2.PackageLoader(__package__ or "sigproxy.connectpage", "templates"))

    def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
        product, logo, _ = _settings(runtime)
        context.setdefault("product_name", product)
        context.setdefault("has_logo", logo is not None)
        return aiohttp_jinja2.render_template(template, request, context, status=status, app_key=_JINJA)

    def gone(request: web.Request, exc: SessionGone) -> web.Response:
        """404 (unknown) or 410 (expired, completed, revoked) with the exception's customer-safe message."""
        heading = _HEADINGS.get(exc.state, _HEADINGS["unknown"])
        product, _, _ = _settings(runtime)
        return render(request, "gone.html", {
            "heading": heading, "message": exc.message,
            "advice": f"Ask {product} for a new link to connect your AWS account."},
            status=404 if exc.state == "unknown" else 410)

    def refusal(request: web.Request, status: int, heading: str, message: str, advice: str = "") -> web.Response:
        return render(request, "gone.html", {"heading": heading, "message": message, "advice": advice},
                      status=status)

    def too_many(request: web.Request, exc: TooManyAttempts) -> web.Response:
        product, _, _ = _settings(runtime)
        return refusal(request, 429, "Too many attempts", exc.message,
                       f"Ask {product} for a new link.")

    def sessions() -> ConnectSessions | None:
        return runtime.sessions

    async def open_page(request: web.Request, token: str) -> PageContext | web.Response:
        store = sessions()
        if store is None or not _TOKEN.match(token):
            return gone(request, SessionGone("unknown"))
        try:
            return await store.open(token)
        except SessionGone as exc:
            return gone(request, exc)

    def show(request: web.Request, token: str, ctx: PageContext, *, role_arn: str, region: str,
             outcome: SubmitOutcome | None = None, status: int = 200) -> web.Response:
        errors: dict[str, str] = {}
        if outcome is not None and not outcome.ok and outcome.field in ("role_arn", "region"):
            errors[outcome.field] = outcome.message or "This value is not valid."
        _, _, public = _settings(runtime)
        when = ctx.session.expires_at
        context = {
            "ctx": ctx, "product_name": ctx.product_name, "has_logo": ctx.has_logo, "outcome": outcome,
            "errors": errors, "role_arn": role_arn, "region": region,
            "form_action": f"{PREFIX}/{token}", "template_url": f"{PREFIX}/{token}/cloudformation.json",
            "expires_iso": when.astimezone(UTC).isoformat(timespec="seconds"),
            "expires_text": when.astimezone(UTC).strftime("at %H:%M UTC on %d %b %Y"),
        }
        form_shown = outcome is None or not outcome.ok
        csrf = context["csrf"] = new_csrf() if form_shown else ""  # a new value with each form shown
        response = render(request, "page.html", context, status=status)
        if form_shown:
            set_csrf(request, response, csrf, public)
        return response

    async def get_page(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        ctx = await open_page(request, token)
        if isinstance(ctx, web.Response):
            return ctx
        return show(request, token, ctx, role_arn=ctx.session.role_arn or "", region=ctx.session.region or "")

    async def read_form(request: web.Request) -> dict[str, str] | None:
        """The urlencoded form, or ``None`` when it is over :data:`MAX_FORM` bytes or not a form."""
        if request.content_type != "application/x-www-form-urlencoded":
            return None
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
        raw = b""
        while chunk := await request.content.read(MAX_FORM + 1 - len(raw)):
            raw += chunk
            if len(raw) > MAX_FORM:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=len(raw))
        try:
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            return None
        return {key: values[0] for key, values in parsed.items()}

    async def post_page(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        _, _, public = _settings(runtime)
        if foreign_origin(request, public):
            return refusal(request, 403, "Form sent from another site",
                           "This form can only be sent from its own page.", "Open the link you were given again.")
        form = await read_form(request)
        if form is None or not csrf_matches(request, form.get(CSRF_FIELD)):
            return refusal(request, 403, "Please reload the page",
                           "The form could not be checked: it is out of date, or your browser did not send its "
                           "cookie.", "Open the link you were given again, then send the form.")
        ctx = await open_page(request, token)
        if isinstance(ctx, web.Response):
            return ctx
        role_arn = form.get("role_arn", "").strip()
        region = form.get("region", "").strip()
        store = sessions()
        assert store is not None  # open_page answered a page
        try:  # validated there, exactly as the API does (an empty or malformed field is an outcome with .field)
            outcome = await store.submit(token, role_arn, region or None, client=request.remote)
        except SessionGone as exc:
            return gone(request, exc)
        except TooManyAttempts as exc:
            return too_many(request, exc)
        return show(request, token, ctx, role_arn=role_arn, region=region, outcome=outcome,
                    status=200 if outcome.ok else 422)

    async def template(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        ctx = await open_page(request, token)
        if isinstance(ctx, web.Response):
            return ctx
        return web.Response(text=ctx.cloudformation_json, content_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="{ctx.role_name}-cloudformation.json"'})

    async def static_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if name in static:
            return web.Response(body=static[name], headers={"Content-Type": _STATIC[name]})
        if name == "logo":
            _, logo, _ = _settings(runtime)
            if logo is not None:
                kind = _LOGO_TYPES.get(logo.suffix.lower()) or mimetypes.guess_type(logo.name)[0]
                try:
                    with logo.open("rb") as f:
                        data = f.read(_MAX_LOGO + 1)
                except OSError as exc:
                    logger.warning("connect page: cannot read [connect] logo_file %s: %s", logo, exc.strerror)
                else:
                    if kind is not None and kind.startswith("image/") and len(data) <= _MAX_LOGO:
                        return web.Response(body=data, headers={"Content-Type": kind})
        raise web.HTTPNotFound

    async def not_found(request: web.Request) -> web.StreamResponse:
        return gone(request, SessionGone("unknown"))

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """HTML pages for aiohttp's own errors; unexpected failures logged without the request's path."""
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return gone(request, SessionGone("unknown"))
        except web.HTTPMethodNotAllowed as exc:
            response = refusal(request, 405, "Not allowed", f"{request.method} is not used on this page.")
            response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
            return response
        except web.HTTPRequestEntityTooLarge:
            return refusal(request, 413, "Form too large", f"The form is limited to {MAX_FORM} bytes.")
        except web.HTTPException:
            raise
        except Exception as exc:
            text = redact("".join(traceback.format_exception(exc)))
            logger.error("connect page: %s while answering a %s request\n%s", type(exc).__name__, request.method,
                         text.rstrip())
            return refusal(request, 500, "Something went wrong",
                           "The page could not be shown. Try again in a moment.")

    page.middlewares.append(errors)
    page.router.add_get("/static/{file}", static_file)
    page.router.add_get("/{token}", get_page)
    page.router.add_post("/{token}", post_page)
    page.router.add_get("/{token}/cloudformation.json", template)
    page.router.add_route("*", "/{tail:.*}", not_found)
    app.add_subapp(PREFIX, page)

    async def headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            response.headers.update(HEADERS)

    app.on_response_prepare.append(headers)

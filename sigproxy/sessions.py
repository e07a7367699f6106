"""Connect sessions: the customer connect page's domain logic (issue 14), without HTTP.

::

    platform ─► POST /v1/connect-sessions ─► ConnectSessions.create ─► store (token hashed) ─► URL with the token
    customer ─► GET /connect/TOKEN  ─► ConnectSessions.open   ─► PageContext (ExternalId, trust policy, ...)
             ─► POST /connect/TOKEN ─► ConnectSessions.submit ─► Control.patch (AssumeRole + GetCallerIdentity)
                                        ─► session completed ─► webhook (signed, background)

A session belongs to one ``assume_role`` store connection, *pending* (onboarding) or *active* (reconnect: its
stored ExternalId is reused). The token (``secrets.token_urlsafe(32)``, 256 bits) is the only credential of the
page; the store keeps its SHA-256. A session is ``open`` until it expires (``expires_at``; ``"expired"`` is
computed, never stored), completes (the first successful submit: the token stops working) or is revoked.
Submits are counted atomically in the store: past ``[connect] max_attempts`` they are refused.

Owns: validating connect-session input (field names as in the API), the page's content, the submit outcome.
Must not: speak HTTP, put a secret (token, webhook secret) in a session's JSON, a log line or a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from .config import Config
from .connection import ConnectionConfig, connection_json
from .control import Control
from .errors import ApiError, Conflict, InvalidField, NotFound, SessionGone, TooManyAttempts, ValidationFailed
from .onboarding import (
    cloudformation_template,
    create_role_commands,
    is_external_id,
    new_external_id,
    normalize_principal,
    trust_policy,
)
from .urlparts import split_url
from .webhooks import WebhookSender, verify_webhook

if TYPE_CHECKING:
    from .store import SessionRecord, Store

__all__ = ["ConnectSession", "ConnectSessions", "PageContext", "SessionGone", "SubmitOutcome", "TooManyAttempts",
           "hash_token", "verify_webhook", "ROLE_ARN", "REGION", "MIN_TTL", "MAX_TTL"]

logger = logging.getLogger(__name__)

MIN_TTL, MAX_TTL = 60, 86400
ROLE_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\x21-\x7e]{1,510}/)?[\w+=,.@-]{1,64}$")
REGION = re.compile(r"^[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_FIELDS = ("connection", "external_id", "role_arn", "region", "display_name", "ttl", "webhook_url")
_MAX_DISPLAY = 200
_MAX_URL = 2048
_CONSOLE = "https://console.aws.amazon.com/cloudformation/home"


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a session token: what the store keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ConnectSession:
    id: str
    connection: str
    state: str  # "open" | "completed" | "expired" | "revoked"
    display_name: str | None
    role_arn: str | None  # seeds: prefill the form
    region: str | None
    expires_at: datetime
    created_at: datetime
    completed_at: datetime | None
    attempts: int
    last_error: str | None
    identity_arn: str | None
    webhook_url: str | None

    def to_json(self) -> dict[str, Any]:
        """The API's shape (``GET /v1/connect-sessions/{id}``); never the token."""
        return {"id": self.id, "state": self.state, "connection": self.connection,
                "display_name": self.display_name, "expires_at": _iso(self.expires_at),
                "created_at": _iso(self.created_at), "completed_at": _iso(self.completed_at),
                "attempts": self.attempts, "last_error": self.last_error, "identity_arn": self.identity_arn,
                "role_arn": self.role_arn, "region": self.region, "webhook_url": self.webhook_url}


@dataclass(frozen=True)
class PageContext:
    """Everything the page shows; nothing secret."""

    session: ConnectSession
    external_id: str
    external_ids: list[str]
    trust_policy: dict[str, Any]
    trust_policy_json: str
    principal: str
    role_path: str | None
    role_name: str
    cloudformation_template: dict[str, Any]
    cloudformation_json: str
    quick_create_url: str | None
    aws_cli_commands: list[str]
    product_name: str
    has_logo: bool
    max_attempts: int = 10


@dataclass(frozen=True)
class SubmitOutcome:
    ok: bool
    identity_arn: str | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None  # "role_arn" or "region" when the input itself is malformed


class Sender(Protocol):
    def send(self, url: str, secret: str, payload: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def role_name_for(connection: str) -> str:
    """The suggested name of a customer's role: ``sigproxy-NAME`` within IAM's rules (64 of ``[\\w+=,.@-]``)."""
    return re.sub(r"[^\w+=,.@-]", "-", f"sigproxy-{connection}")[:64]


def _stack_name(connection: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", f"sigproxy-{connection}")[:128]


def _string(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(f"expected a non-empty string, got {json.dumps(value)}", field=key)
    return value.strip()


def _role_arn(value: str | None, field: str) -> str | None:
    if value is not None and (len(value) > _MAX_URL or not ROLE_ARN.match(value)):
        raise InvalidField("expected an IAM role ARN like arn:aws:iam::123456789012:role/sigproxy-access",
                           field=field)
    return value


def _region(value: str | None, field: str) -> str | None:
    if value is not None and not REGION.match(value):
        raise InvalidField(f"expected an AWS region like us-east-1, got {value!r}", field=field)
    return value


class ConnectSessions:
    """Connect sessions over one store and the registry (:class:`~sigproxy.control.Control`).

    ``config_getter`` returns the current config (``[connect]``, ``[onboarding]``: read at each use, so a
    reload applies). ``clock`` returns the current aware UTC time (tests move it). ``webhook_sender``
    delivers completion webhooks (default: :class:`~sigproxy.webhooks.WebhookSender`).
    """

    def __init__(self, control: Control, store: Store, config_getter: Callable[[], Config], *,
                 clock: Callable[[], datetime] = _utcnow, webhook_sender: Sender | None = None) -> None:
        self._control = control
        self._records = store.connect_sessions
        self._config = config_getter
        self._clock = clock
        self._sender: Sender = webhook_sender if webhook_sender is not None else WebhookSender()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def new_token(self) -> str:
        return secrets.token_urlsafe(32)

    async def close(self) -> None:
        """Let webhooks in flight finish (a few seconds), then stop."""
        await self._sender.close()

    # ------------------------------------------------------------------ sessions

    def _session(self, record: SessionRecord) -> ConnectSession:
        state = record.state
        if state == "open" and self._clock() >= record.expires_at:
            state = "expired"
        seed = record.seed
        return ConnectSession(id=record.id, connection=record.connection, state=state,
                              display_name=record.display_name, role_arn=seed.get("role_arn"),
                              region=seed.get("region"), expires_at=record.expires_at, created_at=record.created_at,
                              completed_at=record.completed_at, attempts=record.attempts,
                              last_error=record.last_error, identity_arn=record.identity_arn,
                              webhook_url=record.webhook_url)

    def _principal(self) -> str:
        principal = self._config().onboarding.principal
        if not principal:
            raise InvalidField("no principal: set [onboarding] principal in the config (the platform's AWS account "
                               "id or IAM ARN that customers' roles trust)", field="principal")
        return normalize_principal(principal)

    def _connection(self, name: str) -> ConnectionConfig:
        try:
            conn = self._control.get(name)
        except NotFound:
            raise NotFound(f"no connection named {name!r}", field="connection") from None
        if conn.origin == "file":
            raise Conflict(f"connection {name!r} is defined in the config file: connect sessions are for store "
                           "connections (POST /v1/connections)", code="read_only", field="connection")
        if conn.credentials.source != "assume_role":
            raise Conflict(f"connection {name!r} has credentials.source = {conn.credentials.source!r}: a connect "
                           "session is for an assume_role connection", code="not_assume_role", field="connection")
        return conn

    async def create(self, body: Mapping[str, Any], *, actor: str, base_url: str) -> tuple[ConnectSession, str]:
        """``POST /v1/connect-sessions``: a new session and its URL (``public_url/connect/TOKEN``).

        Raises :class:`InvalidField` (the field at fault), :class:`NotFound` (``connection``),
        :class:`Conflict` (a file or non-``assume_role`` connection; an ExternalId other than an active
        connection's)."""
        for key in body:
            if key not in _FIELDS:
                raise InvalidField(f"unknown field; a connect session takes {', '.join(_FIELDS)}", field=key)
        config = self._config()
        name = _string(body, "connection")
        if name is None:
            raise InvalidField("is required: the name of an assume_role store connection", field="connection")
        external_id = _string(body, "external_id")
        if external_id is not None and not is_external_id(external_id):
            raise InvalidField("expected 2-1224 characters of letters, digits and +=,.@:/-", field="external_id")
        role_arn = _role_arn(_string(body, "role_arn"), "role_arn")
        region = _region(_string(body, "region"), "region")
        display_name = _string(body, "display_name")
        if display_name is not None and (len(display_name) > _MAX_DISPLAY or not display_name.isprintable()):
            raise InvalidField(f"expected 1 to {_MAX_DISPLAY} printable characters", field="display_name")
        ttl = body.get("ttl", config.connect.session_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidField(f"expected an integer from {MIN_TTL} to {MAX_TTL} (seconds), got {json.dumps(ttl)}",
                               field="ttl")
        webhook_url = _string(body, "webhook_url")
        if webhook_url is not None:
            parts = split_url(webhook_url)
            if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                    or len(webhook_url) > _MAX_URL):
                raise InvalidField("expected an http(s) URL", field="webhook_url")
            if config.connect.webhook_secret is None:
                raise InvalidField("needs [connect] webhook_secret in the config (webhooks are signed with it)",
                                   field="webhook_url")
        conn = self._connection(name)
        self._principal()
        stored = conn.credentials.external_id
        if conn.state == "active":
            if not stored:
                raise Conflict(f"connection {name!r} has no credentials.external_id: the connect page needs one "
                               "to reconnect", code="no_external_id", field="connection")
            if external_id is not None and external_id != stored:
                raise Conflict(f"connection {name!r} is active with another ExternalId: a reconnect reuses the "
                               "stored one (leave external_id out)", code="external_id_mismatch",
                               field="external_id")
        elif (external_id is not None and external_id != stored) or not stored:
            await self._control.patch(name, {"credentials": {"external_id": external_id or new_external_id()}},
                                      actor=actor)
        token = self.new_token()
        now = self._clock()
        record = await self._records.create(
            id=secrets.token_urlsafe(16), token_hash=hash_token(token), connection=name, display_name=display_name,
            seed={"role_arn": role_arn, "region": region, "external_id": external_id}, webhook_url=webhook_url,
            created_at=now, expires_at=now + timedelta(seconds=ttl), created_by=actor)
        url = f"{(config.connect.public_url or base_url).rstrip('/')}/connect/{token}"
        logger.info("connect session %s for connection %r created, expires %s", record.id, name,
                    _iso(record.expires_at))
        return self._session(record), url

    async def get(self, id: str) -> ConnectSession:
        """Raises :class:`NotFound` (field ``id``)."""
        record = await self._records.get(id) if _TOKEN.match(id) else None
        if record is None:
            raise NotFound(f"no connect session {id!r}", field="id")
        return self._session(record)

    async def revoke(self, id: str, *, actor: str) -> ConnectSession:
        """Revoke an open (or expired) session: its link stops working. Revoking twice is fine; a completed
        session raises :class:`Conflict` (``session_completed``). Raises :class:`NotFound`."""
        await self.get(id)
        record = await self._records.revoke(id, actor=actor, at=self._clock())
        if record is None:  # pragma: no cover - sessions are never deleted
            raise NotFound(f"no connect session {id!r}", field="id")
        if record.state == "completed":
            raise Conflict(f"connect session {id!r} is already completed: its link no longer works",
                           code="session_completed", field="id")
        return self._session(record)

    # ------------------------------------------------------------------ the page

    async def _open_record(self, token: str) -> SessionRecord:
        record = await self._records.get_by_token_hash(hash_token(token)) if _TOKEN.match(token) else None
        if record is None:
            raise SessionGone("unknown")
        state = self._session(record).state
        if state != "open":
            raise SessionGone(state)
        return record

    def _page_connection(self, name: str) -> ConnectionConfig:
        try:
            return self._connection(name)
        except ApiError:
            raise SessionGone("unknown", "The account this link was made for no longer exists here. Ask for a "
                              "new link.") from None

    async def open(self, token: str) -> PageContext:
        """What the page at ``/connect/TOKEN`` shows. Raises :class:`SessionGone` for an unknown, expired,
        completed or revoked token (looked up by its hash)."""
        record = await self._open_record(token)
        session = self._session(record)
        conn = self._page_connection(record.connection)
        config = self._config()
        external_id = conn.credentials.external_id
        try:
            principal = self._principal()
        except InvalidField:
            principal = None
        if not external_id or principal is None:
            logger.error("connect session %s: cannot show the page: %s", record.id,
                         "no ExternalId on the connection" if principal else "[onboarding] principal is not set")
            raise SessionGone("unknown", "This page is not set up completely yet. Ask the platform to check it.")
        ids = [external_id]
        role_path = conn.require_role_path
        role_name = role_name_for(conn.name)
        policy = trust_policy(principal, ids)
        template = cloudformation_template(principal, ids, role_path=role_path, role_name=role_name)
        quick = None
        if config.connect.template_url:
            region = session.region or conn.region or "us-east-1"
            query = urlencode({"templateURL": config.connect.template_url, "stackName": _stack_name(conn.name),
                               "param_ExternalId": external_id, "param_RoleName": role_name}, quote_via=quote)
            quick = f"{_CONSOLE}?region={quote(region)}#/stacks/quickcreate?{query}"
        return PageContext(
            session=session, external_id=external_id, external_ids=ids, trust_policy=policy,
            trust_policy_json=json.dumps(policy, indent=2), principal=principal, role_path=role_path,
            role_name=role_name, cloudformation_template=template,
            cloudformation_json=json.dumps(template, indent=2), quick_create_url=quick,
            aws_cli_commands=create_role_commands(principal, ids, role_path=role_path, role_name=role_name),
            product_name=config.connect.product_name, has_logo=config.connect.logo_file is not None,
            max_attempts=config.connect.max_attempts)

    def _lock(self, id: str) -> asyncio.Lock:
        lock = self._locks.get(id)
        if lock is None:
            lock = self._locks[id] = asyncio.Lock()
        return lock

    async def submit(self, token: str, role_arn: str, region: str | None, *, client: str | None) -> SubmitOutcome:
        """The customer's role ARN (and region): validated exactly as ``PATCH /v1/connections/{name}`` does.

        Raises :class:`SessionGone`, :class:`TooManyAttempts` (past ``[connect] max_attempts``). A malformed
        input is an outcome with ``field`` (no STS call, no attempt counted); a refusal at AWS one with STS's
        ``code`` (an attempt counted, the session still open); success completes the session."""
        record = await self._open_record(token)
        role_arn = (role_arn or "").strip()
        region = (region or "").strip() or None
        try:
            _role_arn(role_arn or None, "role_arn")
            if not role_arn:
                raise InvalidField("paste the ARN of the role you created", field="role_arn")
            _region(region, "region")
        except InvalidField as exc:
            return SubmitOutcome(ok=False, code=exc.code, message=exc.message, field=exc.field)
        async with self._lock(record.id):
            limit = self._config().connect.max_attempts
            count = await self._records.record_attempt(record.id, limit=limit)
            if count is None:
                record = await self._open_record(token)  # SessionGone if completed or revoked meanwhile
                raise TooManyAttempts(f"This link was tried {limit} times. Ask for a new link.")
            if self._clock() >= record.expires_at:
                raise SessionGone("expired")
            patch: dict[str, Any] = {"credentials": {"role_arn": role_arn}}
            if region is not None:
                patch["region"] = region
            actor = f"connect-session {record.id} {client or '-'}"
            try:
                conn, result = await self._control.patch(record.connection, patch, actor=actor)
            except ValidationFailed as exc:
                await self._records.record_error(record.id, exc.code)
                logger.info("connect session %s: attempt %d refused: %s", record.id, count, exc.code)
                return SubmitOutcome(ok=False, code=exc.code, message=exc.message)
            except NotFound:
                raise SessionGone("unknown", "The account this link was made for no longer exists here. Ask for "
                                  "a new link.") from None
            except ApiError as exc:
                await self._records.record_error(record.id, exc.code)
                field = exc.field if exc.field in ("region",) else "role_arn" if isinstance(exc, InvalidField) else None
                return SubmitOutcome(ok=False, code=exc.code, message=exc.message, field=field)
            arn = result.arn if result is not None else None
            won = await self._records.complete(record.id, identity_arn=arn or "", at=self._clock())
        if not won:
            logger.warning("connect session %s: the role validated but the session was completed or revoked "
                           "meanwhile; connection %r is active", record.id, record.connection)
            return SubmitOutcome(ok=True, identity_arn=arn)
        logger.info("connect session %s completed: connection %r active as %s", record.id, record.connection, arn)
        done = await self._records.get(record.id)
        if done is not None and done.webhook_url:
            self._notify(self._session(done), conn)
        return SubmitOutcome(ok=True, identity_arn=arn)

    def _notify(self, session: ConnectSession, conn: ConnectionConfig) -> None:
        secret = self._config().connect.webhook_secret
        if session.webhook_url is None:
            return
        if secret is None:
            logger.error("connect session %s completed but [connect] webhook_secret is not set any more: no webhook "
                         "sent", session.id)
            return
        self._sender.send(session.webhook_url, secret.reveal(), {
            "type": "connect_session.completed", "session": session.to_json(), "connection": connection_json(conn)})

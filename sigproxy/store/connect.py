"""Connect sessions in the store (``connect_sessions``, migration 0003): links to the customer connect page.

A session is found by its id (the API's) or by the SHA-256 of its token (the page's); the token itself is
never stored. Sessions are not connections: writing one does not move the store revision or the change feed
(every replica reads them from the database when a page is opened or submitted). Creating and revoking one
adds an audit event (``connect-session-create``, ``connect-session-revoke``) naming the session id.

Every state change is one conditional ``UPDATE`` (``WHERE state = 'open'``), so two replicas racing on one
session agree on one outcome; :meth:`SessionRecords.record_attempt` increments atomically under a limit.

Must not: know the connect flow (expiry is the caller's clock), log or return a token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .database import WRITE
from .models import AuditEvent, ConnectSessionRow

__all__ = ["SESSION_STATES", "SessionRecord", "SessionRecords"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("sigproxy.audit")

SESSION_STATES = ("open", "completed", "revoked")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One stored connect session, as stored (``state`` never ``"expired"``: that is computed by the caller)."""

    id: str
    connection: str
    state: str
    display_name: str | None
    seed: Mapping[str, Any]
    webhook_url: str | None
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None
    attempts: int
    last_error: str | None
    identity_arn: str | None
    created_by: str


def _record(row: ConnectSessionRow) -> SessionRecord:
    return SessionRecord(row.id, row.connection, row.state, row.display_name, dict(row.seed), row.webhook_url,
                         row.created_at, row.expires_at, row.completed_at, row.attempts, row.last_error,
                         row.identity_arn, row.created_by)


class SessionRecords:
    """The ``connect_sessions`` table of one store (``Store.connect_sessions``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options=WRITE)  # SQLite: BEGIN IMMEDIATE (no lock upgrade)
            yield session

    @staticmethod
    def _audit(session: AsyncSession, *, at: datetime, actor: str, action: str, connection: str,
               session_id: str) -> None:
        session.add(AuditEvent(at=at, actor=actor[:200], action=action, connection=connection,
                               detail={"session": session_id}))
        audit_logger.info("actor=%s action=%s connection=%s session=%s", json.dumps(actor), action,
                          json.dumps(connection), session_id)

    async def create(self, *, id: str, token_hash: str, connection: str, display_name: str | None,
                     seed: Mapping[str, Any], webhook_url: str | None, created_at: datetime, expires_at: datetime,
                     created_by: str) -> SessionRecord:
        """Store a new open session. Raises the database's IntegrityError on a duplicate id or token hash
        (256-bit tokens: never in practice)."""
        row = ConnectSessionRow(id=id, token_hash=token_hash, connection=connection, state="open",
                                display_name=display_name, seed=dict(seed), webhook_url=webhook_url,
                                created_at=created_at, expires_at=expires_at, completed_at=None, attempts=0,
                                last_error=None, identity_arn=None, created_by=created_by[:200])
        async with self._write() as session:
            session.add(row)
            self._audit(session, at=created_at, actor=created_by, action="connect-session-create",
                        connection=connection, session_id=id)
        return _record(row)

    async def get(self, id: str) -> SessionRecord | None:
        async with self._sessions() as session:
            row = await session.get(ConnectSessionRow, id)
            return None if row is None else _record(row)

    async def get_by_token_hash(self, token_hash: str) -> SessionRecord | None:
        """The session whose token hashes to ``token_hash`` (an indexed equality lookup on the hash: what is
        compared is not the token, so its timing tells nothing about one)."""
        async with self._sessions() as session:
            row = (await session.scalars(select(ConnectSessionRow)
                                         .where(ConnectSessionRow.token_hash == token_hash))).one_or_none()
            return None if row is None else _record(row)

    async def _transition(self, id: str, values: dict[str, Any], *, states: tuple[str, ...],
                          audit: tuple[str, str, datetime] | None = None) -> SessionRecord | None:
        """Apply ``values`` if the session is in one of ``states``; the session afterwards (changed or not), or
        ``None`` if there is no such session. ``audit``: (actor, action, at) to record when it changed."""
        async with self._write() as session:
            result = await session.execute(
                update(ConnectSessionRow).where(ConnectSessionRow.id == id, ConnectSessionRow.state.in_(states))
                .values(**values).returning(ConnectSessionRow.connection))
            changed = result.scalar_one_or_none()
            if changed is not None and audit is not None:
                actor, action, at = audit
                self._audit(session, at=at, actor=actor, action=action, connection=changed, session_id=id)
            row = await session.get(ConnectSessionRow, id, populate_existing=True)
            return None if row is None else _record(row)

    async def revoke(self, id: str, *, actor: str, at: datetime) -> SessionRecord | None:
        """Revoke an open session (an expired one too); a completed or revoked one is left as it is. Returns
        the session afterwards, ``None`` if unknown."""
        return await self._transition(id, {"state": "revoked"}, states=("open",),
                                      audit=(actor, "connect-session-revoke", at))

    async def complete(self, id: str, *, identity_arn: str, at: datetime) -> bool:
        """Mark an open session completed; ``False`` if it was not open any more (another replica won)."""
        async with self._write() as session:
            result = await session.execute(
                update(ConnectSessionRow).where(ConnectSessionRow.id == id, ConnectSessionRow.state == "open")
                .values(state="completed", completed_at=at, identity_arn=identity_arn, last_error=None)
                .returning(ConnectSessionRow.id))
            return result.scalar_one_or_none() is not None

    async def record_attempt(self, id: str, *, limit: int | None = None) -> int | None:
        """Count one submit of an open session, atomically: the new count, or ``None`` when the session is not
        open or already has ``limit`` attempts (nothing counted then)."""
        query = update(ConnectSessionRow).where(ConnectSessionRow.id == id, ConnectSessionRow.state == "open")
        if limit is not None:
            query = query.where(ConnectSessionRow.attempts < limit)
        async with self._write() as session:
            result = await session.execute(query.values(attempts=ConnectSessionRow.attempts + 1)
                                           .returning(ConnectSessionRow.attempts))
            count: int | None = result.scalar_one_or_none()
            return count

    async def record_error(self, id: str, code: str) -> None:
        """Note the (STS) error code of the last failed submit of an open session."""
        async with self._write() as session:
            await session.execute(update(ConnectSessionRow).where(ConnectSessionRow.id == id,
                                                                  ConnectSessionRow.state == "open")
                                  .values(last_error=code[:128]))

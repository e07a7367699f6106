"""The connection store: connections as JSON tables in SQLite or PostgreSQL, secrets encrypted at rest,
every change numbered (the store revision), audited, and announced to other replicas.

Owns: the transactions over ``connections``, ``store_meta`` and ``audit_events`` (:mod:`.models`); the
split of each table into plain ``config`` and the encrypted ``secrets`` blob (AAD ``sigproxy/connection/NAME``);
the ``sigproxy.audit`` log line of every change; :meth:`Store.watch` (in :mod:`.watch`).

Every write is one transaction that first bumps ``store_meta.revision`` (an ``UPDATE`` of the one meta row:
on PostgreSQL its row lock serializes writers like ``SELECT ... FOR UPDATE`` would; on SQLite the transaction
begins with ``BEGIN IMMEDIATE``), stamps the row with the new revision, adds an audit event and, on
PostgreSQL, ``pg_notify('sigproxy_store', revision)`` (delivered at commit). Because revisions are handed
out under that lock and committed in order, a reader that sees revision R sees every change up to R.

Must not: know the connection schema (only which paths hold secrets), log or raise a secret value or a key,
be called from the request path (callers hold connections in memory and follow :meth:`Store.changes`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from . import migrate as migrations
from . import tables
from .connect import SessionRecords
from .crypto import DecryptionError, Keyring
from .database import WRITE, create_engine, redacted
from .errors import NameTaken, NotStored, SchemaMismatch, StaleRevision, UnreadableRow
from .models import META_ID, AuditEvent, ConnectionRow, StoreMeta
from .watch import watch as _watch

__all__ = ["CHANNEL", "STATES", "Store", "StoredConnection"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("sigproxy.audit")

CHANNEL = "sigproxy_store"
STATES = ("active", "pending")
MAX_NAME = 64
MAX_PAGE = 1000
_AAD = b"sigproxy/connection/"


@dataclass(frozen=True, slots=True)
class StoredConnection:
    """One live connection as stored. ``table`` holds the secrets decrypted back in place: callers must
    mask them before showing it (``repr`` shows only the top-level keys)."""

    name: str
    state: str  # "active" | "pending"
    table: Mapping[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime

    def __repr__(self) -> str:
        return (f"StoredConnection(name={self.name!r}, state={self.state!r}, keys={sorted(self.table)}, "
                f"revision={self.revision})")


class _Unchanged(Exception):  # control flow: roll the write back, answer `current`
    def __init__(self, current: StoredConnection) -> None:
        self.current = current


def _check(name: str, state: str | None = None) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"a connection name is 1 to {MAX_NAME} characters")
    if state is not None and state not in STATES:
        raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")


class Store:
    """The connection store over one database. Open with :meth:`open`, end with :meth:`close`."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring, secret_paths: Sequence[tables.SecretPath],
                 url: str) -> None:
        """Use :meth:`open`; this only wires the parts."""
        self._engine = engine
        self._keyring = keyring
        self._secret_paths = tuple(tuple(p) for p in secret_paths)
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.url = redacted(url)
        self.dialect: str = engine.dialect.name
        self.connect_sessions = SessionRecords(engine)
        """The connect sessions (:mod:`.connect`)."""

    @classmethod
    async def open(cls, url: str, keyring: Keyring, *, secret_paths: Sequence[tables.SecretPath],
                   migrate: bool = True) -> Store:
        """Connect to ``url`` (``sqlite:///PATH``, ``postgresql://...``) and bring the schema to head
        (``migrate=False``: only check it is there).

        ``secret_paths``: key paths whose values are encrypted, e.g. ``("credentials", "secret_access_key")``.
        Raises ValueError for a bad URL, :class:`SchemaMismatch` when ``migrate=False`` and the schema is not
        at head (or when the schema is newer than this sigproxy), SQLAlchemy/driver errors when the database
        cannot be reached.
        """
        engine = create_engine(url)
        try:
            found, head = await migrations.current(engine), migrations.head()
            if found is not None and found not in migrations.known():
                raise SchemaMismatch(found, head, newer=True)
            if found != head:  # at head there is nothing to run: Alembic is not even imported
                if not migrate:
                    raise SchemaMismatch(found, head)
                await migrations.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, keyring, secret_paths, url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        await self._engine.dispose()

    # -- reading -------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        """A read transaction that sees one snapshot (PostgreSQL: REPEATABLE READ; SQLite: WAL + BEGIN)."""
        async with self._sessions() as session, session.begin():
            if self.dialect == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    def _open_row(self, row: ConnectionRow) -> StoredConnection:
        secrets: dict[str, Any] = {}
        if row.secrets is not None:
            try:
                secrets = json.loads(self._keyring.decrypt(row.secrets, _AAD + row.name.encode()))
            except DecryptionError as exc:
                raise UnreadableRow(row.name, str(exc)) from None
        return StoredConnection(row.name, row.state, tables.join(row.config, secrets), row.revision,
                                row.created_at, row.updated_at)

    async def get(self, name: str) -> StoredConnection | None:
        """The live connection ``name``, or ``None``. Raises :class:`UnreadableRow` if its secrets don't decrypt."""
        async with self._read() as session:
            row = await session.get(ConnectionRow, name)
            return None if row is None or row.deleted else self._open_row(row)

    async def page(self, *, prefix: str | None = None, state: str | None = None, limit: int = 100,
                   after: str | None = None) -> list[StoredConnection]:
        """Up to ``limit`` (1..1000) live connections ordered by name (bytewise), names greater than ``after``,
        starting with ``prefix`` (literally: ``%`` and ``_`` are plain characters), in ``state`` if given."""
        if not 0 < limit <= MAX_PAGE:
            raise ValueError(f"limit: expected 1 to {MAX_PAGE}, got {limit}")
        if state is not None:
            _check("-", state)
        query = select(ConnectionRow).where(ConnectionRow.deleted.is_(False))
        if prefix:
            query = query.where(ConnectionRow.name >= prefix,
                                func.substr(ConnectionRow.name, 1, len(prefix)) == prefix)
        if state is not None:
            query = query.where(ConnectionRow.state == state)
        if after is not None:
            query = query.where(ConnectionRow.name > after)
        async with self._read() as session:
            rows = (await session.scalars(query.order_by(ConnectionRow.name).limit(limit))).all()
            return [self._open_row(r) for r in rows]

    async def revision(self) -> int:
        """The store revision: the number of the last change (0 for a new store)."""
        async with self._sessions() as session:
            return (await session.scalars(select(StoreMeta.revision).where(StoreMeta.id == META_ID))).one()

    async def snapshot(self) -> tuple[int, list[StoredConnection]]:
        """``(revision, every live connection)`` as of that revision, ordered by name."""
        async with self._read() as session:
            revision = (await session.scalars(select(StoreMeta.revision).where(StoreMeta.id == META_ID))).one()
            query = select(ConnectionRow).where(ConnectionRow.deleted.is_(False)).order_by(ConnectionRow.name)
            rows = (await session.scalars(query)).all()
            return revision, [self._open_row(r) for r in rows]

    async def changes(self, since: int) -> tuple[int, list[StoredConnection], list[str]]:
        """``(revision now, live connections changed after since, names deleted after since)``, consistent.

        A name deleted and created again since ``since`` is only in the first list. Apply both to the state
        of revision ``since`` to get the state of the returned revision.
        """
        async with self._read() as session:
            revision = (await session.scalars(select(StoreMeta.revision).where(StoreMeta.id == META_ID))).one()
            if revision <= since:
                return revision, [], []
            query = select(ConnectionRow).where(ConnectionRow.revision > since).order_by(ConnectionRow.name)
            rows = (await session.scalars(query)).all()
            return (revision, [self._open_row(r) for r in rows if not r.deleted],
                    [r.name for r in rows if r.deleted])

    async def audit_events(self, *, limit: int = 100, connection: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` audit events first, of one ``connection`` if given: dicts with ``id``,
        ``at`` (aware datetime), ``actor``, ``action`` (create/update/delete/rotate-keys), ``connection`` (None
        for rotate-keys) and ``detail`` (``{"changed": [dotted key paths]}``; ``{"rows": n}`` for rotate-keys)."""
        if not 0 < limit <= MAX_PAGE:
            raise ValueError(f"limit: expected 1 to {MAX_PAGE}, got {limit}")
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if connection is not None:
            query = query.where(AuditEvent.connection == connection)
        async with self._sessions() as session:
            return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "connection": e.connection,
                     "detail": e.detail} for e in (await session.scalars(query)).all()]

    # -- writing -------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self, bump: bool = True) -> AsyncIterator[tuple[AsyncSession, int]]:
        """A write transaction holding the writers' lock, with the new revision (the old one if not ``bump``)."""
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options=WRITE)
            step = 1 if bump else 0
            bumped = (update(StoreMeta).where(StoreMeta.id == META_ID)
                      .values(revision=StoreMeta.revision + step).returning(StoreMeta.revision))
            revision = (await session.execute(bumped)).scalar_one()
            yield session, revision
            if bump and self.dialect == "postgresql":
                await session.execute(text("SELECT pg_notify(:channel, :revision)"),
                                      {"channel": CHANNEL, "revision": str(revision)})

    def _seal(self, name: str, table: Mapping[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        config, secrets = tables.split(table, self._secret_paths)
        if not secrets:
            return config, None
        return config, self._keyring.encrypt(json.dumps(secrets).encode(), _AAD + name.encode())

    @staticmethod
    def _audit(session: AsyncSession, *, actor: str, action: str, connection: str | None,
               detail: dict[str, Any]) -> None:
        session.add(AuditEvent(at=datetime.now(UTC), actor=actor, action=action, connection=connection,
                               detail=detail))

    @staticmethod
    def _log(actor: str, action: str, connection: str | None, changed: Sequence[str], revision: int) -> None:
        audit_logger.info("actor=%s action=%s connection=%s changed=%s revision=%d", json.dumps(actor), action,
                          json.dumps(connection), ",".join(changed) or "-", revision)

    async def create(self, name: str, state: str, table: Mapping[str, Any], *, actor: str) -> StoredConnection:
        """Store a new connection. Raises :class:`NameTaken` if a live one has the name, ValueError for a bad
        name/state or a table that is not JSON. A deleted name is reused (its row, with a new ``created_at``)."""
        _check(name, state)
        config, blob = self._seal(name, table)
        plain = tables.join(config, tables.split(table, self._secret_paths)[1])
        changed = sorted({"state", *tables.leaf_paths(plain)})
        async with self._write() as (session, revision):
            row = await session.get(ConnectionRow, name, populate_existing=True)
            if row is not None and not row.deleted:
                raise NameTaken(name)
            now = datetime.now(UTC)
            if row is None:
                row = ConnectionRow(name=name)
                session.add(row)
            row.state, row.config, row.secrets, row.deleted = state, config, blob, False
            row.revision, row.created_at, row.updated_at = revision, now, now
            self._audit(session, actor=actor, action="create", connection=name, detail={"changed": changed})
        self._log(actor, "create", name, changed, revision)
        return StoredConnection(name, state, plain, revision, now, now)

    async def replace(self, name: str, state: str, table: Mapping[str, Any], *, actor: str,
                      if_revision: int | None = None) -> StoredConnection:
        """Replace connection ``name``'s state and whole table (a merge patch is the caller's job).

        ``if_revision``: only if the row is still at that revision, else :class:`StaleRevision`. Raises
        :class:`NotStored` if no live connection has the name. Writing what is already stored changes
        nothing (no new revision, no audit event). A row whose old secrets no longer decrypt can be replaced.
        """
        _check(name, state)
        config, blob = self._seal(name, table)
        plain = tables.join(config, tables.split(table, self._secret_paths)[1])
        try:
            async with self._write() as (session, revision):
                row = await session.get(ConnectionRow, name, populate_existing=True)
                if row is None or row.deleted:
                    raise NotStored(name)
                if if_revision is not None and row.revision != if_revision:
                    raise StaleRevision(name, if_revision, row.revision)
                try:
                    old: StoredConnection | None = self._open_row(row)
                except UnreadableRow:
                    old = None
                changed = tables.changed_paths(old.table if old else None, plain)
                if old is None or old.state != state:
                    changed = sorted({"state", *changed})
                if not changed and old is not None:
                    raise _Unchanged(old)
                now = datetime.now(UTC)
                row.state, row.config, row.secrets = state, config, blob
                row.revision, row.updated_at = revision, now
                self._audit(session, actor=actor, action="update", connection=name, detail={"changed": changed})
        except _Unchanged as same:
            return same.current
        self._log(actor, "update", name, changed, revision)
        return StoredConnection(name, state, plain, revision, row.created_at, now)

    async def delete(self, name: str, *, actor: str) -> None:
        """Delete connection ``name`` (a tombstone the change feed reports; its secrets are erased).
        Raises :class:`NotStored` if no live connection has the name."""
        _check(name)
        async with self._write() as (session, revision):
            row = await session.get(ConnectionRow, name, populate_existing=True)
            if row is None or row.deleted:
                raise NotStored(name)
            try:
                changed = sorted({"state", *tables.leaf_paths(self._open_row(row).table)})
            except UnreadableRow:
                changed = sorted({"state", *tables.leaf_paths(row.config)})
            row.deleted, row.config, row.secrets = True, {}, None
            row.revision, row.updated_at = revision, datetime.now(UTC)
            self._audit(session, actor=actor, action="delete", connection=name, detail={"changed": changed})
        self._log(actor, "delete", name, changed, revision)

    async def rotate_keys(self, *, actor: str) -> int:
        """Re-encrypt every secrets blob not under the first key with it; returns how many rows were rewritten.

        Row revisions and the store revision do not move (the content is unchanged, replicas have nothing to
        reload); one ``rotate-keys`` audit event records the count. Afterwards the old keys may be removed.
        Raises :class:`UnreadableRow` (and rewrites nothing) if some blob is under a key the keyring lacks.
        """
        async with self._write(bump=False) as (session, revision):
            query = select(ConnectionRow).where(ConnectionRow.secrets.is_not(None))
            count = 0
            for row in (await session.scalars(query)).all():
                assert row.secrets is not None
                if self._keyring.is_current(row.secrets):
                    continue
                aad = _AAD + row.name.encode()
                try:
                    row.secrets = self._keyring.encrypt(self._keyring.decrypt(row.secrets, aad), aad)
                except DecryptionError as exc:
                    raise UnreadableRow(row.name, str(exc)) from None
                count += 1
            self._audit(session, actor=actor, action="rotate-keys", connection=None, detail={"rows": count})
        self._log(actor, "rotate-keys", None, [f"{count} rows re-encrypted"], revision)
        return count

    async def watch(self, on_change: Callable[[int], Awaitable[None]], *, interval: float = 1.0,
                    since: int | None = None) -> None:
        """Call ``on_change(revision)`` whenever the store revision moves past the last one seen (``since``,
        default: the revision when watching starts), until cancelled. See :func:`sigproxy.store.watch.watch`."""
        await _watch(self, on_change, interval=interval, since=since)

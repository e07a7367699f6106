"""The store's tables as SQLAlchemy 2 declarative models, portable across SQLite and PostgreSQL.

- ``connections``: one row per name ever stored. ``config`` is the connection's JSON table *without* the
  values at secret paths; ``secrets`` is the AEAD blob (:mod:`.crypto`) of ``{dotted path: value}``, or NULL.
  ``deleted`` is a tombstone so the change feed can report deletions; creating the name again reuses the row.
  ``revision`` is the store revision of the row's last change.
- ``store_meta``: a single row (``id = 1``) holding the store's revision counter, bumped by every write.
- ``audit_events`` (migration 0002): who changed what, when; ``detail`` names changed key paths, never values.
- ``connect_sessions`` (migration 0003): links to the customer connect page; ``token_hash`` is the SHA-256
  (hex) of the session token, never the token itself.

The migrations in ``migrations/versions`` create these tables and must stay in step with them; the models
are what the repository queries. Must not: know the connection schema (beyond "a JSON table"), encrypt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Integer, LargeBinary, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AuditEvent", "Base", "ConnectSessionRow", "ConnectionRow", "NAME_TYPE", "StoreMeta", "UTCDateTime",
           "META_ID"]

META_ID = 1

# Names compare bytewise on both databases (SQLite's BINARY, PostgreSQL's "C"), so ``ORDER BY name`` and
# ``name > :after`` agree with Python's string order and a prefix's matches sort right after it.
NAME_TYPE = String(64).with_variant(String(64, collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite stores it naive: UTC is put back on load)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps timezone-aware UTC timestamps")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class ConnectionRow(Base):
    __tablename__ = "connections"

    name: Mapped[str] = mapped_column(NAME_TYPE, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def __repr__(self) -> str:  # never the config or the blob
        return f"ConnectionRow(name={self.name!r}, state={self.state!r}, revision={self.revision})"


class StoreMeta(Base):
    __tablename__ = "store_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    connection: Mapped[str | None] = mapped_column(NAME_TYPE, index=True)
    detail: Mapped[dict[str, Any]]


class ConnectSessionRow(Base):
    __tablename__ = "connect_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    connection: Mapped[str] = mapped_column(NAME_TYPE, index=True)
    state: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str | None] = mapped_column(String(200))
    seed: Mapped[dict[str, Any]]
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(128))
    identity_arn: Mapped[str | None] = mapped_column(String(2048))
    created_by: Mapped[str] = mapped_column(String(200))

    def __repr__(self) -> str:  # never the hash
        return f"ConnectSessionRow(id={self.id!r}, connection={self.connection!r}, state={self.state!r})"

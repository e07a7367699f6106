"""Database URLs and engines for the store: what users write, what SQLAlchemy drives, what logs may show.

Users write ``sqlite:///path/to/db`` (``sqlite:///:memory:`` in tests) or ``postgresql://user:pw@host:port/db``
(``postgres://`` too); :func:`async_url` maps them onto the async drivers (aiosqlite, asyncpg) and
:func:`create_engine` builds the engine: for SQLite, WAL journaling, a busy timeout, and transactions that
really begin at ``BEGIN`` (so a read transaction sees one snapshot and a write can take the lock up front
with ``BEGIN IMMEDIATE``, see :data:`WRITE`).

Must not: log or raise a URL with its password (use :func:`redacted`); know any table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

__all__ = ["BEGIN_OPTION", "SQLITE_BUSY_TIMEOUT_MS", "WRITE", "async_url", "create_engine", "redacted"]

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Execution option naming the statement that opens a transaction on SQLite; PostgreSQL ignores it.
BEGIN_OPTION = "sigproxy_sqlite_begin"
WRITE = {BEGIN_OPTION: "BEGIN IMMEDIATE"}
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
            "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
            "postgresql+asyncpg": "postgresql+asyncpg"}


def async_url(url: str | URL) -> URL:
    """The SQLAlchemy URL with its async driver (``sqlite+aiosqlite``, ``postgresql+asyncpg``).

    Raises ValueError (without the password) for a URL that does not parse or names another database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL: expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
                         ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"unsupported database {parsed.drivername!r} in {redacted(parsed)}: "
                         "use sqlite:///PATH or postgresql://...")
    return parsed.set(drivername=driver)


def redacted(url: str | URL) -> str:
    """``url`` fit for logs and messages: the password shown as ``***``; ``"<unparsable URL>"`` if it is not one."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver: ours below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def create_engine(url: str | URL) -> AsyncEngine:
    """An engine for ``url`` (see :func:`async_url`). A SQLite file's directory is created (0700) if missing;
    ``:memory:`` is one shared in-memory database for the engine's life."""
    target = async_url(url)
    kwargs: dict[str, Any] = {}
    if target.get_backend_name() == "sqlite":
        database = target.database or ""
        if database in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
        elif not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(target, **kwargs)
    if target.get_backend_name() == "sqlite":
        _sqlite_hooks(engine)
    return engine

"""Schema migrations of the store, run in code through Alembic on an :class:`AsyncEngine`.

The Alembic environment lives in this package (``migrations/``, ``script_location`` points there); no
``alembic.ini`` is read. On PostgreSQL an advisory lock makes concurrent upgrades (replicas starting
together, a migration Job) take turns; on SQLite ``BEGIN IMMEDIATE`` does.

Alembic (with Mako) is imported only when a migration runs: reading the schema's revision is one plain query of
Alembic's version table, and the revisions this sigproxy knows are listed in :data:`REVISIONS` (a unit test
checks them against ``migrations/versions``), so a start on a current schema loads none of it.

Must not: import the models into migrations (each version file is frozen as written), log URLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import WRITE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["REVISIONS", "alembic_config", "current", "head", "known", "upgrade"]

_SCRIPTS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 0x5160_5707  # pg_advisory_xact_lock key for "sigproxy store migrations"
_VERSION_TABLE = "alembic_version"  # Alembic's default; env.py names no other

REVISIONS = ("0001", "0002", "0003")
"""Every schema revision in ``migrations/versions``, oldest first: a new migration adds its revision here."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged environment; ``connection`` (sync facade) is what env.py uses."""
    from alembic.config import Config  # noqa: PLC0415 - Alembic only when migrations are run or listed

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision this sigproxy knows (``"0003"``)."""
    return REVISIONS[-1]


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` to ``revision`` in one transaction. Idempotent at head.

    Raises whatever the database raises (SQLAlchemy errors), or Alembic's CommandError for an unknown revision.
    """
    from alembic import command  # noqa: PLC0415 - Alembic only when a migration runs

    def run(sync: Connection) -> None:
        if sync.dialect.name == "postgresql":
            sync.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        command.upgrade(alembic_config(sync), revision)

    async with engine.connect() as plain:
        conn = await plain.execution_options(**WRITE)
        async with conn.begin():
            await conn.run_sync(run)


async def current(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at, ``None`` for an empty database."""
    def read(sync: Connection) -> str | None:
        # What Alembic's MigrationContext.get_current_revision reads, without loading Alembic.
        if not inspect(sync).has_table(_VERSION_TABLE):
            return None
        found = list(sync.execute(text("SELECT version_num FROM alembic_version")).scalars())
        if len(found) > 1:  # never written by these (linear) migrations: Alembic's own error says what it is
            from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

            return MigrationContext.configure(sync).get_current_revision()
        return found[0] if found else None

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def known() -> frozenset[str]:
    """Every schema revision this sigproxy knows."""
    return frozenset(REVISIONS)

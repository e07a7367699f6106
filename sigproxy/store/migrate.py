"""Schema migrations of the store, run in code through Alembic on an :class:`AsyncEngine`.

The Alembic environment lives in this package (``migrations/``, ``script_location`` points there); no
``alembic.ini`` is read. On PostgreSQL an advisory lock makes concurrent upgrades (replicas starting
together, a migration Job) take turns; on SQLite ``BEGIN IMMEDIATE`` does.

Must not: import the models into migrations (each version file is frozen as written), log URLs.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import WRITE

__all__ = ["alembic_config", "current", "head", "known", "upgrade"]

_SCRIPTS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 0x5160_5707  # pg_advisory_xact_lock key for "sigproxy store migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged environment; ``connection`` (sync facade) is what env.py uses."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision this sigproxy knows (``"0003"``)."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` to ``revision`` in one transaction. Idempotent at head.

    Raises whatever the database raises (SQLAlchemy errors), or Alembic's CommandError for an unknown revision.
    """
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
        return MigrationContext.configure(sync).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def known() -> frozenset[str]:
    """Every schema revision this sigproxy knows."""
    return frozenset(s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions())

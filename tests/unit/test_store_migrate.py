"""sigproxy.store.migrate without Alembic where it can: the listed revisions are the migration files', the schema's
revision is read as Alembic reads it, and opening a store whose schema is current imports no Alembic.

(The store against SQLite and PostgreSQL, migrations included, is tests/integration/test_store.py.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from sigproxy.store import Keyring, Store, generate_key
from sigproxy.store.database import create_engine
from sigproxy.store.migrate import REVISIONS, alembic_config, current, head, known, upgrade

ROOT = Path(__file__).resolve().parents[2]


def test_revisions_are_the_migration_files() -> None:
    """REVISIONS (what a start compares the schema with) lists migrations/versions, oldest first, one line."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert tuple(s.revision for s in reversed(list(scripts.walk_revisions()))) == REVISIONS
    assert head() == scripts.get_current_head() == REVISIONS[-1]
    assert known() == frozenset(REVISIONS)


async def test_current_reads_what_alembic_reads(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/store.db")

    def alembic_reads(sync: Connection) -> str | None:
        return MigrationContext.configure(sync).get_current_revision()

    async def both() -> tuple[str | None, str | None]:
        async with engine.connect() as conn:
            return await current(engine), await conn.run_sync(alembic_reads)

    try:
        assert await both() == (None, None)
        for revision in REVISIONS:
            await upgrade(engine, revision)
            assert await both() == (revision, revision)
    finally:
        await engine.dispose()


async def test_a_current_schema_is_opened_without_alembic(tmp_path: Path) -> None:
    """A start on a store already at head (every start but the first) runs no migration: Alembic and Mako stay
    unimported. An empty one is migrated (Alembic imported then)."""
    url, key = f"sqlite:///{tmp_path}/store.db", generate_key()
    code = textwrap.dedent(f"""
        import asyncio, sys
        from sigproxy.store import Keyring, Store

        async def main():
            store = await Store.open({url!r}, Keyring.from_strings([{key!r}]), secret_paths=())
            await store.close()

        asyncio.run(main())
        print(sorted(m for m in ("alembic", "mako") if m in sys.modules))
    """)

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    assert run() == "['alembic', 'mako']"  # empty: migrated
    assert run() == "[]"  # at head
    store = await Store.open(url, Keyring.from_strings([key]), secret_paths=(), migrate=False)
    await store.close()

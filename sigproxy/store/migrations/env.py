"""Alembic environment of the store: runs on the connection :mod:`sigproxy.store.migrate` hands over.

Alembic executes this file with ``alembic.context`` set up; imported any other way it does nothing.
Must not: open connections, read alembic.ini, or run offline (SQL script) migrations.
"""

from __future__ import annotations

from alembic import context

__all__ = ["run_migrations"]


def run_migrations() -> None:
    """Run the pending migrations on ``config.attributes["connection"]`` (inside the caller's transaction)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("store migrations run through sigproxy.store.migrate (`sigproxy store migrate`)")
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # executed by Alembic, not merely imported
    run_migrations()

"""Alembic environment of the store: runs on the connection :mod:`sigproxy.store.migrate` hands over.

Must not: open connections, read alembic.ini, or run offline (SQL script) migrations.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("store migrations run through sigproxy.store.migrate (`sigproxy store migrate`)")
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

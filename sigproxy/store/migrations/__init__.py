"""Alembic environment of the connection store (see env.py)."""

"""Connect sessions: links to the customer connect page (the token is stored only as its SHA-256).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAME = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "connect_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("connection", _NAME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("seed", sa.JSON(), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(128), nullable=True),
        sa.Column("identity_arn", sa.String(2048), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_connect_sessions_token_hash", "connect_sessions", ["token_hash"], unique=True)
    op.create_index("ix_connect_sessions_connection", "connect_sessions", ["connection"])


def downgrade() -> None:
    op.drop_index("ix_connect_sessions_connection", table_name="connect_sessions")
    op.drop_index("ix_connect_sessions_token_hash", table_name="connect_sessions")
    op.drop_table("connect_sessions")

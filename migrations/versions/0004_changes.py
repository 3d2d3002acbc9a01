"""cache_changes: the log of entries added and removed, which replicas follow

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("op", sa.String(1), nullable=False),
        sa.Column("entry_id", sa.BigInteger, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_cache_changes_at", "cache_changes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_cache_changes_at", "cache_changes")
    op.drop_table("cache_changes")

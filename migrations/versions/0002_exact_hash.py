"""exact_hash: digest of (scope, context, normalised query) for the exact-repeat fast path

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cache_entries") as batch:
        batch.add_column(sa.Column("exact_hash", sa.String(64), nullable=True))
    op.create_index("ix_cache_entries_exact", "cache_entries", ["exact_hash"])


def downgrade() -> None:
    op.drop_index("ix_cache_entries_exact", table_name="cache_entries")
    with op.batch_alter_table("cache_entries") as batch:
        batch.drop_column("exact_hash")

"""cache_entries: the semantic cache's documents

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("scope_hash", sa.String(64), nullable=False),
        sa.Column("context_hash", sa.String(64), nullable=False),
        sa.Column("query_text", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("last_hit_at", sa.Float, nullable=True),
        sa.Column("hit_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_cache_entries_category_expires", "cache_entries", ["category", "expires_at"])
    op.create_index("ix_cache_entries_scope", "cache_entries", ["scope_hash"])


def downgrade() -> None:
    op.drop_index("ix_cache_entries_scope", table_name="cache_entries")
    op.drop_index("ix_cache_entries_category_expires", table_name="cache_entries")
    op.drop_table("cache_entries")

"""cache_entries.completion_tokens_max: a bound on an answer's tokens where no count came

A stream from a server that sends no usage (llama.cpp ignores ``include_usage``) leaves
``completion_tokens`` empty; an answer that finished with ``stop`` under ``max_tokens: N`` has
at most N tokens, and that is what lets it serve a later request with a limit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cache_entries") as batch:
        batch.add_column(sa.Column("completion_tokens_max", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cache_entries") as batch:
        batch.drop_column("completion_tokens_max")

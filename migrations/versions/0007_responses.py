"""responses: the conversation each Responses-API response the gateway stored or served ended

A request with ``previous_response_id`` is keyed by that conversation, and one naming an id the
gateway made up for a hit is forwarded with the conversation written out (the upstream never
saw that id). For such an id the response itself is kept too: ``GET /v1/responses/{id}``
answers it (the upstream would not know it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("conversation", sa.Text, nullable=False),
        sa.Column("minted", sa.Boolean, nullable=False),
        sa.Column("response", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_responses_expires", "responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_expires", table_name="responses")
    op.drop_table("responses")

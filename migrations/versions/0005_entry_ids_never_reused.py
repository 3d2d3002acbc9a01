"""cache_entries ids are never reused (SQLite: AUTOINCREMENT)

A plain ``INTEGER PRIMARY KEY`` in SQLite hands out the id of the highest deleted row again.
An id that comes back stands for another question in every place that still holds the old one
(an index label, the exact-repeat map, a snapshot, a replica's change log). PostgreSQL's
sequence only grows; SQLite needs ``AUTOINCREMENT``, which means rebuilding the table. The
sequence starts past every id the change log has ever named, so ids handed out before this
migration are not reused either.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "cache_entries", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass
    floor = bind.execute(sa.text(
        "SELECT max(m) FROM (SELECT max(id) AS m FROM cache_entries"
        " UNION ALL SELECT max(entry_id) FROM cache_changes"
        " UNION ALL SELECT max(entry_id) FROM feedback)"
    )).scalar()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'cache_entries'"))
    bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('cache_entries', :s)"),
                 {"s": int(floor or 0)})


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "cache_entries", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass

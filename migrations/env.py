"""Alembic environment: the URL comes from the config (``gateway.cache.schema.run_migrations``
sets it), or from ``SEMCACHE_DATABASE_URL`` when alembic is run by hand."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from gateway.cache.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get(
    "SEMCACHE_DATABASE_URL", "sqlite:///./semcache.db"
)


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # replicas starting together: one migrates, the others wait and find it done
                connection.execute(text("SELECT pg_advisory_xact_lock(7283649)"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

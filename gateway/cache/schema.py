"""The document store's schema and rows: the tables (owned by Alembic, ``migrations/``), the
records that cross the store's boundary, the engine with its per-connection settings, and
``run_migrations``.

Every write that adds or removes entries also appends to ``cache_changes`` in the same
transaction: ``(seq, op '+'/'-', entry_id, category)``. Replicas follow that log to keep their
in-memory indexes in step (``cache/sync.py``); sequence numbers only grow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.embedding import Vectors
from gateway.resources import migrations_dir

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

entries = sa.Table(
    "cache_entries",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
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
    # no count from the upstream: the request's max_tokens, which the answer finished under
    sa.Column("completion_tokens_max", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("last_hit_at", sa.Float, nullable=True),
    sa.Column("hit_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("exact_hash", sa.String(64), nullable=True),
    sa.Index("ix_cache_entries_category_expires", "category", "expires_at"),
    sa.Index("ix_cache_entries_scope", "scope_hash"),
    sa.Index("ix_cache_entries_exact", "exact_hash"),
    sqlite_autoincrement=True,  # an id is never handed out twice (migration 0005)
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("entry_id", sa.BigInteger, nullable=False),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("query_text", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

changes = sa.Table(
    "cache_changes",
    metadata,
    sa.Column("seq", _ID, primary_key=True, autoincrement=True),
    sa.Column("op", sa.String(1), nullable=False),
    sa.Column("entry_id", sa.BigInteger, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_cache_changes_at", "at"),
    sqlite_autoincrement=True,  # never reuse a sequence number, even after pruning
)

# Responses the gateway stored or served (``cache/threads.py``): the conversation each one ended,
# so that a request naming it with ``previous_response_id`` can be keyed (and, for an id the
# gateway made up for a hit, forwarded with the conversation written out).
responses = sa.Table(
    "responses",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("conversation", sa.Text, nullable=False),   # JSON list of turns
    sa.Column("minted", sa.Boolean, nullable=False),      # our id: the upstream never saw it
    sa.Column("response", sa.Text, nullable=True),        # a minted id's response (GET by id)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_responses_expires", "expires_at"),
)

PUT, DELETE = "+", "-"


@dataclass(frozen=True)
class Change:
    seq: int
    op: str
    entry_id: int
    category: str
    at: float


# What the admin API lists of an entry (the response itself only when one entry is inspected).
SUMMARY_COLUMNS = ("id", "namespace", "category", "endpoint", "model", "query_text",
                   "prompt_tokens", "completion_tokens", "created_at", "expires_at",
                   "last_hit_at", "hit_count")


@dataclass(frozen=True)
class NewEntry:
    namespace: str
    category: str
    endpoint: str
    model: str
    scope_hash: str
    context_hash: str
    query_text: str
    embedding: Vectors
    response: dict[str, Any]
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: float
    expires_at: float
    exact_hash: str
    completion_tokens_max: int | None = None


@dataclass(frozen=True)
class IndexRow:
    """What the in-memory index needs of a row."""

    id: int
    category: str
    scope_hash: str
    context_hash: str
    expires_at: float
    embedding: Vectors
    exact_hash: str | None


@dataclass(frozen=True)
class StoredEntry:
    id: int
    category: str
    scope_hash: str
    context_hash: str
    query_text: str
    response: dict[str, Any]
    completion_tokens: int | None
    created_at: float
    expires_at: float
    hit_count: int
    embedding: Vectors | None = None   # the vector the row was stored with
    completion_tokens_max: int | None = None


# PostgreSQL ends a statement the gateway has long stopped waiting for (server side; the
# gateway's own deadlines are ``Store.call``'s)
PG_STATEMENT_TIMEOUT_MS = 30_000


def make_engine(url: str, timeout_s: float = 2.0) -> Engine:
    """``timeout_s``: how long SQLite waits for another process's lock before failing."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": timeout_s})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                              pool_timeout=5, connect_args=connect_args)
    if url.startswith("postgresql"):

        @sa.event.listens_for(engine, "connect")
        def _statement_timeout(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"SET statement_timeout = {PG_STATEMENT_TIMEOUT_MS}")
            cur.close()
            dbapi_conn.commit()

    return engine


def run_migrations(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def model_column(model: str) -> str:
    """The model name as the store keeps it (informational: the scope hash has the whole name):
    one too long for its column, or with a character it cannot hold, by digest."""
    if len(model) <= 256 and "\x00" not in model:
        return model
    return "sha256:" + hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()



"""The lookup's read of its candidates (``Store.get_many``), on the real SQLite and PostgreSQL:
it reads on the pool's DB-API connection (the hot path's cost), and must give what the
SQLAlchemy statement gives, fail as the store's other reads fail, and leave the pool usable."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from gateway.cache.schema import NewEntry, make_engine, run_migrations
from gateway.cache.store import _GET_MANY, Store


def _entry(i: int) -> NewEntry:
    return NewEntry(
        namespace="n", category="chat" if i % 2 else "code", endpoint="chat", model="m",
        scope_hash=f"s{i}", context_hash=f"c{i}", query_text=f"question {i} ünïcode",
        embedding=np.full(384, i / 100, dtype=np.float32),
        response={"choices": [{"message": {"content": f"answer {i}"}}], "n": i},
        prompt_tokens=i, completion_tokens=None if i == 3 else 2 * i, created_at=1000.5 + i,
        expires_at=2e9 + i, exact_hash=f"e{i}", completion_tokens_max=7 if i == 4 else None)


def test_the_candidates_read_gives_the_statements_rows_and_fails_as_a_store_read(
    database_url: str,
) -> None:
    run_migrations(database_url)
    store = Store(make_engine(database_url))
    ids = [store.insert(_entry(i)) for i in range(1, 8)]
    asked = [ids[5], ids[0], 10_000_000, ids[3], ids[2]]  # one missing, out of order
    got = store.get_many(asked)
    assert sorted(got) == sorted([ids[5], ids[0], ids[3], ids[2]])
    with store.engine.connect() as conn:
        expected = {r[0]: r for r in conn.execute(_GET_MANY, {"ids": asked}).all()}
    for i, e in got.items():
        row = expected[i]
        assert (e.id, e.category, e.scope_hash, e.context_hash, e.query_text) == tuple(row[:5])
        assert e.response == _entry(ids.index(i) + 1).response
        assert (e.completion_tokens, e.created_at, e.expires_at, e.hit_count,
                e.completion_tokens_max) == (row[6], row[7], row[8], row[9], row[11])
        assert e.embedding is not None
        assert np.array_equal(e.embedding, _entry(ids.index(i) + 1).embedding)
    assert store.get_many([]) == {}
    assert len(store.get_many(ids)) == len(ids)  # another count of parameters

    with store.engine.begin() as conn:  # the table gone: an error of the store, not a crash
        conn.execute(sa.text("ALTER TABLE cache_entries RENAME TO cache_entries_gone"))
    with pytest.raises(SQLAlchemyError):
        store.get_many(ids[:2])
    assert store.get_many_or_none(ids[:2]) is None
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE cache_entries_gone RENAME TO cache_entries"))
    for _ in range(12):  # more reads than the pool holds: no connection was left in a failed state
        assert len(store.get_many(ids[:2])) == 2
    store.engine.dispose()


@pytest.mark.pg
def test_a_store_that_cannot_be_reached_fails_the_read_as_a_store_error(tmp_path: object) -> None:
    """Connecting is part of the read: a database that refuses connections (PostgreSQL on a
    closed port, a SQLite file that cannot be opened) is SQLAlchemy's error, which the store's
    boundary turns into StoreError and the lookup into a miss — never a 500."""
    from gateway.devtools.serverthread import free_port

    for url in (f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test",
                f"sqlite:///{tmp_path}/no/such/dir/cache.db"):
        store = Store(make_engine(url))
        with pytest.raises(SQLAlchemyError):
            store.get_many([1, 2])
        assert store.get_many_or_none([1, 2]) is None
        store.engine.dispose()

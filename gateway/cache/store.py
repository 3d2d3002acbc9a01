"""The document store: cache entries in SQLite or PostgreSQL (tables and rows in ``schema``).

Methods are blocking; ``Store.call`` runs one on the store's own threads with a deadline, and is
the one place a SQLAlchemy exception becomes ours (``StoreError``). Times are Unix epoch seconds
(float). Every write that adds or removes entries logs it to ``cache_changes`` in the same
transaction (``schema``, ``sync``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.cache.candidates import CandidateReader
from gateway.cache.schema import (
    DELETE,
    PUT,
    SUMMARY_COLUMNS,
    Change,
    IndexRow,
    NewEntry,
    StoredEntry,
    changes,
    entries,
    feedback,
)
from gateway.embedding import Vectors
from gateway.errors import StoreError, StoreTimeout

log = logging.getLogger(__name__)

# built once: a hit's read is the hot path, and building the statement cost more than running it
_GET_MANY = sa.select(*(entries.c[n] for n in (
    "id", "category", "scope_hash", "context_hash", "query_text", "response",
    "completion_tokens", "created_at", "expires_at", "hit_count", "embedding",
    "completion_tokens_max",
))).where(entries.c.id.in_(sa.bindparam("ids", expanding=True)))


# built once: a statement made per call (``insert().values(...)``) is compiled, or looked up in
# the compiled cache by a key generated from it, every time: ~0.25 ms of a 0.4 ms write
_INSERT = entries.insert().returning(entries.c.id)
_LOG = changes.insert()
_TOUCH = entries.update().where(entries.c.id == sa.bindparam("entry_id")).values(
    hit_count=entries.c.hit_count + sa.bindparam("count"), last_hit_at=sa.bindparam("last"))


def _log(conn: Any, op: str, rows: list[tuple[int, str]]) -> None:
    if rows:
        at = time.time()
        params = [{"op": op, "entry_id": i, "category": c, "at": at} for i, c in rows]
        conn.execute(_LOG, params[0] if len(params) == 1 else params)


def _delete(conn: Any, where: Any) -> list[tuple[int, str]]:
    """Delete the entries matching ``where`` and log them; the (id, category) deleted."""
    result = conn.execute(entries.delete().where(where)
                          .returning(entries.c.id, entries.c.category))
    rows = [(int(r.id), str(r.category)) for r in result]
    _log(conn, DELETE, rows)
    return rows


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(b"semcache:" + name.encode()).digest()[:8], "big",
                          signed=True)


def _vec(blob: bytes) -> Vectors:
    return np.frombuffer(blob, dtype=np.float32).copy()


class Store:
    """Blocking methods, and ``call`` to run one on the store's own threads with a deadline.

    The store's threads are its own so that a hung database (a blackholed connection never
    returns) can tie up at most those, never the threads the embedding model runs on."""

    THREADS = 16

    def __init__(self, engine: Engine, *, background_s: float = 30.0):
        self.engine = engine
        self.background_s = background_s  # the deadline of background and admin work
        self._candidates = CandidateReader(engine, _GET_MANY, entries)
        self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="store")

    async def call(self, timeout_s: float, fn: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a store thread; a SQLAlchemy error it raises comes back as
        ``StoreError`` (the store's error boundary); ``StoreTimeout`` once it has run for
        ``timeout_s``. Waiting for a free thread counts apart, up to ``queue_s(timeout_s)``: a
        busy gateway queueing its lookups is slow, not a store that is down (and must not open
        the breaker and pour everything onto the backend)."""
        began: list[float] = []

        def run() -> Any:
            began.append(time.monotonic())
            return fn(*args, **kwargs)

        future = asyncio.get_running_loop().run_in_executor(self._threads, run)
        queued_until = time.monotonic() + self.queue_s(timeout_s)
        while True:
            wait = timeout_s if not began else began[0] + timeout_s - time.monotonic()
            done, _ = await asyncio.wait({future}, timeout=max(0.0, wait))
            if done:
                try:
                    return future.result()
                except SQLAlchemyError as exc:  # the one place they become ours
                    raise StoreError(f"{getattr(fn, '__name__', 'store call')}: "
                                     f"{type(exc).__name__}: {exc}".splitlines()[0],
                                     unavailable=_unavailable(exc)) from exc
            if (began and time.monotonic() >= began[0] + timeout_s) \
                    or (not began and time.monotonic() >= queued_until):
                future.cancel()  # never started: it will not; started: it finishes unheard
                name = getattr(fn, "__name__", "store call")
                if began:
                    raise StoreTimeout(f"{name} took longer than {timeout_s:g}s")
                raise StoreTimeout(
                    f"{name} found no free store thread within {self.queue_s(timeout_s):g}s")

    @staticmethod
    def queue_s(timeout_s: float) -> float:
        """How long a call may wait for a free thread: as long again as it may run (with calls
        of a few milliseconds, that is a queue of hundreds; a hung store fills the threads, and
        its calls must still give up in bounded time)."""
        return timeout_s

    def dispose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.select(entries.c.id).limit(1))  # reachable, and the schema is there

    def insert(self, e: NewEntry) -> int:
        values = {
            "namespace": e.namespace, "category": e.category, "endpoint": e.endpoint,
            "model": e.model, "scope_hash": e.scope_hash, "context_hash": e.context_hash,
            "query_text": e.query_text,
            "embedding": np.asarray(e.embedding, dtype=np.float32).tobytes(),
            "response": orjson.dumps(e.response).decode(),
            "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
            "completion_tokens_max": e.completion_tokens_max,
            "created_at": e.created_at, "expires_at": e.expires_at, "hit_count": 0,
            "exact_hash": e.exact_hash,
        }
        with self.engine.begin() as conn:
            result = conn.execute(_INSERT, values)
            entry_id = int(result.scalar_one())
            _log(conn, PUT, [(entry_id, e.category)])
            return entry_id

    def get_many_or_none(self, ids: list[int]) -> dict[int, StoredEntry] | None:
        """``get_many``, or None when the store failed: for a caller already on a store thread
        that has a use for what it found before reading (the lookup's nearest similarity)."""
        try:
            return self.get_many(ids)
        except SQLAlchemyError:
            log.debug("reading candidates failed", exc_info=True)
            return None

    def get_many(self, ids: list[int]) -> dict[int, StoredEntry]:
        if not ids:
            return {}
        rows = self._candidates.read(ids)
        # rows unpacked as tuples, in _GET_MANY's column order: a Row's attribute lookups cost
        # a quarter of a lookup's read
        return {
            i: StoredEntry(
                id=i, category=category, scope_hash=scope, context_hash=context, query_text=text,
                response=orjson.loads(response), completion_tokens=tokens, created_at=created,
                expires_at=expires, hit_count=hits, embedding=_vec(embedding),
                completion_tokens_max=tokens_max,
            )
            for (i, category, scope, context, text, response, tokens, created, expires, hits,
                 embedding, tokens_max) in rows
        }

    def touch(self, hits: dict[int, tuple[int, float]]) -> None:
        """Record hits: entry id -> (how many since the last call, time of the last one)."""
        if not hits:
            return
        with self.engine.begin() as conn:  # one statement for all: the write lock held briefly
            conn.execute(_TOUCH, [{"entry_id": i, "count": n, "last": last}
                                  for i, (n, last) in hits.items()])

    def sweep_expired(self, now: float, limit: int = 10000) -> list[tuple[int, str]]:
        """Delete expired rows (at most ``limit``); returns the (id, category) this call deleted
        (replicas sweeping at once each report only their own)."""
        with self.engine.begin() as conn:
            ids = [r.id for r in conn.execute(
                sa.select(entries.c.id).where(entries.c.expires_at <= now).limit(limit))]
            return _delete(conn, entries.c.id.in_(ids)) if ids else []

    def count(self, category: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(entries)
                .where(entries.c.category == category)
            ).scalar_one())

    def evict(self, category: str, quota: int, policy: str) -> list[int]:
        """Delete the rows beyond ``quota`` in ``category``, chosen by ``policy``; their ids.

        Decided once for all replicas: on PostgreSQL a transaction-level advisory lock per
        category serialises concurrent evictions, so two replicas never both evict for the
        same excess row."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(category))))
            total = conn.execute(
                sa.select(sa.func.count()).select_from(entries)
                .where(entries.c.category == category)
            ).scalar_one()
            excess = int(total) - quota
            if excess <= 0:
                return []
            recency = sa.func.coalesce(entries.c.last_hit_at, entries.c.created_at)
            order = (
                [entries.c.hit_count.asc(), recency.asc()] if policy == "lfu" else [recency.asc()]
            )
            victims = [
                r.id for r in conn.execute(
                    sa.select(entries.c.id).where(entries.c.category == category)
                    .order_by(*order, entries.c.id.asc()).limit(excess)
                )
            ]
            return [i for i, _ in _delete(conn, entries.c.id.in_(victims))]

    def live_expiries(self, now: float) -> dict[int, float]:
        """id -> expires_at of every live row (reconciling an index snapshot with the store)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries.c.id, entries.c.expires_at).where(entries.c.expires_at > now)
            )
            return {r.id: r.expires_at for r in rows}

    def live_counts(self, now: float) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries.c.category, sa.func.count()).where(entries.c.expires_at > now)
                .group_by(entries.c.category))
            return {r[0]: int(r[1]) for r in rows}

    def max_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(entries.c.id))).scalar() or 0)

    def index_rows(self, ids: list[int]) -> list[IndexRow]:
        out: list[IndexRow] = []
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(*self._index_cols()).where(entries.c.id.in_(chunk)))
                out += [self._index_row(r) for r in rows]
        return out

    @staticmethod
    def _index_cols() -> tuple[Any, ...]:
        return (entries.c.id, entries.c.category, entries.c.scope_hash, entries.c.context_hash,
                entries.c.expires_at, entries.c.embedding, entries.c.exact_hash)

    @staticmethod
    def _index_row(r: Any) -> IndexRow:
        return IndexRow(r.id, r.category, r.scope_hash, r.context_hash, r.expires_at,
                        _vec(r.embedding), r.exact_hash)

    # --- the change log (replicas) ------------------------------------------------------
    def last_change(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(changes.c.seq))).scalar() or 0)

    def changes_since(self, after: int, also: list[int], limit: int) -> list[Change]:
        """Changes with ``seq > after``, plus those of ``also`` (sequence numbers skipped
        earlier because their transaction had not committed yet), in sequence order."""
        cond = changes.c.seq > after
        if also:
            cond = sa.or_(cond, changes.c.seq.in_(also))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(changes).where(cond).order_by(changes.c.seq)
                                .limit(limit)).all()
        return [Change(r.seq, r.op, r.entry_id, r.category, r.at) for r in rows]

    def prune_changes(self, before: float) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(changes.delete().where(changes.c.at < before)).rowcount)

    # --- admin ------------------------------------------------------------------------
    def list_entries(
        self, *, category: str | None, namespace: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        q = sa.select(*(entries.c[n] for n in SUMMARY_COLUMNS))
        if category is not None:
            q = q.where(entries.c.category == category)
        if namespace is not None:
            q = q.where(entries.c.namespace == namespace)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(entries.c.id.desc()).limit(limit).offset(offset))
            return [dict(r._mapping) for r in rows]

    def get_entry(self, entry_id: int) -> dict[str, Any] | None:
        cols = [entries.c[n] for n in SUMMARY_COLUMNS] + [entries.c.response]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*cols).where(entries.c.id == entry_id)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["response"] = orjson.loads(out["response"])
        return out

    def delete_where(
        self, *, ids: list[int] | None = None, category: str | None = None,
        namespace: str | None = None,
    ) -> list[tuple[int, str]]:
        """Delete matching rows; their (id, category). No filter at all deletes nothing."""
        conds = []
        if ids is not None:
            conds.append(entries.c.id.in_(ids))
        if category is not None:
            conds.append(entries.c.category == category)
        if namespace is not None:
            conds.append(entries.c.namespace == namespace)
        if not conds:
            return []
        with self.engine.begin() as conn:
            return _delete(conn, sa.and_(*conds))

    def record_feedback(self, entry: dict[str, Any], reason: str | None, now: float) -> None:
        """Record the wrong hit and delete its entry, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(feedback.insert().values(
                entry_id=entry["id"], namespace=entry["namespace"], category=entry["category"],
                query_text=entry["query_text"], reason=reason, created_at=now))
            _delete(conn, entries.c.id == entry["id"])

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries.c.category, sa.func.count()).group_by(entries.c.category))
            return {r[0]: int(r[1]) for r in rows}

    def iter_live(self, now: float, batch: int = 5000) -> Iterator[list[IndexRow]]:
        """Every live row, in id order and in batches, to rebuild the indexes on start-up."""
        last = -1
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(*self._index_cols())
                    .where(entries.c.id > last, entries.c.expires_at > now)
                    .order_by(entries.c.id).limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1].id
            yield [self._index_row(r) for r in rows]


def _unavailable(error: SQLAlchemyError) -> bool:
    """The store could not be reached or used (connection, lock, timeout, pool), as opposed to
    refusing what was asked of it (data, integrity, a statement it cannot run)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError,
                              sa_exc.TimeoutError, sa_exc.DisconnectionError))

"""The in-memory indexes, as one object: every category's HNSW index (by name) and the
exact-repeat map, changed together. Sync, upkeep, warm-up and admin are handed this and call
``drop``, ``add_rows``, ``reconcile`` — instead of reaching into the service for it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.cache.index import CategoryIndex, ExactIndex, Meta
from gateway.cache.store import Store


class Indexes(dict[str, CategoryIndex]):
    """Category name -> its index; ``exact``: whole-query digest -> row id."""

    def __init__(self) -> None:
        super().__init__()
        self.exact = ExactIndex()

    def drop(self, category: str, ids: list[int]) -> None:
        """Entries gone from the store leave the in-memory indexes too."""
        if ids:
            if category in self:
                self[category].remove(ids)
            self.exact.remove(ids)

    def replace(self, indexes: dict[str, CategoryIndex], exact: ExactIndex) -> None:
        """Take over a loaded snapshot's indexes, in place (holders keep this object)."""
        self.clear()
        self.update(indexes)
        self.exact = exact

    async def add_rows(self, rows: list[Any]) -> None:
        """Stored rows (id, category, embedding, scope, context, expiry, exact digest) into
        their categories' indexes; rows of categories not configured are left out."""
        by_cat: dict[str, list[Any]] = {}
        for row in rows:
            if row.category in self:
                by_cat.setdefault(row.category, []).append(row)
        for name, group in by_cat.items():
            vecs = [r.embedding for r in group]
            metas = [Meta(r.scope_hash, r.context_hash, r.expires_at) for r in group]
            await asyncio.to_thread(self[name].add, [r.id for r in group], vecs, metas)
            for r in group:
                if r.exact_hash:
                    self.exact.add(r.exact_hash, r.id)

    async def reconcile(self, store: Store) -> tuple[int, int]:
        """Match the store's live rows: drop what is gone (or whose id came back with another
        expiry), add what is missing. The entries kept and added."""
        live = await store.call(store.background_s, store.live_expiries, time.time())
        present: set[int] = set()
        for name, index in self.items():
            held = index.expires()
            self.drop(name, [i for i, exp in held.items() if live.get(i) != exp])
            present.update(i for i in held if live.get(i) == held[i])
        rows = await store.call(store.background_s, store.index_rows, sorted(set(live) - present))
        await self.add_rows(rows)
        return len(present), len(rows)

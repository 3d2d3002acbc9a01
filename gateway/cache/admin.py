"""Operator actions on the cache: stats, inspection, invalidation, feedback, reload.

Everything here changes the store first (the truth) and then the in-memory indexes, through
``Indexes.drop``, so the request path never serves what an operator removed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gateway.cache import policy
from gateway.categories import Classifier, load_categories
from gateway.resources import categories_dir

if TYPE_CHECKING:
    from gateway.cache.service import CacheService


class CacheAdmin:
    def __init__(self, service: CacheService):
        self.service = service

    async def stats(self) -> dict[str, Any]:
        svc = self.service
        stored = await svc.store.call(svc.store.background_s, svc.store.counts)
        load = svc.load.factor
        return {
            "ready": svc.warm.is_set(),
            "backend_load": load,
            "backend_signals": dict(svc.load.backend),
            "exact_entries": len(svc.indexes.exact),
            "categories": {
                name: {
                    "entries": len(svc.indexes[name]) if name in svc.indexes else 0,
                    "stored_rows": stored.get(name, 0),
                    "quota": cat.quota,
                    "threshold": cat.threshold,
                    "ttl_seconds": cat.ttl_seconds,
                    "effective_threshold": round(policy.effective_threshold(cat, load), 4),
                    "effective_ttl_seconds": round(policy.effective_ttl(cat, load), 1),
                    "eviction": cat.eviction,
                    "cacheable": cat.cacheable,
                    "verification": cat.verification.slots if cat.verification.enabled else [],
                }
                for name, cat in svc.categories.items()
            },
        }

    async def list(
        self, *, category: str | None, namespace: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        store = self.service.store
        return await store.call(store.background_s, store.list_entries, category=category,
                                namespace=namespace, limit=limit, offset=offset)

    async def get(self, entry_id: int) -> dict[str, Any] | None:
        store = self.service.store
        return await store.call(store.background_s, store.get_entry, entry_id)

    async def invalidate(
        self, *, ids: list[int] | None = None, category: str | None = None,
        namespace: str | None = None, query: str | None = None, min_similarity: float = 0.9,
    ) -> list[int]:
        """Delete by ids, category and/or namespace; or, with ``query``, the entries whose
        stored query is at least ``min_similarity`` similar (within the other filters)."""
        svc = self.service
        if query is not None:
            vec = await svc.batcher.embed(query)
            names = [category] if category else list(svc.indexes)
            near: list[int] = []
            for name in names:
                found = svc.indexes[name].search_any(vec, k=1000, now=time.time())
                near += [i for i, sim in found if sim >= min_similarity]
            if ids is not None:
                near = [i for i in near if i in set(ids)]
            if not near:
                return []
            ids, category = near, None
        deleted = await svc.store.call(svc.store.background_s, svc.store.delete_where, ids=ids,
                                       category=category, namespace=namespace)
        for entry_id, name in deleted:
            if name in svc.indexes:
                svc.indexes.drop(name, [entry_id])
        return [i for i, _ in deleted]

    async def feedback(self, entry_id: int, reason: str | None) -> bool:
        """"This hit was wrong": recorded, and the entry deleted so it is never served again."""
        svc = self.service
        entry = await svc.store.call(svc.store.background_s, svc.store.get_entry, entry_id)
        if entry is None:
            return False
        await svc.store.call(svc.store.background_s, svc.store.record_feedback, entry, reason, time.time())
        if entry["category"] in svc.indexes:
            svc.indexes.drop(entry["category"], [entry_id])
        svc.metrics.feedback.labels(entry["category"]).inc()
        return True

    async def reload(self) -> list[str]:
        """Re-read the category files (and overlay); raises CategoryConfigError and keeps the
        current categories if they are wrong."""
        svc = self.service
        cats = await asyncio.to_thread(
            load_categories, svc.settings.categories_dir or categories_dir(),
            svc.settings.categories_overlay,
        )
        exemplars = {n: await svc.batcher.embed_many(c.exemplars) for n, c in cats.items()}
        classifier = Classifier(cats, exemplars, svc.settings.classify_min_similarity)
        # a category now on the learned verifier: its model loaded here, not in a lookup
        await asyncio.to_thread(svc.finder.learned_for, *cats.values())
        svc.install_categories(cats, classifier)
        return sorted(cats)

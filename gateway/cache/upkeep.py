"""The cache's work beside the request path: expired rows swept (and the change log pruned),
hit counts written in batches instead of one UPDATE per hit."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.cache import threads
from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.cache.state import CacheState

log = logging.getLogger(__name__)


class HitCounter:
    """Hits since the last flush: entry id -> (how many, time of the last one)."""

    def __init__(self) -> None:
        self._hits: dict[int, tuple[int, float]] = {}

    def count(self, entry_id: int, now: float) -> None:
        n, _ = self._hits.get(entry_id, (0, now))
        self._hits[entry_id] = (n + 1, now)

    def take(self) -> dict[int, tuple[int, float]]:
        hits, self._hits = self._hits, {}
        return hits


async def flush_hits(svc: CacheState) -> None:
    try:
        await svc.store.call(svc.store.background_s, svc.store.touch, svc.hits.take())
    except StoreError as exc:
        # Hit counts are advisory (LRU/LFU): dropped, not retried. Nor is this a reason to stop
        # caching: another process holding SQLite's write lock fails the flush ("database is
        # locked"; twelve workers flushing into one file did, and each failure used to open
        # the breaker, 5 s of pass-through); an outage the request path finds by itself.
        svc.metrics.store_errors.labels("touch").inc()
        log.info("hit counts not recorded: %s", exc.message)


async def flush_hits_forever(svc: CacheState) -> None:
    while not await svc.background.pause(1.0):
        await flush_hits(svc)


async def sweep(svc: CacheState) -> int:
    """Delete expired rows from the store and their labels from the indexes; prune the change
    log beyond its retention."""
    now = time.time()
    swept = await svc.store.call(svc.store.background_s, svc.store.sweep_expired, now)
    for entry_id, category in swept:
        if category in svc.indexes:
            svc.indexes.drop(category, [entry_id])
            svc.metrics.expirations.labels(category).inc()
    for name, index in svc.indexes.items():  # rows another process already deleted
        svc.indexes.drop(name, index.expired(now))
    await svc.store.call(svc.store.background_s, svc.store.prune_changes,
                         now - svc.settings.change_retention_s)
    await svc.store.call(svc.store.background_s, threads.forget_expired, svc.store.engine, now)
    return len(swept)


async def sweep_forever(svc: CacheState) -> None:
    while not await svc.background.pause(svc.settings.sweep_interval_s):
        try:
            await sweep(svc)
        except StoreError as exc:  # as a failed hit-count flush: counted, not an outage
            svc.metrics.store_errors.labels("sweep").inc()
            log.warning("sweep failed (%s); retrying at the next interval", exc.message)
        except Exception:  # a bug must not stop expiry for good: log it, sweep again later
            log.exception("sweep failed; retrying at the next interval")

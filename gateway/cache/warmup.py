"""Warm restart: the in-memory indexes back from the store (or from a snapshot reconciled with
it) before the gateway reports ready; and the snapshot written on the way out."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.cache import snapshot, sync
from gateway.errors import StoreError
from gateway.resources import trim_heap

if TYPE_CHECKING:
    from gateway.cache.state import CacheState

log = logging.getLogger(__name__)


def fingerprint(svc: CacheState) -> str:
    """What an index snapshot must have been made with to be usable."""
    return f"{svc.batcher.embedder.name}:{svc.batcher.embedder.dim}"


async def warm_up(svc: CacheState) -> None:
    """Indexes from the store (or a snapshot); with replicas, then the changes made meanwhile
    (``sync``); only then ready. A store that is down at start-up is waited for."""
    while True:
        try:
            if svc.follower is not None:
                svc.follower.start_at(await svc.store.call(svc.store.background_s, svc.store.last_change))
            await rebuild(svc)
            if svc.follower is not None:
                await sync.apply(svc, svc.follower)
            break
        except StoreError:
            svc.breaker.failed("read")
            await asyncio.sleep(svc.settings.store_retry_s)
    svc.warm.set()
    log.info("cache ready")
    if svc.follower is not None:
        svc.background.spawn(sync.follow_forever(svc, svc.follower))


async def rebuild(svc: CacheState) -> None:
    """The indexes from a snapshot reconciled with the store, or rebuilt from every live row.
    The caller reports ready after it (and after the change log's catch-up)."""
    started, count = time.monotonic(), 0
    snap_dir = svc.settings.index_snapshot_dir
    snap = None
    if snap_dir is not None:
        snap = await asyncio.to_thread(
            snapshot.load, snap_dir, svc.batcher.embedder.dim, fingerprint(svc),
            list(svc.categories),
        )
    if snap is not None:
        svc.indexes.replace(snap.indexes, snap.exact)
        kept, added = await svc.indexes.reconcile(svc.store)
        log.info("index snapshot loaded (watermark %d): %d entries kept, %d added from the "
                 "store", snap.watermark, kept, added)
        count = kept + added
    else:
        counts = await svc.store.call(svc.store.background_s, svc.store.live_counts, time.time())
        for name, n in counts.items():
            if name in svc.indexes:
                svc.indexes[name].reserve(n + n // 10 + 1024)
        rows_iter = svc.store.iter_live(time.time())
        while True:
            batch = await svc.store.call(svc.store.background_s, next, rows_iter, None)
            if batch is None:
                break
            await svc.indexes.add_rows(batch)
            count += len(batch)
            log.info("index rebuild: %d entries loaded", count)
    await asyncio.to_thread(trim_heap)  # the rebuild's row batches are garbage now
    log.info("index loaded: %d entries in %.2fs", count, time.monotonic() - started)


async def save_snapshot(svc: CacheState) -> bool:
    """Write the index snapshot (graceful shutdown, or on demand); False if not configured."""
    if svc.settings.index_snapshot_dir is None or not svc.warm.is_set():
        return False
    watermark = await svc.store.call(svc.store.background_s, svc.store.max_id)
    await asyncio.to_thread(
        snapshot.save, svc.settings.index_snapshot_dir, svc.indexes, svc.indexes.exact, watermark,
        fingerprint(svc),
    )
    return True

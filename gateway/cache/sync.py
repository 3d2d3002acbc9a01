"""Replica coherence: every replica follows the store's change log (``cache_changes``).

Several gateways (replicas, or ``serve --workers N``) share one store; each holds its own
in-memory indexes. What must travel between them is only *which entries exist*: a hit is always
read back from the store, so an entry deleted there (invalidated, evicted, expired, reported
wrong) can never be served by any replica, even before its change arrives. The log makes new
entries searchable everywhere and frees the indexes of deleted ones.

Why polling a monotonic sequence rather than LISTEN/NOTIFY: a notification sent while a
listener's connection is down is gone for good (PostgreSQL keeps no backlog per listener), so a
NOTIFY design needs a replayable log anyway to survive a dropped connection; with the log in
place, an indexed ``seq > last`` query every ``sync_interval_s`` (0.2 s by default) already
meets the 1 s bound, costs one index probe per replica per interval when nothing changed, and
works the same on any SQL store (SQLite for workers on one host).

The one subtlety: sequence numbers are handed out when a transaction inserts, not when it
commits, so a reader can see seq 102 committed while 101 is still in flight. Skipped numbers are
kept as *gaps* and asked for again on every poll until they turn up or are older than
``GAP_HORIZON_S`` (a rolled-back transaction leaves a gap that never fills; ours commit within
milliseconds, so a minute is generous).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.cache.changelog import ChangeFollower
from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.cache.state import CacheState

log = logging.getLogger(__name__)


async def apply(svc: CacheState, follower: ChangeFollower) -> int:
    """One poll of the log, applied to ``svc``'s indexes; the number of changes read."""
    batch = await svc.store.call(svc.store.background_s, follower.poll)
    for entry_id, category in batch.removed.items():
        if category in svc.indexes:
            svc.indexes.drop(category, [entry_id])
    wanted = [i for i, c in batch.added.items() if c in svc.indexes and i not in svc.indexes[c]]
    if wanted:  # our own writes are in the index already; only others' are read
        await svc.indexes.add_rows(
            await svc.store.call(svc.store.background_s, svc.store.index_rows, wanted))
        for name in {batch.added[i] for i in wanted} & svc.categories.keys():
            await svc.enforce_quota(svc.categories[name])
    if batch.count:
        svc.metrics.sync_changes.labels("put").inc(len(batch.added))
        svc.metrics.sync_changes.labels("delete").inc(len(batch.removed))
        if batch.oldest_at is not None:
            svc.metrics.sync_lag.observe(max(0.0, time.time() - batch.oldest_at))
    return batch.count


async def follow_forever(svc: CacheState, follower: ChangeFollower) -> None:
    """Poll every ``sync_interval_s``. A failed poll changes nothing (the next one reads from
    the same place); a replica cut off for longer than the log is kept reconciles its whole
    index with the store instead."""
    settings = svc.settings
    while not await svc.background.pause(settings.sync_interval_s):
        try:
            if time.monotonic() - follower.last_ok > settings.change_retention_s / 2:
                log.warning("cut off from the change log too long; reconciling with the store")
                start = await svc.store.call(svc.store.background_s, svc.store.last_change)
                await svc.indexes.reconcile(svc.store)
                follower.start_at(start)
                follower.last_ok = time.monotonic()
                svc.metrics.sync_resyncs.inc()
            await apply(svc, follower)
        except StoreError:
            svc.metrics.sync_errors.inc()
            log.warning("change log poll failed; retrying", exc_info=log.isEnabledFor(10))
        except Exception:  # a bug must not stop replica sync for good
            svc.metrics.sync_errors.inc()
            log.exception("applying the change log failed; retrying")

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from gateway.cache import warmup
from gateway.cache.store import DELETE, PUT, Store

if TYPE_CHECKING:
    from gateway.cache.service import CacheService

log = logging.getLogger(__name__)

GAP_HORIZON_S = 60.0
MAX_NEW_GAPS = 1000


@dataclass
class Batch:
    """What a poll found: entries to drop, then entries to add (each id -> category)."""

    removed: dict[int, str] = field(default_factory=dict)
    added: dict[int, str] = field(default_factory=dict)
    oldest_at: float | None = None   # write time of the oldest change (for the lag metric)
    count: int = 0


class ChangeFollower:
    def __init__(self, store: Store, *, batch: int = 5000, gap_horizon_s: float = GAP_HORIZON_S):
        self.store = store
        self.batch = batch
        self.gap_horizon_s = gap_horizon_s
        self.last = 0
        self.gaps: dict[int, float] = {}   # skipped seq -> when first noticed
        self.last_ok = time.monotonic()

    def start_at(self, seq: int) -> None:
        self.last, self.gaps = seq, {}

    def poll(self) -> Batch:
        """Read every change not yet seen (blocking). Within the batch an entry removed and
        added again (SQLite can reuse an id) is dropped first, then added back."""
        out = Batch()
        while True:
            rows = self.store.changes_since(self.last, sorted(self.gaps), self.batch)
            now = time.monotonic()
            expected = self.last + 1
            for change in rows:
                if change.seq in self.gaps:
                    del self.gaps[change.seq]
                elif change.seq > self.last:
                    if change.seq - expected <= MAX_NEW_GAPS:  # more: pruned, not in flight
                        for missing in range(expected, change.seq):
                            self.gaps[missing] = now
                    expected = change.seq + 1
                    self.last = change.seq
                if change.op == DELETE:
                    out.removed[change.entry_id] = change.category
                    out.added.pop(change.entry_id, None)
                elif change.op == PUT:
                    out.added[change.entry_id] = change.category
                out.count += 1
                if out.oldest_at is None or change.at < out.oldest_at:
                    out.oldest_at = change.at
            if len(rows) < self.batch:
                break
        # only after a successful read: a gap is given up once it has been asked for
        # over the whole horizon
        cutoff = time.monotonic() - self.gap_horizon_s
        self.gaps = {s: t for s, t in self.gaps.items() if t > cutoff}
        self.last_ok = time.monotonic()
        return out


async def apply(svc: CacheService, follower: ChangeFollower) -> int:
    """One poll of the log, applied to ``svc``'s indexes; the number of changes read."""
    batch = await svc.store.call(svc.store.background_s, follower.poll)
    for entry_id, category in batch.removed.items():
        if category in svc.indexes:
            svc.indexes.drop(category, [entry_id])
    wanted = [i for i, c in batch.added.items() if c in svc.indexes and i not in svc.indexes[c]]
    if wanted:  # our own writes are in the index already; only others' are read
        await warmup.add_rows(svc, await svc.store.call(svc.store.background_s, svc.store.index_rows, wanted))
        for name in {batch.added[i] for i in wanted} & svc.categories.keys():
            await svc.enforce_quota(svc.categories[name])
    if batch.count:
        svc.metrics.sync_changes.labels("put").inc(len(batch.added))
        svc.metrics.sync_changes.labels("delete").inc(len(batch.removed))
        if batch.oldest_at is not None:
            svc.metrics.sync_lag.observe(max(0.0, time.time() - batch.oldest_at))
    return batch.count


async def follow_forever(svc: CacheService, follower: ChangeFollower) -> None:
    """Poll every ``sync_interval_s``. A failed poll changes nothing (the next one reads from
    the same place); a replica cut off for longer than the log is kept reconciles its whole
    index with the store instead."""
    settings = svc.settings
    while not await svc.background.pause(settings.sync_interval_s):
        try:
            if time.monotonic() - follower.last_ok > settings.change_retention_s / 2:
                log.warning("cut off from the change log too long; reconciling with the store")
                start = await svc.store.call(svc.store.background_s, svc.store.last_change)
                await warmup.reconcile(svc)
                follower.start_at(start)
                follower.last_ok = time.monotonic()
                svc.metrics.sync_resyncs.inc()
            await apply(svc, follower)
        except SQLAlchemyError:
            svc.metrics.sync_errors.inc()
            log.warning("change log poll failed; retrying", exc_info=log.isEnabledFor(10))
        except Exception:  # a bug must not stop replica sync for good
            svc.metrics.sync_errors.inc()
            log.exception("applying the change log failed; retrying")

"""The change log's reader: which entries other replicas (or workers) added and removed since
the last poll, with the in-flight sequence numbers kept as gaps (why: ``sync``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.cache.schema import DELETE, PUT
from gateway.cache.store import Store

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

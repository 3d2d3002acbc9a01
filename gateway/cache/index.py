"""One in-memory HNSW index (hnswlib) per category.

Inner product on L2-normalised vectors, so similarity = 1 - hnswlib's distance = cosine.
Labels are the document store's row ids. Beside the graph the index keeps, per label, what a
candidate must match before the store is read at all: scope, conversation context, expiry.
Deleted labels are marked and their slots reused; the capacity grows when full.

A label must never come to stand for another row's vector. hnswlib's ``replace_deleted`` hands
a new label the slot of *some* deleted one and forgets that deleted label; if the label being
added is itself still in the graph as deleted (a store that reuses ids, a change log replayed
twice), its old slot stays behind under the same label, and a later replacement of that slot
unmaps the live one. So a label known to the graph is revived and updated in place, only a
label the graph has never held takes a free slot, and the store's ids are never reused
(``AUTOINCREMENT`` on SQLite). The request path checks every candidate against the stored row's
own embedding besides (``cache/service.py``): the index proposes, the store decides.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from gateway.embedding import Vectors

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Meta:
    scope_hash: str
    context_hash: str
    expires_at: float


class CategoryIndex:
    # ef_construction 100: half the build time of 200 (a restart without snapshot rebuilds
    # the graph) for no measurable loss at search ef 64 (docs/BENCHMARKS.md, scale section).
    def __init__(self, dim: int, *, capacity: int = 1024, ef: int = 64, m: int = 16):
        self.dim = dim
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=capacity, ef_construction=100, M=m, allow_replace_deleted=True
        )
        self._index.set_ef(ef)
        self._meta: dict[int, Meta] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, label: int) -> bool:
        return label in self._meta

    def add(self, ids: list[int], vectors: Vectors, metas: list[Meta]) -> None:
        if not ids:
            return
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            in_place: list[int] = []   # rows of ``ids`` whose label the graph holds
            fresh: list[int] = []      # labels the graph has never held: they take a free slot
            revived = 0
            for row, label in enumerate(ids):
                if label in self._meta:
                    in_place.append(row)
                elif self._revive(label):
                    in_place.append(row)
                    revived += 1
                else:
                    fresh.append(row)
            # fresh labels fill the deleted (vacant) slots first; only the rest need new ones
            needed = max(self._index.element_count, len(self._meta) + revived + len(fresh))
            if needed > self._index.get_max_elements():
                # grow by a quarter, not double: at 1M entries a doubling would hold ~1.7 GB
                # of empty slots (the graph preallocates every slot)
                cap = self._index.get_max_elements()
                self._index.resize_index(max(needed, cap + cap // 4 + 1024))
            for rows, replace in ((in_place, False), (fresh, True)):
                if rows:
                    self._index.add_items(vecs[rows], np.asarray([ids[r] for r in rows],
                                                                 dtype=np.int64),
                                          replace_deleted=replace)
            for i, meta in zip(ids, metas, strict=True):
                # a few scopes are shared by many entries: keep one copy of each hash
                self._meta[i] = Meta(sys.intern(meta.scope_hash), sys.intern(meta.context_hash),
                                     meta.expires_at)

    def _revive(self, label: int) -> bool:
        """Unmark ``label`` if the graph holds it as deleted; False if the graph never held it."""
        try:
            self._index.unmark_deleted(label)
        except RuntimeError:  # "Label not found" (or, impossible here, "not deleted")
            return False
        return True

    def remove(self, ids: list[int]) -> int:
        removed = 0
        with self._lock:
            for i in ids:
                if self._meta.pop(i, None) is not None:
                    try:
                        self._index.mark_deleted(i)
                    except RuntimeError:  # gone from the graph: unsearchable without its meta
                        log.error("index label %d was not in the graph", i)
                    removed += 1
        return removed

    def reserve(self, n: int) -> None:
        """Make room for ``n`` entries in one step (a rebuild knows how many will come)."""
        with self._lock:
            if n > self._index.get_max_elements():
                self._index.resize_index(n)

    def search_any(self, vector: Vectors, *, k: int, now: float) -> list[tuple[int, float]]:
        """Nearest live labels in any scope (operator tools, not the request path)."""

        def live(label: int) -> bool:
            m = self._meta.get(label)
            return m is not None and m.expires_at > now

        return self._nearest(vector, k, live)

    def _nearest(
        self, vector: Vectors, k: int, keep: Callable[[int], bool]
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest labels that ``keep`` accepts, with their similarity, best first.

        First a plain search for a few more than ``k``, filtered here: hnswlib calls a filter
        for every node it visits, each call taking the GIL (twice the search's time alone, and
        a wait for the GIL whenever another thread runs Python). Where too few of those pass
        (many scopes in one index), the filtered search finds the ``k`` that ``keep`` allows."""
        with self._lock:
            live = len(self._meta)
            k = min(k, live)
            if k == 0:
                return []
            wide = min(live, 2 * k + 8)
            try:
                labels, dists = self._index.knn_query(vector, k=wide)
            except RuntimeError:  # the graph found fewer than ``wide``: the filtered search
                pass
            else:
                near = [(label, sim) for label, sim in _similarities(labels, dists) if keep(label)]
                if len(near) >= k or wide == live:  # enough, or every live label looked at
                    return near[:k]
            allowed: int | None = None
            while k > 0:
                try:
                    labels, dists = self._index.knn_query(vector, k=k, filter=keep)
                    break
                except RuntimeError:  # fewer than k labels pass the filter: ask for fewer
                    if allowed is None:
                        allowed = sum(1 for label in self._meta if keep(label))
                    k = min(k - 1, allowed)
            if k == 0:
                return []
        return _similarities(labels, dists)

    def save(self, path: Path) -> None:
        """Graph and metadata to ``path``.graph / ``path``.meta (the caller renames atomically)."""
        with self._lock:
            self._index.save_index(str(path.with_suffix(".graph")))
            path.with_suffix(".meta").write_bytes(pickle.dumps(self._meta, protocol=5))

    @classmethod
    def load(cls, path: Path, dim: int) -> CategoryIndex:
        self = cls(dim, capacity=1)
        meta: dict[int, Meta] = pickle.loads(path.with_suffix(".meta").read_bytes())
        self._index.load_index(
            str(path.with_suffix(".graph")), max_elements=len(meta) + len(meta) // 10 + 1024,
            allow_replace_deleted=True,
        )
        self._index.set_ef(64)
        self._meta = meta
        return self

    def expires(self) -> dict[int, float]:
        with self._lock:
            return {i: m.expires_at for i, m in self._meta.items()}

    def expired(self, now: float) -> list[int]:
        with self._lock:
            return [i for i, m in self._meta.items() if m.expires_at <= now]

    def search(
        self, vector: Vectors, *, k: int, scope_hash: str, context_hash: str, now: float
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest live labels of the same scope and context, with their similarity,
        best first. The caller applies the category's threshold."""

        def allowed(label: int) -> bool:
            m = self._meta.get(label)
            return (
                m is not None and m.scope_hash == scope_hash
                and m.context_hash == context_hash and m.expires_at > now
            )

        return self._nearest(vector, k, allowed)


def _similarities(labels: Any, dists: Any) -> list[tuple[int, float]]:
    """One query's ``knn_query`` answer as (label, similarity), best first."""
    return [(int(label), float(1.0 - d)) for label, d in zip(labels[0], dists[0], strict=True)]


class ExactIndex:
    """Exact repeats (same scope, conversation and whitespace-normalised query) skip embedding
    and search entirely: digest -> row id. Keys are the first 16 bytes of the digest; a hit is
    still checked against the stored query text, so a collision can never serve a wrong row."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, int] = {}
        self._by_id: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(digest: str) -> bytes:
        return bytes.fromhex(digest[:32])

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, digest: str, entry_id: int) -> None:
        key = self._key(digest)
        with self._lock:
            old = self._by_key.get(key)
            if old is not None:
                self._by_id.pop(old, None)
            self._by_key[key] = entry_id
            self._by_id[entry_id] = key

    def get(self, digest: str) -> int | None:
        return self._by_key.get(self._key(digest))

    def state(self) -> dict[bytes, int]:
        with self._lock:
            return dict(self._by_key)

    @classmethod
    def from_state(cls, state: dict[bytes, int]) -> ExactIndex:
        self = cls()
        self._by_key = dict(state)
        self._by_id = {entry_id: key for key, entry_id in state.items()}
        return self

    def remove(self, ids: list[int]) -> None:
        with self._lock:
            for i in ids:
                key = self._by_id.pop(i, None)
                if key is not None and self._by_key.get(key) == i:
                    del self._by_key[key]

"""Search and verify: from a query's vector to the stored entry that may answer it, or None.

The index only proposes candidates; each must then be read back from the store, be alive, in the
request's scope and context, within its token limit, as near by its *own* stored vector as the
index said (a label that came to stand for another row never serves that row's answer), and pass
the verifier of both categories. The exact-repeat path needs none of the embedding: one digest,
one store read, the same checks on the row.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from gateway.backend.load import LoadMonitor
from gateway.cache import policy
from gateway.cache.breaker import StoreBreaker
from gateway.cache.indexes import Indexes
from gateway.cache.keys import RequestKey, normalise
from gateway.cache.repeats import Decision, VerifiedRepeats, text_digest
from gateway.cache.replies import Hit, token_bound
from gateway.cache.schema import StoredEntry
from gateway.cache.store import Store
from gateway.cache.upkeep import HitCounter
from gateway.cache.verifier.calibrated import (
    CALIBRATION,
    decide,
    load_calibrator,
    needs_learned,
    uses_learned,
)
from gateway.cache.verifier.learned import (
    LearnedVerifier,
    load_combination,
    load_gate,
    load_learned,
)
from gateway.cache.verifier.shared_pairs import SharedPairModel
from gateway.cache.verifier.torch_pairs import pair_model, verifier_device
from gateway.categories import Category
from gateway.config import Settings
from gateway.embedding import Embedder, Vectors, unseen
from gateway.errors import StoreError
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Found:
    """What one search found, to be applied on the event loop."""

    hit: Hit | None = None
    nearest: float | None = None     # best similarity in scope, hit or not
    rejected: dict[str, int] = field(default_factory=dict)  # the verifier's reasons
    drops: list[tuple[str, int]] = field(default_factory=list)  # index labels to drop
    failed: bool = False             # the store failed to read the candidates


class Finder:
    def __init__(
        self, settings: Settings, store: Store, indexes: Indexes, breaker: StoreBreaker,
        metrics: Metrics, hits: HitCounter, embedder: Embedder, load: LoadMonitor,
        repeats: VerifiedRepeats | None = None,
    ):
        self.settings, self.store, self.indexes, self.breaker = settings, store, indexes, breaker
        self.metrics, self.hits, self.embedder, self.load = metrics, hits, embedder, load
        self.repeats = repeats if repeats is not None else VerifiedRepeats(0)
        # a few numbers, read once; categories opt in to it (verification.max_wrong_rate)
        self.calibrator = load_calibrator(settings.verifier_calibration or CALIBRATION)
        # the cross-encoder: loaded the first time a category asks for it (learned.py)
        self._learned: LearnedVerifier | None = None
        self._learned_failed = False
        self._learned_lock = threading.Lock()
        try:  # where a store thread hands a call to the shared embedding process
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def learned_for(self, *categories: Category) -> LearnedVerifier | None:
        """The learned verifier, loaded (blocking: ONNX export the first time, ~10 s) when
        one of ``categories`` decides by it; else None."""
        if not needs_learned(*categories):
            return None
        with self._learned_lock:
            if self._learned is None and not self._learned_failed:
                try:
                    self._learned = self._load_learned()
                    self._learned.model.observe = self._observe_model
                except Exception:  # its categories' candidates are refused, never unverified
                    log.exception("the learned verifier cannot be loaded; categories that "
                                  "use it serve no semantic hits")
                    self._learned_failed = True
        return self._learned

    def _load_learned(self) -> LearnedVerifier:
        """In the shared embedding process where this worker's embedding is done there (and it
        scores pairs), else here: on the GPU or the CPU (``verifier_device``)."""
        if getattr(self.embedder, "scores_pairs", False) and self._loop is not None:
            return LearnedVerifier(SharedPairModel(self.embedder, self._loop),
                                   load_combination(), load_gate())
        return load_learned(self.settings.embedding_cache_dir, model=pair_model(
            self.settings.embedding_cache_dir, self.settings.embedding_threads,
            verifier_device(self.settings.verifier_device)))

    def _observe_model(self, pairs: int, seconds: float) -> None:
        self.metrics.verifier_model_pairs.inc(pairs)
        self.metrics.stage_duration.labels("cross_encoder").observe(seconds)

    async def search(
        self, key: RequestKey, category: Category, ranked: list[str],
        categories: dict[str, Category], vec: Vectors, *, remember: bool = True,
    ) -> Hit | None:
        """The best verified entry in the query's category and the near-tied ones, or None.
        The categories are searched in rank order and the first verified candidate wins, all
        in one store-thread call (a thread hop costs about what a search does: one per category
        made a miss near several categories pay it several times); what the search finds out
        about the indexes (labels to drop) and the hit count are applied here, on the loop.
        A hit is remembered for ``repeated`` unless not to (``remember``: a category the client
        forced, where the decision was not the classifier's)."""
        now = time.time()
        load = self.load.factor
        searched = [(categories[n], policy.match_threshold(category, categories[n], load))
                    for n in ranked if categories[n].cacheable]
        if not searched:
            return None
        try:
            found: Found = await self.store.call(
                self.settings.store_lookup_timeout_s, self._find, key, category, searched, vec,
                now)
        except StoreError as exc:
            self.breaker.failed("read", exc)
            return None
        if not found.failed:
            self.breaker.succeeded()
        for name, entry_id in found.drops:
            self.indexes.drop(name, [entry_id])
        for reason, n in found.rejected.items():
            self.metrics.verifier_rejections.labels(category.name, reason).inc(n)
        if found.failed:
            self.breaker.failed("read")
            return None
        if found.hit is not None:
            self.hits.count(found.hit.entry.id, now)
            if remember:  # for ``repeated``
                self.remember(key, category, found.hit)
            return found.hit
        if found.nearest is not None:
            self.metrics.miss_nearest_similarity.labels(category.name).observe(found.nearest)
        return None

    async def exact(
        self, key: RequestKey, categories: dict[str, Category],
    ) -> tuple[Category, Hit] | None:
        """The exact-repeat fast path: no embedding, no search, one store read."""
        entry_id = self.indexes.exact.get(key.exact_hash)
        if entry_id is None:
            return None
        name = next((n for n, index in self.indexes.items() if entry_id in index), None)
        if name is None or name not in categories or not categories[name].cacheable:
            return None
        row, now = await self._read(key, name, entry_id)
        if row is None or normalise(row.query_text) != normalise(key.text):
            return None
        self.hits.count(entry_id, now)
        return categories[name], Hit(row, 1.0)

    def remember(self, key: RequestKey, category: Category, hit: Hit) -> None:
        """A semantic hit ``search`` found, for ``repeated`` to replay."""
        self.repeats.remember(key.exact_hash, Decision(
            hit.entry.id, hit.similarity, category.name, hit.entry.category,
            text_digest(hit.entry.query_text)))

    async def repeated(
        self, key: RequestKey, categories: dict[str, Category],
    ) -> tuple[Category, Hit] | None:
        """A verified paraphrase hit, sent again word for word: its decision replayed where
        all it rested on still holds (``repeats.py``); one store read. A decision that no longer
        holds is forgotten."""
        decision = self.repeats.recall(key.exact_hash)
        if decision is None:
            return None
        found = await self._replay(key, categories, decision)
        if found is None:
            self.repeats.forget(key.exact_hash)
        else:
            self.metrics.verified_repeats.labels(found[0].name).inc()
        return found

    async def _replay(
        self, key: RequestKey, categories: dict[str, Category], decision: Decision,
    ) -> tuple[Category, Hit] | None:
        category, searched = categories.get(decision.category), categories.get(decision.searched)
        if category is None or searched is None or not (category.cacheable
                                                        and searched.cacheable):
            return None
        if searched.name not in self.indexes or decision.entry_id not in self.indexes[searched.name]:
            return None
        if decision.similarity < policy.match_threshold(category, searched, self.load.factor):
            return None
        row, now = await self._read(key, searched.name, decision.entry_id)
        if row is None or row.category != searched.name \
                or text_digest(row.query_text) != decision.text:
            return None
        self.hits.count(decision.entry_id, now)
        return category, Hit(row, decision.similarity)

    async def _read(
        self, key: RequestKey, name: str, entry_id: int,
    ) -> tuple[StoredEntry | None, float]:
        """One entry read back for ``key``, if it is alive, in its scope and context and within
        its token limit; and the time it was read at."""
        try:
            with self.metrics.stage("store_read"):
                rows = await self.store.call(
                    self.settings.store_lookup_timeout_s, self.store.get_many, [entry_id])
        except StoreError as exc:
            self.breaker.failed("read", exc)
            return None, time.time()
        self.breaker.succeeded()
        row, now = rows.get(entry_id), time.time()
        if row is None:
            self.indexes.drop(name, [entry_id])
            return None, now
        if row.expires_at <= now or row.scope_hash != key.scope_hash \
                or row.context_hash != key.context_hash or not key.fits(token_bound(row)):
            return None, now
        return row, now

    def _find(
        self, key: RequestKey, category: Category, searched: list[tuple[Category, float]],
        vec: Vectors, now: float,
    ) -> Found:
        """Blocking, on a store thread: every category's index searched, the candidates over
        its threshold read back in one query (a read costs ~0.5 ms in the gateway, where the
        index search costs 0.07: a miss near several categories used to read once per
        category), then verified category by category; the first that passes wins."""
        found = Found()
        proposed: list[tuple[Category, float, list[tuple[int, float]]]] = []
        for neighbour, threshold in searched:
            with self.metrics.stage("search"):
                near = self.indexes[neighbour.name].search(
                    vec, k=self.settings.search_top_k, scope_hash=key.scope_hash,
                    context_hash=key.context_hash, now=now)
            if near:
                found.nearest = max(found.nearest or -1.0, near[0][1])
            candidates = [(i, s) for i, s in near if s >= threshold]
            if candidates:
                proposed.append((neighbour, threshold, candidates))
        if not proposed:
            return found
        with self.metrics.stage("store_read"):
            rows = self.store.get_many_or_none(
                sorted({i for _, _, candidates in proposed for i, _ in candidates}))
        if rows is None:
            found.failed = True
            return found
        for neighbour, threshold, candidates in proposed:
            found.hit = self._verify(key, category, neighbour, threshold, vec, candidates,
                                     rows, now, found)
            if found.hit is not None:
                return found
        return found

    def _verify(
        self, key: RequestKey, category: Category, searched: Category, threshold: float,
        vec: Vectors, candidates: list[tuple[int, float]], rows: dict[int, StoredEntry],
        now: float, found: Found,
    ) -> Hit | None:
        """``searched``'s candidates for the query classified as ``category``: a candidate must
        pass the stricter threshold and the verification of both."""
        embedder, max_chars = self.embedder, self.settings.max_query_chars
        learned = self.learned_for(category, searched)
        if learned is not None and uses_learned(category, searched):
            # a probability for every candidate: the cross-encoder over all of them at once.
            # Beside the rules (cross_encoder) it runs candidate by candidate instead, best
            # first, and stops at the first one served: on a CPU a batch of five costs five.
            learned.prime(key.text, [rows[i].query_text for i, _ in candidates if i in rows])
        for entry_id, sim in candidates:
            row = rows.get(entry_id)
            if row is None:  # deleted behind our back (another replica, an operator)
                found.drops.append((searched.name, entry_id))
                continue
            if row.expires_at <= now or row.scope_hash != key.scope_hash \
                    or row.context_hash != key.context_hash or not key.fits(token_bound(row)):
                continue
            # a row whose query the embedder did not see whole serves exact repeats only
            if len(row.query_text) > max_chars or unseen(embedder, row.query_text) is not None:
                continue
            # The index only proposes: the row's own vector must be as near as its label was
            # (a label that came to stand for another row can never serve that row's answer).
            own = _similarity(row, vec)
            if row.category != searched.name or own < threshold:
                log.error("index label %d of %r does not match its stored row (similarity "
                          "%.4f, listed %.4f); dropped", entry_id, searched.name, own, sim)
                found.drops.append((searched.name, entry_id))
                continue
            with self.metrics.stage("verify"):
                verdict = decide(key.text, row.query_text, own, category, searched,
                                 self.calibrator, learned)
            if not verdict.ok:
                reason = verdict.reason or "unknown"
                found.rejected[reason] = found.rejected.get(reason, 0) + 1
                continue
            return Hit(row, own)
        return None


def _similarity(row: StoredEntry, vec: Vectors) -> float:
    if row.embedding is None or row.embedding.size != vec.size:
        return -1.0
    return float(np.dot(row.embedding, vec.reshape(-1)))

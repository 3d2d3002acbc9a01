r"""The one orchestrator of a cached request:

    key -> embed -> classify -> plan -> search -> verify -> serve hit
                                                         \-> forward -> store (if complete)

Cache trouble (model, index or store failing) never fails a request: logged, it passes through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.responses import Response

from gateway.backend.forwarding import discard, forward_completion
from gateway.backend.load import LoadMonitor
from gateway.backend.responses import new_id as new_response_id
from gateway.backend.upstream import Upstream
from gateway.cache import policy, threads, upkeep, warmup
from gateway.cache.background import Background
from gateway.cache.breaker import StoreBreaker
from gateway.cache.changelog import ChangeFollower
from gateway.cache.coalesce import Coalescer, Shared
from gateway.cache.index import CategoryIndex, ExactIndex, Meta
from gateway.cache.indexes import Indexes
from gateway.cache.keys import RequestKey, chat_key, completion_key, namespace_of
from gateway.cache.lookup import Finder
from gateway.cache.repeats import VerifiedRepeats
from gateway.cache.replies import Hit, completion_tokens, hit_body, render_hit, stored_usage
from gateway.cache.responses_keys import responses_echo
from gateway.cache.schema import NewEntry, StoredEntry, make_engine, model_column, run_migrations
from gateway.cache.store import Store
from gateway.categories import Category, Classifier, load_categories
from gateway.config import Settings
from gateway.embedding import Embedder, MicroBatcher, Vectors, load_for, unseen
from gateway.errors import InvalidRequest, StoreError, UpstreamError
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, CompletionRequest, ResponsesRequest
from gateway.resources import categories_dir

log = logging.getLogger(__name__)

Parsed = ChatCompletionRequest | CompletionRequest | ResponsesRequest


@dataclass(frozen=True)
class Outcome:
    """What became of a request, for the metrics: hit, miss or bypass (and why), by category."""

    kind: str
    category: str = "-"
    bypass: str | None = None


class CacheService:
    def __init__(
        self, settings: Settings, upstream: Upstream, categories: dict[str, Category],
        batcher: MicroBatcher, classifier: Classifier, store: Store, metrics: Metrics,
    ):
        self.settings = settings
        self.metrics = metrics
        self.upstream = upstream
        self.batcher = batcher
        self.store = store
        self.indexes = Indexes()
        # the backend's load, which the thresholds and TTLs adapt to (docs/ADAPTIVE.md)
        self.load: LoadMonitor = upstream.load
        self.load.subscribe(self._load_changed)
        self.coalescer = Coalescer(settings.coalesce_wait_s)
        self.repeats = VerifiedRepeats(settings.verified_repeats)
        self.install_categories(categories, classifier)
        metrics.declare_store()
        self.warm = asyncio.Event()
        self.background = Background()
        self.breaker = StoreBreaker(settings.store_retry_s, metrics,
                                    probe=partial(store.call, settings.store_timeout_s, store.ping))
        self.hits = upkeep.HitCounter()
        self.follower = ChangeFollower(store) if settings.sync_enabled() else None
        self.finder = Finder(settings, store, self.indexes, self.breaker, metrics, self.hits,
                             batcher.embedder, self.load, self.repeats)

    def _load_changed(self, factor: float) -> None:
        self.metrics.backend_load.set(factor)
        for name, cat in self.categories.items():
            self.metrics.effective_threshold.labels(name).set(policy.effective_threshold(cat, factor))
            self.metrics.effective_ttl.labels(name).set(policy.effective_ttl(cat, factor))

    def install_categories(self, categories: dict[str, Category], classifier: Classifier) -> None:
        """Start-up and reload: categories, classifier, an index for each new category."""
        dim, metrics = self.batcher.embedder.dim, self.metrics
        for name, cat in categories.items():
            if name not in self.indexes:
                self.indexes[name] = CategoryIndex(dim)
            metrics.track_index(name, lambda n=name: len(self.indexes[n]), cat.quota)
            metrics.declare_category(name, [*cat.verification.slots, "probability"])
        self.categories, self.classifier = categories, classifier
        self.repeats.forget_all()  # decided under the categories that were
        self._load_changed(self.load.factor)  # the effective thresholds and TTLs

    # --- life cycle ---------------------------------------------------------------------
    @classmethod
    async def start(
        cls, settings: Settings, upstream: Upstream, metrics: Metrics, *,
        embedder: Embedder | None = None,
    ) -> CacheService:
        categories = load_categories(
            settings.categories_dir or categories_dir(), settings.categories_overlay
        )
        if embedder is None:
            embedder = await asyncio.to_thread(load_for, settings)
        # beside a shared embedding process, that process gathers the batches: no wait here
        wait_s = 0.0 if settings.embedding_server else settings.batch_wait_s(shared_process=False)
        batcher = MicroBatcher(embedder, wait_s=wait_s,
                               max_batch=settings.embedding_max_batch)
        batcher.start()
        exemplars = {n: await batcher.embed_many(c.exemplars) for n, c in categories.items()}
        classifier = Classifier(categories, exemplars, settings.classify_min_similarity)
        if settings.auto_migrate:
            await asyncio.to_thread(run_migrations, settings.database_url)
        store = Store(make_engine(settings.database_url, settings.store_timeout_s),
                      background_s=settings.store_timeout_s * 15)
        service = cls(settings, upstream, categories, batcher, classifier, store, metrics)
        # a category on the learned verifier: its model is loaded before the first request
        await asyncio.to_thread(service.finder.learned_for, *categories.values())
        for loop in (warmup.warm_up, upkeep.sweep_forever, upkeep.flush_hits_forever):
            service.background.spawn(loop(service))
        return service

    async def aclose(self) -> None:
        self.load.unsubscribe(self._load_changed)
        await self.background.close()  # before the engine is disposed
        await self.breaker.aclose()
        await upkeep.flush_hits(self)
        try:
            await warmup.save_snapshot(self)
        except Exception:
            log.exception("index snapshot not written; the next start rebuilds from the store")
        await self.batcher.aclose()
        await asyncio.to_thread(self.store.dispose)

    @property
    def exact(self) -> ExactIndex:
        return self.indexes.exact

    async def store_health(self) -> tuple[bool, str]:
        if not self.warm.is_set():
            return False, "rebuilding index"
        try:
            await self.store.call(self.settings.store_timeout_s, self.store.ping)
        except StoreError as exc:
            self.breaker.failed("ping")
            return False, f"store unreachable ({exc.message}): serving pass-through"
        self.breaker.reset()
        return True, "ok"

    # --- the request path ---------------------------------------------------------------
    async def complete(
        self, headers: Mapping[str, str], raw: bytes, parsed: Parsed, *, query: str = "",
    ) -> Response:
        """``query``: the URL's query string (``?api-version=...``): forwarded, and in the
        scope."""
        start = time.perf_counter()
        try:
            response, outcome = await self._complete(headers, raw, parsed, query)
        except UpstreamError:
            self.metrics.requests.labels("-", "error").inc()
            self.metrics.request_duration.labels("-", "error").observe(
                time.perf_counter() - start)
            raise
        kind = "error" if response.status_code >= 400 else outcome.kind
        if outcome.bypass is not None:
            self.metrics.bypasses.labels(outcome.bypass).inc()
        self.metrics.requests.labels(outcome.category, kind).inc()
        self.metrics.request_duration.labels(outcome.category, kind).observe(
            time.perf_counter() - start)
        return response

    async def _complete(
        self, headers: Mapping[str, str], raw: bytes, parsed: Parsed, query: str,
    ) -> tuple[Response, Outcome]:
        namespace = namespace_of(
            headers, key_namespaces=self.settings.api_key_namespaces,
            anonymous=self.settings.default_namespace,
            trust_header=self.settings.trust_namespace_header,
        )
        max_chars, extra = self.settings.max_query_chars, self.settings.extra_fields
        if isinstance(parsed, ResponsesRequest):  # raw: with a known conversation written out
            key, raw = await threads.key_for(self.store, self.settings, parsed, raw, namespace,
                                             query)
        elif isinstance(parsed, ChatCompletionRequest):
            key = chat_key(parsed, namespace, max_chars, extra, query)
        else:
            key = completion_key(parsed, namespace, max_chars, extra, query)
        cc = policy.cache_control(headers.get("cache-control"))
        forced = headers.get("x-semcache-category")
        if forced is not None and forced not in self.categories:
            raise InvalidRequest(
                f"X-Semcache-Category {forced!r} is not a category; known: "
                + ", ".join(sorted(self.categories)), param="X-Semcache-Category",
            )
        # the embedder must read all of the query for a semantic match; else exact repeats only
        missed = "too_long" if key.truncated else unseen(self.batcher.embedder, key.text)
        whole = missed is None
        out = {} if whole else {"x-semcache-exact-only": missed}
        if key.truncated:
            out["x-semcache-truncated"] = "true"

        if key.bypass is not None or not self.warm.is_set() or not self.breaker.closed:
            reason = key.bypass or ("warming_up" if not self.warm.is_set() else "store_unavailable")
            return await self._forward(key, raw, headers, parsed, Outcome("bypass", bypass=reason),
                                       out)
        if cc.lookup and forced is None:
            exact = await self.finder.exact(key, self.categories)
            if exact is None and whole:
                exact = await self.finder.repeated(key, self.categories)
            if exact is not None:
                category, hit = exact
                return await self._serve(key, category, hit, parsed,
                                   {**out, "x-semcache-category": category.name})
        try:
            with self.metrics.stage("embed"):
                vec = await self.batcher.embed(key.embed_text)
        except Exception:
            log.exception("embedding failed; request bypasses the cache")
            return await self._forward(key, raw, headers, parsed,
                                       Outcome("bypass", bypass="embedding_failed"), out)
        with self.metrics.stage("classify"):
            ranked = (
                [forced] if forced else
                [n for n, _ in self.classifier.ranked(vec, self.settings.classify_margin)]
            )
        category = self.categories[ranked[0]]
        out["x-semcache-category"] = category.name
        plan = policy.plan(None, category, cc)
        if plan.bypass is not None:
            return await self._forward(key, raw, headers, parsed,
                                       Outcome("bypass", category.name, plan.bypass), out)
        hedge = lead = None
        coalescing = self.settings.coalesce and plan.store
        if category.hedge and plan.lookup and not (
                coalescing and self.coalescer.in_flight(key.request_hash) is not None):
            # low-hit-rate category: the upstream call starts now, the lookup runs beside it;
            # identical requests arriving meanwhile follow this call instead of opening theirs
            # (an identical one already in flight: no hedge, this one follows it)
            hedge = asyncio.ensure_future(self.upstream.open_completion(
                key.endpoint, headers, raw, key.query))
            if coalescing:
                lead = self.coalescer.lead(key.request_hash)
        try:
            hit = await self.finder.search(key, category, ranked, self.categories, vec,
                                           remember=forced is None) if plan.lookup and whole else None
        except BaseException:
            if lead is not None:
                self.coalescer.finish(key.request_hash, lead, Shared())
            raise
        if hit is not None:
            if hedge is not None:
                self.background.spawn(discard(hedge))
                self.metrics.hedges.labels(category.name, "cancelled").inc()
            if lead is not None:  # followers find the same entry themselves
                self.coalescer.finish(key.request_hash, lead, Shared())
            return await self._serve(key, category, hit, parsed, out)
        if hedge is not None:
            self.metrics.hedges.labels(category.name, "used").inc()
        return await self._forward(key, raw, headers, parsed, Outcome("miss", category.name), out,
                                   store_in=category if plan.store else None, vec=vec,
                                   coalesce=plan.lookup, opened=hedge, lead=lead)

    async def _serve(
        self, key: RequestKey, category: Category, hit: Hit, parsed: Parsed,
        out: dict[str, str],
    ) -> tuple[Response, Outcome]:
        self.metrics.hit_similarity.labels(category.name).observe(hit.similarity)
        self.metrics.upstream_calls_avoided.labels(category.name).inc()
        self.metrics.tokens_saved.labels(category.name).inc(completion_tokens(hit.entry))
        rendered = None
        if isinstance(parsed, ResponsesRequest):  # a new id, remembered before it is given out
            rendered = hit_body(key, hit, {"id": new_response_id(), **responses_echo(parsed)})
            await threads.remember_answer(self.store, self.settings, key, rendered[0]["id"],
                                          rendered[0]["output"], minted=True, whole=rendered[0])
            include_usage = False
        else:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        return (render_hit(key, hit, out, stream=parsed.stream, include_usage=include_usage,
                           rendered=rendered), Outcome("hit", category.name))

    async def _forward(
        self, key: RequestKey, raw: bytes, headers: Mapping[str, str],
        parsed: Parsed, outcome: Outcome,
        out: dict[str, str], *, store_in: Category | None = None, vec: Vectors | None = None,
        coalesce: bool = False, opened: asyncio.Task[Any] | None = None,
        lead: asyncio.Future[Shared] | None = None,
    ) -> tuple[Response, Outcome]:
        """Forward upstream; an answer to store (``store_in``) may be shared with identical
        requests in flight (``coalesce``). ``opened``: a hedged call already under way, and
        ``lead``: the coalescing future it already leads."""
        coalesce = store_in is not None and coalesce and self.settings.coalesce
        ckey = key.request_hash
        if lead is None and coalesce and (leading := self.coalescer.in_flight(ckey)) is not None:
            shared = await self.coalescer.follow(leading)
            if shared is not None and shared.response is not None and store_in is not None:
                self.metrics.coalesced.labels(store_in.name).inc()
                usage = shared.response.get("usage") or {}
                hit = Hit(StoredEntry(
                    id=0, category=store_in.name, scope_hash=key.scope_hash,
                    context_hash=key.context_hash, query_text=key.text,
                    response=shared.response, completion_tokens=usage.get("completion_tokens"),
                    created_at=time.time(), expires_at=0.0, hit_count=0), 1.0)
                return await self._serve(key, store_in, hit, parsed,
                                   {**out, "x-semcache-coalesced": "true"})
            # no complete answer to share (an error, a cut-off or no-store answer, a wait that
            # ran out): the leader's outcome is not this request's; it makes its own call
        if lead is None and coalesce:
            lead = self.coalescer.lead(ckey)

        async def on_complete(response: dict[str, Any]) -> None:
            if store_in is not None and vec is not None:
                write = self._store(key, store_in, vec, response)
                if self.settings.store_writes == "before_reply" or not self.background.offload(write):
                    await write
            if lead is not None:
                self.coalescer.finish(ckey, lead, Shared(response=response))

        def on_end(status: int, body: bytes | None) -> None:
            if lead is not None:
                self.coalescer.finish(ckey, lead, Shared())

        extra = {**out, "x-semcache": outcome.kind}
        if outcome.bypass is not None:
            extra["x-semcache-bypass"] = outcome.bypass
        try:
            response = await forward_completion(
                self.upstream, key.endpoint, headers, raw, stream=parsed.stream,
                on_complete=on_complete if store_in is not None else None,
                extra_headers=extra, on_end=on_end, opened=opened, query=key.query,
                on_final=threads.recorder(self.store, self.settings, key, self.breaker))
        except BaseException:  # every exit path releases the followers, whatever went wrong
            if lead is not None:
                self.coalescer.finish(ckey, lead, Shared())
            raise
        return response, outcome

    async def _store(
        self, key: RequestKey, category: Category, vec: Vectors, response: dict[str, Any]
    ) -> None:
        """Write the answer; acknowledged (and served to others) once the row is committed."""
        now = time.time()
        usage = stored_usage(response)
        entry = NewEntry(
            namespace=key.namespace, category=category.name, endpoint=key.endpoint,
            model=model_column(key.model), scope_hash=key.scope_hash, context_hash=key.context_hash,
            query_text=key.text, embedding=vec, response=response,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            created_at=now, expires_at=policy.expires_at(category, now, self.load.factor),
            exact_hash=key.exact_hash,
            # only complete answers are stored: one made under a limit has at most that many
            completion_tokens_max=key.max_tokens,
        )
        index = self.indexes[category.name]
        if not self.breaker.closed:  # the store is down or hung: the answer goes out uncached
            return
        meta = Meta(key.scope_hash, key.context_hash, entry.expires_at)

        def insert_and_index() -> int:  # one thread hop for both
            with self.metrics.stage("store_write"):
                entry_id = self.store.insert(entry)
            index.add([entry_id], vec.reshape(1, -1), [meta])  # only once it is committed
            return entry_id

        try:
            entry_id = await self.store.call(self.settings.store_timeout_s, insert_and_index)
            self.breaker.succeeded()
            self.exact.add(entry.exact_hash, entry_id)
            await self.enforce_quota(category)
        except StoreError as exc:
            if exc.unavailable:
                self.breaker.failed("write", exc)
            else:  # this row was refused: this write fails alone, caching goes on for all
                self.metrics.store_errors.labels("write_rejected").inc()
                log.warning("the store refused an entry (%s); not cached", exc.message,
                            exc_info=log.isEnabledFor(logging.DEBUG))

    async def enforce_quota(self, category: Category) -> None:
        """Evict beyond the category's quota once this replica's index holds more than it
        (the store counts and chooses only then). Called after our own writes and after the
        change log brought others': a write made before this replica saw the others' can leave
        the store over quota, for one sync interval at most."""
        if len(self.indexes[category.name]) > category.quota:
            victims = await self.store.call(
                self.store.background_s, self.store.evict, category.name,
                category.quota, category.eviction)
            self.indexes.drop(category.name, victims)
            self.metrics.evictions.labels(category.name).inc(len(victims))

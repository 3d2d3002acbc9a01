"""Which backend replica gets a miss: KV-chunk affinity under bounded load.

A backend that already prefilled a chunk (a retrieved passage) keeps its KV cache (vLLM's
prefix cache, LMCache's CacheBlend store) and can reuse it for the next request carrying that
chunk. The gateway sees all traffic, so it keeps, per backend, a registry of the chunks it sent
there (an LRU bounded by the backend's KV capacity in tokens, so its view matches what the
engine can still hold) and sends each request where most of its chunk tokens already are. For
a prefix cache (``canonical-order``: llama.cpp, vLLM APC) what counts is the longest prefix of
the request's chunks in canonical order held there, not chunks seen in other sets: the engine
reuses a chunk's KV only after the same chunks before it.

Affinity alone would pile popular chunks onto one replica, so the choice is bounded (consistent
hashing with bounded loads, Mirrokni, Thorup & Zadimoghaddam, SODA 2018): a backend is eligible
only while its load is at most ⌈(1+ε) × its weighted share of the total⌉. Among the eligible,
the one holding the most of the request's chunk tokens wins; with no holder, the request's
anchor chunk (its largest) is placed on a hash ring (100 virtual nodes per unit of weight) and
walks clockwise to the first eligible backend, so a new chunk set lands on a stable home.
Requests without chunks go to the least loaded. Load = requests assigned, decayed with a
half-life of ``routing_window_s`` (recent request rate, which is what the bound is about).

Health: a backend that refuses the connection, times out before answering, or answers
502/503/504 leaves the rotation and the request moves to the next candidate (nothing has reached
the client yet); a prober brings it back when ``/models`` answers again. The prober also reads
each backend's reuse counters (vLLM, LMCache) to export the *measured* reuse next to the
*predicted* one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import math
import time
from collections import OrderedDict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.backend import chunk_format
from gateway.backend.chunks import Chunk
from gateway.config import Backend, Settings, server_root
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

# reuse counters a backend may expose, in tokens: source label, hits family, queries family
# (vLLM's prefix cache and its KV-connector/LMCache side, LMCache's own exporter)
REUSE_COUNTERS = (
    ("vllm_prefix_cache", "vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
    ("vllm_external_prefix_cache", "vllm:external_prefix_cache_hits",
     "vllm:external_prefix_cache_queries"),
    ("lmcache", "lmcache:num_hit_tokens", "lmcache:num_requested_tokens"),
)
FAILOVER_STATUSES = frozenset({502, 503, 504})


class BackendState:
    def __init__(self, cfg: Backend, half_life_s: float, delimiter: str | None = None):
        self.cfg = cfg
        self.label = cfg.label()
        self.url = cfg.url
        self.up = True
        self.registry: OrderedDict[bytes, int] = OrderedDict()
        self.registry_tokens = 0
        # what the registry may hold: the configured KV capacity, shrunk when the engine's own
        # counts show it keeps less than the gateway believed (``Router.observed``)
        self.capacity = cfg.kv_capacity_tokens
        self.engine_tokens = [0, 0]  # prompt tokens the engine reported: computed, from cache
        self._load, self._stamp, self._half_life = 0.0, time.monotonic(), half_life_s
        self.formatter = chunk_format.formatter(cfg, delimiter)
        self.prefix = isinstance(self.formatter, chunk_format.CanonicalOrder)

    def load(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return self._load * 0.5 ** ((now - self._stamp) / self._half_life)

    def add_load(self, now: float) -> None:
        self._load, self._stamp = self.load(now) + 1.0, now

    def entries(self, chunks: list[Chunk]) -> list[tuple[bytes, int]]:
        """What the engine keeps of ``chunks``, as registry keys and their tokens. A prefix
        cache (the ``canonical-order`` format) reuses the KV of a chunk only after the same
        chunks before it: one key per prefix of the canonical order, so chunks this backend saw
        in *other* sets do not count as held. Otherwise one key per chunk."""
        if not self.prefix:
            return [(c.digest, c.tokens) for c in chunks]
        h = hashlib.blake2b(b"prefix", digest_size=16)
        out = []
        for digest, c in sorted({c.digest: c for c in chunks}.items()):
            h.update(digest)
            out.append((h.copy().digest(), c.tokens))
        return out

    def held_tokens(self, chunks: list[Chunk]) -> int:
        if not self.prefix:
            return sum(c.tokens for c in chunks if c.digest in self.registry)
        held = 0
        for key, tokens in self.entries(chunks):
            if key not in self.registry:
                break
            held += tokens
        return held

    def register(self, chunks: list[Chunk]) -> None:
        for key, tokens in self.entries(chunks):
            if key in self.registry:
                self.registry.move_to_end(key)
            else:
                self.registry[key] = tokens
                self.registry_tokens += tokens
        while self.registry_tokens > self.capacity and self.registry:
            _, tokens = self.registry.popitem(last=False)
            self.registry_tokens -= tokens


class Router:
    def __init__(self, settings: Settings, metrics: Metrics):
        configs = settings.backends or [Backend(url=settings.upstream_url)]
        self.settings = settings
        self.metrics = metrics
        self.policy = settings.routing
        self.backends = [BackendState(c, settings.routing_window_s, settings.chunk_delimiter)
                         for c in configs]
        labels = [b.label for b in self.backends]
        if len(set(labels)) != len(labels):
            raise ValueError(f"backend names must differ: {labels}")
        self._ring: list[tuple[int, int]] = sorted(
            (_h(f"{b.label}#{v}".encode()), i)
            for i, b in enumerate(self.backends) for v in range(max(1, round(100 * b.cfg.weight)))
        )
        self._ring_keys = [k for k, _ in self._ring]
        self._rr = 0
        self._task: asyncio.Task[None] | None = None
        for b in self.backends:
            metrics.backend_up.labels(b.label).set_function(lambda b=b: float(b.up))
            metrics.backend_assigned_load.labels(b.label).set_function(lambda b=b: b.load())
            metrics.backend_requests.labels(b.label)
            metrics.backend_failovers.labels(b.label)
            for kind in ("hit", "miss"):
                metrics.chunk_tokens.labels(b.label, kind)
        metrics.routing_imbalance.set_function(self.imbalance)

    @property
    def active(self) -> bool:
        """Worth routing at all: several backends, or a chunk format to apply."""
        return len(self.backends) > 1 or self.backends[0].formatter is not None

    # --- the choice -----------------------------------------------------------------------
    def imbalance(self) -> float:
        """max / mean of the current (decayed) load over healthy backends, weighted."""
        now = time.monotonic()
        up = [b for b in self.backends if b.up] or self.backends
        norm = [b.load(now) / b.cfg.weight for b in up]
        mean = sum(norm) / len(norm)
        return max(norm) / mean if mean > 0 else 1.0

    def route(self, chunks: list[Chunk]) -> list[BackendState]:
        """Candidates in order of preference (the first is the choice, the rest failover)."""
        now = time.monotonic()
        up = [b for b in self.backends if b.up] or list(self.backends)
        by_load = sorted(up, key=lambda b: b.load(now) / b.cfg.weight)
        if self.policy == "round-robin":
            self._rr += 1
            first = up[self._rr % len(up)]
        elif self.policy == "least-loaded" or not chunks:
            first = by_load[0]
        else:
            total = sum(b.load(now) for b in up)
            weights = sum(b.cfg.weight for b in up)
            eps = self.settings.routing_epsilon

            def eligible(b: BackendState) -> bool:
                # the paper's capacity is a whole number of requests, ceil((1+ε)·m/n): without
                # the ceiling, two requests on two backends could never share one (1 + 1 > 1.2)
                share = (1 + eps) * (total + 1) * b.cfg.weight / weights
                return b.load(now) + 1 <= math.ceil(share - 1e-9)

            anchor = max(chunks, key=lambda c: (c.tokens, c.digest))
            ring = [b for b in self._walk(anchor.digest) if b in up]
            allowed = [b for b in ring if eligible(b)]
            if allowed:
                first = max(allowed, key=lambda b: b.held_tokens(chunks))  # ring order on ties
            else:
                first = by_load[0]
        return [first] + [b for b in by_load if b is not first]

    def _walk(self, digest: bytes) -> list[BackendState]:
        start = bisect.bisect(self._ring_keys, _h(digest))
        seen: list[BackendState] = []
        for k in range(len(self._ring)):
            b = self.backends[self._ring[(start + k) % len(self._ring)][1]]
            if b not in seen:
                seen.append(b)
                if len(seen) == len(self.backends):
                    break
        return seen

    def assign(self, b: BackendState, chunks: list[Chunk]) -> float:
        """Send ``chunks`` to ``b``; returns the share of their tokens predicted held there."""
        held = b.held_tokens(chunks)
        total = sum(c.tokens for c in chunks)
        b.add_load(time.monotonic())
        b.register(chunks)
        self.metrics.backend_requests.labels(b.label).inc()
        if total:
            self.metrics.chunk_tokens.labels(b.label, "hit").inc(held)
            self.metrics.chunk_tokens.labels(b.label, "miss").inc(total - held)
        return held / total if total else 0.0

    def observed(self, b: BackendState, predicted: float, computed: int, cached: int) -> None:
        """What the engine says it did with a request the router predicted ``predicted`` of
        (the share of chunk tokens held): ``computed`` prompt tokens evaluated, ``cached``
        taken from its cache (llama.cpp's ``timings.prompt_n`` / ``cache_n``). Exported as the
        measured reuse; and when the engine reused far less than predicted, the registry
        believed in KV the engine no longer holds (it evicted, or restarted): its capacity
        halves, so the registry forgets its oldest chunks; a prediction that held lets it grow
        back towards the configured capacity."""
        b.engine_tokens[0] += computed
        b.engine_tokens[1] += cached
        total = sum(b.engine_tokens)
        if total:
            self.metrics.backend_measured_reuse.labels(b.label, "engine_timings").set(
                b.engine_tokens[1] / total)
        self.metrics.backend_engine_tokens.labels(b.label, "computed").inc(computed)
        self.metrics.backend_engine_tokens.labels(b.label, "cached").inc(cached)
        share = cached / (computed + cached) if computed + cached else 0.0
        if predicted >= 0.5 and share < predicted / 2:
            b.capacity = max(1, b.registry_tokens // 2)
            b.register([])  # evict down to it
            log.info("backend %s reused %.0f%% where %.0f%% was predicted: registry capacity "
                     "now %d tokens", b.label, 100 * share, 100 * predicted, b.capacity)
        elif predicted > 0 and share >= predicted * 0.9:
            b.capacity = min(b.cfg.kv_capacity_tokens, max(b.capacity * 11 // 10, b.capacity + 1))

    def failed(self, b: BackendState, why: str) -> None:
        if b.up:
            log.warning("backend %s out of rotation: %s", b.label, why)
        b.up = False
        self.metrics.backend_failovers.labels(b.label).inc()

    # --- probing ----------------------------------------------------------------------------
    def start(self, client: httpx.AsyncClient) -> None:
        """Probe the backends (one alone too: its health and reuse counters are worth showing;
        a lone backend is still sent everything while down, there being nowhere else)."""
        self._task = asyncio.get_running_loop().create_task(self._probe_forever(client))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe_forever(self, client: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(self.settings.backend_probe_interval_s)
            await asyncio.gather(*(self.probe(client, b) for b in self.backends))

    async def probe(self, client: httpx.AsyncClient, b: BackendState) -> None:
        try:
            r = await client.get(f"{b.url}/models", timeout=2.0)
            alive = r.status_code < 500
        except httpx.HTTPError:
            alive = False
        if alive and not b.up:
            log.info("backend %s back in rotation", b.label)
        b.up = alive
        if not alive:
            return
        try:
            r = await client.get(f"{server_root(b.url)}/metrics", timeout=2.0)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            for source, ratio in read_reuse(r.text).items():
                self.metrics.backend_measured_reuse.labels(b.label, source).set(ratio)


def read_reuse(text: str) -> dict[str, float]:
    """hits / queries for each reuse counter pair the backend exposes (counter names without
    their ``_total`` suffix, as the Prometheus parser gives them)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        values[family.name] = sum(s.value for s in family.samples
                                  if not s.name.endswith("_created"))
    return {source: values.get(hits, 0.0) / values[queries]
            for source, hits, queries in REUSE_COUNTERS if values.get(queries)}


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")

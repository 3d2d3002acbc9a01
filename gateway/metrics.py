"""Every Prometheus metric, defined once, in a registry owned by the app (not the process
default, so several gateways in one process — tests, the demo — keep separate counts).

Names follow Prometheus conventions: base units (seconds), ``_total`` for counters, labels of
low cardinality only (category, outcome, stage, reason, status class) — never a namespace,
a query or a key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIMILARITY = (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0)

# ``cross_encoder``: one run of the learned verifier's model (inside ``verify``)
STAGES = ("embed", "classify", "search", "verify", "cross_encoder", "store_read", "store_write",
          "upstream_ttfb", "upstream_total")
OUTCOMES = ("hit", "miss", "bypass", "error")
# Every label value known in advance is exported from the first scrape, at zero: ``rate()``
# over a series that appears only with its first event is empty until something breaks.
BYPASS_REASONS = (
    "cache_disabled", "warming_up", "store_unavailable", "embedding_failed",
    "category_not_cacheable", "cache_control", "unknown_field", "n_greater_than_1", "logprobs",
    "echo", "audio", "web_search", "tool_result", "last_message_not_user", "non_text_content",
    "empty_query", "nul_character", "prompt_not_single_text",
)
UPSTREAM_ERRORS = ("timeout", "unavailable", "400", "401", "403", "404", "408", "413", "422",
                   "429", "500", "502", "503", "504")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "semcache_requests_total", "Cacheable-endpoint requests by category and outcome.",
            ["category", "outcome"], registry=r)
        self.request_duration = Histogram(
            "semcache_request_duration_seconds",
            "Time to response headers, by category and outcome (a hit's is what it adds).",
            ["category", "outcome"], buckets=_LATENCY, registry=r)
        self.stage_duration = Histogram(
            "semcache_stage_duration_seconds", "Time spent in each stage of the request path.",
            ["stage"], buckets=_LATENCY, registry=r)
        self.bypasses = Counter(
            "semcache_bypass_total", "Requests that skipped the cache, by reason.",
            ["reason"], registry=r)
        self.index_entries = Gauge(
            "semcache_index_entries", "Entries in the in-memory index.", ["category"], registry=r)
        self.quota = Gauge(
            "semcache_quota_entries", "Most entries a category may hold.", ["category"],
            registry=r)
        self.evictions = Counter(
            "semcache_evictions_total", "Entries evicted for quota.", ["category"], registry=r)
        self.expirations = Counter(
            "semcache_expirations_total", "Expired entries swept.", ["category"], registry=r)
        self.store_errors = Counter(
            "semcache_store_errors_total", "Document store failures by operation.",
            ["operation"], registry=r)
        self.upstream_errors = Counter(
            "semcache_upstream_errors_total",
            "Upstream failures: HTTP status (4xx/5xx answers) or timeout/unavailable.",
            ["status"], registry=r)
        self.hit_similarity = Histogram(
            "semcache_hit_similarity", "Cosine similarity of served hits.", ["category"],
            buckets=_SIMILARITY, registry=r)
        self.miss_nearest_similarity = Histogram(
            "semcache_miss_nearest_similarity",
            "Similarity of the nearest in-scope entry on a miss (tune thresholds with it).",
            ["category"], buckets=_SIMILARITY, registry=r)
        self.verifier_rejections = Counter(
            "semcache_verifier_rejections_total",
            "Candidates above threshold that the verifier refused, by slot kind.",
            ["category", "reason"], registry=r)
        self.verifier_model_pairs = Counter(
            "semcache_verifier_model_pairs_total",
            "Query-candidate pairs the cross-encoder scored (its cost: over the requests, "
            "forwards per request; each run's time is the cross_encoder stage).", registry=r)
        self.verified_repeats = Counter(
            "semcache_verified_repeats_total",
            "Semantic hits served on the decision remembered from the same wording's earlier "
            "hit: no embedding, no verification (among the hits).", ["category"], registry=r)
        self.tokens_saved = Counter(
            "semcache_tokens_saved_total",
            "Completion tokens served from cache instead of generated (estimated when the "
            "stored answer carried no usage).", ["category"], registry=r)
        self.upstream_calls_avoided = Counter(
            "semcache_upstream_calls_avoided_total", "Hits: upstream calls not made.",
            ["category"], registry=r)
        self.feedback = Counter(
            "semcache_feedback_total", "Hits reported wrong (the entry is deleted).",
            ["category"], registry=r)
        self.coalesced = Counter(
            "semcache_coalesced_total",
            "Misses answered by an identical request's upstream call already in flight.",
            ["category"], registry=r)
        self.hedges = Counter(
            "semcache_hedges_total",
            "Hedged upstream calls: used (the lookup missed) or cancelled (it hit).",
            ["category", "result"], registry=r)
        self.backend_load = Gauge(
            "semcache_backend_load", "Load factor of the backend in [0, 1] (docs/ADAPTIVE.md).",
            registry=r)
        self.effective_threshold = Gauge(
            "semcache_effective_threshold", "Similarity threshold in force.", ["category"],
            registry=r)
        self.effective_ttl = Gauge(
            "semcache_effective_ttl_seconds", "TTL given to new entries.", ["category"],
            registry=r)
        self.sync_changes = Counter(
            "semcache_sync_changes_total",
            "Changes read from the store's change log (other replicas' writes and deletes).",
            ["op"], registry=r)
        self.sync_lag = Histogram(
            "semcache_sync_lag_seconds",
            "From a change's commit in the store to this replica applying it (across hosts it "
            "includes clock skew).", buckets=_LATENCY, registry=r)
        self.sync_errors = Counter(
            "semcache_sync_errors_total", "Failed polls of the change log (retried).",
            registry=r)
        self.sync_resyncs = Counter(
            "semcache_sync_resyncs_total",
            "Full reconciliations with the store after being cut off beyond the log's retention.",
            registry=r)
        self.backend_up = Gauge(
            "semcache_backend_up", "1 while a backend replica is in rotation.", ["backend"],
            registry=r)
        self.backend_assigned_load = Gauge(
            "semcache_backend_assigned_load",
            "Requests recently routed to a backend (decayed count; docs/ROUTING.md).",
            ["backend"], registry=r)
        self.backend_requests = Counter(
            "semcache_backend_requests_total", "Requests routed to each backend.", ["backend"],
            registry=r)
        self.chunk_tokens = Counter(
            "semcache_chunk_tokens_total",
            "Chunk tokens routed to a backend, by whether the gateway predicts the backend holds "
            "them (hit) or not (miss).", ["backend", "predicted"], registry=r)
        self.routing_imbalance = Gauge(
            "semcache_routing_imbalance", "max / mean of the backends' assigned load.",
            registry=r)
        self.backend_failovers = Counter(
            "semcache_backend_failovers_total",
            "Requests moved off a backend that failed before answering.", ["backend"],
            registry=r)
        self.backend_engine_tokens = Counter(
            "semcache_backend_engine_prompt_tokens_total",
            "Prompt tokens the backend reports per answer (llama.cpp's timings): computed, or "
            "taken from its KV cache.", ["backend", "kind"], registry=r)
        self.backend_measured_reuse = Gauge(
            "semcache_backend_measured_reuse",
            "Reuse the backend reports itself: hit tokens / queried tokens of its counters.",
            ["backend", "source"], registry=r)
        for outcome in OUTCOMES:
            self.request_duration.labels("-", outcome)
            self.requests.labels("-", outcome)
        for stage in STAGES:
            self.stage_duration.labels(stage)
        for reason in BYPASS_REASONS:
            self.bypasses.labels(reason)
        for status in UPSTREAM_ERRORS:
            self.upstream_errors.labels(status)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_duration.labels(name).observe(time.perf_counter() - start)

    def track_index(self, category: str, size: Callable[[], int], quota: int) -> None:
        self.index_entries.labels(category).set_function(size)
        self.quota.labels(category).set(quota)

    def declare_category(self, name: str, slots: Iterable[str]) -> None:
        """A category's series exist from the start (at zero), so rates and dashboards have a
        baseline before the first eviction, expiry or rejection."""
        self.evictions.labels(name)
        self.expirations.labels(name)
        self.feedback.labels(name)
        for slot in slots:
            self.verifier_rejections.labels(name, slot)
        for outcome in OUTCOMES:
            self.requests.labels(name, outcome)
            self.request_duration.labels(name, outcome)
        for series in (self.hit_similarity, self.miss_nearest_similarity, self.tokens_saved,
                       self.upstream_calls_avoided, self.coalesced):
            series.labels(name)
        for result in ("used", "cancelled"):
            self.hedges.labels(name, result)

    def declare_store(self) -> None:
        for operation in ("read", "write", "write_rejected", "touch", "sweep", "ping"):
            self.store_errors.labels(operation)
        for op in ("put", "delete"):
            self.sync_changes.labels(op)

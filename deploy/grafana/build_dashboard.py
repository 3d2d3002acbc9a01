"""Writes grafana/dashboards/semcache.json with Grafana Labs' grafana-foundation-sdk (its typed
builders, not a hand-written dict). The dashboard is code so that a change is a reviewed diff:
run `python deploy/grafana/build_dashboard.py` after editing; a test checks that the committed
JSON is what this writes, and tests/integration/test_prometheus.py evaluates every query on a
real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DS = DataSourceRef(type_val="prometheus", uid="prometheus")
OUT = Path(__file__).parent / "dashboards" / "semcache.json"
Query = tuple[str, str]  # (PromQL, legend)


def panel(title: str, queries: list[Query], *, unit: str = "short",
          description: str = "") -> timeseries.Panel:
    p = (timeseries.Panel().title(title).unit(unit).datasource(DS).height(8).span(12)
         .legend(common.VizLegendOptions().show_legend(True)
                 .display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))
         .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI)))
    if description:
        p = p.description(description)
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(prometheus.Dataquery().ref_id(chr(65 + i)).datasource(DS)
                          .expr(expr).legend_format(legend))
    return p


def quantiles(metric: str, by: str) -> list[Query]:
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[5m])))",
             f"p{int(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.95, 0.99)]


def rate_by_category(metric: str, window: str = "5m", match: str = "") -> str:
    return f"sum by (category) (rate({metric}{match}[{window}]))"


ROWS: list[tuple[str, list[timeseries.Panel]]] = [
    ("Per category", [
        panel("Hit rate by category", [(
            rate_by_category("semcache_requests_total", match='{outcome="hit"}') + " / "
            + rate_by_category("semcache_requests_total"), "{{category}}")],
            unit="percentunit"),
        panel("Wrong hits reported, share of hits", [(
            rate_by_category("semcache_feedback_total", "30m") + " / clamp_min("
            + rate_by_category("semcache_requests_total", "30m", '{outcome="hit"}') + ", 1e-9)",
            "{{category}}")], unit="percentunit",
            description="POST /admin/feedback: alert SemcacheWrongHitFeedback above 1%"),
        panel("Tokens saved and upstream calls avoided", [
            ("sum by (category) (increase(semcache_tokens_saved_total[1h]))",
             "tokens {{category}}"),
            ("sum by (category) (increase(semcache_upstream_calls_avoided_total[1h]))",
             "calls {{category}}")]),
        panel("Latency a hit adds, by category (p50/p99)", [
            ("histogram_quantile(0.5, sum by (le, category) "
             '(rate(semcache_request_duration_seconds_bucket{outcome="hit"}[5m])))',
             "p50 {{category}}"),
            ("histogram_quantile(0.99, sum by (le, category) "
             '(rate(semcache_request_duration_seconds_bucket{outcome="hit"}[5m])))',
             "p99 {{category}}")], unit="s",
            description="A hit makes no upstream call: its whole time is what the gateway adds"),
        panel("Similarity: hits and nearest candidate on misses (median)", [
            ("histogram_quantile(0.5, sum by (le, category) "
             "(rate(semcache_hit_similarity_bucket[15m])))", "hit {{category}}"),
            ("histogram_quantile(0.5, sum by (le, category) "
             "(rate(semcache_miss_nearest_similarity_bucket[15m])))",
             "miss nearest {{category}}")]),
        panel("Verifier rejections by reason", [(
            "sum by (category, reason) (rate(semcache_verifier_rejections_total[5m]))",
            "{{category}} {{reason}}")], unit="ops"),
        panel("Cross-encoder: pairs scored per cacheable request, and time per pair", [
            ("sum(rate(semcache_verifier_model_pairs_total[5m])) / "
             "sum(rate(semcache_requests_total[5m]))", "pairs per request"),
            ('sum(rate(semcache_stage_duration_seconds_sum{stage="cross_encoder"}[5m])) / '
             "sum(rate(semcache_verifier_model_pairs_total[5m]))", "seconds per pair")],
            description="What the learned verifier beside the rules costs: one run per pair "
            "(CPU, int8); a semantic hit usually scores one, a miss near stored questions one "
            "per candidate over the threshold that shares enough words with it"),
        panel("Index size vs quota", [
            ("sum by (category) (semcache_index_entries)", "entries {{category}}"),
            ("sum by (category) (semcache_quota_entries)", "quota {{category}}")]),
        panel("Evictions and expirations", [
            ("sum by (category) (rate(semcache_evictions_total[5m]))", "evicted {{category}}"),
            ("sum by (category) (rate(semcache_expirations_total[5m]))",
             "expired {{category}}")], unit="ops"),
        panel("Effective threshold and TTL", [
            ("semcache_effective_threshold", "threshold {{category}}"),
            ("semcache_effective_ttl_seconds", "ttl s {{category}}")]),
    ]),
    ("Requests", [
        panel("Requests by outcome", [(
            "sum by (outcome) (rate(semcache_requests_total[5m]))", "{{outcome}}")],
            unit="reqps"),
        panel("Bypasses by reason", [(
            "sum by (reason) (rate(semcache_bypass_total[5m]))", "{{reason}}")], unit="reqps"),
        panel("Request latency by outcome",
              quantiles("semcache_request_duration_seconds", "outcome"), unit="s"),
        panel("Stage latency (p50/p95/p99)",
              quantiles("semcache_stage_duration_seconds", "stage"), unit="s"),
        panel("Upstream errors and store errors", [
            ("sum by (status) (rate(semcache_upstream_errors_total[5m]))", "upstream {{status}}"),
            ("sum by (operation) (rate(semcache_store_errors_total[5m]))",
             "store {{operation}}")], unit="ops"),
    ]),
    ("Backend and KV reuse", [
        panel("Backend load (vLLM)", [
            ("sum(vllm:num_requests_running)", "running"),
            ("sum(vllm:num_requests_waiting)", "waiting"),
            ("avg(vllm:kv_cache_usage_perc)", "KV cache usage"),
            ("max(semcache_backend_load)", "load factor")]),
        panel("KV-chunk reuse: predicted by the gateway vs measured by the backend", [
            ('sum by (backend) (rate(semcache_chunk_tokens_total{predicted="hit"}[5m])) / '
             "sum by (backend) (rate(semcache_chunk_tokens_total[5m]))", "predicted {{backend}}"),
            ("max by (backend, source) (semcache_backend_measured_reuse)",
             "measured {{backend}} {{source}}")], unit="percentunit"),
        panel("Backends: requests routed and in rotation", [
            ("sum by (backend) (rate(semcache_backend_requests_total[5m]))", "{{backend}}"),
            ("sum by (backend) (rate(semcache_backend_failovers_total[5m]))",
             "failover {{backend}}"),
            ("min by (backend) (semcache_backend_up)", "up {{backend}}"),
            ("max(semcache_routing_imbalance)", "imbalance (max/mean)")]),
    ]),
    ("Replicas", [
        panel("Replicas: change-log lag and polls", [
            ("histogram_quantile(0.99, sum by (le) (rate(semcache_sync_lag_seconds_bucket[5m])))",
             "lag p99"),
            ("sum(rate(semcache_sync_changes_total[5m]))", "changes/s"),
            ("sum(rate(semcache_sync_errors_total[5m]))", "poll errors/s")]),
    ]),
]


def build() -> dict[str, Any]:
    d = (dashboard.Dashboard("semcache").uid("semcache").tags(["semcache"]).refresh("30s")
         .time("now-1h", "now").version(1))
    for title, panels in ROWS:
        d = d.with_row(dashboard.Row(title))
        for p in panels:
            d = d.with_panel(p)
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return out


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")

"""Writes grafana/dashboards/semcache.json. The dashboard is code so that a change is a
reviewed diff; run `python deploy/grafana/build_dashboard.py` after editing."""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "prometheus"}


def panel(pid: int, title: str, exprs: list[tuple[str, str]], x: int, y: int, *, unit: str = "short",
          kind: str = "timeseries", w: int = 12, h: int = 8) -> dict:
    return {
        "id": pid, "title": title, "type": kind, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def quantiles(metric: str, by: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[5m])))",
         f"p{int(q * 100)} {{{{{by}}}}}")
        for q in (0.5, 0.95, 0.99)
    ]


PANELS = [
    panel(1, "Hit rate by category", [(
        'sum by (category) (rate(semcache_requests_total{outcome="hit"}[5m])) / '
        "sum by (category) (rate(semcache_requests_total[5m]))", "{{category}}")], 0, 0,
        unit="percentunit"),
    panel(2, "Requests by outcome", [(
        "sum by (outcome) (rate(semcache_requests_total[5m]))", "{{outcome}}")], 12, 0,
        unit="reqps"),
    panel(3, "Request latency by outcome", quantiles("semcache_request_duration_seconds", "outcome"),
          0, 8, unit="s"),
    panel(4, "Stage latency (p50/p95/p99)", quantiles("semcache_stage_duration_seconds", "stage"),
          12, 8, unit="s"),
    panel(5, "Index size vs quota", [
        ("sum by (category) (semcache_index_entries)", "entries {{category}}"),
        ("sum by (category) (semcache_quota_entries)", "quota {{category}}")], 0, 16),
    panel(6, "Evictions and expirations", [
        ("sum by (category) (rate(semcache_evictions_total[5m]))", "evicted {{category}}"),
        ("sum by (category) (rate(semcache_expirations_total[5m]))", "expired {{category}}")],
        12, 16, unit="ops"),
    panel(7, "Tokens saved and upstream calls avoided", [
        ("sum by (category) (increase(semcache_tokens_saved_total[1h]))", "tokens {{category}}"),
        ("sum by (category) (increase(semcache_upstream_calls_avoided_total[1h]))",
         "calls {{category}}")], 0, 24),
    panel(8, "Similarity: hits and nearest candidate on misses (median)", [
        ("histogram_quantile(0.5, sum by (le, category) (rate(semcache_hit_similarity_bucket[15m])))",
         "hit {{category}}"),
        ("histogram_quantile(0.5, sum by (le, category) "
         "(rate(semcache_miss_nearest_similarity_bucket[15m])))", "miss nearest {{category}}")],
        12, 24),
    panel(9, "Verifier rejections by reason", [
        ("sum by (category, reason) (rate(semcache_verifier_rejections_total[5m]))",
         "{{category}} {{reason}}")], 0, 32, unit="ops"),
    panel(10, "Upstream errors and store errors", [
        ("sum by (status) (rate(semcache_upstream_errors_total[5m]))", "upstream {{status}}"),
        ("sum by (operation) (rate(semcache_store_errors_total[5m]))", "store {{operation}}")],
        12, 32, unit="ops"),
    panel(11, "Backend load (vLLM)", [
        ("sum(vllm:num_requests_running)", "running"),
        ("sum(vllm:num_requests_waiting)", "waiting"),
        ("avg(vllm:kv_cache_usage_perc)", "KV cache usage")], 0, 40),
    panel(12, "Effective threshold and TTL", [
        ("semcache_effective_threshold", "threshold {{category}}"),
        ("semcache_effective_ttl_seconds", "ttl s {{category}}")], 12, 40),
    panel(13, "Backends: requests routed and in rotation", [
        ("sum by (backend) (rate(semcache_backend_requests_total[5m]))", "{{backend}}"),
        ("sum by (backend) (rate(semcache_backend_failovers_total[5m]))", "failover {{backend}}"),
        ("min by (backend) (semcache_backend_up)", "up {{backend}}"),
        ("max(semcache_routing_imbalance)", "imbalance (max/mean)")], 0, 48),
    panel(14, "KV-chunk reuse: predicted by the gateway vs measured by the backend", [
        ('sum by (backend) (rate(semcache_chunk_tokens_total{predicted="hit"}[5m])) / '
         "sum by (backend) (rate(semcache_chunk_tokens_total[5m]))", "predicted {{backend}}"),
        ("max by (backend, source) (semcache_backend_measured_reuse)",
         "measured {{backend}} {{source}}")], 12, 48, unit="percentunit"),
    panel(15, "Replicas: change-log lag and polls", [
        ("histogram_quantile(0.99, sum by (le) (rate(semcache_sync_lag_seconds_bucket[5m])))",
         "lag p99"),
        ("sum(rate(semcache_sync_changes_total[5m]))", "changes/s"),
        ("sum(rate(semcache_sync_errors_total[5m]))", "poll errors/s")], 0, 56),
]

DASHBOARD = {
    "uid": "semcache", "title": "semcache", "schemaVersion": 39, "version": 1,
    "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "tags": ["semcache"],
    "panels": PANELS, "templating": {"list": []}, "annotations": {"list": []},
}

if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "semcache.json"
    out.write_text(json.dumps(DASHBOARD, indent=2) + "\n")
    print(f"wrote {out}")

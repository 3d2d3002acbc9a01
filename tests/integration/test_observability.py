"""Metrics, dashboards and deployment files agree with each other and with the running code."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from gateway.logs import JsonFormatter
from tests.conftest import GatewayFactory

ROOT = Path(__file__).parents[2]
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "avg", "max", "min", "le", "without",
    "irate", "count", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "clamp_min", "clamp_max",
}


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }


def value(url: str, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples(url).items()
               if n == name and set(labels.items()) <= set(ls))


def names_in(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # range selectors
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)     # grouping labels
    expr = re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b", "", expr)  # numbers (1e-9)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {t for t in tokens if t not in PROMQL_WORDS and not t.replace(".", "").isdigit()}


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", [])]
    return exprs


@pytest.fixture
def gw(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
       tmp_path: Path) -> ServerThread:
    return gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/m.db",
                           backend_probe_interval_s=0.2)


def chat(url: str, q: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, json={
        "model": "fake-small", "messages": [{"role": "user", "content": q}]})


def test_metrics_move_for_hit_miss_and_error(gw: ServerThread) -> None:
    q = "What is the boiling point of water at sea level?"
    assert chat(gw.url, q).headers["x-semcache"] == "miss"
    cat = chat(gw.url, q).headers["x-semcache-category"]
    assert value(gw.url, "semcache_requests_total", category=cat, outcome="miss") == 1
    assert value(gw.url, "semcache_requests_total", category=cat, outcome="hit") == 1
    assert value(gw.url, "semcache_tokens_saved_total", category=cat) > 0
    assert value(gw.url, "semcache_upstream_calls_avoided_total", category=cat) == 1
    assert value(gw.url, "semcache_hit_similarity_sum", category=cat) == 1.0
    assert value(gw.url, "semcache_index_entries", category=cat) == 1
    # the repeat was exact: served by the fast path without embedding or search
    assert value(gw.url, "semcache_stage_duration_seconds_count", stage="embed") == 1
    assert value(gw.url, "semcache_stage_duration_seconds_count", stage="search") == 1
    # ... nor the cross-encoder
    assert value(gw.url, "semcache_verifier_model_pairs_total") == 0
    r = chat(gw.url, "At sea level, what is the boiling point of water?")  # a paraphrase
    assert r.headers["x-semcache"] == "hit"
    assert value(gw.url, "semcache_stage_duration_seconds_count", stage="embed") == 2
    # the shipped categories judge a candidate with the cross-encoder beside the rules: one
    # candidate, one pair scored, in one run
    assert value(gw.url, "semcache_verifier_model_pairs_total") == 1
    assert value(gw.url, "semcache_stage_duration_seconds_count", stage="cross_encoder") == 1
    assert value(gw.url, "semcache_stage_duration_seconds_count", stage="store_write") == 1

    r = chat(gw.url, "Why is the sky blue?", **{"x-fake-status": "500"})
    assert r.status_code == 500
    assert value(gw.url, "semcache_upstream_errors_total", status="500") == 1
    assert value(gw.url, "semcache_requests_total", outcome="error") == 1

    chat(gw.url, "Write a Python function that sorts a list in ascending order")
    chat(gw.url, "Write a Python function that sorts a list in descending order")
    assert value(gw.url, "semcache_verifier_rejections_total", category="code") >= 1
    assert value(gw.url, "semcache_miss_nearest_similarity_count", category="code") >= 1


def test_every_dashboard_and_scrape_metric_exists(
    gw: ServerThread, fake_upstream: ServerThread
) -> None:
    for q in ("hello there", "hello there", "What is my account balance?"):
        chat(gw.url, q)
    chat(gw.url, "x", **{"x-fake-status": "429"})
    for _ in range(2):  # a RAG request (passages as content parts): the backend's reuse counters
        httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "fake-small", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Passage one, long enough."},
                                         {"type": "text", "text": "What does it say?"}]}]})
    used = set().union(*(names_in(e) for e in dashboard_exprs()))
    assert used, "no metric found in dashboards"
    deadline = time.monotonic() + 10  # some are read by a probe of the backend: poll
    while True:
        exported = {name for name, _ in samples(gw.url)} | {
            name for name, _ in samples(fake_upstream.url)}
        families = exported | {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
        if used <= families or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert used <= families, f"dashboards use metrics nobody exports: {sorted(used - families)}"


def test_prometheus_and_grafana_files_are_consistent() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    hosts = set(services) | {a for s in services.values()
                             for a in (s.get("networks", {}).get("default") or {}).get("aliases", [])}
    assert {t.split(":")[0] for t in targets} <= hosts
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    for path in (ROOT / "deploy/grafana/dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid


def test_the_committed_dashboard_is_what_its_code_builds() -> None:
    """deploy/grafana/build_dashboard.py (grafana-foundation-sdk) writes the JSON: an edit of
    one without the other fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_dashboard", ROOT / "deploy/grafana/build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "deploy/grafana/dashboards/semcache.json").read_text()
    assert module.render() == committed, "run: python deploy/grafana/build_dashboard.py"
    panels = json.loads(committed)["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Per category", "Requests", "Backend and KV reuse", "Replicas"]
    titles = " | ".join(p["title"] for p in panels)
    for wanted in ("Hit rate by category", "Wrong hits", "Tokens saved", "Latency a hit adds",
                   "KV-chunk reuse", "Replicas"):
        assert wanted in titles, wanted


def test_compose_references_existing_files_and_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    fields = {f"SEMCACHE_{n.upper()}" for n in Settings.model_fields}
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            ctx = ROOT / build["context"]
            assert (ctx / build.get("dockerfile", "Dockerfile")).is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), (name, src)
        for key in svc.get("environment", {}):
            if key.startswith("SEMCACHE_"):
                assert key in fields, f"{name} sets {key}, which is no setting"
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    assert {"demo", "gpu", "gpu-prefix", "llama"} <= profiles
    for f in ("deploy/lmcache/blend.yaml", "deploy/lmcache/offload.yaml"):
        yaml.safe_load((ROOT / f).read_text())
    assert yaml.safe_load((ROOT / "deploy/lmcache/blend.yaml").read_text())["enable_blending"] is True


def test_request_id_header_and_json_log(gw: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    r = httpx.get(f"{gw.url}/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = httpx.get(f"{gw.url}/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    bad = httpx.get(f"{gw.url}/healthz", headers={"x-request-id": "x" * 500}).headers["x-request-id"]
    assert bad != "x" * 500
    record = logging.LogRecord("semcache", logging.INFO, __file__, 1, "hello %s", ("w",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hello w" and line["level"] == "info" and "request_id" in line


def test_a_500_carries_the_request_id(
    gw: ServerThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17, item 11: the last-resort handler ran outside the request-id middleware."""
    import gateway.cache.service

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.cache.service, "chat_key", broken)
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"x-request-id": "rid-500"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "rid-500"
    assert r.json()["error"]["type"] == "internal_error"
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)


def test_a_client_gone_mid_body_is_no_error(
    gw: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = gw.url.removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                      b"content-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"mo")
        deadline = time.monotonic() + 5
        while not any("went away" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_readyz_and_healthz(gw: ServerThread) -> None:
    ready = httpx.get(f"{gw.url}/readyz").json()
    assert ready == {"status": "ready", "replica": f"{socket.gethostname()}:{os.getpid()}"}
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}


def test_secrets_never_reach_logs_or_metrics(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/s.db",
                         admin_key="adm-SECRET-987", upstream_api_key="up-SECRET-456")
    client_key = "sk-SECRET-123"
    for q in ("Who wrote Hamlet?", "Who wrote Hamlet?", "What is my account balance?"):
        httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {client_key}"},
                   json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
    httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {client_key}",
                                                         "x-fake-status": "500"},
               json={"model": "fake-small", "messages": [{"role": "user", "content": "x"}]})
    httpx.get(f"{gw.url}/admin/stats", headers={"authorization": "Bearer wrong-SECRET"})
    httpx.get(f"{gw.url}/admin/entries", headers={"authorization": "Bearer adm-SECRET-987"})
    scraped = httpx.get(f"{gw.url}/metrics").text
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for secret in ("SECRET-123", "SECRET-456", "SECRET-987", "wrong-SECRET"):
        assert secret not in caplog.text
        assert secret not in scraped


def test_every_known_series_exists_from_the_first_scrape(gw: ServerThread) -> None:
    """Issue 22: a series created by its first event makes rate() over it empty (and alerts on
    it silent) until something breaks. Every label set known in advance is there at zero."""
    from gateway.metrics import BYPASS_REASONS, OUTCOMES, STAGES, UPSTREAM_ERRORS

    first = samples(gw.url)
    have = {(name, labels) for name, labels in first}

    def has(name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in have

    cats = ["code", "conversation", "creative", "factual", "finance_news", "general", "math",
            "personal"]
    missing = [
        *(f"upstream_errors {s}" for s in UPSTREAM_ERRORS
          if not has("semcache_upstream_errors_total", status=s)),
        *(f"bypass {r}" for r in BYPASS_REASONS if not has("semcache_bypass_total", reason=r)),
        *(f"requests {c}/{o}" for c in cats for o in OUTCOMES
          if not has("semcache_requests_total", category=c, outcome=o)),
        *(f"hedges {c}" for c in cats if not has("semcache_hedges_total", category=c,
                                                  result="used")),
        *(f"stage {s}" for s in STAGES if not has("semcache_stage_duration_seconds_count",
                                                   stage=s)),
        *(f"tokens_saved {c}" for c in cats if not has("semcache_tokens_saved_total", category=c)),
    ]
    assert not missing, missing
    assert all(v == 0 for (n, labels), v in first.items() if n == "semcache_upstream_errors_total")

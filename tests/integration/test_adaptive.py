"""The threshold follows the backend's load, read from its /metrics, within bounds."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml

from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

A = "What is the capital of Australia?"
B = "Tell me the capital city of Australia"  # a paraphrase scoring ~0.92 against A


def ask(gw: ServerThread, q: str) -> str:
    # no-store: B must only ever match A's entry, never an entry of its own
    headers = {"authorization": "Bearer sk-ad", "cache-control": "no-store"}
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers,
                   json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
    return r.headers["x-semcache"]


def effective(gw: ServerThread) -> float:
    stats = httpx.get(f"{gw.url}/admin/stats", headers={"authorization": "Bearer adm"}).json()
    return float(stats["categories"]["factual"]["effective_threshold"])


def wait_for(gw: ServerThread, predicate, timeout: float = 15.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate(value := effective(gw)):
        assert time.monotonic() < deadline, f"effective threshold stuck at {value}"
        time.sleep(0.05)
    return value


def test_borderline_paraphrase_hits_only_under_load(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    fake_upstream: ServerThread,
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "factual": {"threshold": 0.97, "adaptive": {"threshold_min": 0.85}},
        "general": {"threshold": 0.97, "adaptive": {"threshold_min": 0.85}},
    }))
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/a.db",
                         categories_overlay=overlay, admin_key="adm",
                         load_poll_interval_s=0.05, load_queue_full=10)
    try:
        httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": "Bearer sk-ad"},
                   json={"model": "fake-small", "messages": [{"role": "user", "content": A}]})
        assert ask(gw, A) == "hit"
        assert effective(gw) == 0.97
        assert ask(gw, B) == "miss"  # idle backend: strict

        httpx.post(f"{fake_upstream.url}/fake/load", json={"waiting": 30})
        low = wait_for(gw, lambda v: v <= 0.86)
        assert low >= 0.85  # never past its bound
        assert ask(gw, B) == "hit"  # overloaded backend: the paraphrase is served
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'semcache_effective_threshold{category="factual"} 0.85' in metrics

        httpx.post(f"{fake_upstream.url}/fake/load", json={"waiting": 0})
        assert wait_for(gw, lambda v: v >= 0.969) == 0.97
        assert ask(gw, B) == "miss"  # strict again
    finally:
        httpx.post(f"{fake_upstream.url}/fake/load", json={"waiting": 0})

"""Faults: the store going away and coming back; hostile input never 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory, _pg_schema_url
from tests.tcpproxy import proxied


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


def ask(url: str, q: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"authorization": "Bearer sk-f"},
                      json={"model": "fake-small", "messages": [{"role": "user", "content": q}]},
                      timeout=30)


@pytest.mark.pg
def test_store_outage_degrades_to_pass_through_and_recovers(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, pg_url: str
) -> None:
    proxy, via_proxy = proxied(pg_url)
    try:
        gw = gateway_factory(embedder=embedder, database_url=via_proxy, store_retry_s=0.5)
        q = "What is the boiling point of water at sea level?"
        paraphrase = "At sea level, what is the boiling point of water?"
        assert ask(gw.url, q).headers["x-semcache"] == "miss"
        assert ask(gw.url, paraphrase).headers["x-semcache"] == "hit"

        proxy.stop()
        for _ in range(3):
            r = ask(gw.url, paraphrase)
            assert r.status_code == 200, r.text  # the client never notices
            assert r.headers["x-semcache"] in ("miss", "bypass")
        r = httpx.get(f"{gw.url}/readyz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert ask(gw.url, "Something new while the store is down").status_code == 200
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'semcache_bypass_total{reason="store_unavailable"}' in metrics

        proxy.start()
        deadline = time.monotonic() + 20
        while ask(gw.url, paraphrase).headers["x-semcache"] != "hit":
            assert time.monotonic() < deadline, "the gateway did not recover by itself"
            time.sleep(0.3)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        proxy.stop()

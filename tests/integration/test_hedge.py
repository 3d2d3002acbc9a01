"""Hedged forwarding: the upstream call runs beside the lookup and is cancelled on a hit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

# a slow upstream, so that the bounds below are wide on a busy 2-core machine: what is
# measured is whether the lookup waits for the call (1 s) or runs beside it
SLOW = {"x-fake-delay": "1.0", "authorization": "Bearer sk-h"}


def timed(url: str, q: str) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", headers=SLOW, timeout=30,
                   json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
    return time.perf_counter() - start, r


def test_hedged_miss_costs_about_the_direct_call_and_a_hit_cancels_it(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    fake_upstream: ServerThread,
) -> None:
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"factual": {"hedge": True}}))
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/h.db",
                         categories_overlay=overlay)
    direct = min(timed(fake_upstream.url, f"direct {i}")[0] for i in range(3))
    misses = []
    for q in ("Who painted the Mona Lisa?", "When did the Berlin Wall fall?",
              "What is the tallest mountain in Africa?"):
        elapsed, r = timed(gw.url, q)
        assert (r.headers["x-semcache"], r.headers["x-semcache-category"]) == ("miss", "factual")
        misses.append(elapsed)
    assert min(misses) - direct < 0.35, (misses, direct)  # not the call *plus* the lookup

    elapsed, r = timed(gw.url, "Who was the painter of the Mona Lisa?")
    assert r.headers["x-semcache"] == "hit"
    assert elapsed < 0.6, "a hit must not wait for the hedged upstream call"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'semcache_hedges_total{category="factual",result="cancelled"} 1.0' in metrics
    assert 'semcache_hedges_total{category="factual",result="used"} 3.0' in metrics
    deadline = time.monotonic() + 10  # the abandoned call is gone: nothing left in flight
    while 'vllm:num_requests_running{model_name="fake"} 0.0' not in httpx.get(
            f"{fake_upstream.url}/metrics").text:
        assert time.monotonic() < deadline, "the abandoned hedge is still running upstream"
        time.sleep(0.05)


def test_identical_misses_in_a_hedged_category_make_one_upstream_call(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    upstream_stats: Callable[[], dict[str, int]],
) -> None:
    """Issue 21, item 1: eight identical concurrent misses in a hedged category made six
    upstream calls (a plain category: one): each opened its own hedge. Now the first one's
    hedge leads and the others follow it."""
    import asyncio

    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"creative": {"hedge": True}, "factual": {"hedge": True}}))
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/h.db",
                         categories_overlay=overlay)

    async def burst(q: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as c:
            return await asyncio.gather(*(c.post(
                f"{gw.url}/v1/chat/completions", headers=SLOW, json={
                    "model": "fake-small", "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": q}]}) for i in range(8)))

    for n, q in enumerate(("Write a haiku about autumn leaves", "Who painted the Mona Lisa?")):
        results = asyncio.run(burst(q))
        assert all(r.status_code == 200 for r in results)
        assert upstream_stats()["/v1/chat/completions"] == n + 1, q
        assert sum(r.headers.get("x-semcache-coalesced") == "true" for r in results) == 7

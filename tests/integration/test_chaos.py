"""Chaos, bounded and on loopback (issue 17): mixed traffic — hits, misses, streams, clients that
go away mid-stream — while the store (the real PostgreSQL behind a proxy) is cut, blackholed
and restored, and the upstream is killed and started again.

It asserts: no 5xx but the upstream-caused 502/504; no request over the configured bounds; no
answer served for another question (the fake upstream's answers name their question); file
descriptors and memory bounded; caching back within the breaker's window once all is well.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.devtools.fake_upstream import create_fake_app, fake_text
from gateway.devtools.serverthread import ServerThread, free_port
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory, _pg_schema_url
from tests.tcpproxy import proxied

# phrasings of one question: a hit for any of them may carry the answer made for any other
GROUPS = [
    ["What is the capital of Australia?", "Which city is the capital of Australia?"],
    ["Who painted the Mona Lisa?", "Who was the painter of the Mona Lisa?"],
    ["How many bones are in the adult human body?", "How many bones does an adult human have?"],
    ["What is the boiling point of water at sea level?",
     "At sea level, what is the boiling point of water?"],
    ["Why is the sky blue?", "What makes the sky look blue?"],
    ["Write a Python function that reverses a string", "Write a Python function to reverse a string"],
    ["When did the Berlin Wall fall?", "In what year did the Berlin Wall come down?"],
    ["What causes earthquakes?", "Why do earthquakes happen?"],
]
ALLOWED = {q: {fake_text("fake-small", p) for p in group} for group in GROUPS for q in group}
DURATION_S = 36.0
BOUND_S = 9.0  # upstream timeout 5 s + connect 1 s + the store's bounds, with room for 2 cores


@dataclass
class Outcome:
    question: str
    status: int
    took: float
    text: str | None
    cache: str
    error: str = ""


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.pg
def test_chaos(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, pg_url: str
) -> None:
    upstream_port = free_port()
    upstream = ServerThread(create_fake_app(chunk_delay_s=0.01), port=upstream_port).start()
    proxy, via_proxy = proxied(pg_url)
    gw = gateway_factory(
        embedder=embedder, database_url=via_proxy, upstream_url=f"http://127.0.0.1:{upstream_port}/v1",
        upstream_metrics_url="off", store_retry_s=1.0, store_lookup_timeout_s=0.2,
        store_timeout_s=0.5, upstream_timeout_s=5.0, upstream_connect_timeout_s=1.0,
    )
    url = f"{gw.url}/v1/chat/completions"
    fds_before, rss_before = _fds(), _rss_mb()
    outcomes: list[Outcome] = []
    events: list[tuple[float, str]] = []

    def chaos(start: float) -> None:
        nonlocal upstream

        def at(t: float, what: str) -> None:
            time.sleep(max(0.0, start + t - time.monotonic()))
            events.append((round(time.monotonic() - start, 1), what))

        at(4, "store cut")
        proxy.stop()
        at(9, "store back")
        proxy.start()
        at(13, "store blackholed")
        proxy.blackhole()
        at(18, "store back after blackhole")
        proxy.blackhole(False)
        proxy.stop()
        proxy.start()
        at(22, "upstream killed")
        upstream.stop()
        at(27, "upstream restarted")
        upstream = ServerThread(create_fake_app(chunk_delay_s=0.01), port=upstream_port).start()

    async def client(seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=30) as c:
            while time.monotonic() < stop_at:
                q = rng.choice(rng.choice(GROUPS))
                if rng.random() < 0.25:  # a question nobody asked before: a miss
                    q = f"Tell me one fact about the number {seed * 100_000 + len(outcomes)}"
                body = {"model": "fake-small", "messages": [{"role": "user", "content": q}]}
                kind = rng.random()
                t = time.monotonic()
                try:
                    if kind < 0.6:
                        r = await c.post(url, json=body)
                        text = r.json()["choices"][0]["message"]["content"] \
                            if r.status_code == 200 else None
                        outcomes.append(Outcome(q, r.status_code, time.monotonic() - t, text,
                                                r.headers.get("x-semcache", "-"),
                                                "" if r.status_code == 200 else r.text[:200]))
                        continue
                    body["stream"] = True
                    async with c.stream("POST", url, json=body) as r:
                        parts, done = [], False
                        async for line in r.aiter_lines():
                            if kind > 0.9:  # a client that goes away mid-stream
                                break
                            if line == "data: [DONE]":
                                done = True
                            elif line.startswith("data: "):
                                event = json.loads(line[6:])
                                for ch in event.get("choices", []):
                                    parts.append((ch.get("delta") or {}).get("content") or "")
                        text = "".join(parts) if done and r.status_code == 200 else None
                        outcomes.append(Outcome(q, r.status_code, time.monotonic() - t, text,
                                                r.headers.get("x-semcache", "-")))
                except httpx.HTTPError as exc:  # the gateway must never drop a request
                    outcomes.append(Outcome(q, -1, time.monotonic() - t, None, "-", repr(exc)))
                await asyncio.sleep(rng.random() * 0.05)

    async def traffic() -> None:
        start = time.monotonic()
        thread = threading.Thread(target=chaos, args=(start,), daemon=True)
        thread.start()
        await asyncio.gather(*(client(i, start + DURATION_S) for i in range(6)))
        thread.join()

    try:
        asyncio.run(traffic())
        # all is well again: caching is back within the breaker's window (plus a sync)
        deadline = time.monotonic() + 10
        q = GROUPS[0][0]
        while httpx.post(url, json={"model": "fake-small", "messages": [
                {"role": "user", "content": q}]}, timeout=30).headers.get("x-semcache") != "hit":
            assert time.monotonic() < deadline, "caching did not come back"
            time.sleep(0.3)
    finally:
        proxy.stop()
        upstream.stop()

    assert len(outcomes) > 200, (len(outcomes), events)
    dropped = [o for o in outcomes if o.status == -1]
    assert not dropped, dropped[:5]
    server_errors = [o for o in outcomes if o.status >= 500 and o.status not in (502, 504)]
    assert not server_errors, server_errors[:5]
    slow = [o for o in outcomes if o.took > BOUND_S]
    assert not slow, (slow[:5], events)
    wrong = [o for o in outcomes if o.text is not None
             and o.text not in ALLOWED.get(o.question, {fake_text("fake-small", o.question)})]
    assert not wrong, wrong[:5]
    hits = sum(o.cache == "hit" for o in outcomes)
    assert hits > len(outcomes) // 4, (hits, len(outcomes))  # the cache worked between faults
    assert any(o.status in (502, 504) for o in outcomes), "the upstream outage was not seen"
    assert _fds() < fds_before + 64, (fds_before, _fds())
    assert _rss_mb() < rss_before + 400, (rss_before, _rss_mb())

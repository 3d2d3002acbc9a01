"""Concurrent identical misses cause exactly one upstream call; all receive the answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

HEADERS = {"authorization": "Bearer sk-co"}


async def one(c: httpx.AsyncClient, url: str, q: str, stream: bool,
              extra: dict[str, str]) -> tuple[int, dict[str, str], str]:
    body = {"model": "fake-small", "stream": stream, "messages": [{"role": "user", "content": q}]}
    if not stream:
        r = await c.post(url, json=body, headers={**HEADERS, **extra})
        text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
        return r.status_code, dict(r.headers), text
    parts = []
    async with c.stream("POST", url, json=body, headers={**HEADERS, **extra}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:]).get("choices", []):
                    parts.append((ch.get("delta") or {}).get("content") or "")
        return r.status_code, dict(r.headers), "".join(parts)


async def burst(url: str, q: str, n: int, extra: dict[str, str]) -> list[tuple[int, dict[str, str], str]]:
    async with httpx.AsyncClient(timeout=60) as c:
        return await asyncio.gather(*(one(c, url, q, i % 3 == 2, extra) for i in range(n)))


def test_identical_misses_share_one_upstream_call(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    upstream_stats: Callable[[], dict[str, int]],
) -> None:
    gw: ServerThread = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/c.db")
    url = f"{gw.url}/v1/chat/completions"
    # the leader's call takes 2 s: ample time for the others to arrive on a busy machine
    results = asyncio.run(burst(url, "Explain how tides work", 9, {"x-fake-delay": "2.0"}))
    assert upstream_stats()["/v1/chat/completions"] == 1
    assert all(status == 200 for status, _, _ in results)
    assert len({text for _, _, text in results}) == 1 and results[0][2]
    outcomes = sorted(h["x-semcache"] for _, h, _ in results)
    assert outcomes.count("miss") == 1 and outcomes.count("hit") == 8
    assert sum(h.get("x-semcache-coalesced") == "true" for _, h, _ in results) == 8

    # an upstream error is the leader's alone: every waiter makes its own call (issue 16,
    # item 7; before, the leader's 429 was handed to all of them)
    results = asyncio.run(burst(url, "Explain how volcanoes form", 6,
                                {"x-fake-delay": "0.8", "x-fake-status": "429"}))
    assert upstream_stats()["/v1/chat/completions"] == 1 + 6
    assert [status for status, _, _ in results] == [429] * 6

    # different questions are not coalesced
    async def distinct() -> None:
        async with httpx.AsyncClient(timeout=60) as c:
            await asyncio.gather(*(one(c, url, f"Explain topic {i} in detail", False,
                                       {"x-fake-delay": "0.3"}) for i in range(4)))
    asyncio.run(distinct())
    assert upstream_stats()["/v1/chat/completions"] == 7 + 4


def test_only_identical_requests_are_coalesced(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    upstream_stats: Callable[[], dict[str, int]],
) -> None:
    """A leader with ``max_tokens: 9000`` that fails (the context is too long for it) does not
    hand its 400 to a plain request for the same question that arrives meanwhile."""
    gw: ServerThread = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/c.db")
    url = f"{gw.url}/v1/chat/completions"
    q = [{"role": "user", "content": "Explain how glaciers move"}]

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as c:
            leader = asyncio.ensure_future(c.post(
                url, json={"model": "fake-small", "messages": q, "max_tokens": 9000},
                headers={**HEADERS, "x-fake-delay": "0.8", "x-fake-status": "400"}))
            await asyncio.sleep(0.3)
            follower = await c.post(url, json={"model": "fake-small", "messages": q},
                                    headers=HEADERS)
            return await leader, follower

    leader, follower = asyncio.run(scenario())
    assert leader.status_code == 400
    assert follower.status_code == 200, follower.text
    assert follower.headers.get("x-semcache-coalesced") is None
    assert upstream_stats()["/v1/chat/completions"] == 2


def test_header_bytes_reach_the_upstream_and_a_failed_leader_never_holds_followers(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    """Issue 17, item 4: a non-ASCII byte in a header gave 500 (httpx refused the str) and left
    the coalescing leader's future unresolved, so the next identical request waited the whole
    coalescing window."""
    gw: ServerThread = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/c.db")
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "Explain how bees fly"}]}
    odd = [(b"authorization", b"Bearer sk-co"), (b"x-note", "caf\u00e9".encode("latin-1"))]
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=odd, timeout=30)
    assert r.status_code == 200, r.text
    started = time.monotonic()
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=30)
    assert r.status_code == 200 and time.monotonic() - started < 3
    echo = httpx.post(f"{gw.url}/v1/echo/x", headers=odd, timeout=30).json()
    assert echo["headers"]["x-note"] == "caf\u00e9"

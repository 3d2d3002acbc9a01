"""``SEMCACHE_STORE_WRITES``: a miss's answer is committed before its reply ends (the default)
or written beside the reply (``after_reply``). The official client against the running gateway;
a real SQLite file whose write lock another connection holds stands for a slow store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway.cache.background import Background
from gateway.embedding import SentenceTransformerEmbedder
from tests.clients import openai_client
from tests.conftest import GatewayFactory


@contextmanager
def write_lock_held(db: Path, seconds: float) -> Iterator[None]:
    """Another connection holds SQLite's write lock for ``seconds`` (from entering)."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(seconds, lambda: conn.execute("COMMIT"))
    timer.start()
    try:
        yield
    finally:
        timer.join()
        conn.close()


def client(url: str) -> openai.OpenAI:
    return openai_client(f"{url}/v1")


def ask(c: openai.OpenAI, q: str) -> tuple[str, str]:
    raw = c.chat.completions.with_raw_response.create(
        model="fake-small", messages=[{"role": "user", "content": q}])
    return raw.headers["x-semcache"], raw.parse().choices[0].message.content or ""


def hit_within(c: openai.OpenAI, q: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ask(c, q)[0] == "hit":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["before_reply", "after_reply"])
def test_a_slow_store_delays_the_reply_only_when_writes_come_before_it(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    mode: str,
) -> None:
    db = tmp_path / "cache.db"
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{db}", store_writes=mode,
                         store_timeout_s=5.0)
    c = client(gw.url)
    assert ask(c, "How far is the Moon from the Earth?")[0] == "miss"
    with write_lock_held(db, 1.0):
        start = time.monotonic()
        outcome, answer = ask(c, "Which river is the longest in Africa?")
        took = time.monotonic() - start
    assert outcome == "miss" and answer
    if mode == "before_reply":
        assert took >= 0.8, took  # waited for the lock: the answer was committed first
        assert ask(c, "Which river is the longest in Africa?")[0] == "hit"  # at once
    else:
        assert took < 0.8, took  # the reply did not wait for the store
        assert hit_within(c, "Which river is the longest in Africa?", 10)
    # the same answer is served, whichever way it was written
    assert ask(c, "Which river is the longest in Africa?")[1] == answer


def test_writes_beside_the_reply_are_finished_at_shutdown(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    db = tmp_path / "cache.db"
    url = f"sqlite:///{db}"
    gw = gateway_factory(embedder=embedder, database_url=url, store_writes="after_reply",
                         store_timeout_s=5.0)
    c = client(gw.url)
    ask(c, "warm the store up")
    with write_lock_held(db, 1.0):
        assert ask(c, "What is the tallest mountain in Europe?")[0] == "miss"
        gw.stop()  # graceful shutdown while the write waits for the lock
    again = gateway_factory(embedder=embedder, database_url=url)
    assert ask(client(again.url), "What is the tallest mountain in Europe?")[0] == "hit"
    assert httpx.get(f"{again.url}/readyz").status_code == 200


async def test_offload_refuses_past_its_bound_and_once_closing() -> None:
    bg = Background()
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    first, second = wait(), wait()
    assert bg.offload(first, most=1)
    assert not bg.offload(second, most=1)  # the caller awaits this one itself
    gate.set()
    await second
    await bg.close()
    late = wait()
    assert not bg.offload(late)
    await late

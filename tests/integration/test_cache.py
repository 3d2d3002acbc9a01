"""The semantic cache end to end: openai client -> gateway (real model, real store) -> fake LLM.

Every test runs on SQLite and on the local PostgreSQL (``database_url`` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
import yaml

from gateway.devtools.fake_upstream import fake_text
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.clients import openai_client
from tests.conftest import GatewayFactory

Chat = Callable[..., tuple[str, dict[str, str]]]


@pytest.fixture
def start(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, database_url: str
) -> Callable[..., ServerThread]:
    def make(**overrides: Any) -> ServerThread:
        return gateway_factory(embedder=embedder, database_url=database_url, **overrides)

    return make


@pytest.fixture
def gw(start: Callable[..., ServerThread]) -> ServerThread:
    return start()



def chat_fn(server: ServerThread) -> Chat:
    client = openai_client(f"{server.url}/v1")

    def chat(
        content: str, *, model: str = "fake-small", system: str | None = None,
        history: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
        stream: bool = False, **kw: Any,
    ) -> tuple[str, dict[str, str]]:
        messages = ([{"role": "system", "content": system}] if system else []) + (history or [])
        messages.append({"role": "user", "content": content})
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, extra_headers=headers, stream=stream, **kw,  # type: ignore[arg-type]
        )
        if stream:
            text = "".join(
                c.choices[0].delta.content or "" for c in raw.parse() if c.choices
            )
        else:
            text = raw.parse().choices[0].message.content or ""
        return text, dict(raw.headers)

    return chat


def test_paraphrase_hits_and_upstream_is_not_called(
    gw: ServerThread, upstream_stats: Callable[[], dict[str, int]]
) -> None:
    chat = chat_fn(gw)
    first, h1 = chat("What is the capital of Australia?")
    assert h1["x-semcache"] == "miss"
    second, h2 = chat("Which city is the capital of Australia?")
    assert h2["x-semcache"] == "hit", h2
    assert h2["x-semcache-category"] == "factual"  # not hedged: no upstream call at all
    assert second == first == fake_text("fake-small", "What is the capital of Australia?")
    assert float(h2["x-semcache-similarity"]) > 0.8
    assert 0 <= int(h2["age"]) <= 5  # seconds since the answer was stored
    assert upstream_stats()["/v1/chat/completions"] == 1


def test_code_queries_that_differ_in_meaning_miss(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    base = "Write a Python function that sorts a list in ascending order"
    assert chat(base)[1]["x-semcache"] == "miss"
    assert chat(base)[1]["x-semcache"] == "hit"  # the entry is there and findable
    for other in (
        "Write a Python function that sorts a list in descending order",
        "Write a Rust function that sorts a list in ascending order",
    ):
        text, h = chat(other)
        assert h["x-semcache"] == "miss", other
        assert text == fake_text("fake-small", other)


def test_ttl_expiry_and_sweep(
    start: Callable[..., ServerThread], tmp_path: Path, database_url: str
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({name: {"ttl_seconds": 1} for name in (
        "factual", "general", "conversation", "creative")}))
    gw = start(categories_overlay=overlay, sweep_interval_s=0.3)
    chat = chat_fn(gw)
    q = "Who painted the Mona Lisa?"
    assert chat(q)[1]["x-semcache"] == "miss"
    assert chat(q)[1]["x-semcache"] == "hit"
    time.sleep(1.1)  # past the TTL (request-path expiry: test_expired_entries_are_never_...)
    assert chat(q)[1]["x-semcache"] == "miss"  # expired, answered fresh and stored again
    engine = sa.create_engine(database_url)
    deadline = time.monotonic() + 10  # the sweeper deletes both rows once they expire
    while True:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM cache_entries")).scalar_one()
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    engine.dispose()
    assert left == 0, "the sweeper should have deleted the expired rows"


@pytest.mark.parametrize("stream", [False, True])
def test_expired_entries_are_never_served_before_the_sweep(
    start: Callable[..., ServerThread], tmp_path: Path, stream: bool
) -> None:
    """With the sweeper effectively off, expiry is decided on the request path: an exact
    repeat, a paraphrase and a stream after the TTL all miss (issue 24: with a 0.3 s sweeper
    the expired row was gone before the repeat, so the request path's own check went
    untested)."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"factual": {"ttl_seconds": 1}}))
    gw = start(categories_overlay=overlay, sweep_interval_s=3600)
    chat = chat_fn(gw)
    q, paraphrase = "Who painted the Mona Lisa?", "Who was the painter of the Mona Lisa?"
    assert chat(q, stream=stream)[1]["x-semcache"] == "miss"
    assert chat(q, stream=stream)[1]["x-semcache"] == "hit"
    assert chat(paraphrase, stream=stream)[1]["x-semcache"] == "hit"
    time.sleep(1.3)
    assert chat(paraphrase, stream=stream)[1]["x-semcache"] == "miss"  # stored again, fresh
    assert chat(q, stream=stream)[1]["x-semcache"] == "hit"  # the fresh paraphrase answers it
    time.sleep(1.3)
    assert chat(q, stream=stream)[1]["x-semcache"] == "miss"


@pytest.mark.parametrize(("policy", "survivors"), [
    ("lru", [0, 2]),   # the one not used lately goes
    ("lfu", [0, 1]),   # the least used goes: here the newcomer, with no hits yet
])
def test_eviction_policies_keep_what_they_promise(
    start: Callable[..., ServerThread], tmp_path: Path, database_url: str, policy: str,
    survivors: list[int],
) -> None:
    """Oldest-first would evict question 0 in both cases: it was stored first."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"math": {"quota": 2, "eviction": policy}}))
    gw = start(categories_overlay=overlay)
    chat = chat_fn(gw)
    qs = ["What is 17 times 23?", "What is the square root of 144?", "What is 15 percent of 200?"]
    chat(qs[0])
    chat(qs[1])
    for i in (1, 1, 0):  # question 1 used twice, question 0 once and last
        assert chat(qs[i])[1]["x-semcache"] == "hit"
        time.sleep(0.05)
    time.sleep(1.5)  # hit counts reach the store in batches, every second
    chat(qs[2])
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        kept = sorted(r[0] for r in conn.execute(
            sa.text("SELECT query_text FROM cache_entries WHERE category='math'")))
    engine.dispose()
    assert kept == sorted(qs[i] for i in survivors)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'semcache_evictions_total{category="math"} 1.0' in metrics


def test_quota_evicts_from_index_and_store(
    start: Callable[..., ServerThread], tmp_path: Path, database_url: str
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"math": {"quota": 2, "eviction": "lru"}}))
    gw = start(categories_overlay=overlay)
    chat = chat_fn(gw)
    qs = ["What is 17 times 23?", "What is the square root of 144?", "What is 15 percent of 200?"]
    for q in qs:
        _, h = chat(q)
        assert (h["x-semcache"], h["x-semcache-category"]) == ("miss", "math"), q
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT query_text FROM cache_entries WHERE category='math'"))
        kept = sorted(r[0] for r in rows)
    engine.dispose()
    assert kept == sorted(qs[1:])  # the least recently used one left the store
    assert chat(qs[0])[1]["x-semcache"] == "miss"  # ...and the index
    assert chat(qs[2])[1]["x-semcache"] == "hit"


def test_scope_model_system_namespace_and_conversation(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    q = "What is the boiling point of water at sea level?"
    assert chat(q, system="Be brief.")[1]["x-semcache"] == "miss"
    assert chat(q, system="Be brief.")[1]["x-semcache"] == "hit"
    assert chat(q, system="Answer like a pirate.")[1]["x-semcache"] == "miss"
    assert chat(q, system="Be brief.", model="fake-large")[1]["x-semcache"] == "miss"
    assert chat(q, system="Be brief.", headers={"x-semcache-namespace": "team-b"})[1][
        "x-semcache"] == "miss"

    convo_a = [{"role": "user", "content": "How do I read a file in Python?"},
               {"role": "assistant", "content": "Use open()."}]
    convo_b = [{"role": "user", "content": "How do I open a socket in C?"},
               {"role": "assistant", "content": "Use socket()."}]
    assert chat("and in Java?", history=convo_a)[1]["x-semcache"] == "miss"
    assert chat("and in Java?", history=convo_a)[1]["x-semcache"] == "hit"
    assert chat("and in Java?", history=convo_b)[1]["x-semcache"] == "miss"
    assert chat("and in Java?")[1]["x-semcache"] == "miss"


def test_restart_keeps_entries(start: Callable[..., ServerThread]) -> None:
    gw = start()
    q = "What is the largest ocean on Earth?"
    original, _ = chat_fn(gw)(q)
    gw.stop()
    again = start()
    text, h = chat_fn(again)(q)
    assert h["x-semcache"] == "hit"
    assert h["x-semcache-similarity"] == "1.0000"  # the exact index was rebuilt too
    assert text == original
    text, h = chat_fn(again)("Which ocean is the largest on Earth?")
    assert h["x-semcache"] == "hit" and float(h["x-semcache-similarity"]) < 1.0
    assert text == original


def test_exact_repeat_ignores_whitespace_but_not_scope(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    chat("How do I tie a tie?")
    _, h = chat("  How do I   tie a tie?\n")
    assert (h["x-semcache"], h["x-semcache-similarity"]) == ("hit", "1.0000")
    assert chat("How do I tie a tie?", model="fake-large")[1]["x-semcache"] == "miss"
    assert chat("How do I tie a tie?", headers={"cache-control": "no-cache"})[1][
        "x-semcache"] == "miss"


def test_streamed_hit_replays_same_content(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    q = "Explain the theory of relativity in simple terms"
    original, h = chat(q, stream=True)
    assert h["x-semcache"] == "miss"
    replayed, h = chat(q, stream=True)
    assert h["x-semcache"] == "hit"
    assert replayed == original == fake_text("fake-small", q)
    as_json, h = chat(q)
    assert h["x-semcache"] == "hit" and as_json == original


def test_streamed_hit_is_valid_sse_with_usage(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    q = "When was the printing press invented?"
    chat(q)
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions",
                      headers={"authorization": "Bearer sk-test"}, json={
        "model": "fake-small", "messages": [{"role": "user", "content": q}], "stream": True,
        "stream_options": {"include_usage": True},
    }) as r:
        assert r.headers["x-semcache"] == "hit"
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    import json
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("fault", "status"), [
    ({"x-fake-cut-after": "3"}, {True: 200, False: 502}),  # a stream ends with an error event
    ({"x-fake-status": "500"}, {True: 500, False: 500}),
    ({"x-fake-status": "429"}, {True: 429, False: 429}),
    ({"x-fake-status": "400"}, {True: 400, False: 400}),
    ({"x-fake-finish": "length"}, {True: 200, False: 200}),
    ({"x-fake-bad-json": "1"}, {True: 200, False: 200}),
])
@pytest.mark.parametrize("stream", [True, False])
def test_failed_or_partial_answers_are_not_stored(
    gw: ServerThread, fault: dict[str, str], status: dict[bool, int], stream: bool,
    database_url: str,
) -> None:
    body = {"model": "fake-small", "stream": stream,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body,
                   headers={**fault, "authorization": "Bearer sk-test"})  # chat_fn's tenant
    assert r.status_code == status[stream], (r.status_code, r.text[:200])
    if r.status_code != 502:  # the upstream answered: the gateway says what it did
        assert r.headers["x-semcache"] == "miss"
    else:
        assert r.json()["error"]["type"] == "upstream_error"
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cache_entries")).scalar_one() == 0
    engine.dispose()
    _, h = chat_fn(gw)("Why is the sky blue?")
    assert h["x-semcache"] == "miss"


def test_cache_control_and_bypass(gw: ServerThread) -> None:
    chat = chat_fn(gw)
    q = "How many bones are in the adult human body?"
    assert chat(q, headers={"cache-control": "no-store"})[1]["x-semcache"] == "miss"
    assert chat(q)[1]["x-semcache"] == "miss"  # no-store stored nothing: this one stores
    assert chat(q, headers={"cache-control": "no-store"})[1]["x-semcache"] == "hit"
    q = "How many teeth does an adult human have?"
    assert chat(q, headers={"cache-control": "no-cache"})[1]["x-semcache"] == "miss"  # stores
    assert chat(q)[1]["x-semcache"] == "hit"
    assert chat(q, headers={"cache-control": "no-cache"})[1]["x-semcache"] == "miss"

    _, h = chat("What is my account balance?")
    assert (h["x-semcache"], h["x-semcache-bypass"]) == ("bypass", "category_not_cacheable")
    _, h = chat("What is my account balance?")
    assert h["x-semcache"] == "bypass"
    _, h = chat(q, n=2)
    assert (h["x-semcache"], h["x-semcache-bypass"]) == ("bypass", "n_greater_than_1")


def test_category_header_and_errors(gw: ServerThread, database_url: str) -> None:
    chat = chat_fn(gw)
    _, h = chat("What is the capital of Australia?", headers={"x-semcache-category": "general"})
    assert h["x-semcache-category"] == "general"
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:  # stored where it was forced to, not where it would go
        assert conn.execute(sa.text("SELECT category FROM cache_entries")).scalars().all() \
            == ["general"]
    engine.dispose()
    _, h = chat("What is the capital of Australia?", headers={"x-semcache-category": "general"})
    assert (h["x-semcache"], h["x-semcache-category"]) == ("hit", "general")
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"x-semcache-category": "nope"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"x-semcache-namespace": "a b/c"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Semcache-Namespace"


def test_legacy_completions_are_cached(gw: ServerThread) -> None:
    client = openai_client(f"{gw.url}/v1", api_key="k")
    first = client.completions.with_raw_response.create(model="fake-small", prompt="Why is the sky blue?")
    second = client.completions.with_raw_response.create(model="fake-small", prompt="Why is the sky blue?")
    assert first.headers["x-semcache"] == "miss" and second.headers["x-semcache"] == "hit"
    assert second.parse().choices[0].text == first.parse().choices[0].text
    raw = client.completions.with_raw_response.create(
        model="fake-small", prompt="Why is the sky blue?", stream=True)
    assert raw.headers["x-semcache"] == "hit"
    streamed = "".join(c.choices[0].text for c in raw.parse())
    assert streamed == first.parse().choices[0].text


def test_two_tenants_never_share_entries(gw: ServerThread) -> None:
    def ask(key: str) -> tuple[str, dict[str, str]]:
        client = openai_client(f"{gw.url}/v1", api_key=key)
        raw = client.chat.completions.with_raw_response.create(
            model="fake-small", messages=[{"role": "user", "content": "Who wrote Hamlet?"}])
        return raw.parse().choices[0].message.content or "", dict(raw.headers)

    assert ask("sk-tenant-a")[1]["x-semcache"] == "miss"
    assert ask("sk-tenant-a")[1]["x-semcache"] == "hit"
    assert ask("sk-tenant-b")[1]["x-semcache"] == "miss"
    assert ask("sk-tenant-b")[1]["x-semcache"] == "hit"


def test_restart_from_index_snapshot_reconciles_with_store(
    start: Callable[..., ServerThread], tmp_path: Path, database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    snap = tmp_path / "snap"
    gw = start(index_snapshot_dir=snap)
    chat = chat_fn(gw)
    keep, gone = "What is the largest ocean on Earth?", "Who painted the Mona Lisa?"
    original, _ = chat(keep)
    chat(gone)
    gw.stop()
    assert (snap / "manifest.json").is_file()

    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # behind the snapshot's back
        conn.execute(sa.text("DELETE FROM cache_entries WHERE query_text = :q"), {"q": gone})

    with caplog.at_level("INFO", logger="gateway.cache.warmup"):
        again = start(index_snapshot_dir=snap)
    assert any("1 entries kept, 0 added" in r.getMessage() for r in caplog.records), \
        "the graph should come from the snapshot"
    chat = chat_fn(again)
    text, h = chat("Which ocean is the largest on Earth?")
    assert h["x-semcache"] == "hit"
    assert text == original
    assert chat(gone)[1]["x-semcache"] == "miss", "a row deleted since must leave the index"
    again.stop()

    # the kept row's stored vector changed behind the snapshot's back: the snapshot's graph
    # still proposes the row, but only the row's own vector can make it a hit
    with engine.begin() as conn:
        blob = conn.execute(sa.text("SELECT embedding FROM cache_entries WHERE query_text = :q"),
                            {"q": keep}).scalar_one()
        conn.execute(sa.text("UPDATE cache_entries SET embedding = :e WHERE query_text = :q"),
                     {"e": bytes(len(blob)), "q": keep})
    engine.dispose()
    third = start(index_snapshot_dir=snap)
    assert chat_fn(third)("Which ocean is the largest on Earth?")[1]["x-semcache"] == "miss"


def test_answers_cut_at_max_tokens_are_not_stored_and_context_errors_pass_through(
    gw: ServerThread, upstream_stats: Callable[[], dict[str, int]]
) -> None:
    """The two behaviours the real server showed that the fake now has too."""
    c = openai_client(f"{gw.url}/v1", api_key="sk-t")
    msgs: Any = [{"role": "user", "content": "Describe the water cycle"}]
    for _ in range(2):
        cut = c.chat.completions.with_raw_response.create(model="fake-small", messages=msgs,
                                                          max_tokens=3)
        assert cut.headers["x-semcache"] == "miss"
        assert cut.parse().choices[0].finish_reason == "length"
        assert cut.parse().usage is not None and cut.parse().usage.completion_tokens == 3
    full = c.chat.completions.with_raw_response.create(model="fake-small", messages=msgs)
    assert full.headers["x-semcache"] == "miss" and full.parse().choices[0].finish_reason == "stop"
    assert upstream_stats()["/v1/chat/completions"] == 3
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="fake-small",
                                  messages=[{"role": "user", "content": "word " * 9000}])
    assert info.value.code == "context_length_exceeded"

"""Never serve an answer that was made for another request (issue 16), end to end: the official
``openai`` client -> the gateway over HTTP (real model, real store: SQLite and PostgreSQL) ->
the fake LLM. Each test is a way a hostile review got another request's answer served."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.devtools.fake_upstream import fake_text
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

Stats = Callable[[], dict[str, int]]
CHAT = "/v1/chat/completions"


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


@pytest.fixture
def client(gw: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-test", max_retries=0) as c:
        yield c


def ask(client: openai.OpenAI, content: Any, *, messages: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None, **kw: Any) -> tuple[Any, dict[str, str]]:
    msgs = [*(messages or []), {"role": "user", "content": content}]
    raw = client.chat.completions.with_raw_response.create(
        model="fake-small", messages=msgs, extra_headers=headers, **kw)  # type: ignore[arg-type]
    return raw.parse(), dict(raw.headers)


def text_of(completion: Any) -> str:
    return completion.choices[0].message.content or ""


def test_ids_reused_after_expiry_never_serve_another_question(
    start: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """Item 1, the reviewer's sequence: A, B expire and are swept; C, D took their ids on
    SQLite; they expire too; E takes id 1; asking C again got E's answer at similarity 1.0000
    and the sweeper died. Now C is answered for C, and the admin API still works."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"factual": {"ttl_seconds": 1}}))
    gw = start(categories_overlay=overlay, sweep_interval_s=0.3, admin_key="adm")
    force = {"x-semcache-category": "factual"}
    a, b, c, d, e = ("Who wrote Hamlet?", "What is the speed of light?",
                     "What causes thunder during a storm?", "How do vaccines work?",
                     "Why is the sky blue?")
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-t", max_retries=0) as client:
        for q in (a, b):
            ask(client, q, headers=force)
        time.sleep(1.8)
        for q in (c, d):
            assert ask(client, q, headers=force)[1]["x-semcache"] == "miss"
        time.sleep(1.8)
        ask(client, e, headers=force)
        answer, h = ask(client, c, headers=force)
        assert text_of(answer) == fake_text("fake-small", c), h
        assert h["x-semcache"] == "miss"
        again, h = ask(client, c, headers=force)
        assert h["x-semcache"] == "hit" and text_of(again) == fake_text("fake-small", c)
        admin = {"authorization": "Bearer adm"}
        entry = h["x-semcache-entry"]
        assert httpx.delete(f"{gw.url}/admin/entries/{entry}", headers=admin).status_code == 200
        r = httpx.post(f"{gw.url}/admin/invalidate", json={"category": "factual"}, headers=admin)
        assert r.status_code == 200, r.text
        # the sweeper is alive: an entry that expires now is swept
        ask(client, a, headers=force)
        time.sleep(1.8)
        stats = httpx.get(f"{gw.url}/admin/stats", headers=admin).json()
        assert stats["categories"]["factual"]["stored_rows"] == 0


def test_a_long_document_with_another_question_is_not_a_hit(client: openai.OpenAI) -> None:
    """Item 2: past what the embedder sees, only an exact repeat of the whole text is served."""
    report = " ".join(f"In quarter {i} the company sold {i * 37} units in region {i % 7}."
                      for i in range(90))  # ~4,800 characters, far past 256 tokens
    summary, h1 = ask(client, report + "\n\nSummarize this report.")
    assert h1["x-semcache"] == "miss" and h1["x-semcache-truncated"] == "true"
    assert h1["x-semcache-exact-only"] == "too_long"
    translated, h2 = ask(client, report + "\n\nTranslate this report into German.")
    assert h2["x-semcache"] == "miss"
    assert text_of(translated) != text_of(summary)
    _, h3 = ask(client, report + "\n\nSummarize   this report.")  # same up to whitespace
    assert h3["x-semcache"] == "hit"
    # a short query, close to the document's head, is searched but never finds the long entry
    _, h4 = ask(client, report[:600])
    assert h4["x-semcache"] == "miss" and "x-semcache-exact-only" not in h4
    # 1,500 characters: not cut by SEMCACHE_MAX_QUERY_CHARS, still past the model's 256 tokens
    _, h5 = ask(client, report[:1500])
    assert h5["x-semcache-exact-only"] == "too_long" and "x-semcache-truncated" not in h5


def test_what_the_embedder_cannot_read_is_not_matched_semantically(client: openai.OpenAI) -> None:
    """MiniLM reads every emoji as one unknown token: these two embed at similarity 1.0000."""
    _, h1 = ask(client, "Is 🍕 healthy to eat every day?")
    pizza, h2 = ask(client, "Is 🍔 healthy to eat every day?")
    assert (h1["x-semcache"], h2["x-semcache"]) == ("miss", "miss")
    assert h2["x-semcache-exact-only"] == "unknown_tokens" and "x-semcache-truncated" not in h2
    assert text_of(pizza) == fake_text("fake-small", "Is 🍔 healthy to eat every day?")
    assert ask(client, "Is 🍕 healthy to eat every day?")[1]["x-semcache"] == "hit"  # exact


def test_the_same_question_after_another_image_is_not_a_hit(
    client: openai.OpenAI, upstream_stats: Stats
) -> None:
    """Item 3: content parts of earlier turns are in the context."""

    def turns(url: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [
                    {"type": "text", "text": "What animal is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}}]},
                {"role": "assistant", "content": "It is an animal."}]

    q = "What does it usually eat?"
    assert ask(client, q, messages=turns("https://x.test/cat.png"))[1]["x-semcache"] == "miss"
    assert ask(client, q, messages=turns("https://x.test/cat.png"))[1]["x-semcache"] == "hit"
    assert ask(client, q, messages=turns("https://x.test/dog.png"))[1]["x-semcache"] == "miss"
    audio = [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
        {"role": "assistant", "content": "It is an animal."}]
    assert ask(client, q, messages=audio)[1]["x-semcache"] == "miss"
    assert upstream_stats()[CHAT] == 3


def test_stop_sequences_are_keyed(client: openai.OpenAI) -> None:
    """Item 4: an answer cut at a stop string is not served without it, nor the reverse."""
    q = "What is the boiling point of water at sea level?"
    cut, h1 = ask(client, q, stop=[":"])
    assert h1["x-semcache"] == "miss" and ":" not in text_of(cut)
    whole, h2 = ask(client, q)
    assert h2["x-semcache"] == "miss" and text_of(whole) == fake_text("fake-small", q)
    assert text_of(ask(client, q, stop=[":"])[0]) == text_of(cut)
    _, h3 = ask(client, q, stop=["."])
    assert h3["x-semcache"] == "miss"


def test_max_tokens_is_served_only_an_answer_that_fits(client: openai.OpenAI) -> None:
    q = "Who painted the Mona Lisa?"
    full, _ = ask(client, q)
    words = full.usage.completion_tokens
    short, h = ask(client, q, max_tokens=3)
    assert h["x-semcache"] == "miss" and short.choices[0].finish_reason == "length"
    roomy, h = ask(client, q, max_tokens=words + 5)
    assert h["x-semcache"] == "hit" and text_of(roomy) == text_of(full)
    _, h = ask(client, q, max_tokens=words)
    assert h["x-semcache"] == "hit"


@pytest.mark.parametrize("kw", [
    {"seed": 7}, {"logit_bias": {"1234": -100}}, {"reasoning_effort": "high"},
    {"response_format": {"type": "json_object"}},
])
def test_fields_that_change_the_answer_are_keyed(client: openai.OpenAI, kw: dict[str, Any]) -> None:
    q = "What is the tallest mountain in Africa?"
    ask(client, q)
    assert ask(client, q, **kw)[1]["x-semcache"] == "miss"
    assert ask(client, q, **kw)[1]["x-semcache"] == "hit"


@pytest.mark.parametrize(("kw", "reason"), [
    ({"n": 2}, "n_greater_than_1"), ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"extra_body": {"top_k": 5}}, "unknown_field"),
])
def test_fields_the_cache_cannot_serve_bypass(
    client: openai.OpenAI, kw: dict[str, Any], reason: str
) -> None:
    q = "What is the tallest mountain in Africa?"
    ask(client, q)
    assert ask(client, q)[1]["x-semcache"] == "hit"
    assert ask(client, q, **kw)[1]["x-semcache-bypass"] == reason


@pytest.mark.parametrize("kw", [
    {"max_tokens": -5}, {"temperature": "hot"}, {"top_p": 3}, {"n": 0}, {"stop": 5},
])
def test_invalid_values_get_400_not_a_hit(
    client: openai.OpenAI, kw: dict[str, Any], upstream_stats: Stats
) -> None:
    q = "What is the tallest mountain in Africa?"
    ask(client, q)
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, q, extra_body=kw)
    assert err.value.status_code == 400
    assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert upstream_stats()[CHAT] == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("directive", ["no-store", "private, max-age=60"])
def test_the_upstreams_no_store_is_honoured(
    client: openai.OpenAI, stream: bool, directive: str, upstream_stats: Stats
) -> None:
    """Item 5: RFC 9111 — a shared cache never stores a no-store or private answer."""
    q = "What language is spoken in Brazil?"
    headers = {"x-fake-cache-control": directive}

    def once() -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="fake-small", messages=[{"role": "user", "content": q}], stream=stream,
            extra_headers=headers)
        if stream:
            list(raw.parse())
        return raw.headers["x-semcache"]

    assert [once(), once()] == ["miss", "miss"]
    assert upstream_stats()[CHAT] == 2


def test_tenants_from_every_api_key_header(gw: ServerThread) -> None:
    """Item 6: Azure- and Anthropic-style key headers are tenants too."""
    url = f"{gw.url}{CHAT}"
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "Who wrote Emma?"}]}
    victim = httpx.post(url, json=body, headers={"api-key": "sk-victim"})
    assert victim.headers["x-semcache"] == "miss"
    assert httpx.post(url, json=body, headers={"api-key": "sk-victim"}).headers["x-semcache"] \
        == "hit"
    attacker = httpx.post(url, json=body, headers={"x-api-key": "sk-att"})
    assert attacker.headers["x-semcache"] == "miss"
    assert httpx.post(url, json=body).headers["x-semcache"] == "miss"  # anonymous: another


def test_a_duplicated_credential_header_is_refused(gw: ServerThread) -> None:
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "Who wrote Emma?"}]}
    r = httpx.post(f"{gw.url}{CHAT}", json=body,
                   headers=[("authorization", ""), ("authorization", "Bearer sk-real")])
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "authorization"


@pytest.mark.parametrize("header", [
    {"x-fake-ok-status": "203"}, {"x-fake-ok-status": "206"}, {"x-fake-refusal": "1"},
    {"x-fake-empty": "1"},
])
@pytest.mark.parametrize("stream", [False, True])
def test_only_complete_200_answers_with_content_are_stored(
    gw: ServerThread, header: dict[str, str], stream: bool, upstream_stats: Stats
) -> None:
    """Item 8: 203/206, refusals and empty answers are passed on, never stored."""
    body = {"model": "fake-small", "stream": stream,
            "messages": [{"role": "user", "content": "How far is the Moon from the Earth?"}]}
    for _ in range(2):
        r = httpx.post(f"{gw.url}{CHAT}", json=body, headers=header)
        assert r.headers["x-semcache"] == "miss"
    assert upstream_stats()[CHAT] == 2


def test_hits_carry_usage(client: openai.OpenAI) -> None:
    """Item 8: a plain hit has ``usage``; a stream stored without ``include_usage`` is replayed
    with the usage chunk when the request asks for it; tokens are reported as cached."""
    q = "When was the printing press invented?"
    list(client.chat.completions.create(model="fake-small", stream=True,
                                        messages=[{"role": "user", "content": q}]))
    hit, h = ask(client, q)
    assert h["x-semcache"] == "hit"
    assert hit.usage is not None and hit.usage.completion_tokens > 0
    assert hit.usage.total_tokens == hit.usage.prompt_tokens + hit.usage.completion_tokens
    assert hit.usage.prompt_tokens_details.cached_tokens == hit.usage.prompt_tokens
    chunks = list(client.chat.completions.create(
        model="fake-small", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": q}]))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == fake_text("fake-small", q)
    # a miss stored with the upstream's usage gives those counts back
    fresh, _ = ask(client, "Who was the first person to walk on the moon?")
    again, h = ask(client, "Who was the first person to walk on the moon?")
    assert h["x-semcache"] == "hit"
    assert again.usage.completion_tokens == fresh.usage.completion_tokens
    assert again.usage.prompt_tokens == fresh.usage.prompt_tokens


def test_a_stream_stored_without_a_token_count_serves_a_limit_it_surely_fits(
    client: openai.OpenAI,
) -> None:
    """Without ``include_usage`` the upstream gives no count: the answer's UTF-8 bytes bound it
    from above, so a limit over that is served and one under it is not."""
    q = "How does photosynthesis work?"
    list(client.chat.completions.create(model="fake-small", stream=True,
                                        messages=[{"role": "user", "content": q}]))
    size = len(fake_text("fake-small", q).encode())
    assert ask(client, q, max_tokens=size)[1]["x-semcache"] == "hit"
    assert ask(client, q, max_tokens=size - 1)[1]["x-semcache"] == "miss"


def test_the_query_string_is_forwarded_and_keyed(
    gw: ServerThread, fake_upstream: ServerThread, upstream_stats: Stats
) -> None:
    """Issue 17, item 13: ``?api-version=`` (Azure OpenAI needs it) never reached the upstream,
    and answers made for one API version were served for another."""

    def ask_version(version: str) -> str:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-q", max_retries=0,
                           default_query={"api-version": version}) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="fake-small", messages=[{"role": "user", "content": "Who wrote Emma?"}])
            return raw.headers["x-semcache"]

    assert ask_version("2024-02-01") == "miss"
    seen = httpx.get(f"{fake_upstream.url}/fake/requests").json()[-1]
    assert seen["query"] == "api-version=2024-02-01"
    assert ask_version("2024-02-01") == "hit"
    assert ask_version("2025-04-01") == "miss"
    assert upstream_stats()[CHAT] == 2


def test_an_answer_made_under_a_limit_serves_that_limit(client: openai.OpenAI) -> None:
    """A stream with no usage that finished under ``max_tokens: 50`` has at most 50 tokens
    (more than 50 bytes, so the byte bound alone would not let it serve)."""
    q = "What is DNA made of?"
    list(client.chat.completions.create(model="fake-small", stream=True, max_tokens=50,
                                        messages=[{"role": "user", "content": q}]))
    assert len(fake_text("fake-small", q).encode()) > 50
    _, h = ask(client, q, max_tokens=50)
    assert h["x-semcache"] == "hit" and h["x-semcache-usage"] == "estimated"
    assert ask(client, q, max_tokens=49)[1]["x-semcache"] == "miss"


def test_no_store_on_streams_can_be_ignored_but_private_never(
    start: Callable[..., ServerThread], upstream_stats: Stats
) -> None:
    gw = start(stream_no_store="ignore")
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-t", max_retries=0) as client:
        def once(q: str, directive: str, stream: bool) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="fake-small", messages=[{"role": "user", "content": q}], stream=stream,
                extra_headers={"x-fake-cache-control": directive})
            if stream:
                list(raw.parse())
            return raw.headers["x-semcache"]

        assert [once("Who wrote Emma?", "no-store", True) for _ in range(2)] == ["miss", "hit"]
        assert [once("Who wrote Dracula?", "no-store", False)
                for _ in range(2)] == ["miss", "miss"]
        assert [once("Who wrote Ulysses?", "private", True) for _ in range(2)] == ["miss", "miss"]


def test_a_malformed_upstream_event_is_forwarded_and_not_stored(
    gw: ServerThread, upstream_stats: Stats
) -> None:
    """Issue 17, item 9: the tee raised on it and the client's stream ended without [DONE]."""
    body = {"model": "fake-small", "stream": True,
            "messages": [{"role": "user", "content": "What causes earthquakes?"}]}
    for _ in range(2):
        with httpx.stream("POST", f"{gw.url}{CHAT}", json=body, timeout=30,
                          headers={"x-fake-bad-event": "1"}) as r:
            lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
        assert r.headers["x-semcache"] == "miss"
        assert lines[-1] == "data: [DONE]" and any('"zero"' in ln for ln in lines)
    assert upstream_stats()[CHAT] == 2

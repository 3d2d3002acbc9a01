"""The gateway in front of a real OpenAI-compatible server: llama.cpp's own (llama-server) with
SmolLM2-135M-Instruct on the CPU, driven with the official openai client.

Run with ``-m real_model``; they run by default too when the server is installed
(``SEMCACHE_REAL_MODEL=1 bash scripts/install``) and skip with the reason when it is not,
unless SEMCACHE_REQUIRE_REAL_MODEL=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.devtools.real_model import RealModelUnavailable, llama_server
from gateway.devtools.serverthread import ServerThread, free_port
from gateway.embedding import SentenceTransformerEmbedder
from tests.clients import openai_client
from tests.conftest import GatewayFactory

pytestmark = pytest.mark.real_model
MODEL = "smollm2-135m-instruct"
SYSTEM = {"role": "system", "content": "Answer in one or two short sentences."}
Q = "What is the boiling point of water at sea level?"
PARAPHRASE = "At sea level, what is the boiling point of water?"


@pytest.fixture(scope="module")
def llm() -> Iterator[str]:
    try:
        with llama_server(free_port(), n_ctx=512) as base:
            yield base
    except RealModelUnavailable as exc:
        if os.environ.get("SEMCACHE_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(f"{exc} (SEMCACHE_REQUIRE_REAL_MODEL=1 makes this a failure)")
        pytest.skip(str(exc))


@pytest.fixture
def gw(llm: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
       tmp_path: Any) -> ServerThread:
    return gateway_factory(embedder=embedder, upstream_url=llm,
                           database_url=f"sqlite:///{tmp_path}/cache.db")


def client(base: str) -> openai.OpenAI:
    return openai_client(base, api_key="sk-real", timeout=120)


def chat(c: openai.OpenAI, q: str, **kw: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[SYSTEM, {"role": "user", "content": q}], temperature=0,
        max_tokens=64, **kw)


def test_chat_miss_then_paraphrase_hit_with_identical_content_and_usage(
    gw: ServerThread, llm: str
) -> None:
    via = client(f"{gw.url}/v1")
    first = chat(via, Q)
    assert first.headers["x-semcache"] == "miss"
    answer = first.parse()
    assert answer.choices[0].finish_reason == "stop", "the answer must be complete to be stored"
    text = answer.choices[0].message.content
    assert text and text.strip()
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # the same request straight to the server gives the same greedy answer: the gateway
    # forwarded the request unchanged
    direct = chat(client(llm), Q).parse()
    assert direct.choices[0].message.content == text

    hit = chat(via, PARAPHRASE)
    assert hit.headers["x-semcache"] == "hit"
    served = hit.parse()
    assert served.choices[0].message.content == text
    # the stored usage, as the server reported it, every prompt token reported as cached
    assert served.usage is not None and "x-semcache-usage" not in hit.headers
    assert (served.usage.prompt_tokens, served.usage.completion_tokens,
            served.usage.total_tokens) == (usage.prompt_tokens, usage.completion_tokens,
                                           usage.total_tokens)
    assert served.usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens
    assert served.id != answer.id  # a hit is a new completion object


def test_a_stream_from_the_server_is_stored_by_default(gw: ServerThread) -> None:
    """llama-server marks no stream ``no-store`` (llama-cpp-python's server marked every one):
    a streamed miss is stored, and the same question again is a hit."""
    via = client(f"{gw.url}/v1")
    q = "Name the smallest planet in the solar system."
    for expected in ("miss", "hit"):
        with via.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[SYSTEM, {"role": "user", "content": q}], temperature=0,
            max_tokens=64, stream=True,
        ) as resp:
            assert "no-store" not in resp.headers.get("cache-control", "")
            assert resp.headers["x-semcache"] == expected
            list(resp.parse())


def test_streamed_miss_is_stored_and_replayed_as_a_stream(
    llm: str, gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
    tmp_path: Any,
) -> None:
    gw = gateway_factory(embedder=embedder, upstream_url=llm,
                         database_url=f"sqlite:///{tmp_path}/cache.db")
    via = client(f"{gw.url}/v1")
    q = "Name the largest planet in the solar system."
    with via.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[SYSTEM, {"role": "user", "content": q}], temperature=0,
        max_tokens=64, stream=True,
    ) as resp:
        assert resp.headers["x-semcache"] == "miss"
        live = [c for c in resp.parse()]
    live_text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    assert live_text.strip()
    assert live[-1].choices[0].finish_reason == "stop"

    # a non-streamed repeat is served from what the stream stored
    repeat = chat(via, q)
    assert repeat.headers["x-semcache"] == "hit"
    assert repeat.parse().choices[0].message.content == live_text

    # and a streamed repeat is replayed as a valid stream with the same text
    with via.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[SYSTEM, {"role": "user", "content": q}], temperature=0,
        max_tokens=64, stream=True, stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-semcache"] == "hit"
        usage_header = resp.headers.get("x-semcache-usage")
        replayed = [c for c in resp.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == live_text
    assert replayed[0].choices[0].delta.role == "assistant"
    finals = [c for c in replayed if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    # llama.cpp ignores stream_options (no usage chunk in its stream), so the stored answer
    # has no usage: the replay, asked for it, sends an estimate and says so
    assert replayed[-1].usage is not None and replayed[-1].usage.completion_tokens > 0
    assert usage_header == "estimated"


def test_stream_from_the_server_passes_through_chunk_for_chunk(gw: ServerThread,
                                                                 llm: str) -> None:
    """A streamed miss reaches the client as the server's own events."""
    body = {"model": MODEL, "messages": [SYSTEM, {"role": "user", "content": "Say hello."}],
            "temperature": 0, "max_tokens": 16, "stream": True}
    events = []
    for base in (gw.url + "/v1", llm):
        with httpx.stream("POST", f"{base}/chat/completions", json=body, timeout=120,
                          headers={"cache-control": "no-store"}) as r:
            assert r.status_code == 200
            events.append([ln for ln in r.iter_lines() if ln.startswith("data:")])
    via, direct = events
    assert via[-1] == direct[-1] == "data: [DONE]"
    assert len(via) == len(direct)

    def content(lines: list[str]) -> str:
        import json

        return "".join((json.loads(ln[5:])["choices"] or [{}])[0].get("delta", {}).get("content")
                       or "" for ln in lines[:-1])

    assert content(via) == content(direct)


def test_completions_endpoint(gw: ServerThread) -> None:
    via = client(f"{gw.url}/v1")

    def complete(prompt: str, **kw: Any) -> Any:
        return via.completions.with_raw_response.create(
            model=MODEL, prompt=prompt, temperature=0, **kw)

    first = complete("The capital of France is", max_tokens=24, stop=["."])
    assert first.headers["x-semcache"] == "miss"
    done = first.parse()
    assert done.choices[0].finish_reason == "stop" and done.choices[0].text.strip()
    again = complete("The capital of France is", max_tokens=24, stop=["."])
    assert again.headers["x-semcache"] == "hit"
    assert again.parse().choices[0].text == done.choices[0].text
    assert again.parse().usage.completion_tokens == done.usage.completion_tokens
    assert again.parse().usage.prompt_tokens == done.usage.prompt_tokens

    # cut at max_tokens (finish_reason "length"): not stored, the repeat goes upstream again
    cut = complete("Once upon a time", max_tokens=4)
    assert cut.parse().choices[0].finish_reason == "length"
    assert complete("Once upon a time", max_tokens=4).headers["x-semcache"] == "miss"


def test_server_errors_pass_through(gw: ServerThread) -> None:
    via = client(f"{gw.url}/v1")
    too_long = "word " * 700  # beyond the server's 512-token context
    with pytest.raises(openai.BadRequestError) as info:
        via.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": too_long}])
    err = info.value
    assert err.status_code == 400
    assert err.type == "exceed_context_size_error"  # the server's own error, not ours
    assert "context" in err.message
    # the error is not cached: the same request reaches the server again (a cached answer
    # would be a hit; the server's own error comes back, still a miss)
    for _ in range(2):
        r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=120, json={
            "model": MODEL, "messages": [{"role": "user", "content": too_long}]})
        assert r.status_code == 400 and r.headers["x-semcache"] == "miss"
        assert r.json()["error"]["type"] == "exceed_context_size_error"

    # a malformed body is refused by the gateway with 400, before the server sees it
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": MODEL, "messages": "bad"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_async_client(gw: ServerThread) -> None:
    q = "What colour is the sky on a clear day?"
    msgs: Any = [SYSTEM, {"role": "user", "content": q}]
    async with openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="sk-real", max_retries=0,
                                  timeout=120) as via:
        first = await via.chat.completions.with_raw_response.create(
            model=MODEL, messages=msgs, temperature=0, max_tokens=64)
        second = await via.chat.completions.with_raw_response.create(
            model=MODEL, messages=msgs, temperature=0, max_tokens=64)
    assert first.parse().choices[0].finish_reason == "stop"
    assert second.headers["x-semcache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content

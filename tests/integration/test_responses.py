"""The Responses API (`/v1/responses`) through the cache, driven by the official openai client
over real HTTP: plain and streamed, sync and async, previous_response_id, and the bridge to a
backend that has only chat completions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.devtools.fake_upstream import create_fake_app, fake_text
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.clients import openai_client
from tests.conftest import GatewayFactory

Q, PARA = "Who painted the Mona Lisa?", "Who was the painter of the Mona Lisa?"


@pytest.fixture
def gw(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
       tmp_path: Path) -> ServerThread:
    return gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path / 'r.db'}")


@pytest.fixture
def chat_only() -> Iterator[ServerThread]:
    """A backend like llama.cpp's server: chat completions, no /v1/responses."""
    with ServerThread(create_fake_app(responses_api=False)) as server:
        yield server


def _client(url: str, key: str = "sk-resp") -> openai.OpenAI:
    return openai_client(f"{url}/v1", api_key=key)


def _create(c: openai.OpenAI, **kw: Any) -> tuple[Any, dict[str, str]]:
    raw = c.responses.with_raw_response.create(model="fake-small", **kw)
    return raw.parse(), dict(raw.headers)


def _stream(c: openai.OpenAI, **kw: Any) -> tuple[list[Any], dict[str, str]]:
    with c.responses.with_streaming_response.create(model="fake-small", stream=True,
                                                     **kw) as raw:
        headers = dict(raw.headers)
        events = list(raw.parse())
    return events, headers


def _assert_events(events: list[Any]) -> str:
    """The stream the official client parsed: created first, completed last, sequence numbers
    0, 1, 2, ...; the deltas spell the final text. Returns that text."""
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.status == "completed" and deltas == final.output_text
    return str(final.output_text)


def test_miss_then_paraphrase_hit_plain_and_streamed(gw: ServerThread, upstream_stats: Any) -> None:
    with _client(gw.url) as c:
        first, h1 = _create(c, input=Q)
        assert h1["x-semcache"] == "miss"
        assert first.output_text == fake_text("fake-small", Q)
        hit, h2 = _create(c, input=PARA)
        assert h2["x-semcache"] == "hit", h2
        assert float(h2["x-semcache-similarity"]) < 1.0
        assert hit.output_text == first.output_text and hit.id != first.id
        assert hit.id.startswith("resp_") and hit.output[0].id != first.output[0].id
        assert hit.usage.input_tokens_details.cached_tokens == hit.usage.input_tokens
        events, h3 = _stream(c, input=[{"role": "user", "content": PARA}])
        assert h3["x-semcache"] == "hit"
        assert _assert_events(events) == first.output_text
    assert upstream_stats().get("/v1/responses") == 1


def test_streamed_miss_is_stored_and_served_as_json(gw: ServerThread, upstream_stats: Any) -> None:
    q = "What is the boiling point of water at sea level?"
    with _client(gw.url) as c:
        events, h1 = _stream(c, input=q)
        assert h1["x-semcache"] == "miss"
        text = _assert_events(events)
        again, h2 = _create(c, input=[{"type": "message", "role": "user",
                                      "content": [{"type": "input_text", "text": q}]}])
        assert h2["x-semcache"] == "hit" and again.output_text == text
    assert upstream_stats().get("/v1/responses") == 1


async def test_async_client_plain_and_streamed(gw: ServerThread) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="sk-async",
                                  max_retries=0) as c:
        first = await c.responses.create(model="fake-small", input=Q)
        stream = await c.responses.create(model="fake-small", input=PARA, stream=True)
        events = [e async for e in stream]
        assert _assert_events(events) == first.output_text


def test_instructions_and_structured_output_are_in_the_scope(gw: ServerThread) -> None:
    with _client(gw.url) as c:
        assert _create(c, input=Q)[1]["x-semcache"] == "miss"
        assert _create(c, input=Q, instructions="Answer in French.")[1]["x-semcache"] == "miss"
        fmt = {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}
        assert _create(c, input=Q, text=fmt)[1]["x-semcache"] == "miss"
        assert _create(c, input=Q, temperature=0.3, metadata={"k": "v"})[1]["x-semcache"] == "hit"
        hit, _ = _create(c, input=Q, metadata={"mine": "1"})
        assert hit.metadata == {"mine": "1"}  # this request's, not the stored one's


def test_fields_that_bypass_and_unknown_fields(gw: ServerThread) -> None:
    with _client(gw.url) as c:
        _create(c, input=Q)
        for kw, reason in (({"include": ["message.output_text.logprobs"]}, "include"),
                           ({"extra_body": {"not_a_field": 1}}, "unknown_field"),
                           ({"previous_response_id": "resp_never_seen"},
                            "unknown_previous_response")):
            try:
                _, h = _create(c, input=Q, **kw)
            except openai.BadRequestError as exc:  # the upstream does not know that id either
                assert reason == "unknown_previous_response"
                assert exc.response.headers["x-semcache-bypass"] == reason
                continue
            assert (h["x-semcache"], h.get("x-semcache-bypass")) == ("bypass", reason), kw


def test_previous_response_id_keys_the_conversation(gw: ServerThread, upstream_stats: Any) -> None:
    with _client(gw.url) as c:
        a1, _ = _create(c, input="Tell me about the Eiffel Tower.")
        b1, _ = _create(c, input="Tell me about the Colosseum.")
        # the same follow-up after two different first turns: two different answers
        a2, h_a = _create(c, input="When was it built?", previous_response_id=a1.id)
        _, h_b = _create(c, input="When was it built?", previous_response_id=b1.id)
        assert (h_a["x-semcache"], h_b["x-semcache"]) == ("miss", "miss")
        # the same conversation again: a hit for each, never the other's answer
        a3, h = _create(c, input="When was it built?", previous_response_id=a1.id)
        assert h["x-semcache"] == "hit" and a3.output_text == a2.output_text
        # and the same conversation written out by a client that keeps its own history
        written = [{"role": "user", "content": "Tell me about the Eiffel Tower."},
                   {"role": "assistant", "content": a1.output_text},
                   {"role": "user", "content": "When was it built?"}]
        a4, h = _create(c, input=written)
        assert h["x-semcache"] == "hit" and a4.output_text == a2.output_text
        assert upstream_stats()["/v1/responses"] == 4


def test_a_hits_id_continues_the_conversation_upstream(gw: ServerThread) -> None:
    """A hit's id is the gateway's own: the upstream never saw it, so a follow-up naming it is
    sent with the conversation written out (the fake answers 400 to an id it did not make)."""
    with _client(gw.url) as c:
        _create(c, input=Q)
        hit, h = _create(c, input=PARA)
        assert h["x-semcache"] == "hit"
        follow, h = _create(c, input="And where is it kept?", previous_response_id=hit.id)
        assert h["x-semcache"] == "miss"
        assert follow.output_text == fake_text("fake-small", "And where is it kept?")
        # the follow-up's own id is the upstream's, and continues as well
        _, h = _create(c, input="Who owns it?", previous_response_id=follow.id)
        assert h["x-semcache"] == "miss"
        # the hit's id can be retrieved like any response: the gateway answers it
        got = c.responses.retrieve(hit.id)
        assert got.id == hit.id and got.output_text == hit.output_text
        assert c.responses.retrieve(follow.id).output_text == follow.output_text  # upstream's
    with _client(gw.url, "sk-someone-else") as other, pytest.raises(openai.NotFoundError):
        other.responses.retrieve(hit.id)  # not in another tenant's namespace


def test_another_tenant_cannot_use_a_response_id(gw: ServerThread) -> None:
    with _client(gw.url, "sk-tenant-a") as a, _client(gw.url, "sk-tenant-b") as b:
        first, _ = _create(a, input="Tell me about the Eiffel Tower.")
        _create(a, input="When was it built?", previous_response_id=first.id)
        # tenant b names a's response: not known in b's namespace -> bypass, upstream decides
        _, h = _create(b, input="When was it built?", previous_response_id=first.id)
        assert (h["x-semcache"], h.get("x-semcache-bypass")) == ("bypass",
                                                                "unknown_previous_response")


def test_incomplete_answers_are_not_stored_but_their_conversation_is_known(
        gw: ServerThread) -> None:
    with _client(gw.url) as c:
        cut, _ = _create(c, input=Q, max_output_tokens=3)
        assert cut.status == "incomplete"
        assert _create(c, input=Q, max_output_tokens=3)[1]["x-semcache"] == "miss"
        # not stored, yet remembered: a follow-up naming it is keyed, not bypassed
        _, h = _create(c, input="Go on.", previous_response_id=cut.id)
        assert h["x-semcache"] == "miss", h


def test_errors_in_openai_shape(gw: ServerThread) -> None:
    with _client(gw.url) as c:
        with pytest.raises(openai.BadRequestError) as bad:
            c.responses.create(model="fake-small", input=12)  # type: ignore[arg-type]
        assert bad.value.status_code == 400 and str(bad.value.body["param"]).startswith("input")  # type: ignore[index]
        with pytest.raises(openai.RateLimitError):
            c.responses.create(model="fake-small", input="q?",
                               extra_headers={"x-fake-status": "429"})


def test_bridge_serves_responses_from_a_chat_only_backend(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    chat_only: ServerThread,
) -> None:
    url = f"{chat_only.url}/v1"
    plain = gateway_factory(embedder=embedder, upstream_url=url,
                            database_url=f"sqlite:///{tmp_path / 'a.db'}")
    with _client(plain.url) as c, pytest.raises(openai.NotFoundError):
        c.responses.create(model="fake-small", input=Q)  # no bridge: the backend's 404
    bridged = gateway_factory(embedder=embedder, upstream_url=url, responses_bridge=True,
                              database_url=f"sqlite:///{tmp_path / 'b.db'}")
    with _client(bridged.url) as c:
        first, h = _create(c, input=Q, instructions="Be brief.")
        assert h["x-semcache"] == "miss" and first.status == "completed"
        assert first.output_text == fake_text("fake-small", Q)
        assert first.usage.output_tokens > 0
        events, h = _stream(c, input="What is the capital of France?")
        assert h["x-semcache"] == "miss"
        streamed = _assert_events(events)
        assert streamed == fake_text("fake-small", "What is the capital of France?")
        hit, h = _create(c, input=PARA, instructions="Be brief.")
        assert h["x-semcache"] == "hit" and hit.output_text == first.output_text
        # a follow-up: the chat backend keeps no responses, so the gateway writes it out
        follow, h = _create(c, input="Where is it kept?", previous_response_id=first.id)
        assert h["x-semcache"] == "miss"
        assert follow.output_text == fake_text("fake-small", "Where is it kept?")
        sent = httpx.get(f"{chat_only.url}/fake/requests").json()[-1]["body"]
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert sent["messages"][1]["content"] == first.output_text
        # a streamed answer that was cut (not stored) still continues through the bridge
        events, _ = _stream(c, input="Name three rivers.", max_output_tokens=2)
        assert events[-1].type == "response.incomplete"
        more, h = _create(c, input="And two more?", previous_response_id=events[-1].response.id)
        assert h["x-semcache"] == "miss" and more.status == "completed"
        with pytest.raises(openai.BadRequestError) as bad:
            c.responses.create(model="fake-small", input="q?",
                               tools=[{"type": "web_search"}])  # type: ignore[list-item]
        assert bad.value.code == "bridge_unsupported"

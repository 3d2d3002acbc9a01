"""The Responses API's scope table and key (cache/responses_keys.py) and its wire format and
bridge (backend/responses.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai.types.responses.response_create_params as resp_params
import orjson
import pytest

from gateway.backend import responses as wire
from gateway.cache.keys import BYPASS, KEYED, LIMIT, SHAREABLE
from gateway.cache.responses_keys import RESPONSES_FIELDS, responses_key, turns
from gateway.errors import InvalidRequest
from gateway.protocol import ResponsesRequest


def _key(history: list[Any] | None = None, **kw: Any) -> Any:
    kw.setdefault("model", "m")
    kw.setdefault("input", "hello there")
    return responses_key(ResponsesRequest.model_validate(kw), "d", 4000, history=history)


def test_every_field_is_classified() -> None:
    assert set(RESPONSES_FIELDS.values()) <= {KEYED, SHAREABLE, BYPASS, LIMIT}
    assert set(ResponsesRequest.model_fields) == set(RESPONSES_FIELDS), \
        set(ResponsesRequest.model_fields) ^ set(RESPONSES_FIELDS)
    theirs = set(resp_params.ResponseCreateParamsBase.__annotations__) - {"stream"}
    # fields of the official client the table does not know bypass (unknown_field): listed
    # here so that a new one is a decision, not an accident
    assert theirs - set(RESPONSES_FIELDS) <= {"access_programs", "background_options", "image"}


@pytest.mark.parametrize("kw", [
    {"instructions": "Answer in French."}, {"tools": [{"type": "function", "name": "f"}]},
    {"tool_choice": "none"}, {"text": {"format": {"type": "json_object"}}},
    {"reasoning": {"effort": "high"}}, {"truncation": "auto"}, {"model": "other"},
    {"input": [{"role": "developer", "content": "Be terse."}, {"role": "user",
                                                                "content": "hello there"}]},
])
def test_keyed_fields_change_the_scope(kw: dict[str, Any]) -> None:
    assert _key(**kw).scope_hash != _key().scope_hash and _key(**kw).bypass is None


@pytest.mark.parametrize("kw", [
    {"temperature": 0.2}, {"top_p": 0.5}, {"metadata": {"a": "b"}}, {"store": False},
    {"user": "u"}, {"stream": True}, {"include": []}, {"background": False},
    {"top_logprobs": 0}, {"max_output_tokens": 50}, {"service_tier": "flex"},
])
def test_shareable_fields_do_not(kw: dict[str, Any]) -> None:
    k = _key(**kw)
    assert k.scope_hash == _key().scope_hash and k.bypass is None


@pytest.mark.parametrize(("kw", "reason"), [
    ({"include": ["reasoning.encrypted_content"]}, "include"), ({"background": True}, "background"),
    ({"top_logprobs": 3}, "logprobs"), ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt_template"), ({"top_k": 3}, "unknown_field"),
    ({"previous_response_id": "resp_x"}, "unknown_previous_response"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "4"}]}, "tool_result"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
     "non_text_content"),
    ({"input": [{"role": "assistant", "content": "hi"}]}, "last_message_not_user"),
    ({"input": "   "}, "empty_query"),
])
def test_bypasses(kw: dict[str, Any], reason: str) -> None:
    assert _key(**kw).bypass == reason


def test_spellings_of_one_turn_are_one_key() -> None:
    spelled = [
        "hello there",
        [{"role": "user", "content": "hello there"}],
        [{"type": "message", "role": "user",
          "content": [{"type": "input_text", "text": "hello there"}]}],
    ]
    keys = [_key(input=s) for s in spelled]
    assert len({(k.scope_hash, k.context_hash, k.exact_hash) for k in keys}) == 1
    assert keys[0].text == "hello there"


def test_the_conversation_is_the_context() -> None:
    history = turns([{"role": "user", "content": "Tell me about Paris."},
                     {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                      "content": [{"type": "output_text", "text": "Paris is ..."}]}])
    by_id = _key(history=history, previous_response_id="resp_1", input="How old is it?")
    written = _key(input=[{"role": "user", "content": "Tell me about Paris."},
                          {"role": "assistant", "content": "Paris is ..."},
                          {"role": "user", "content": "How old is it?"}])
    first_turn = _key(input="How old is it?")
    assert by_id.bypass is None and by_id.context_hash == written.context_hash != ""
    assert by_id.exact_hash == written.exact_hash != first_turn.exact_hash
    other = _key(history=turns(["Tell me about Rome."]), previous_response_id="resp_2",
                 input="How old is it?")
    assert other.context_hash != by_id.context_hash


def test_storable_only_completed_text() -> None:
    ok = {"status": "completed", "output": [wire.message_item("hi")]}
    assert wire.storable(ok)
    assert not wire.storable({**ok, "status": "incomplete"})
    assert not wire.storable({**ok, "output": [{"type": "function_call", "name": "f"}]})
    assert not wire.storable({**ok, "output": [wire.message_item("  ")]})
    with_reasoning = {**ok, "output": [{"type": "reasoning", "encrypted_content": "x"},
                                       wire.message_item("hi")]}
    assert wire.storable(with_reasoning)
    assert wire.for_storing(with_reasoning)["output"] == [with_reasoning["output"][1]]


def test_to_chat_translates_and_refuses_what_it_cannot() -> None:
    chat = wire.to_chat({
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 20, "stream": True,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
                  {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "4"}],
        "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}}],
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"}})
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert chat["messages"][1]["content"] == "2+2?"
    assert chat["messages"][2]["tool_calls"][0]["function"]["name"] == "add"
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "add", "parameters": {"type": "object"}}}]
    assert chat["response_format"]["json_schema"]["name"] == "n"
    assert (chat["max_tokens"], chat["reasoning_effort"]) == (20, "low")
    assert chat["stream_options"] == {"include_usage": True}
    for bad in ({"tools": [{"type": "web_search"}]}, {"previous_response_id": "r"},
                {"input": [{"type": "mcp_call"}]}):
        with pytest.raises(InvalidRequest):
            wire.to_chat({"model": "m", "input": "x", **bad})


def test_a_chat_answer_as_a_response() -> None:
    conv = wire.ResponsesFromChat({"model": "m", "input": "q"})
    body = orjson.loads(conv.body(orjson.dumps({
        "id": "c", "created": 5, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "partial"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}})))
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "incomplete" and wire.output_text(body) == "partial"
    assert body["usage"]["input_tokens"] == 3 and body["usage"]["total_tokens"] == 5
    assert not wire.storable(body)
    error = b'{"error": {"message": "x"}}'
    assert conv.body(error) == error


def test_a_chat_stream_as_response_events() -> None:
    def chunk(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    chunks = [chunk({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
              chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
              chunk({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
              chunk({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
              b"data: [DONE]\n\n"]

    async def source() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async def collect() -> bytes:
        return b"".join([x async for x in wire.ResponsesFromChat({"model": "m"}).stream(source())])

    out = asyncio.run(collect())
    assembler = wire.ResponsesAssembler()
    events = []
    from gateway.streaming import SSEParser
    for data in SSEParser().feed(out):
        assembler.feed(data)
        events.append(orjson.loads(data))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello"
    result = assembler.result()
    assert result is not None and wire.output_text(result) == "Hello"
    assert result["usage"]["output_tokens"] == 2


def test_replay_spells_the_stored_text() -> None:
    stored = {"id": "resp_1", "object": "response", "status": "completed",
              "output": [wire.message_item("a fairly long answer, longer than one piece")]}
    fresh = wire.fresh(stored, {"metadata": {}})
    assert fresh["id"] != "resp_1" and fresh["output"][0]["id"] != stored["output"][0]["id"]
    from gateway.streaming import SSEParser
    events = [orjson.loads(d) for d in SSEParser().feed(b"".join(wire.replay(fresh)))]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") \
        == wire.output_text(stored)
    assert events[-1]["response"]["id"] == fresh["id"]

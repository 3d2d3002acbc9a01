"""The scope table (issue 16, items 3, 4, 6 and 7): every request field is keyed, shareable,
a limit or a bypass; unknown fields bypass; tenants come from every API key header."""

from __future__ import annotations

import hashlib
from typing import Any

import openai.types.chat.completion_create_params as chat_params
import openai.types.completion_create_params as completion_params
import pytest
from starlette.datastructures import Headers

from gateway.cache.keys import (
    BYPASS,
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    KEYED,
    LIMIT,
    SHAREABLE,
    chat_key,
    completion_key,
    namespace_of,
)
from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, validate


def _chat(**kw: Any) -> ChatCompletionRequest:
    kw.setdefault("model", "m")
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    return ChatCompletionRequest.model_validate(kw)


def _key(**kw: Any) -> Any:
    return chat_key(_chat(**kw), "d", 4000)


def test_every_field_the_gateway_or_the_openai_client_knows_is_classified() -> None:
    """Fails when the request types (ours, or the official client's after an upgrade) gain a
    field the table does not classify."""
    for table, ours, theirs in (
        (CHAT_FIELDS, ChatCompletionRequest, chat_params.CompletionCreateParamsBase),
        (COMPLETION_FIELDS, CompletionRequest, completion_params.CompletionCreateParamsBase),
    ):
        assert set(table.values()) <= {KEYED, SHAREABLE, BYPASS, LIMIT}
        assert set(ours.model_fields) == set(table), set(ours.model_fields) ^ set(table)
        assert set(theirs.__annotations__) - {"stream"} <= set(table), \
            set(theirs.__annotations__) - set(table)


def test_an_unknown_field_bypasses() -> None:
    assert _key(top_k=5).bypass == "unknown_field"
    assert completion_key(CompletionRequest.model_validate(
        {"model": "m", "prompt": "p", "min_p": 0.1}), "d", 4000).bypass == "unknown_field"


@pytest.mark.parametrize("kw", [
    {"stop": ["two"]}, {"stop": "two"}, {"seed": 7}, {"logit_bias": {"50256": -100}},
    {"reasoning_effort": "high"}, {"verbosity": "low"}, {"parallel_tool_calls": False},
    {"response_format": {"type": "json_object"}}, {"prediction": {"type": "content", "content": "x"}},
    {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"tool_choice": "none"},
    {"system": "Answer in French."},
])
def test_keyed_fields_change_the_scope(kw: dict[str, Any]) -> None:
    if "system" in kw:
        kw = {"messages": [{"role": "system", "content": kw["system"]},
                           {"role": "user", "content": "hello"}]}
    assert _key(**kw).scope_hash != _key().scope_hash
    assert _key(**kw).exact_hash != _key().exact_hash


@pytest.mark.parametrize("kw", [
    {"temperature": 0.2}, {"top_p": 0.5}, {"presence_penalty": 1.0}, {"user": "u1"},
    {"metadata": {"a": "b"}}, {"store": True}, {"service_tier": "flex"}, {"n": 1},
    {"logprobs": False}, {"modalities": ["text"]}, {"stream": True},
    {"stream_options": {"include_usage": True}}, {"max_tokens": 50},
])
def test_shareable_fields_do_not(kw: dict[str, Any]) -> None:
    assert _key(**kw).scope_hash == _key().scope_hash and _key(**kw).bypass is None


@pytest.mark.parametrize(("kw", "reason"), [
    ({"n": 2}, "n_greater_than_1"), ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "logprobs"), ({"modalities": ["text", "audio"]}, "audio"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"web_search_options": {}}, "web_search"),
])
def test_bypass_fields(kw: dict[str, Any], reason: str) -> None:
    assert _key(**kw).bypass == reason


def test_max_tokens_is_a_limit_on_the_stored_answer() -> None:
    key = _key(max_tokens=3, max_completion_tokens=5)
    assert key.max_tokens == 3
    assert key.fits(3) and not key.fits(30) and not key.fits(None)
    assert _key().fits(None) and _key().fits(10_000)


@pytest.mark.parametrize("body", [
    {"max_tokens": -5}, {"max_tokens": 0}, {"temperature": "hot"}, {"temperature": -1},
    {"top_p": 2}, {"n": 0}, {"seed": "x"}, {"stop": 3}, {"stream": "yes"},
    {"logit_bias": {"1": "a"}}, {"presence_penalty": 9},
])
def test_invalid_values_are_refused_before_the_cache(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        validate(ChatCompletionRequest, {"model": "m", "messages": [
            {"role": "user", "content": "hi"}], **body})


def test_every_part_of_earlier_turns_is_in_the_context() -> None:
    def turns(first: Any, **last: Any) -> Any:
        return _key(messages=[{"role": "user", "content": first},
                              {"role": "assistant", "content": "It is a cat."},
                              {"role": "user", "content": "What colour is it?", **last}])

    def image(url: str) -> list[dict[str, Any]]:
        return [{"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url}}]

    cat, dog = turns(image("http://x/cat.png")), turns(image("http://x/dog.png"))
    assert cat.bypass is None and cat.text == dog.text
    assert cat.context_hash != dog.context_hash and cat.exact_hash != dog.exact_hash
    audio = turns([{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}])
    file = turns([{"type": "file", "file": {"file_id": "f1"}}])
    assert len({cat.context_hash, audio.context_hash, file.context_hash}) == 3
    # the last message's own fields too (``name``)
    assert turns("x").context_hash != turns("x", name="bob").context_hash
    assert _key(messages=[{"role": "user", "content": "hello", "name": "bob"}]).context_hash != ""


def test_the_coalescing_key_is_the_whole_request_but_its_delivery() -> None:
    base = _key()
    assert _key(max_tokens=9000).request_hash != base.request_hash
    assert _key(temperature=1.5).request_hash != base.request_hash
    assert _key(stream=True, stream_options={"include_usage": True}).request_hash \
        == base.request_hash


def _ns(headers: list[tuple[str, str]], **kw: Any) -> str:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    opts: dict[str, Any] = {"key_namespaces": {}, "anonymous": "default", "trust_header": False,
                            **kw}
    return namespace_of(Headers(raw=raw), **opts)


def test_every_api_key_header_names_a_tenant() -> None:
    victim = _ns([("api-key", "sk-victim")])
    attacker = _ns([("x-api-key", "sk-att")])
    assert victim.startswith("key-") and attacker.startswith("key-")
    assert len({victim, attacker, _ns([])}) == 3
    # the same key is the same tenant whichever header carries it
    assert _ns([("authorization", "Bearer sk-victim")]) == victim
    named = {hashlib.sha256(b"sk-victim").hexdigest(): "team"}
    assert _ns([("api-key", "sk-victim")], key_namespaces=named) == "team"
    both = _ns([("authorization", "Bearer sk-a"), ("api-key", "sk-b")])
    assert both not in (_ns([("authorization", "Bearer sk-a")]), _ns([("api-key", "sk-b")]))


@pytest.mark.parametrize("name", ["authorization", "api-key", "x-api-key"])
def test_a_credential_header_sent_twice_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _ns([(name, ""), (name, "Bearer sk-real")])
    assert err.value.status_code == 400


def test_an_operator_classes_their_engines_own_fields() -> None:
    extra = {"top_k": "keyed", "cache_prompt": "shareable", "guided_json": "bypass"}
    plain = chat_key(_chat(), "d", 4000, extra)

    def key(**kw: Any) -> Any:
        return chat_key(_chat(**kw), "d", 4000, extra)

    assert key(top_k=5).bypass is None and key(top_k=5).scope_hash != plain.scope_hash
    assert key(top_k=5).scope_hash != key(top_k=6).scope_hash
    assert key(cache_prompt=True).scope_hash == plain.scope_hash
    assert key(guided_json={"type": "object"}).bypass == "guided_json"
    assert key(min_p=0.1).bypass == "unknown_field"


def test_tenant_names_and_errors_are_exact() -> None:
    one = _ns([("authorization", "Bearer sk-1")])
    assert one == "key-" + hashlib.sha256(b"sk-1").hexdigest()[:20]
    assert _ns([("api-key", "sk-1")]) == one and _ns([("x-api-key", "  sk-1 ")]) == one
    both = _ns([("authorization", "Bearer sk-1"), ("api-key", "sk-2")])
    assert both.startswith("key-") and len(both) == 24
    assert both != _ns([("authorization", "Bearer sk-1"), ("api-key", "sk-3")])
    assert both != _ns([("authorization", "Bearer sk-2"), ("api-key", "sk-1")])
    with pytest.raises(InvalidRequest) as err:
        _ns([("api-key", "a"), ("api-key", "b")])
    assert (err.value.param, err.value.code) == ("api-key", "duplicate_credentials")
    for bad in ("a b", "x" * 129):
        with pytest.raises(InvalidRequest) as err:
            _ns([("x-semcache-namespace", bad)])
        assert err.value.param == "X-Semcache-Namespace" and "1-128" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        _ns([("authorization", "Bearer k"), ("x-semcache-namespace", "n" * 110)])
    assert err.value.param == "X-Semcache-Namespace" and "at most 128" in err.value.message
    assert _ns([("x-semcache-namespace", "n" * 128)], trust_header=True) == "n" * 128


def test_every_bypass_reason_the_table_gives_is_exported_from_the_start() -> None:
    """BYPASS_REASONS (metrics) is written by hand: a reason added to the scope table but not
    there would appear only with its first request, and rate() over it would be empty."""
    from gateway.cache.keys import _BYPASS_REASON
    from gateway.metrics import BYPASS_REASONS

    assert set(_BYPASS_REASON.values()) <= set(BYPASS_REASONS)

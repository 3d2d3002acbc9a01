from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cache.keys import chat_key, completion_key
from gateway.cache.policy import cache_control, plan
from gateway.config import Settings
from gateway.protocol import ChatCompletionRequest, CompletionRequest


def _chat(**kw: object) -> ChatCompletionRequest:
    kw.setdefault("model", "m")
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    return ChatCompletionRequest.model_validate(kw)


def test_scope_changes_with_model_system_tools_namespace() -> None:
    base = chat_key(_chat(), "default", 100)
    assert base.bypass is None and base.text == "hello" and base.context_hash == ""
    others = [
        chat_key(_chat(model="m2"), "default", 100),
        chat_key(_chat(messages=[{"role": "system", "content": "x"},
                                 {"role": "user", "content": "hello"}]), "default", 100),
        chat_key(_chat(tools=[{"type": "function", "function": {"name": "f"}}]), "default", 100),
        chat_key(_chat(response_format={"type": "json_object"}), "default", 100),
        chat_key(_chat(), "tenant-b", 100),
    ]
    assert len({base.scope_hash, *(k.scope_hash for k in others)}) == 6
    # sampling parameters do not split the cache
    assert chat_key(_chat(temperature=0.2), "default", 100).scope_hash == base.scope_hash


def test_context_is_the_conversation_before_the_last_user_turn() -> None:
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "and in Java?"}]
    k1 = chat_key(_chat(messages=turns), "d", 100)
    turns2 = [{"role": "user", "content": "c"}, *turns[1:]]
    k2 = chat_key(_chat(messages=turns2), "d", 100)
    assert k1.text == k2.text == "and in Java?"
    assert k1.context_hash and k1.context_hash != k2.context_hash
    assert k1.scope_hash == k2.scope_hash


@pytest.mark.parametrize(("kw", "reason"), [
    ({"n": 2}, "n_greater_than_1"),
    ({"logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                   {"role": "tool", "content": "42", "tool_call_id": "1"}]}, "tool_result"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, "non_text_content"),
    ({"messages": [{"role": "user", "content": "   "}]}, "empty_query"),
])
def test_bypass_reasons(kw: dict, reason: str) -> None:
    assert chat_key(_chat(**kw), "d", 100).bypass == reason


def test_text_parts_are_joined_and_only_the_embedding_sees_a_cut_text() -> None:
    k = chat_key(_chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "abc"}, {"type": "text", "text": "def"}]}]), "d", 5)
    assert k.bypass is None and k.truncated
    assert k.text == "abc\ndef" and k.embed_text == "abc\nd"
    # the exact key covers the whole query: a different tail is another key
    other = chat_key(_chat(messages=[{"role": "user", "content": "abc\ndXY"}]), "d", 5)
    assert other.embed_text == k.embed_text and other.exact_hash != k.exact_hash


def test_completion_keys() -> None:
    ok = completion_key(CompletionRequest(model="m", prompt=["only one"]), "d", 100)
    assert ok.bypass is None and ok.text == "only one"
    many = completion_key(CompletionRequest(model="m", prompt=["a", "b"]), "d", 100)
    assert many.bypass == "prompt_not_single_text"
    assert completion_key(CompletionRequest(model="m", prompt="x", echo=True), "d", 100).bypass == "echo"


def test_cache_control_and_plan() -> None:
    assert cache_control(None).lookup and cache_control(None).store
    cc = cache_control("max-age=0, No-Cache")
    assert not cc.lookup and cc.store
    assert not cache_control("no-store").store
    assert plan("logprobs", None, cc).bypass == "logprobs"
    p = plan(None, None, cache_control("no-cache, no-store"))
    assert p.bypass == "cache_control"


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`SEMCACHE_{n.upper()}`" not in readme]
    assert not missing, f"settings missing from README's table: {missing}"


def test_yaml_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9999\nsearch_top_k: 3\n")
    monkeypatch.setenv("SEMCACHE_CONFIG", str(cfg))
    monkeypatch.setenv("SEMCACHE_SEARCH_TOP_K", "7")
    s = Settings()
    assert s.port == 9999 and s.search_top_k == 7  # env beats file


def test_tenants_come_from_api_keys() -> None:
    import hashlib

    from gateway.cache.keys import namespace_of
    from gateway.errors import InvalidRequest

    def ns(headers: dict[str, str], **kw: object) -> str:
        opts: dict = {"key_namespaces": {}, "anonymous": "default", "trust_header": False, **kw}
        return namespace_of(headers, **opts)

    a, b = ns({"authorization": "Bearer sk-a"}), ns({"authorization": "Bearer sk-b"})
    assert a != b and a.startswith("key-") and "sk-a" not in a
    assert ns({}) == "default"
    # the header narrows within the tenant; it cannot reach another tenant
    assert ns({"authorization": "Bearer sk-a", "x-semcache-namespace": "t"}) == f"{a}/t"
    assert ns({"authorization": "Bearer sk-b", "x-semcache-namespace": a}) != a
    shared = {hashlib.sha256(k.encode()).hexdigest(): "team" for k in ("sk-a", "sk-b")}
    assert ns({"authorization": "Bearer sk-a"}, key_namespaces=shared) == "team"
    assert ns({"authorization": "Bearer sk-b"}, key_namespaces=shared) == "team"
    assert ns({"x-semcache-namespace": "edge"}, trust_header=True) == "edge"
    with pytest.raises(InvalidRequest):
        ns({"x-semcache-namespace": "bad space"})


# --- what the mutation run (scripts/mutation) showed no test pinned down -----------------

@pytest.mark.parametrize(("header", "lookup", "store"), [
    (None, True, True), ("", True, True), ("no-cache", False, True), ("no-store", True, False),
    ("No-Cache, NO-STORE", False, False), ("max-age=0, no-cache=\"x\"", False, True),
    ("private", True, True), ("no-storex", True, True),
])
def test_cache_control_directives(header: str | None, lookup: bool, store: bool) -> None:
    cc = cache_control(header)
    assert (cc.lookup, cc.store) == (lookup, store)


def test_plan_in_every_case() -> None:
    from gateway.cache.policy import CacheControl, Plan
    from gateway.categories import load_categories
    from gateway.resources import categories_dir

    cats = load_categories(categories_dir())
    factual, personal = cats["factual"], cats["personal"]
    assert not personal.cacheable and factual.cacheable
    both, neither = CacheControl(True, True), CacheControl(False, False)
    assert plan("logprobs", factual, both) == Plan(False, False, "logprobs")
    assert plan(None, personal, both) == Plan(False, False, "category_not_cacheable")
    assert plan(None, factual, neither) == Plan(False, False, "cache_control")
    assert plan(None, factual, both) == Plan(True, True, None)
    assert plan(None, factual, CacheControl(False, True)) == Plan(False, True, None)
    assert plan(None, factual, CacheControl(True, False)) == Plan(True, False, None)
    assert plan(None, None, both) == Plan(True, True, None)


def test_effective_ttl_without_an_adaptive_maximum() -> None:
    from gateway.cache.policy import effective_threshold, effective_ttl
    from gateway.categories import load_categories
    from gateway.resources import categories_dir

    code = load_categories(categories_dir())["code"]
    plain = code.model_copy(update={"adaptive": None})
    assert effective_ttl(plain, 1.0) == float(code.ttl_seconds)
    assert effective_threshold(plain, 1.0) == code.threshold
    if code.adaptive is not None:
        no_max = code.model_copy(update={"adaptive": code.adaptive.model_copy(
            update={"ttl_max_seconds": None})})
        assert effective_ttl(no_max, 1.0) == float(code.ttl_seconds)


def test_the_key_says_what_it_was_made_from() -> None:
    k = chat_key(_chat(model="m7"), "tenant-x", 100)
    assert (k.endpoint, k.namespace, k.model, k.query) == ("chat", "tenant-x", "m7", "")
    c = completion_key(CompletionRequest(model="m8", prompt="p"), "tenant-y", 100)
    assert (c.endpoint, c.namespace, c.model, c.context_hash) == ("completions", "tenant-y",
                                                                  "m8", "")
    # the truncation flag at its boundary
    assert not chat_key(_chat(messages=[{"role": "user", "content": "x" * 100}]), "d", 100).truncated
    assert chat_key(_chat(messages=[{"role": "user", "content": "x" * 101}]), "d", 100).truncated
    assert not completion_key(CompletionRequest(model="m", prompt="x" * 100), "d", 100).truncated


def test_system_messages_are_scope_not_context() -> None:
    sys_a = chat_key(_chat(messages=[{"role": "system", "content": "A"},
                                     {"role": "user", "content": "hello"}]), "d", 100)
    dev_b = chat_key(_chat(messages=[{"role": "developer", "content": "B"},
                                     {"role": "user", "content": "hello"}]), "d", 100)
    assert sys_a.context_hash == dev_b.context_hash == ""
    assert sys_a.scope_hash != dev_b.scope_hash


def test_only_system_messages_or_a_function_result_last_bypass() -> None:
    assert chat_key(_chat(messages=[{"role": "system", "content": "x"}]), "d", 100).bypass \
        == "last_message_not_user"
    assert chat_key(_chat(messages=[{"role": "user", "content": "x"},
                                    {"role": "function", "name": "f", "content": "1"}]),
                    "d", 100).bypass == "tool_result"
    assert chat_key(_chat(messages=[{"role": "user", "content": "x"},
                                    {"role": "assistant", "content": "y"}]),
                    "d", 100).bypass == "last_message_not_user"


def test_every_earlier_turn_is_in_the_context() -> None:
    def convo(*texts: str) -> str:
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                for i, t in enumerate(texts)]
        return chat_key(_chat(messages=[*msgs, {"role": "user", "content": "and then?"}]),
                        "d", 100).context_hash

    assert convo("a", "b") != convo("a", "c")   # the turn right before the question
    assert convo("a", "b") != convo("z", "b")   # the first one
    assert convo("a", "b", "c", "d") != convo("a", "b", "c", "e")


def test_nul_bypasses_and_the_query_string_is_keyed_in_any_order() -> None:
    assert chat_key(_chat(messages=[{"role": "user", "content": "a\x00b"}]), "d", 100).bypass \
        == "nul_character"
    assert completion_key(CompletionRequest(model="m", prompt="a\x00b"), "d", 100).bypass \
        == "nul_character"
    plain = chat_key(_chat(), "d", 100)
    v1 = chat_key(_chat(), "d", 100, query="api-version=1&x=2")
    assert v1.scope_hash != plain.scope_hash and v1.query == "api-version=1&x=2"
    assert chat_key(_chat(), "d", 100, query="x=2&api-version=1").scope_hash == v1.scope_hash
    assert chat_key(_chat(), "d", 100, query="api-version=2&x=2").scope_hash != v1.scope_hash
    assert v1.request_hash != plain.request_hash
    c1 = completion_key(CompletionRequest(model="m", prompt="p"), "d", 100, query="v=1")
    assert c1.scope_hash != completion_key(CompletionRequest(model="m", prompt="p"),
                                           "d", 100).scope_hash


def test_tenants_are_kept_apart_in_every_key() -> None:
    a, b = chat_key(_chat(), "tenant-a", 100), chat_key(_chat(), "tenant-b", 100)
    assert a.scope_hash != b.scope_hash and a.request_hash != b.request_hash
    assert a.exact_hash != b.exact_hash
    ca = completion_key(CompletionRequest(model="m", prompt="p"), "tenant-a", 100)
    cb = completion_key(CompletionRequest(model="m", prompt="p"), "tenant-b", 100)
    assert ca.scope_hash != cb.scope_hash and ca.request_hash != cb.request_hash


def test_completion_keys_in_full() -> None:
    def key(**kw: object) -> object:
        kw.setdefault("model", "m")
        kw.setdefault("prompt", "Once upon a time")
        return completion_key(CompletionRequest.model_validate(kw), "d", 10,
                              {"min_p": "keyed"}, "")

    assert key(prompt="   ").bypass == "empty_query"  # type: ignore[attr-defined]
    assert key(max_tokens=7).max_tokens == 7  # type: ignore[attr-defined]
    long = key()
    assert long.truncated and long.embed_text == "Once upon " and long.text == "Once upon a time"  # type: ignore[attr-defined]
    assert key(min_p=0.1).bypass is None  # type: ignore[attr-defined]
    assert key(min_p=0.1).scope_hash != key(min_p=0.2).scope_hash  # type: ignore[attr-defined]
    assert key(top_k=3).bypass == "unknown_field"  # type: ignore[attr-defined]
    assert key(stop="x").scope_hash != long.scope_hash  # type: ignore[attr-defined]
    assert key(temperature=0.3).scope_hash == long.scope_hash  # type: ignore[attr-defined]

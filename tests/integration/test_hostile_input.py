"""Hostile input: property-based parsing tests and schemathesis against the running gateway.
Whatever arrives, the answer is never a 5xx and the process stays healthy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cache.keys import chat_key, completion_key
from gateway.embedding import SentenceTransformerEmbedder
from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, parse_json_object, validate
from tests.conftest import GatewayFactory

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "", "x"])
content = st.none() | st.text(max_size=200) | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "audio", "x"])},
                          optional={"text": json_values, "image_url": json_values}), max_size=3)
messages = st.lists(st.fixed_dictionaries({"role": roles}, optional={"content": content,
                                                                    "tool_calls": json_values}),
                    max_size=5)
chat_bodies = st.fixed_dictionaries(
    {}, optional={"model": json_values | st.text(max_size=20), "messages": messages | json_values,
                  "n": json_values, "stream": json_values, "logprobs": json_values,
                  "tools": json_values, "response_format": json_values,
                  "stream_options": json_values, "extra": json_values})


@settings(max_examples=400, deadline=None)
@given(chat_bodies)
def test_chat_parsing_is_total(body: dict[str, Any]) -> None:
    """Any JSON object either is refused with InvalidRequest or yields a usable cache key."""
    raw = json.dumps(body).encode()
    try:
        parsed = validate(ChatCompletionRequest, parse_json_object(raw))
    except InvalidRequest as exc:
        assert exc.status_code == 400 and exc.message
        return
    key = chat_key(parsed, "ns", 4000)
    assert len(key.scope_hash) == 64
    assert key.bypass is not None or key.text.strip()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_refused_cleanly_or_parsed(raw: bytes) -> None:
    for model, keyer in ((ChatCompletionRequest, chat_key), (CompletionRequest, completion_key)):
        try:
            parsed = validate(model, parse_json_object(raw))
        except InvalidRequest:
            continue
        keyer(parsed, "ns", 100)  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None,
                    reason="schemathesis not installed")
def test_schemathesis_finds_no_server_error(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/st.db",
                         admin_key="adm")
    st_bin = str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [st_bin, "run", f"{gw.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--header", "Authorization: Bearer adm",
         "--request-timeout", "30", "--phases", "examples,coverage,fuzzing"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache stays out of the tree
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


@pytest.mark.parametrize("where", ["tools", "response_format", "tool_choice"])
@pytest.mark.parametrize("levels", [254, 300, 1000])
def test_deeply_nested_json_is_a_400(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    where: str, levels: int,
) -> None:
    """Issue 17, item 5: nesting between orjson's write limit (255) and its read limit (1024)
    gave 500 when the scope was hashed."""
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/n.db")
    nested = '{"a": ' * levels + "{}" + "}" * levels  # json.dumps would recurse too deep
    value = f"[{nested}]" if where == "tools" else nested
    raw = ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "'
           + where + '": ' + value + "}")
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert "nested" in r.json()["error"]["message"]


def test_nesting_a_real_schema_uses_is_fine() -> None:
    nested: Any = {"type": "string"}
    for _ in range(40):
        nested = {"type": "object", "properties": {"x": nested}}
    parse_json_object(json.dumps({"model": "m", "tools": [nested]}).encode())


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_admin_key_is_no_key(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    key: str,
) -> None:
    """Issue 17, item 6: SEMCACHE_ADMIN_KEY="" (an unset variable in a compose file) let an empty
    bearer token in."""
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/a.db",
                         admin_key=key)
    for headers in ({}, {"authorization": "Bearer"}, {"x-semcache-admin-key": ""},
                    {"x-semcache-admin-key": key.strip()}):
        r = httpx.get(f"{gw.url}/admin/stats", headers=headers)
        assert r.status_code == 401, (headers, r.status_code)


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["authorization", "api-key", "x-api-key",
                                        "x-semcache-namespace", "x-other"]), header_text),
       st.booleans())
def test_any_header_values_give_a_namespace_the_store_holds_or_a_400(
    headers: dict[str, str], trust: bool
) -> None:
    from gateway.backend.upstream import wire_headers
    from gateway.cache.keys import namespace_of

    try:
        ns = namespace_of(headers, key_namespaces={}, anonymous="default", trust_header=trust)
    except InvalidRequest as exc:
        assert exc.status_code == 400
    else:
        assert 1 <= len(ns) <= 128 and "\x00" not in ns
    wire = wire_headers(headers)  # every value goes upstream as bytes, never raising
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in wire)


nested_json = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=2),
    max_leaves=400,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400), st.sampled_from(["tools", "response_format", "tool_choice",
                                             "metadata", "messages_content"]), nested_json)
def test_nested_json_anywhere_is_refused_cleanly_or_keyed(
    depth: int, where: str, leaf: Any
) -> None:
    value: Any = leaf
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if where == "messages_content":
        body["messages"] = [{"role": "user", "content": "hi", "extra": value},
                            {"role": "user", "content": "again"}]
    else:
        body[where] = value
    nested = json.dumps(body).encode()  # at most ~410 levels: within json's recursion
    try:
        parsed = validate(ChatCompletionRequest, parse_json_object(nested))
    except InvalidRequest as exc:
        assert exc.status_code == 400
        return
    key = chat_key(parsed, "ns", 4000)
    assert len(key.scope_hash) == 64 and len(key.request_hash) == 64


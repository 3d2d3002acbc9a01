"""What of a request the cache looks at: the scope table, the query, its conversation, its tenant.

Every field of an OpenAI (chat) completions request is in exactly one class of the scope table
(``CHAT_FIELDS``, ``COMPLETION_FIELDS``), with the reason beside it:

- ``KEYED``: it changes the answer, so it is in the scope: entries are shared only by requests
  with the same value (``stop``, ``seed``, ``tools`` ...).
- ``SHAREABLE``: it does not change what the answer says (sampling knobs, bookkeeping): a stored
  answer serves any value. Its type and bounds are still checked (``protocol.py``): a value the
  upstream would refuse is refused, not answered from cache.
- ``BYPASS``: set to anything but its neutral value, the request does not use the cache at all
  (``n: 3``, ``logprobs: true``, audio output).
- ``LIMIT``: a cap on the answer's length (``max_tokens``): an entry serves the request only
  when its completion tokens fit under the cap.

A field the table does not know makes the request bypass (``unknown_field``): never silently
ignored. An operator may class the fields of their engine (vLLM's ``top_k``, llama.cpp's
``cache_prompt``) with ``SEMCACHE_EXTRA_FIELDS`` — keyed, shareable or bypass.
``messages`` is keyed piece by piece:

- ``text``: the last user message (chat) or the prompt (completions), whole; the exact key and
  the verifier see all of it. Only the embedding sees a shortened text (``embed_text``); when the
  embedder cannot see all of the query, the request is served only an exact repeat
  (``cache/service.py``).
- ``scope_hash``: endpoint, namespace, the URL's query string (Azure's ``api-version``), the
  system / developer messages (whole) and every keyed field.
- ``context_hash``: the conversation before the last user message, every field of every message
  (content parts of any type — images, audio, files — names, tool calls), and the last user
  message's fields other than its content. A follow-up ("and in Java?") matches only an entry
  made in the very same conversation; a first turn has the empty context.
- ``request_hash``: the whole request but for how it is delivered (``stream``,
  ``stream_options``): what concurrent misses must share to be coalesced.
- ``bypass``: why this request must not use the cache at all, or None.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.errors import InvalidRequest
from gateway.protocol import SYSTEM_ROLES, ChatCompletionRequest, CompletionRequest, Endpoint

_NAMESPACE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
MAX_NAMESPACE = 128  # the store's column

KEYED, SHAREABLE, BYPASS, LIMIT = "keyed", "shareable", "bypass", "limit"

CHAT_FIELDS: dict[str, str] = {
    "model": KEYED,                  # another model's answer is another answer
    "messages": KEYED,               # system -> scope, earlier turns -> context, last -> query
    "tools": KEYED,                  # what the model may call changes what it says
    "tool_choice": KEYED,
    "functions": KEYED,              # (legacy tools)
    "function_call": KEYED,
    "parallel_tool_calls": KEYED,
    "response_format": KEYED,        # JSON mode / a schema: another shape of answer
    "stop": KEYED,                   # an answer cut at "two" is not the whole answer
    "seed": KEYED,                   # asks for one particular, reproducible sample
    "logit_bias": KEYED,             # steers the wording on purpose
    "reasoning_effort": KEYED,       # how hard the model thinks changes the answer
    "verbosity": KEYED,              # how long and detailed the answer is
    "prediction": KEYED,             # predicted output: kept apart rather than assumed neutral
    "moderation": KEYED,             # what the provider filters out of the answer
    "max_tokens": LIMIT,             # served only an answer that fits
    "max_completion_tokens": LIMIT,
    "n": BYPASS,                     # several samples: one stored answer is not that (n=1 ok)
    "logprobs": BYPASS,              # not stored; a hit could not give them
    "top_logprobs": BYPASS,
    "modalities": BYPASS,            # audio output is not stored (["text"] is fine)
    "audio": BYPASS,
    "web_search_options": BYPASS,    # answers from the live web go stale in no time
    "temperature": SHAREABLE,        # sampling knobs: a stored answer is one good sample
    "top_p": SHAREABLE,
    "frequency_penalty": SHAREABLE,
    "presence_penalty": SHAREABLE,
    "stream": SHAREABLE,             # a hit is replayed as a stream when asked
    "stream_options": SHAREABLE,     # include_usage: the replay carries the usage chunk
    "user": SHAREABLE,               # bookkeeping for the provider, not for the answer
    "safety_identifier": SHAREABLE,
    "metadata": SHAREABLE,
    "store": SHAREABLE,              # the provider's own storage of the completion
    "service_tier": SHAREABLE,       # price and latency, not content
    "prompt_cache_key": SHAREABLE,   # the provider's prompt cache: speed, not content
    "prompt_cache_retention": SHAREABLE,
    "prompt_cache_options": SHAREABLE,
}

COMPLETION_FIELDS: dict[str, str] = {
    "model": KEYED,                  # another model's answer is another answer
    "prompt": KEYED,                 # the query itself
    "suffix": KEYED,                 # the text after the insertion point
    "stop": KEYED,                   # as for chat
    "seed": KEYED,
    "logit_bias": KEYED,
    "max_tokens": LIMIT,             # served only an answer that fits
    "n": BYPASS,                     # several samples (n=1 ok)
    "best_of": BYPASS,               # (best_of=1 ok)
    "logprobs": BYPASS,              # not stored
    "echo": BYPASS,                  # the prompt echoed back: not what is stored
    "temperature": SHAREABLE,        # sampling knobs
    "top_p": SHAREABLE,
    "frequency_penalty": SHAREABLE,
    "presence_penalty": SHAREABLE,
    "stream": SHAREABLE,
    "stream_options": SHAREABLE,
    "user": SHAREABLE,
}

# a BYPASS field at one of these values asks for nothing the cache cannot give
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "logprobs": (False,), "top_logprobs": (0,), "echo": (False,),
    "modalities": (["text"],),
}
_BYPASS_REASON = {"n": "n_greater_than_1", "best_of": "n_greater_than_1",
                  "logprobs": "logprobs", "top_logprobs": "logprobs", "echo": "echo",
                  "modalities": "audio", "audio": "audio", "web_search_options": "web_search"}
# how a request is delivered, not what it asks: left out of the coalescing key
_DELIVERY = ("stream", "stream_options")
# where a client may put its API key (OpenAI, Azure, Anthropic-style clients)
CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")


@dataclass(frozen=True)
class RequestKey:
    endpoint: Endpoint
    namespace: str
    model: str
    text: str                   # the whole query
    scope_hash: str
    context_hash: str
    bypass: str | None = None
    truncated: bool = False     # longer than ``max_chars``: the embedding sees only its head
    max_chars: int = 4000
    max_tokens: int | None = None   # LIMIT fields: the longest answer the request accepts
    request_hash: str = ""
    query: str = ""             # the URL's query string (Azure's ?api-version=...): keyed
    # Responses API: the conversation so far, this request's input included (cache/threads.py)
    conversation: list[Any] | None = None

    @property
    def embed_text(self) -> str:
        """What the embedding model is given: the head of a long query."""
        return self.text[: self.max_chars]

    @property
    def exact_hash(self) -> str:
        """Same scope, same conversation, same whole query up to whitespace."""
        text = normalise(self.text)
        return hashlib.sha256(f"{self.scope_hash}|{self.context_hash}|{text}".encode()).hexdigest()

    def fits(self, completion_tokens: int | None) -> bool:
        """Whether a stored answer of (at most) ``completion_tokens`` may serve this request;
        one of unknown length serves only a request without a limit."""
        if self.max_tokens is None:
            return True
        return completion_tokens is not None and completion_tokens <= self.max_tokens


def normalise(text: str) -> str:
    """A query up to whitespace: what the exact-repeat path compares."""
    return " ".join(text.split())


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


def content_text(content: str | list[dict[str, Any]] | None) -> tuple[str, bool]:
    """The text of a message's content, and whether it had parts other than text."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    texts, other = [], False
    for part in content:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            other = True
    return "\n".join(texts), other


def text_bypass(text: str) -> str | None:
    """Why a query's text cannot use the cache, or None: empty, or holding a NUL (no SQL text
    column holds it; the upstream decides)."""
    if not text.strip():
        return "empty_query"
    if "\x00" in text:
        return "nul_character"
    return None


def _credentials(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The API key headers as the upstream receives them; refuses a header sent twice (the
    upstream would get one copy, the tenant would come from another)."""
    getlist = getattr(headers, "getlist", None)
    found: list[tuple[str, str]] = []
    for name in CREDENTIAL_HEADERS:
        values = getlist(name) if getlist is not None else (
            [headers[name]] if name in headers else [])
        if len(values) > 1:
            raise InvalidRequest(f"the {name} header is sent {len(values)} times; send it once",
                                 param=name, code="duplicate_credentials")
        if values and values[0].strip():
            found.append((name, values[0]))
    return found


def _token(name: str, value: str) -> str:
    value = value.strip()
    if name == "authorization" and " " in value:
        value = value.split(" ", 1)[1]
    return value.strip()


def tenant_of(
    headers: Mapping[str, str], key_namespaces: Mapping[str, str], anonymous: str
) -> str:
    """The tenant a request belongs to, from every API key header it carries (Authorization,
    api-key, x-api-key): a configured name (keys given as SHA-256 hex digests, never in clear)
    or ``key-`` + a digest prefix, so different keys never share entries unless configured to.
    No key: the ``anonymous`` namespace."""
    creds = _credentials(headers)
    if not creds:
        return anonymous
    if len(creds) == 1:
        digest = hashlib.sha256(_token(*creds[0]).encode()).hexdigest()
        return key_namespaces.get(digest) or f"key-{digest[:20]}"
    # several keys: the tenant is the combination the upstream sees
    digest = hashlib.sha256("\n".join(f"{n}:{_token(n, v)}" for n, v in creds).encode()).hexdigest()
    return f"key-{digest[:20]}"


def namespace_of(
    headers: Mapping[str, str], *, key_namespaces: Mapping[str, str], anonymous: str,
    trust_header: bool,
) -> str:
    """Tenant from the API key; ``X-Semcache-Namespace`` narrows it to a sub-namespace of that
    tenant, or (``trust_header``, behind a proxy that sets it) names the namespace itself."""
    header = headers.get("x-semcache-namespace")
    if header is not None and not _NAMESPACE.match(header):
        raise InvalidRequest(
            "X-Semcache-Namespace must be 1-128 characters of letters, digits and ._:@-",
            param="X-Semcache-Namespace",
        )
    tenant = tenant_of(headers, key_namespaces, anonymous)
    if header is not None and trust_header:
        return header
    namespace = f"{tenant}/{header}" if header is not None else tenant
    if len(namespace) > MAX_NAMESPACE:
        raise InvalidRequest(
            f"namespace {tenant!r} + '/' + X-Semcache-Namespace is {len(namespace)} characters;"
            f" at most {MAX_NAMESPACE}", param="X-Semcache-Namespace")
    return namespace


def _classify(
    data: dict[str, Any], table: Mapping[str, str], extra: Mapping[str, str] | None,
    neutral: Mapping[str, tuple[Any, ...]] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], int | None, str | None]:
    """The keyed fields' values, the LIMIT, and the bypass reason (or None). ``extra``: the
    operator's classes for fields outside OpenAI's API (``SEMCACHE_EXTRA_FIELDS``)."""
    keyed: dict[str, Any] = {}
    limit: int | None = None
    bypass: str | None = None
    for name, value in data.items():
        kind = table.get(name) or (extra or {}).get(name)
        if kind is None:
            bypass = bypass or "unknown_field"
        elif kind == KEYED:
            keyed[name] = [value] if name == "stop" and isinstance(value, str) else value
        elif kind == LIMIT:
            limit = value if limit is None else min(limit, value)
        elif kind == BYPASS and value not in (neutral or _NEUTRAL).get(name, ()):
            bypass = bypass or (reasons or _BYPASS_REASON).get(name, name)
    return keyed, limit, bypass


def _request_hash(namespace: str, data: dict[str, Any], query: str) -> str:
    return _digest({"namespace": namespace, "query": query,
                    **{k: v for k, v in data.items() if k not in _DELIVERY}})


def _query_scope(query: str) -> dict[str, Any]:
    """The URL's query string in the scope (``api-version`` picks the API an answer comes
    from); parameters in any order are the same query."""
    return {"query": sorted(parse_qsl(query, keep_blank_values=True))} if query else {}


def chat_key(
    req: ChatCompletionRequest, namespace: str, max_chars: int,
    extra: Mapping[str, str] | None = None, query: str = "",
) -> RequestKey:
    data = req.model_dump(exclude_none=True)
    keyed, limit, bypass = _classify(data, CHAT_FIELDS, extra)
    messages = data.pop("messages")
    keyed.pop("messages", None)
    system = [m for m in messages if m.get("role") in SYSTEM_ROLES]
    convo = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
    scope = _digest({"endpoint": "chat", "namespace": namespace, "system": system, **keyed,
                     **_query_scope(query)})
    last = convo[-1] if convo else None
    text, other_parts = content_text(last.get("content")) if last is not None else ("", False)
    if last is None or last.get("role") != "user":
        bypass = bypass or ("tool_result" if last and last.get("role") in ("tool", "function")
                            else "last_message_not_user")
    elif other_parts:
        bypass = bypass or "non_text_content"
    else:
        bypass = bypass or text_bypass(text)
    last_fields = {k: v for k, v in (last or {}).items() if k not in ("role", "content")}
    context: list[Any] = convo[:-1]
    if last_fields:
        context = [*context, {"last": last_fields}]
    return RequestKey(
        endpoint="chat", namespace=namespace, model=req.model, text=text,
        scope_hash=scope, context_hash=_digest(context) if context else "", bypass=bypass,
        truncated=len(text) > max_chars, max_chars=max_chars, max_tokens=limit,
        request_hash=_request_hash(namespace, {**data, "messages": messages}, query),
        query=query,
    )


def completion_key(
    req: CompletionRequest, namespace: str, max_chars: int,
    extra: Mapping[str, str] | None = None, query: str = "",
) -> RequestKey:
    data = req.model_dump(exclude_none=True)
    keyed, limit, bypass = _classify(data, COMPLETION_FIELDS, extra)
    keyed.pop("prompt", None)
    scope = _digest({"endpoint": "completions", "namespace": namespace, **keyed,
                     **_query_scope(query)})
    prompt = req.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        bypass = "prompt_not_single_text"
        prompt = ""
    else:
        bypass = bypass or text_bypass(prompt)
    return RequestKey(
        endpoint="completions", namespace=namespace, model=req.model, text=prompt,
        scope_hash=scope, context_hash="", bypass=bypass, truncated=len(prompt) > max_chars,
        max_chars=max_chars, max_tokens=limit, request_hash=_request_hash(namespace, data, query),
        query=query,
    )

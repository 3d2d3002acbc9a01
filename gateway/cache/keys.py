"""What of a request the cache looks at: the query text, its scope and its conversation.

- ``text``: the last user message (chat) or the prompt (completions); this is what is embedded.
- ``scope_hash``: entries match only requests with the same endpoint, model, namespace, system
  prompt(s), tools / functions / tool_choice, response_format (and completions' suffix).
- ``context_hash``: the conversation before the last user message (roles and texts, system
  excluded since it is in the scope). A follow-up ("and in Java?") matches only an entry cached
  in the very same conversation; a first turn has the empty context.
- ``bypass``: why this request must not use the cache at all, or None.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.protocol import SYSTEM_ROLES, ChatCompletionRequest, CompletionRequest, Endpoint

_NAMESPACE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


@dataclass(frozen=True)
class RequestKey:
    endpoint: Endpoint
    namespace: str
    model: str
    text: str
    scope_hash: str
    context_hash: str
    bypass: str | None = None
    truncated: bool = False

    @property
    def exact_hash(self) -> str:
        """Same scope, same conversation, same query up to whitespace."""
        text = normalise(self.text)
        return hashlib.sha256(f"{self.scope_hash}|{self.context_hash}|{text}".encode()).hexdigest()


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


def tenant_of(authorization: str | None, key_namespaces: Mapping[str, str], anonymous: str) -> str:
    """The tenant a request belongs to, from its API key: a configured name (keys are given
    as SHA-256 hex digests, never in clear) or ``key-`` + a digest prefix, so different keys
    never share entries unless configured to. No key: the ``anonymous`` namespace."""
    if not authorization:
        return anonymous
    token = authorization.split(" ", 1)[1] if " " in authorization else authorization
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    return key_namespaces.get(digest) or f"key-{digest[:20]}"


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
    if header is not None and trust_header:
        return header
    tenant = tenant_of(headers.get("authorization"), key_namespaces, anonymous)
    return f"{tenant}/{header}" if header is not None else tenant


def chat_key(
    req: ChatCompletionRequest, namespace: str, max_chars: int
) -> RequestKey:
    msgs = req.messages
    system = [(m.role, content_text(m.content)[0]) for m in msgs if m.role in SYSTEM_ROLES]
    convo = [m for m in msgs if m.role not in SYSTEM_ROLES]
    scope = _digest({
        "endpoint": "chat", "model": req.model, "namespace": namespace, "system": system,
        "tools": req.tools, "tool_choice": req.tool_choice, "functions": req.functions,
        "response_format": req.response_format,
    })
    bypass = None
    if req.n is not None and req.n > 1:
        bypass = "n_greater_than_1"
    elif req.logprobs or (req.model_extra and req.model_extra.get("top_logprobs")):
        bypass = "logprobs"
    last = convo[-1] if convo else None
    text, other_parts = content_text(last.content) if last is not None else ("", False)
    if last is None or last.role != "user":
        bypass = bypass or ("tool_result" if last and last.role in ("tool", "function")
                            else "last_message_not_user")
    elif other_parts:
        bypass = bypass or "non_text_content"
    elif not text.strip():
        bypass = bypass or "empty_query"
    context = [(m.role, content_text(m.content)[0], bool(m.model_extra and m.model_extra.get("tool_calls")))
               for m in convo[:-1]]
    truncated = len(text) > max_chars
    return RequestKey(
        endpoint="chat", namespace=namespace, model=req.model, text=text[:max_chars],
        scope_hash=scope, context_hash=_digest(context) if context else "", bypass=bypass,
        truncated=truncated,
    )


def completion_key(req: CompletionRequest, namespace: str, max_chars: int) -> RequestKey:
    scope = _digest({
        "endpoint": "completions", "model": req.model, "namespace": namespace,
        "suffix": req.suffix,
    })
    prompt = req.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    bypass = None
    if not isinstance(prompt, str):
        bypass = "prompt_not_single_text"
        prompt = ""
    elif (req.n or 1) > 1 or (req.best_of or 1) > 1:
        bypass = "n_greater_than_1"
    elif req.logprobs is not None:
        bypass = "logprobs"
    elif req.echo:
        bypass = "echo"
    elif not prompt.strip():
        bypass = "empty_query"
    return RequestKey(
        endpoint="completions", namespace=namespace, model=req.model, text=prompt[:max_chars],
        scope_hash=scope, context_hash="", bypass=bypass, truncated=len(prompt) > max_chars,
    )

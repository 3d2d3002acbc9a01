"""What of a Responses request (``POST /v1/responses``) the cache looks at: its scope table and
its key — the same classes and the same pieces as a chat completion's (``cache/keys.py``).

- ``text``: the last input item, a user message of text only (a string ``input`` is one).
- ``scope_hash``: endpoint, namespace, the URL's query string, ``instructions``, the system and
  developer items of the input, every keyed field.
- ``context_hash``: the conversation before the last item — the input's earlier items and, with
  ``previous_response_id``, the whole conversation that response ended (``cache/threads.py``:
  the gateway remembers every response it stored or served). Items are compared by what they
  say, not how they are spelled: ``"hi"``, ``{"role": "user", "content": "hi"}`` and a
  ``message`` item of one ``input_text`` part are the same turn, and an assistant ``message``
  item is its text without ids or status. So a follow-up sent with ``previous_response_id`` and
  the same follow-up sent with the conversation written out (``store: false`` clients) share
  entries. A ``previous_response_id`` the gateway does not know bypasses the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.cache.keys import (
    BYPASS,
    KEYED,
    LIMIT,
    SHAREABLE,
    RequestKey,
    _classify,
    _digest,
    _query_scope,
    _request_hash,
    content_text,
    text_bypass,
)
from gateway.protocol import SYSTEM_ROLES, ResponsesRequest

RESPONSES_FIELDS: dict[str, str] = {
    "model": KEYED,                  # another model's answer is another answer
    "input": KEYED,                  # system items -> scope, earlier items -> context, last -> query
    "instructions": KEYED,           # the system prompt
    "tools": KEYED,                  # what the model may call changes what it says
    "tool_choice": KEYED,
    "parallel_tool_calls": KEYED,
    "max_tool_calls": KEYED,
    "text": KEYED,                   # text.format (structured outputs), text.verbosity
    "reasoning": KEYED,              # effort and summaries change the answer
    "truncation": KEYED,             # "auto" may drop the start of a long conversation
    "moderation": KEYED,             # what the provider filters out of the answer
    "previous_response_id": KEYED,   # (replaced by the conversation it names: the context)
    "max_output_tokens": LIMIT,      # served only an answer that fits
    "top_logprobs": BYPASS,          # not stored (0 is fine)
    "include": BYPASS,               # extra output (logprobs, encrypted reasoning, sources): [] fine
    "background": BYPASS,            # a background job is polled, not answered (false is fine)
    "conversation": BYPASS,          # the provider's own conversation object: not known here
    "prompt": BYPASS,                # a stored prompt template: its text lives at the provider
    "context_management": BYPASS,    # the provider compacts the context: not known here
    "temperature": SHAREABLE,        # sampling knobs: a stored answer is one good sample
    "top_p": SHAREABLE,
    "stream": SHAREABLE,             # a hit is replayed as an event stream when asked
    "stream_options": SHAREABLE,
    "store": SHAREABLE,              # the provider's storage of the response (the gateway
                                     # remembers a hit's response itself: threads.py)
    "metadata": SHAREABLE,           # bookkeeping for the provider, echoed on a hit
    "user": SHAREABLE,
    "safety_identifier": SHAREABLE,
    "service_tier": SHAREABLE,
    "prompt_cache_key": SHAREABLE,
    "prompt_cache_retention": SHAREABLE,
    "prompt_cache_options": SHAREABLE,
}
_NEUTRAL: dict[str, tuple[Any, ...]] = {"top_logprobs": (0,), "include": ([],),
                                        "background": (False,)}
_REASON = {"top_logprobs": "logprobs", "include": "include", "background": "background",
           "conversation": "conversation", "prompt": "prompt_template",
           "context_management": "context_management"}
# fields of the response object that describe the request, not the answer: on a hit they are
# this request's, never the stored one's
ECHOED = ("previous_response_id", "metadata", "user", "safety_identifier", "temperature",
          "top_p", "store", "service_tier")


def turn(item: Any) -> Any:
    """One conversation item by what it says (see the module's docstring)."""
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if not isinstance(item, dict):
        return item
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        text, other = content_text(_as_chat_parts(content))
        return {"role": item.get("role"), "content": content if other else text}
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def _as_chat_parts(content: Any) -> Any:
    """``input_text`` / ``output_text`` parts read as chat's ``text`` parts."""
    if not isinstance(content, list):
        return content
    return [{**p, "type": "text"} if isinstance(p, dict)
            and p.get("type") in ("input_text", "output_text") else p for p in content]


def turns(value: Any) -> list[Any]:
    """A Responses ``input`` (string or items) as conversation items."""
    return [turn(value)] if isinstance(value, str) else [turn(i) for i in value or []]


def responses_key(
    req: ResponsesRequest, namespace: str, max_chars: int,
    extra: Mapping[str, str] | None = None, query: str = "",
    history: list[Any] | None = None,
) -> RequestKey:
    """``history``: the conversation ``previous_response_id`` names, when the gateway knows it
    (None: it does not, and the request bypasses)."""
    data = req.model_dump(exclude_none=True)
    keyed, limit, bypass = _classify(data, RESPONSES_FIELDS, extra, _NEUTRAL, _REASON)
    for name in ("input", "previous_response_id"):
        keyed.pop(name, None)
    items = turns(data.get("input"))
    system = [t for t in items if isinstance(t, dict) and t.get("role") in SYSTEM_ROLES]
    convo = [t for t in items if not (isinstance(t, dict) and t.get("role") in SYSTEM_ROLES)]
    if req.previous_response_id and history is None:
        bypass = bypass or "unknown_previous_response"
    context = [*(history or []), *convo[:-1]]
    scope = _digest({"endpoint": "responses", "namespace": namespace, "system": system,
                     **keyed, **_query_scope(query)})
    last = convo[-1] if convo else None
    text = ""
    if not isinstance(last, dict) or last.get("role") != "user":
        kind = (last or {}).get("type") if isinstance(last, dict) else None
        bypass = bypass or ("tool_result" if kind == "function_call_output"
                            else "last_message_not_user")
    elif not isinstance(last.get("content"), str):
        bypass = bypass or "non_text_content"
    else:
        text = last["content"]
        bypass = bypass or text_bypass(text)
    return RequestKey(
        endpoint="responses", namespace=namespace, model=req.model, text=text,
        scope_hash=scope, context_hash=_digest(context) if context else "", bypass=bypass,
        truncated=len(text) > max_chars, max_chars=max_chars, max_tokens=limit,
        request_hash=_request_hash(namespace, {**data, "history": history or []}, query),
        query=query,  # a conversation only partly known is never remembered
        conversation=None if req.previous_response_id and history is None
        else [*(history or []), *items],
    )


def responses_echo(req: ResponsesRequest) -> dict[str, Any]:
    """The ``ECHOED`` fields of the response object, as this request has them."""
    data = req.model_dump()
    out = {k: data.get(k) for k in ECHOED}
    out["metadata"] = out["metadata"] or {}
    return out

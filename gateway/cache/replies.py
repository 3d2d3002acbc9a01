"""A hit as the answer the client asked for: a fresh id and time, the stored answer's usage (every
prompt token reported cached), JSON or the event stream the official clients parse; and the
token counts a stored answer is judged and credited by."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response

from gateway.backend import responses
from gateway.cache.keys import RequestKey
from gateway.cache.schema import StoredEntry
from gateway.streaming import fresh, replay


@dataclass(frozen=True)
class Hit:
    entry: StoredEntry
    similarity: float


def hit_body(key: RequestKey, hit: Hit, echo: dict[str, Any] | None = None,
             ) -> tuple[dict[str, Any], bool]:
    """The answer a hit gives, and whether its usage is estimated. ``echo``: for the Responses
    API, the response id to give and the fields of the response object that describe this
    request (not the stored one's)."""
    if key.endpoint == "responses":
        body = responses.fresh(hit.entry.response, echo or {})
        body["usage"], estimated = responses_usage(hit.entry, key)
    else:
        body = fresh(key.endpoint, hit.entry.response)
        body["usage"], estimated = hit_usage(hit.entry, key)
    return body, estimated


def render_hit(key: RequestKey, hit: Hit, out: dict[str, str], *, stream: bool,
               include_usage: bool, rendered: tuple[dict[str, Any], bool] | None = None,
               ) -> Response:
    """``rendered``: ``hit_body``'s result, when the caller needed it first."""
    body, estimated = rendered or hit_body(key, hit)
    headers = {
        **out, "x-semcache": "hit", "x-semcache-similarity": f"{hit.similarity:.4f}",
        "age": str(max(0, int(time.time() - hit.entry.created_at))),
    }
    if estimated:
        headers["x-semcache-usage"] = "estimated"
    if hit.entry.id:  # a coalesced answer has no row of its own
        headers["x-semcache-entry"] = str(hit.entry.id)
    if stream:
        # the whole answer is at hand: all events in one body (still a valid event stream),
        # instead of one thread hop per chunk
        events = responses.replay(body) if key.endpoint == "responses" \
            else replay(key.endpoint, body, include_usage=include_usage)
        return Response(b"".join(events), media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def token_bound(entry: StoredEntry) -> int | None:
    """The answer's completion tokens, or where the upstream gave no count (a stream stored
    without ``include_usage``; llama.cpp sends none) a bound: the limit it was made under, or
    its UTF-8 bytes, which no tokenizer exceeds (a byte-level BPE or SentencePiece token covers
    at least one byte)."""
    if entry.completion_tokens is not None:
        return entry.completion_tokens
    bounds = [entry.completion_tokens_max] if entry.completion_tokens_max is not None else []
    if isinstance(entry.response.get("choices"), list) or entry.response.get("object") == "response":
        bounds.append(sum(len(text.encode()) for text in answer_texts(entry)))
    return min(bounds) if bounds else None


def answer_texts(entry: StoredEntry) -> list[str]:
    """The text of each choice of a stored answer (chat message content or completion text;
    a Responses object's output text)."""
    if entry.response.get("object") == "response":
        return [responses.output_text(entry.response)]
    return [(ch.get("message") or {}).get("content") or ch.get("text") or ""
            for ch in entry.response.get("choices", [])]


def hit_usage(entry: StoredEntry, key: RequestKey) -> tuple[dict[str, Any], bool]:
    """A hit's ``usage``, in the shape OpenAI clients read, and whether it is estimated: the
    stored answer's own counts (about four characters a token where the upstream gave none:
    ``X-Semcache-Usage: estimated``), every prompt token reported as cached
    (``prompt_tokens_details.cached_tokens``): nothing was computed for this one."""
    stored = entry.response.get("usage") or {}
    completion, prompt = stored.get("completion_tokens"), stored.get("prompt_tokens")
    estimated = not isinstance(completion, int) or not isinstance(prompt, int)
    if not isinstance(completion, int):
        completion = completion_tokens(entry)
    if not isinstance(prompt, int):
        prompt = max(1, len(key.text) // 4)
    usage = {**stored, "prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {**(stored.get("prompt_tokens_details") or {}),
                                       "cached_tokens": prompt}}
    return usage, estimated


def responses_usage(entry: StoredEntry, key: RequestKey) -> tuple[dict[str, Any], bool]:
    """``hit_usage`` in the Responses API's shape (input / output tokens)."""
    stored = entry.response.get("usage") or {}
    output, given = stored.get("output_tokens"), stored.get("input_tokens")
    estimated = not isinstance(output, int) or not isinstance(given, int)
    output = output if isinstance(output, int) else completion_tokens(entry)
    given = given if isinstance(given, int) else max(1, len(key.text) // 4)
    return {**stored, "input_tokens": given, "output_tokens": output,
            "total_tokens": given + output,
            "input_tokens_details": {**(stored.get("input_tokens_details") or {}),
                                     "cached_tokens": given},
            "output_tokens_details": stored.get("output_tokens_details")
            or {"reasoning_tokens": 0}}, estimated


def completion_tokens(entry: StoredEntry) -> int:
    """Tokens the hit saved: the stored usage, else about four characters per token."""
    if entry.completion_tokens is not None:
        return entry.completion_tokens
    return max(1, sum(len(text) for text in answer_texts(entry)) // 4)


def stored_usage(response: dict[str, Any]) -> dict[str, Any]:
    """The answer's token counts as chat names them (a Responses object says input / output)."""
    usage = response.get("usage") or {}
    if response.get("object") == "response":
        return {"prompt_tokens": usage.get("input_tokens"),
                "completion_tokens": usage.get("output_tokens")}
    return usage

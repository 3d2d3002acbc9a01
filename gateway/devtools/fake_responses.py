"""The fake upstream's ``POST /v1/responses``, written like a real server and apart from the
gateway's own Responses code (so a test compares two implementations, not one with itself).

The answer text is the fake's chat answer to the last user message (``fake_text``); it keeps
every response it made, so ``previous_response_id`` works as on OpenAI's API and an id it never
made gets 400 ``previous_response_not_found``. ``max_output_tokens`` cuts the answer (status
``incomplete``). Headers steer it as they steer the chat endpoint: ``x-fake-status``,
``x-fake-delay``, ``x-fake-chunk-delay``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))


def add_responses(app: FastAPI, answer: Callable[[str, str], str], stats: Counter[str],
                  chunk_delay_s: float = 0.0) -> None:
    made: dict[str, list[dict[str, str]]] = {}
    kept: dict[str, dict[str, Any]] = {}

    @app.get("/v1/responses/{response_id}")
    async def retrieve(response_id: str, request: Request) -> Response:
        stats[request.url.path] += 1
        if response_id not in kept:
            return bad(f"No response found with id '{response_id}'.", "response_id",
                       "not_found", status=404)
        return JSONResponse(kept[response_id])

    def bad(message: str, param: str, code: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                       "param": param, "code": code}}, status_code=status)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        stats[request.url.path] += 1
        h = request.headers
        if delay := float(h.get("x-fake-delay", 0)):
            await asyncio.sleep(delay)
        if status := int(h.get("x-fake-status", 0)):
            return JSONResponse({"error": {"message": f"fake upstream error {status}",
                                           "type": "server_error", "param": None,
                                           "code": str(status)}}, status_code=status)
        body = orjson.loads(await request.body())
        model = str(body.get("model", "fake"))
        history: list[dict[str, str]] = []
        if prev := body.get("previous_response_id"):
            if prev not in made:
                return bad(f"Previous response with id '{prev}' not found.",
                           "previous_response_id", "previous_response_not_found")
            history = made[prev]
        given = body.get("input")
        turns = [{"role": "user", "content": given}] if isinstance(given, str) else [
            {"role": str(i.get("role", "")), "content": _text_of(i.get("content"))}
            for i in given or [] if isinstance(i, dict) and i.get("type", "message") == "message"]
        users = [t["content"] for t in turns if t["role"] == "user"]
        if not users:
            return bad("input has no user message", "input", "invalid_value")
        text = answer(model, users[-1])
        status_ = "completed"
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and 0 < limit < len(text.split()):
            text, status_ = " ".join(text.split()[:limit]), "incomplete"
        rid, mid = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
        made[rid] = [*history, *turns, {"role": "assistant", "content": text}]
        words_in = sum(len(t["content"].split()) for t in made[rid][:-1])
        usage = {"input_tokens": words_in, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": len(text.split()),
                 "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": words_in + len(text.split())}
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {"id": mid, "type": "message", "status": "completed", "role": "assistant",
                "content": [part]}
        whole = {"id": rid, "object": "response", "created_at": int(time.time()),
                 "status": status_, "model": model, "output": [item], "usage": usage,
                 "error": None,
                 "incomplete_details": {"reason": "max_output_tokens"}
                 if status_ == "incomplete" else None,
                 "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
                 "previous_response_id": prev, "parallel_tool_calls": True,
                 "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                 "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
                 "text": body.get("text") or {"format": {"type": "text"}}}
        kept[rid] = whole
        if not body.get("stream"):
            return JSONResponse(whole)
        delay_each = float(h.get("x-fake-chunk-delay", chunk_delay_s))

        async def events() -> AsyncIterator[bytes]:
            n = 0

            def ev(kind: str, **fields: Any) -> bytes:
                nonlocal n
                n += 1
                return (f"event: {kind}\n".encode() + b"data: "
                        + orjson.dumps({"type": kind, "sequence_number": n - 1, **fields})
                        + b"\n\n")

            opening = {**whole, "status": "in_progress", "output": [], "usage": None}
            yield ev("response.created", response=opening)
            yield ev("response.in_progress", response=opening)
            yield ev("response.output_item.added", output_index=0,
                     item={**item, "status": "in_progress", "content": []})
            at = {"item_id": mid, "output_index": 0, "content_index": 0}
            yield ev("response.content_part.added", **at, part={**part, "text": ""})
            words = text.split(" ")
            for i, w in enumerate(words):
                if delay_each:
                    await asyncio.sleep(delay_each)
                piece = w if i == len(words) - 1 else w + " "
                yield ev("response.output_text.delta", **at, delta=piece, logprobs=[])
            yield ev("response.output_text.done", **at, text=text, logprobs=[])
            yield ev("response.content_part.done", **at, part=part)
            yield ev("response.output_item.done", output_index=0, item=item)
            final = "response.completed" if status_ == "completed" else "response.incomplete"
            yield ev(final, response=whole)

        return StreamingResponse(events(), media_type="text/event-stream")

"""A small deterministic OpenAI-compatible LLM, for the demo and the tests.

Answers are a pure function of (model, last user message), so a test can tell a cached answer
from a fresh one. Behaviour is steered per request by headers (the gateway forwards them):

    x-fake-status: 429          answer with this error status (OpenAI error body)
    x-fake-delay: 1.5           seconds to wait before the status line
    x-fake-chunk-delay: 0.2     seconds between stream chunks (default: the app's setting)
    x-fake-cut-after: 3         break the connection after this many stream chunks
    x-fake-finish: length       finish_reason to report (default "stop")
    x-fake-bad-json: 1          answer 200 with a body that is not JSON
    x-fake-ok-status: 203       answer with this success status instead of 200
    x-fake-cache-control: v     send ``Cache-Control: v`` with the answer
    x-fake-refusal: 1           refuse (``message.refusal``, repeated as the content)
    x-fake-empty: 1             answer with empty content
    x-fake-bad-event: 1         put a parseable but malformed event in the stream

Like a real server (llama.cpp's, measured in tests/integration/test_real_model.py), it honours
``max_tokens`` (the answer is cut, ``finish_reason: "length"``) and ``stop`` (the answer ends
before the first stop string, ``finish_reason: "stop"``), and has a context window
(``context_tokens``; a longer prompt gets 400 ``context_length_exceeded``). Tokens are words.

``GET /fake/stats`` tells how many requests each path received; ``POST /fake/reset`` zeroes it.
``GET /metrics`` exports the load gauges vLLM exports (same names), from the requests in flight.

As a backend replica behind the router it also keeps a pretend KV cache of chunks (list-of-parts
message contents, ``gateway.backend.chunks``): ``vllm:prefix_cache_queries``/``hits`` count their
tokens, and ``GET /fake/requests`` lists the recent request bodies with their chunk digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as Counter_
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.backend.chunks import request_chunks
from gateway.devtools.fake_responses import add_responses

_WORDS = (
    "the a cache model answer token vector index query result value system fast data "
    "request latency store memory simple clear exact quick useful stable"
).split()


def fake_text(model: str, prompt: str, n_words: int = 24) -> str:
    digest = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    words = [_WORDS[b % len(_WORDS)] for b in digest[:n_words]]
    return f'Answer to "{prompt[:80]}": ' + " ".join(words) + "."


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def create_fake_app(
    *, chunk_delay_s: float = 0.0, capacity: int | None = None, service_time_s: float = 0.0,
    context_tokens: int = 8192, responses_api: bool = True,
) -> FastAPI:
    """``capacity``: like a GPU server, at most this many requests are generated at once, each
    taking ``service_time_s``; the rest queue (``vllm:num_requests_waiting``), so latency
    follows the queue. ``responses_api``: serve ``/v1/responses`` (``fake_responses``); off,
    it is a chat-only server like llama.cpp's (404)."""
    app = FastAPI(title="semcache fake upstream")
    slots = asyncio.Semaphore(capacity) if capacity else None
    stats: Counter[str] = Counter()
    registry = CollectorRegistry()
    labels = ["model_name"]
    running = Gauge("vllm:num_requests_running", "Requests being generated.", labels,
                    registry=registry)
    waiting = Gauge("vllm:num_requests_waiting", "Requests queued.", labels, registry=registry)
    kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full.", labels,
                     registry=registry)
    for g in (running, waiting, kv_usage):
        g.labels("fake").set(0)
    queries = Counter_("vllm:prefix_cache_queries", "Prefix cache queried tokens.", labels,
                       registry=registry)
    hits = Counter_("vllm:prefix_cache_hits", "Prefix cache hit tokens.", labels,
                    registry=registry)
    kv_chunks: set[bytes] = set()
    recent: deque[dict[str, Any]] = deque(maxlen=500)

    def record(path: str, body: dict[str, Any], query: str = "") -> None:
        endpoint = "chat" if path.endswith("chat/completions") else "completions"
        chunks = request_chunks(endpoint, body, None)
        for c in chunks:
            queries.labels("fake").inc(c.tokens)
            if c.digest in kv_chunks:
                hits.labels("fake").inc(c.tokens)
            kv_chunks.add(c.digest)
        recent.append({"path": path, "query": query, "body": body,
                       "chunks": [c.digest.hex() for c in chunks]})

    @app.get("/fake/requests")
    async def get_requests() -> list[dict[str, Any]]:
        return list(recent)

    @app.post("/fake/load")
    async def set_load(request: Request) -> dict[str, float]:
        """Tests steer the load the fake reports: {"waiting": n, "kv": 0..1}."""
        body = orjson.loads(await request.body())
        waiting.labels("fake").set(float(body.get("waiting", 0)))
        kv_usage.labels("fake").set(float(body.get("kv", 0)))
        return {"waiting": float(body.get("waiting", 0)), "kv": float(body.get("kv", 0))}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def error(status: int, message: str) -> JSONResponse:
        kind = "rate_limit_error" if status == 429 else "server_error"
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": None, "code": str(status)}},
            status_code=status,
        )

    async def generate(request: Request, chat: bool) -> Response:
        stats[request.url.path] += 1
        if slots is not None:  # a backend of fixed capacity: queue, then generate
            waiting.labels("fake").inc()
            try:
                await slots.acquire()
            finally:
                waiting.labels("fake").dec()
            try:
                running.labels("fake").inc()
                await asyncio.sleep(service_time_s)
                return await _generate(request, chat)
            finally:
                running.labels("fake").dec()
                slots.release()
        running.labels("fake").inc()
        try:
            response = await _generate(request, chat)
        except BaseException:  # e.g. the client went away during the delay
            running.labels("fake").dec()
            raise
        if isinstance(response, StreamingResponse):
            inner = response.body_iterator

            async def counted() -> AsyncIterator[bytes]:
                try:
                    async for chunk in inner:
                        yield chunk  # type: ignore[misc]
                finally:
                    running.labels("fake").dec()

            response.body_iterator = counted()
        else:
            running.labels("fake").dec()
        return response

    async def _generate(request: Request, chat: bool) -> Response:
        h = request.headers
        if delay := float(h.get("x-fake-delay", 0)):
            await asyncio.sleep(delay)
        if status := int(h.get("x-fake-status", 0)):
            return error(status, f"fake upstream error {status}")
        if h.get("x-fake-bad-json"):
            return Response(b"{not json", media_type="application/json")
        body = orjson.loads(await request.body())
        record(request.url.path, body, request.url.query)
        model = body.get("model", "fake")
        prompt = _last_user_text(body["messages"]) if chat else str(body.get("prompt", ""))
        text = fake_text(model, prompt)
        finish = h.get("x-fake-finish", "stop")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        prompt_tokens = _tokens(" ".join(
            str(m.get("content") or "") for m in body["messages"]) if chat else prompt)
        if prompt_tokens + (limit or 0) > context_tokens:
            return JSONResponse({"error": {
                "message": f"This model's maximum context length is {context_tokens} tokens. "
                f"However, you requested {prompt_tokens + (limit or 0)} tokens.",
                "type": "invalid_request_error", "param": "messages" if chat else "prompt",
                "code": "context_length_exceeded"}}, status_code=400)
        stops = body.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            if stop and stop in text:
                text = text[: text.index(stop)]
        if h.get("x-fake-empty"):
            text = ""
        if isinstance(limit, int) and 0 < limit < _tokens(text):
            text, finish = " ".join(text.split()[:limit]), "length"
        extra_headers = {"cache-control": h["x-fake-cache-control"]} \
            if "x-fake-cache-control" in h else {}
        ok_status = int(h.get("x-fake-ok-status", 200))
        refusal = "I can't help with that." if h.get("x-fake-refusal") else None
        rid = ("chatcmpl-" if chat else "cmpl-") + hashlib.md5(str(time.time_ns()).encode()).hexdigest()
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _tokens(text),
            "total_tokens": prompt_tokens + _tokens(text),
        }
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                # some servers put the refusal in the content too
                choice["message"] = {"role": "assistant", "content": refusal or text,
                                     "refusal": refusal}
            else:
                choice["text"] = text
            obj = "chat.completion" if chat else "text_completion"
            payload = {"id": rid, "object": obj, "created": created, "model": model,
                       "choices": [choice], "usage": usage}
            if "x-fake-cut-after" in h:  # half the body, then a broken connection
                data = orjson.dumps(payload)

                async def cut() -> AsyncIterator[bytes]:
                    yield data[: len(data) // 2]
                    raise ConnectionResetError("fake upstream cut the body")

                return StreamingResponse(cut(), media_type="application/json")
            return JSONResponse(payload, status_code=ok_status, headers=extra_headers)

        chunk_delay = float(h.get("x-fake-chunk-delay", chunk_delay_s))
        cut_after = int(h.get("x-fake-cut-after", -1))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip()

        def event(choice: dict[str, Any], usage_value: Any = None) -> bytes:
            obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                   "created": created, "model": model, "choices": [choice]}
            if include_usage:
                obj["usage"] = usage_value
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            if chat:
                yield event({"index": 0, "delta": {"role": "assistant", "content": ""},
                             "finish_reason": None})
            if refusal:
                yield event({"index": 0, "delta": {"refusal": refusal}, "finish_reason": None})
                pieces.clear()
            if h.get("x-fake-bad-event"):
                yield b'data: {"choices": [{"index": "zero", "delta": {"content": ["x"]}}]}\n\n'
            for i, piece in enumerate(pieces):
                if i == cut_after:
                    raise ConnectionResetError("fake upstream cut the stream")
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)
                if chat:
                    yield event({"index": 0, "delta": {"content": piece}, "finish_reason": None})
                else:
                    yield event({"index": 0, "text": piece, "logprobs": None,
                                 "finish_reason": None})
            last: dict[str, Any] = {"index": 0, "finish_reason": finish}
            last.update({"delta": {}} if chat else {"text": "", "logprobs": None})
            yield event(last)
            if include_usage:
                obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                       "created": created, "model": model, "choices": [], "usage": usage}
                yield b"data: " + orjson.dumps(obj) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 status_code=ok_status, headers=extra_headers)

    if responses_api:
        add_responses(app, fake_text, stats, chunk_delay_s)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        stats[request.url.path] += 1
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "semcache-fake"}
            for name in ("fake-small", "fake-large")
        ]}

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request) -> dict[str, Any] | JSONResponse:
        stats[request.url.path] += 1
        try:
            body = orjson.loads(await request.body())
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return JSONResponse({"error": {"message": "body must be {input: ...}",
                                           "type": "invalid_request_error", "param": "input",
                                           "code": None}}, status_code=400)
        data = []
        for i, text in enumerate(inputs):
            digest = hashlib.sha256(str(text).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(b / 255 - 0.5, 6) for b in digest[:8]]})
        return {"object": "list", "data": data, "model": body.get("model", "fake"),
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}}

    @app.api_route("/v1/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(rest: str, request: Request) -> Response:
        stats[request.url.path] += 1
        body = await request.body()
        status = int(request.query_params.get("status", 200))
        return JSONResponse(
            {"method": request.method, "path": rest, "query": request.url.query,
             "headers": dict(request.headers), "body": body.decode("utf-8", "replace")},
            status_code=status, headers={"x-fake-echo": "yes"},
        )

    @app.get("/fake/stats")
    async def get_stats() -> dict[str, Any]:
        return {"requests": dict(stats)}

    @app.post("/fake/reset")
    async def reset() -> dict[str, str]:
        stats.clear()
        recent.clear()
        kv_chunks.clear()
        waiting.labels("fake").set(0)
        kv_usage.labels("fake").set(0)
        return {"status": "reset"}

    return app

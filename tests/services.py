"""A cache service in-process over a mock upstream, for tests that drive the cache itself (not
through HTTP). The upstream's answer names the model, the client's key and the question, so a
test can tell whose answer it was served."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from gateway.backend.upstream import Upstream
from gateway.cache.service import CacheService
from gateway.config import Settings
from gateway.metrics import Metrics


def answer(model: str, question: str, key: str = "") -> str:
    return f"[{model}{key}] the answer to: {question}"


def mock_upstream(request: httpx.Request) -> httpx.Response:
    body = orjson.loads(request.content)
    question = body["messages"][-1]["content"]
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    return httpx.Response(200, json={
        "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": answer(body["model"], question, key)}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    })


async def start_service(settings: Settings, embedder: Any) -> CacheService:
    """Started and warm (its indexes loaded); ``stop_service`` closes it and its upstream."""
    metrics = Metrics()
    upstream = Upstream(settings, metrics, transport=httpx.MockTransport(mock_upstream))
    svc = await CacheService.start(settings, upstream, metrics, embedder=embedder)
    try:
        await asyncio.wait_for(svc.warm.wait(), 30)
    except BaseException:
        await stop_service(svc)
        raise
    return svc


async def stop_service(svc: CacheService) -> None:
    upstream = svc.upstream
    await svc.aclose()
    await upstream.aclose()

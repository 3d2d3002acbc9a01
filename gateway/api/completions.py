"""The OpenAI endpoints: chat completions, completions and responses go through the cache;
models and embeddings are proxied."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.backend.forwarding import forward_completion, forward_raw
from gateway.cache import threads
from gateway.deps import ServicesDep
from gateway.errors import NotFound
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Endpoint,
    ResponsesRequest,
    json_body,
    parse_json_object,
    read_body,
    validate,
)

router = APIRouter(tags=["openai"])


async def _complete(endpoint: Endpoint, request: Request, services: ServicesDep) -> Response:
    raw = await read_body(request, services.settings.max_request_bytes,
                          services.settings.client_body_timeout_s)
    data = parse_json_object(raw)
    model = {"chat": ChatCompletionRequest, "completions": CompletionRequest,
             "responses": ResponsesRequest}[endpoint]
    parsed = validate(model, data)
    if services.cache is not None:
        return await services.cache.complete(request.headers, raw, parsed,
                                             query=request.url.query)
    services.metrics.requests.labels("-", "bypass").inc()
    services.metrics.bypasses.labels("cache_disabled").inc()
    return await forward_completion(
        services.upstream, endpoint, request.headers, raw, stream=parsed.stream,
        on_complete=None, extra_headers={"x-semcache": "bypass", "x-semcache-bypass": "cache_disabled"},
        query=request.url.query,
    )


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request, services: ServicesDep) -> Response:
    return await _complete("chat", request, services)


@router.post("/v1/completions", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request, services: ServicesDep) -> Response:
    return await _complete("completions", request, services)


@router.post("/v1/responses", openapi_extra=json_body(ResponsesRequest))
async def responses(request: Request, services: ServicesDep) -> Response:
    return await _complete("responses", request, services)


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request, services: ServicesDep) -> Response:
    """A response the gateway served under an id of its own (a hit) is answered here; any other
    id is the upstream's."""
    if response_id in (".", "..") or "\\" in response_id:
        raise NotFound(f"no such response: {response_id!r}")
    if services.cache is not None:
        found = await threads.stored_response(services.cache.store, services.settings,
                                              request.headers, response_id)
        if found is not None:
            return Response(orjson.dumps(found), media_type="application/json",
                            headers={"x-semcache": "hit"})
    return await forward_raw(services.upstream, request, f"responses/{response_id}", b"")


@router.get("/v1/models")
async def models(request: Request, services: ServicesDep) -> Response:
    return await forward_raw(services.upstream, request, "models", b"")


@router.post("/v1/embeddings")
async def embeddings(request: Request, services: ServicesDep) -> Response:
    body = await read_body(request, services.settings.max_request_bytes,
                           services.settings.client_body_timeout_s)
    return await forward_raw(services.upstream, request, "embeddings", body)

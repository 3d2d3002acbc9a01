"""The OpenAI endpoints: chat completions, completions and responses go through the cache;
models and embeddings are proxied."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.backend.forwarding import forward_completion, forward_raw
from gateway.cache import threads
from gateway.deps import ServicesDep, get_services
from gateway.errors import NotFound, SemcacheError, from_exception, http_error
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


_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses"}


class CompletionsFastPath:
    """The three cached endpoints' POSTs go straight to ``_complete``, not through FastAPI's
    router: matching every route and solving the dependency costs about 0.4 ms a request (a
    tenth of an exact hit). Their routes below stay for the OpenAPI schema and as what the path
    would do anyway; errors leave in the same envelope (``errors.py``), and anything else
    propagates to ``RequestIdMiddleware``, which answers 500 with the request id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _complete(endpoint, request, get_services(request))
        except SemcacheError as exc:
            response = from_exception(exc)
        except StarletteHTTPException as exc:
            response = http_error(exc)
        await response(scope, receive, send)


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

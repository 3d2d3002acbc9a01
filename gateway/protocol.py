"""OpenAI request shapes, as much as the gateway needs to read them.

The models allow extra fields and are only *read*: the body forwarded upstream is the client's
own bytes, so nothing a client sends is ever dropped or rewritten.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


# Strict types for the fields a hit could otherwise answer without the upstream ever seeing
# them: a value the upstream would refuse (``temperature: "hot"``, ``max_tokens: -5``) is
# refused here too (400), never answered from cache. The bounds are those every
# OpenAI-compatible engine shares. How each field bears on the cache: ``cache/keys.py``.
_Num = Annotated[float, Field(strict=True)]
_Int = Annotated[int, Field(strict=True)]
_Bool = Annotated[bool, Field(strict=True)]
_Str = Annotated[str, Field(strict=True)]
_Stop = _Str | list[_Str]


class ChatCompletionRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: _Bool = False
    stream_options: StreamOptions | None = None
    n: _Int | None = Field(None, ge=1)
    logprobs: _Bool | None = None
    top_logprobs: _Int | None = Field(None, ge=0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    parallel_tool_calls: _Bool | None = None
    response_format: dict[str, Any] | None = None
    temperature: _Num | None = Field(None, ge=0)
    top_p: _Num | None = Field(None, ge=0, le=1)
    frequency_penalty: _Num | None = Field(None, ge=-2, le=2)
    presence_penalty: _Num | None = Field(None, ge=-2, le=2)
    max_tokens: _Int | None = Field(None, ge=1)
    max_completion_tokens: _Int | None = Field(None, ge=1)
    stop: _Stop | None = None
    seed: _Int | None = None
    logit_bias: dict[str, _Num] | None = None
    modalities: list[_Str] | None = None
    audio: dict[str, Any] | None = None
    reasoning_effort: _Str | None = None
    verbosity: _Str | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    moderation: Any = None
    user: _Str | None = None
    safety_identifier: _Str | None = None
    metadata: dict[str, Any] | None = None
    store: _Bool | None = None
    service_tier: _Str | None = None
    prompt_cache_key: _Str | None = None
    prompt_cache_retention: _Str | None = None
    prompt_cache_options: Any = None


class CompletionRequest(_Open):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: _Bool = False
    stream_options: StreamOptions | None = None
    n: _Int | None = Field(None, ge=1)
    best_of: _Int | None = Field(None, ge=1)
    logprobs: _Int | None = Field(None, ge=0)
    echo: _Bool | None = None
    suffix: str | None = None
    temperature: _Num | None = Field(None, ge=0)
    top_p: _Num | None = Field(None, ge=0, le=1)
    frequency_penalty: _Num | None = Field(None, ge=-2, le=2)
    presence_penalty: _Num | None = Field(None, ge=-2, le=2)
    max_tokens: _Int | None = Field(None, ge=1)
    stop: _Stop | None = None
    seed: _Int | None = None
    logit_bias: dict[str, _Num] | None = None
    user: _Str | None = None


class ResponsesRequest(_Open):
    """``POST /v1/responses``. ``input`` is a string or a list of items (messages with text or
    content parts, function calls and their outputs, ...); how each field bears on the cache:
    ``cache/responses_keys.py``."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: _Str | None = None
    previous_response_id: _Str | None = None
    stream: _Bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: _Bool | None = None
    max_tool_calls: _Int | None = Field(None, ge=1)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: _Int | None = Field(None, ge=1)
    temperature: _Num | None = Field(None, ge=0)
    top_p: _Num | None = Field(None, ge=0, le=1)
    top_logprobs: _Int | None = Field(None, ge=0)
    truncation: _Str | None = None
    include: list[_Str] | None = None
    store: _Bool | None = None
    background: _Bool | None = None
    conversation: Any = None
    prompt: dict[str, Any] | None = None
    context_management: Any = None
    moderation: Any = None
    metadata: dict[str, Any] | None = None
    user: _Str | None = None
    safety_identifier: _Str | None = None
    service_tier: _Str | None = None
    prompt_cache_key: _Str | None = None
    prompt_cache_retention: _Str | None = None
    prompt_cache_options: Any = None


Endpoint = Literal["chat", "completions", "responses"]
# where each endpoint lives under an OpenAI base URL
PATHS: dict[Endpoint, str] = {"chat": "chat/completions", "completions": "completions",
                              "responses": "responses"}
# roles whose messages set the conversation's instructions rather than its turns
SYSTEM_ROLES = ("system", "developer")
M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The raw body, refusing (413) anything over ``limit`` bytes before reading it all, and
    (408) a body that takes longer than ``timeout_s`` to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g}s") from None
    return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise InvalidRequest(f"request body is nested more than {MAX_DEPTH} levels deep",
                             code="invalid_json")
    return data


MAX_DEPTH = 128  # orjson writes at most 255 levels (the scope digest); no real schema is close


def _depth(obj: Any) -> int:
    """How deeply ``obj`` nests lists and objects (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in node
                         if isinstance(child, (dict, list)))
    return deepest


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"{loc}: {err['msg']}", param=loc or None) from exc


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every ``$ref`` replaced by its definition, so it can sit
    inside an OpenAPI operation (where ``#/$defs/...`` would point at the document root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the handler reads itself."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(model)}}}}

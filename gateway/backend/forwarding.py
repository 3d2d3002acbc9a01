"""Forwarding to the upstream and back: pass-through, and completions with a capture hook.

``forward_raw`` is the verbatim proxy for every ``/v1/*`` path the cache does not handle.
``forward_completion`` forwards a (chat) completion and, when the answer is complete and
storable, hands it to ``on_complete`` — for a stream, only after the last byte reached the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.backend import responses
from gateway.backend.upstream import Upstream, close, iter_body, read_body, response_headers
from gateway.errors import UpstreamError
from gateway.protocol import Endpoint
from gateway.streaming import SSEParser, StreamAssembler, error_event, no_store, storable

log = logging.getLogger(__name__)

OnComplete = Callable[[dict[str, Any]], Awaitable[None]]
OnEnd = Callable[[int, bytes | None], None]



async def forward_raw(upstream: Upstream, request: Request, path: str, body: bytes) -> Response:
    """Method, query, body, status and headers as they are; the body streamed both ways."""
    headers = upstream.request_headers(request.headers, identity=False)
    resp = await upstream.open(
        request.method, path, headers=headers, content=body or None, query=request.url.query,
        base_url=upstream.passthrough_base(),
    )
    return StreamingResponse(
        _guarded(iter_body(resp, raw=True), sse=False),
        status_code=resp.status_code,
        headers=response_headers(resp.headers, decoded=False),
    )


async def forward_completion(
    upstream: Upstream,
    endpoint: Endpoint,
    incoming_headers: Mapping[str, str],
    body: bytes,
    *,
    stream: bool,
    on_complete: OnComplete | None,
    extra_headers: Mapping[str, str],
    on_end: OnEnd | None = None,
    opened: asyncio.Task[httpx.Response] | None = None,
    query: str = "",
    on_final: OnComplete | None = None,
) -> Response:
    """``on_end(status, body)`` runs once the exchange is over, complete or not (``body`` only
    for answers read whole). ``opened``: the request was already sent (hedging).
    ``on_final``: Responses API only, handed every final response of a 2xx answer, stored or
    not (a function call too), before the client has its end."""
    if endpoint != "responses":
        on_final = None
    resp = await (opened if opened is not None else upstream.open_completion(
        endpoint, incoming_headers, body, query))
    out_headers = {**response_headers(resp.headers, decoded=True), **extra_headers}
    is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")

    convert = resp.extensions.get("semcache_convert")  # the backend's format -> the client's
    # only a plain 200 is a whole answer (not 203's transformed or 206's partial one), and
    # never one the upstream marked no-store or private
    if resp.status_code != 200 or no_store(
            resp.headers.get("cache-control"),
            ignore_no_store=is_sse and upstream.stream_no_store == "ignore"):
        on_complete = None
    if resp.status_code >= 400 or not (stream and is_sse):
        content = await read_body(resp)
        if b'"timings"' in content and "semcache_route" in resp.extensions:
            with contextlib.suppress(orjson.JSONDecodeError):
                upstream.observe(resp, orjson.loads(content))
        if convert is not None and resp.status_code < 400:
            content = convert.body(content)
        parsed = None
        if on_complete is not None or (on_final is not None and resp.status_code < 300):
            try:
                parsed = orjson.loads(content)
            except orjson.JSONDecodeError:
                parsed = None
        if on_final is not None and isinstance(parsed, dict) and resp.status_code < 300 \
                and isinstance(parsed.get("output"), list):
            await _store_safely(on_final, parsed)
        if on_complete is not None:
            if isinstance(parsed, dict) and endpoint == "responses":
                if responses.storable(parsed):
                    await _store_safely(on_complete, responses.for_storing(parsed))
            elif isinstance(parsed, dict) and storable(endpoint, parsed):
                await _store_safely(on_complete, parsed)
        if on_end is not None:
            on_end(resp.status_code, content)
        return Response(content, status_code=resp.status_code, headers=out_headers)

    async def tee() -> AsyncIterator[bytes]:
        # The answer is stored before the chunk carrying ``[DONE]`` is passed on, so a client
        # that saw the end of its stream can count on the next identical question hitting.
        parser, finished = SSEParser(), False
        assembler: StreamAssembler | responses.ResponsesAssembler = (
            responses.ResponsesAssembler() if endpoint == "responses" else StreamAssembler(endpoint))
        body = iter_body(resp, raw=False)
        if "semcache_route" in resp.extensions:
            body = _timings(upstream, resp, body)
        if convert is not None:
            body = convert.stream(body)
        try:
            async for chunk in _guarded(body, sse=True):
                for data in parser.feed(chunk):
                    assembler.feed(data)
                if assembler.done and not finished:
                    finished = True
                    final = getattr(assembler, "final", None)
                    if on_final is not None and isinstance(final, dict) \
                            and resp.status_code < 300:
                        await _store_safely(on_final, final)
                    result = assembler.result()
                    if result is not None and on_complete is not None:
                        await _store_safely(on_complete, result)
                yield chunk
        finally:
            if on_end is not None:
                on_end(resp.status_code, None)

    return StreamingResponse(tee(), status_code=resp.status_code, headers=out_headers)


async def _timings(upstream: Upstream, resp: httpx.Response,
                   chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The backend's stream as it is, its ``timings`` event (llama.cpp's last) read on the way."""
    parser = SSEParser()
    async for chunk in chunks:
        for data in parser.feed(chunk):
            if '"timings"' in data:
                with contextlib.suppress(orjson.JSONDecodeError):
                    upstream.observe(resp, orjson.loads(data))
        yield chunk


async def _store_safely(on_complete: OnComplete, response: dict[str, Any]) -> None:
    """Storing is the cache's business: whatever goes wrong there, the client gets its answer."""
    try:
        await on_complete(response)
    except Exception:
        log.exception("storing an answer failed; it is passed on uncached")


async def discard(task: asyncio.Task[httpx.Response]) -> None:
    """Abandon a hedged request: cancel it, or close its response if it already arrived (the
    backend sees the connection go and stops generating)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await close(await task)


async def _guarded(chunks: AsyncIterator[bytes], *, sse: bool) -> AsyncIterator[bytes]:
    """After the status line is sent an upstream failure can't change it: end the body instead,
    with an error event for event streams (clients see why the stream stopped)."""
    try:
        async for chunk in chunks:
            yield chunk
    except UpstreamError as exc:
        log.warning("upstream failed mid-response: %s", exc.message)
        if sse:
            yield error_event(exc.message, exc.error_type, exc.code or "upstream_error")

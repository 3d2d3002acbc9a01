"""Every other ``/v1/*`` path goes upstream verbatim — and only paths under ``/v1/``.

The path arrives percent-decoded: ``/v1/..%2fmetrics`` is ``../metrics`` here, and sent on as it
is it would reach the upstream's root (vLLM serves ``/metrics``, ``/reset_prefix_cache`` and
more there; the load signal the adaptive policy reads could be forged). A dot segment or a
backslash is refused; the rest is percent-encoded again when the URL is built
(``Upstream.url``), so a decoded ``?`` or ``#`` stays part of the path.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.backend.forwarding import forward_raw
from gateway.deps import ServicesDep
from gateway.errors import NotFound
from gateway.protocol import read_body

router = APIRouter(tags=["passthrough"])

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.api_route("/v1/{path:path}", methods=_METHODS, include_in_schema=False)
async def passthrough(path: str, request: Request, services: ServicesDep) -> Response:
    if "\\" in path or any(seg in (".", "..") for seg in path.split("/")):
        raise NotFound(f"no such path under /v1: {path!r}")
    body = await read_body(request, services.settings.max_request_bytes,
                           services.settings.client_body_timeout_s)
    return await forward_raw(services.upstream, request, path, body)

"""Every other ``/v1/*`` path goes upstream verbatim."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.deps import ServicesDep
from gateway.forwarding import forward_raw
from gateway.protocol import read_body

router = APIRouter(tags=["passthrough"])

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.api_route("/v1/{path:path}", methods=_METHODS, include_in_schema=False)
async def passthrough(path: str, request: Request, services: ServicesDep) -> Response:
    body = await read_body(request, services.settings.max_request_bytes)
    return await forward_raw(services.upstream, request, path, body)

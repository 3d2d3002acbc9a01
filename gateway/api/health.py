from __future__ import annotations

import os
import socket

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import ServicesDep

router = APIRouter(tags=["health"])
# which process answered: behind a load balancer, or with `serve --workers`, several do
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready: indexes rebuilt from the store and the store reachable."""
    if not services.ready:
        return JSONResponse({"status": "starting", "replica": REPLICA}, status_code=503)
    if services.cache is not None:
        ok, detail = await services.cache.store_health()
        if not ok:
            return JSONResponse({"status": "degraded", "store": detail, "replica": REPLICA},
                                status_code=503)
    return JSONResponse({"status": "ready", "replica": REPLICA})

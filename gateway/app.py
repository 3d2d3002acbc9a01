"""``create_app(settings)``: the app, and the lifespan that owns every long-lived object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from gateway import __version__
from gateway.api import admin, completions, health, metrics_route, passthrough
from gateway.backend.load import LoadMonitor
from gateway.backend.routing import Router
from gateway.backend.upstream import Upstream
from gateway.config import Settings
from gateway.deps import Services
from gateway.errors import install_handlers
from gateway.metrics import Metrics
from gateway.middleware import RequestIdMiddleware

if TYPE_CHECKING:
    from gateway.embedding import Embedder

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, embedder: Embedder | None = None) -> FastAPI:
    """``embedder``: share an already loaded model (tests, the demo); else the lifespan loads one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        upstream = Upstream(settings, metrics, router=Router(settings, metrics),
                            load=LoadMonitor(settings))
        upstream.start(watch_load=settings.cache_enabled)
        services = Services(settings=settings, upstream=upstream, metrics=metrics)
        app.state.services = services
        try:
            if settings.cache_enabled:
                from gateway.cache.service import CacheService

                services.cache = await CacheService.start(
                    settings, upstream, metrics, embedder=embedder
                )
            services.ready = True
            log.info("semcache %s ready, upstream %s", __version__, settings.upstream_url)
            yield
        finally:
            services.ready = False
            if services.cache is not None:
                await services.cache.aclose()
            await upstream.aclose()

    app = FastAPI(title="semcache", version=__version__, lifespan=lifespan)
    install_handlers(app)
    app.add_middleware(completions.CompletionsFastPath)  # inside the request id (added last)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(admin.router)
    app.include_router(completions.router)
    app.include_router(passthrough.router)
    return app


def app_from_environment() -> FastAPI:
    """The factory ``serve --workers N`` gives uvicorn: each worker process reads its settings
    from the environment (the parent put its flags there)."""
    from gateway.logs import configure

    settings = Settings()
    configure(settings.log_level)
    return create_app(settings)

"""The long-lived objects the lifespan creates, and typed dependencies to reach them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from gateway.backend.upstream import Upstream
from gateway.config import Settings
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.cache.service import CacheService


@dataclass
class Services:
    settings: Settings
    upstream: Upstream
    metrics: Metrics
    cache: CacheService | None = None
    ready: bool = False
    notes: dict[str, str] = field(default_factory=dict)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

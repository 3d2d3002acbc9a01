"""What the cache's work beside the request path — warm-up, replica sync, upkeep — is handed:
the parts of the cache service it reads and changes, named here so that those modules depend on
this description and not on the service (which starts them: no import circle)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.cache.background import Background
from gateway.cache.breaker import StoreBreaker
from gateway.cache.changelog import ChangeFollower
from gateway.cache.indexes import Indexes
from gateway.cache.store import Store
from gateway.categories import Category
from gateway.config import Settings
from gateway.embedding import MicroBatcher
from gateway.metrics import Metrics


class Hits(Protocol):
    def take(self) -> dict[int, tuple[int, float]]:
        """Hits since the last call: entry id -> (how many, time of the last one)."""
        ...


class CacheState(Protocol):
    settings: Settings
    store: Store
    indexes: Indexes
    metrics: Metrics
    breaker: StoreBreaker
    background: Background
    categories: dict[str, Category]
    batcher: MicroBatcher
    follower: ChangeFollower | None
    hits: Hits
    warm: asyncio.Event

    async def enforce_quota(self, category: Category) -> None:
        """Evict the category's entries beyond its quota."""
        ...

"""Pure decisions of the cache: no I/O, no clock of its own (``now`` is passed in).

- ``cache_control``: what the client's Cache-Control header allows.
- ``plan``: for a request, whether to look up and whether to store.
- ``expires_at``: when a new entry expires.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.categories import Category


@dataclass(frozen=True)
class CacheControl:
    lookup: bool = True   # ``no-cache``: don't serve from cache (but store the fresh answer)
    store: bool = True    # ``no-store``: never store this answer


def cache_control(header: str | None) -> CacheControl:
    if not header:
        return CacheControl()
    directives = {d.strip().split("=", 1)[0].lower() for d in header.split(",")}
    return CacheControl(lookup="no-cache" not in directives, store="no-store" not in directives)


@dataclass(frozen=True)
class Plan:
    lookup: bool
    store: bool
    bypass: str | None = None  # set when neither happens, with the reason


def plan(bypass: str | None, category: Category | None, cc: CacheControl) -> Plan:
    if bypass is not None:
        return Plan(False, False, bypass)
    if category is not None and not category.cacheable:
        return Plan(False, False, "category_not_cacheable")
    if not cc.lookup and not cc.store:
        return Plan(False, False, "cache_control")
    return Plan(lookup=cc.lookup, store=cc.store)


def expires_at(category: Category, now: float) -> float:
    return now + category.ttl_seconds


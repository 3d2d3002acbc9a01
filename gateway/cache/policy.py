"""Pure decisions of the cache: no I/O, no clock of its own (``now`` is passed in).

- ``cache_control``: what the client's Cache-Control header allows.
- ``plan``: for a request, whether to look up and whether to store.
- ``expires_at``: when a new entry expires.
- ``effective_threshold`` / ``effective_ttl``: the category's values at a backend load in
  [0, 1] (docs/ADAPTIVE.md): unchanged up to ``KNEE``, then moving linearly to the category's
  relaxed bounds at full load.
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


KNEE = 0.5  # below half load the backend keeps up: stay strict


def pressure(load: float) -> float:
    """0 up to the knee, 1 at full load, linear between."""
    return min(1.0, max(0.0, (load - KNEE) / (1.0 - KNEE)))


def effective_threshold(category: Category, load: float) -> float:
    if category.adaptive is None:
        return category.threshold
    lo = category.adaptive.threshold_min
    return category.threshold - (category.threshold - lo) * pressure(load)


def effective_ttl(category: Category, load: float) -> float:
    if category.adaptive is None or category.adaptive.ttl_max_seconds is None:
        return float(category.ttl_seconds)
    hi = category.adaptive.ttl_max_seconds
    return category.ttl_seconds + (hi - category.ttl_seconds) * pressure(load)


def expires_at(category: Category, now: float, load: float = 0.0) -> float:
    return now + effective_ttl(category, load)



def match_threshold(category: Category, searched: Category, load: float) -> float:
    """A candidate from ``searched``'s index for a query classified as ``category`` must pass
    the stricter of the two thresholds (each as the load has it)."""
    return max(effective_threshold(category, load), effective_threshold(searched, load))

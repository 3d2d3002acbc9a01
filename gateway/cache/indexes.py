"""The in-memory indexes, as one object: every category's HNSW index (by name) and the
exact-repeat map, changed together. Sync, upkeep, warm-up and admin are handed this and call
``drop`` — instead of reaching into the service for it."""

from __future__ import annotations

from gateway.cache.index import CategoryIndex, ExactIndex


class Indexes(dict[str, CategoryIndex]):
    """Category name -> its index; ``exact``: whole-query digest -> row id."""

    def __init__(self) -> None:
        super().__init__()
        self.exact = ExactIndex()

    def drop(self, category: str, ids: list[int]) -> None:
        """Entries gone from the store leave the in-memory indexes too."""
        if ids:
            if category in self:
                self[category].remove(ids)
            self.exact.remove(ids)

    def replace(self, indexes: dict[str, CategoryIndex], exact: ExactIndex) -> None:
        """Take over a loaded snapshot's indexes, in place (holders keep this object)."""
        self.clear()
        self.update(indexes)
        self.exact = exact

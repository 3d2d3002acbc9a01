"""Verified repeats: a paraphrase served once, sent again word for word, is served like an exact
repeat — no embedding, no search, no verification — on the decision made the first time.

The first time, the whole path decided: the query's category, the entry found in the searched
category's index, its similarity, every check of the verifier (the cross-encoder's included).
That decision is remembered under the request's exact digest — the exact-repeat path's key: its
scope (tenant, model, parameters), conversation and whitespace-normalised query, so a request
that differs in any of them never shares it. It is replayed (``Finder.repeated``) only while
everything it rested on still holds:

- the categories are the ones it was made under: a reload forgets every decision;
- the entry is still in the searched category's index (deleted, reported wrong, evicted: it is
  not served), the same stored query (a row id reused for another row never serves it), alive,
  in scope and context, within the request's token limit;
- its similarity still passes both categories' thresholds at the backend's current load (the
  adaptive policy lowers them under load: a decision made under load is not replayed once the
  load has gone).

What a replay does not redo: look for a nearer entry stored since. The remembered one was
verified for this very query and stays its answer until it goes.

Each worker remembers its own (``SEMCACHE_VERIFIED_REPEATS`` decisions, least recently used
forgotten first). Only the event loop touches it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from gateway.cache.keys import normalise


def text_digest(text: str) -> bytes:
    """The stored query a decision was about, up to whitespace (16 bytes)."""
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Decision:
    entry_id: int
    similarity: float  # the query's to the entry's own stored vector
    category: str      # the query's category
    searched: str      # the category whose index held the entry
    text: bytes        # text_digest of the entry's stored query


class VerifiedRepeats:
    def __init__(self, size: int):
        self._size = size
        self._by_key: OrderedDict[bytes, Decision] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def remember(self, exact_hash: str, decision: Decision) -> None:
        if self._size <= 0:
            return
        key = bytes.fromhex(exact_hash)
        self._by_key[key] = decision
        self._by_key.move_to_end(key)
        while len(self._by_key) > self._size:
            self._by_key.popitem(last=False)

    def recall(self, exact_hash: str) -> Decision | None:
        if not self._by_key:
            return None
        key = bytes.fromhex(exact_hash)
        decision = self._by_key.get(key)
        if decision is not None:
            self._by_key.move_to_end(key)
        return decision

    def forget(self, exact_hash: str) -> None:
        self._by_key.pop(bytes.fromhex(exact_hash), None)

    def forget_all(self) -> None:
        self._by_key.clear()
